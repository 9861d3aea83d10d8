"""The recipe: one typed config tree (teacher, prompts, cache, student, train, eval, report).

Loaded from YAML with dotted command-line overrides; unknown keys and wrong types are
errors naming the key, the file and (where known) the line. Every stage saves the
resolved recipe next to its outputs with ``save_resolved``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator

from dante.errors import ConfigError


class Section(BaseModel):
    """Base of every config section: unknown keys are errors, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())


class TeacherConfig(Section):
    """Who writes the completions, and how (stage 1 "spin up teacher")."""

    backend: Literal["hf", "vllm", "openai"] = Field("hf", description="Engine that runs the teacher.")
    model: str = Field("", description="Hub id, local folder, GGUF file, or packaged name (pypi:...).")
    revision: str | None = Field(None, description="Model revision (hub) for hf/vllm.")
    trust_remote_code: bool = Field(False, description="Allow model code from the model repo. Off unless you trust it.")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field("auto", description="Weights dtype (hf/vllm).")
    device: str = Field("auto", description="hf backend: 'auto', 'cpu', 'cuda', 'cuda:1', ...")
    use_chat_template: bool = Field(True, description="Render prompts with the teacher's chat template when it has one; raw text otherwise.")
    max_new_tokens: int = Field(512, ge=1, description="Completion length cap (the card: 512).")
    temperature: float = Field(0.0, ge=0.0, description="0 = greedy (the card).")
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="Nucleus sampling for T>0.")
    top_logprobs: int = Field(20, ge=0, le=20, description="k top logprobs per token for output_entropy (0 disables; OpenAI/vLLM cap 20).")
    batch_size: int = Field(8, ge=1, description="Prompts per generate call (hf) or per submitted chunk (vllm).")
    seed: int = Field(42, description="Sampling seed for self-consistency samples.")
    # self-consistency
    consistency_samples: int = Field(0, ge=0, description="k extra sampled completions for self_consistency; 0 records null.")
    consistency_temperature: float = Field(0.8, gt=0.0, description="Temperature of the consistency samples.")
    consistency_max_new_tokens: int | None = Field(None, ge=1, description="Length cap of consistency samples (default: max_new_tokens).")
    # vllm
    tensor_parallel_size: int = Field(1, ge=1, description="vLLM tensor parallel degree.")
    pipeline_parallel_size: int = Field(1, ge=1, description="vLLM pipeline parallel degree.")
    gpu_memory_utilization: float = Field(0.9, gt=0.0, le=1.0, description="vLLM KV-cache memory share.")
    max_model_len: int | None = Field(None, ge=1, description="vLLM context length cap.")
    quantization: str | None = Field(None, description="vLLM quantization method (e.g. 'awq', 'compressed-tensors').")
    # openai-compatible HTTP
    api: Literal["chat", "completions"] = Field("chat", description="OpenAI endpoint flavour.")
    base_url: str | None = Field(None, description="OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1 (env OPENAI_BASE_URL).")
    api_key: SecretStr | None = Field(None, description="API key; prefer api_key_env. Never printed or saved.")
    api_key_env: str = Field("OPENAI_API_KEY", description="Environment variable holding the API key.")
    concurrency: int = Field(8, ge=1, description="Requests in flight at once.")
    max_retries: int = Field(6, ge=0, description="Retries per request on 429/5xx/timeouts/broken bodies.")
    request_timeout_s: float = Field(120.0, gt=0.0, description="Per-request timeout in seconds.")
    backoff_base_s: float = Field(1.0, ge=0.0, description="First back-off delay; doubles each retry (with jitter).")
    backoff_max_s: float = Field(60.0, ge=0.0, description="Back-off delay cap; Retry-After is honoured up to this.")


class PromptsConfig(Section):
    """Where prompts come from and which fields mean what."""

    source: str = Field("", description="A .jsonl/.json/.parquet/.csv file, a folder of them, or a datasets name.")
    format: Literal["auto", "jsonl", "json", "parquet", "csv", "datasets"] = Field("auto", description="How to read source.")
    subset: str | None = Field(None, description="datasets config name (load_dataset(source, subset)).")
    split: str = Field("train", description="datasets split.")
    prompt_field: str = Field("prompt", description="Column holding the prompt text.")
    messages_field: str | None = Field(None, description="Column holding a chat message list (overrides prompt_field).")
    system_field: str | None = Field(None, description="Column holding a per-row system prompt.")
    system_prompt: str | None = Field(None, description="One system prompt for every row.")
    id_field: str | None = Field(None, description="Column with a stable id; default: hash of prompt and source.")
    template: str | None = Field(None, description="Python format string applied to the prompt text, e.g. 'Question: {prompt}\\nAnswer:'.")
    rows: str | None = Field(None, description="Declared row range 'start:stop' (e.g. '0:600'); the rest is held out.")
    limit: int | None = Field(None, ge=1, description="Use only the first N prompts (after rows).")
    max_prompt_chars: int = Field(200_000, ge=1, description="Longer prompts are an error naming the row.")


class CacheConfig(Section):
    """The teacher cache on disk (stage 2 "generate cache")."""

    dir: Path | None = Field(None, description="Cache folder (default: <output_dir>/cache).")
    shard_size: int = Field(1000, ge=1, description="Records per JSONL shard.")
    flush_every: int = Field(16, ge=1, description="Records buffered before they are made durable.")
    difficulty_entropy_scale: float = Field(3.0, gt=0.0, description="Entropy (nats) mapped to full difficulty in difficulty_score.")


class StudentConfig(Section):
    """The model being distilled into (stage 3 "init student")."""

    model: str = Field("", description="Hub id, local folder, GGUF file, or packaged name (pypi:...).")
    revision: str | None = Field(None, description="Model revision (hub).")
    gguf_file: str | None = Field(None, description="GGUF file name inside model folder, if any.")
    trust_remote_code: bool = Field(False, description="Allow model code from the model repo.")
    use_chat_template: bool = Field(True, description="Render records with the student's chat template; raw text when False.")
    require_chat_template: bool = Field(False, description="Error if use_chat_template is on and the tokenizer has none.")
    attn_implementation: str | None = Field(None, description="'sdpa', 'eager', 'flash_attention_2', ... (default: transformers' choice).")
    num_parameters: int | None = Field(None, ge=1, description="Parameter count hint for `dante plan` when the model is not local.")
    num_layers: int | None = Field(None, ge=1, description="Decoder layers hint for `dante plan`'s attention FLOPs when the model is not local.")
    hidden_size: int | None = Field(None, ge=1, description="Hidden size hint for `dante plan`'s attention FLOPs when the model is not local.")


class LossConfig(Section):
    """The DANTE objective; every component can be switched off (ablations are one flag)."""

    cwce: bool = Field(True, description="Confidence weighting w(H); off = plain masked CE.")
    cwce_floor: float = Field(0.30, description="w(inf).")
    cwce_span: float = Field(0.70, description="w(-inf) - w(inf).")
    cwce_slope: float = Field(1.5, description="Logistic slope in H.")
    cwce_center: float = Field(1.5, description="Entropy (nats) where w is halfway.")
    normalise: Literal["token", "sequence", "card"] = Field(
        "token",
        description=(
            "token: sum_t w_t*CE_t / sum_t w_t over the global batch; sequence: mean CE per record, then weighted mean; "
            "card: (1/N) sum_i w_i*CE_i literally (see dante.train.losses)."
        ),
    )
    tea: bool = Field(True, description="Embedding anchor ||E - E0||_F^2.")
    tea_start: float = Field(1.0, description="lambda_TEA at step 0.")
    tea_end: float = Field(0.1, description="lambda_TEA at the last step.")
    ce_schedule: bool = Field(True, description="lambda_CE ramp; off = 1.0 throughout.")
    ce_start: float = Field(0.70, description="lambda_CE during warm-up.")
    ce_end: float = Field(1.0, description="lambda_CE at ce_ramp_end.")
    ce_warmup_steps: int = Field(200, ge=0, description="Steps held at ce_start.")
    ce_ramp_end: int = Field(2000, ge=1, description="Step where lambda_CE reaches ce_end.")
    chunked_ce: bool = Field(
        True, description="Compute the lm_head and CE in token chunks (never the full tokens x vocab logits): less memory, same gradients."
    )


class TrainConfig(Section):
    """Optimisation and data (stage 4 "train", stage 5 "save")."""

    output_dir: Path | None = Field(None, description="Student checkpoint folder (default: <output_dir>/student).")
    steps: int = Field(2000, ge=1, description="Optimizer steps.")
    batch_sequences: int | None = Field(128, ge=1, description="Effective batch in sequences (records) per step.")
    batch_tokens: int | None = Field(None, ge=1, description="Effective batch in tokens per step (instead of batch_sequences).")
    micro_batch_size: int = Field(
        4, ge=1, description="Records per forward pass per device: packed into one padding-free row (packing), or padded rows."
    )
    max_length: int = Field(4096, ge=8, description="Max tokens per record (prompt + completion).")
    packing: bool = Field(True, description="Padding-free packing of several records per row.")
    curriculum: Literal["entropy", "shuffle", "none"] = Field("entropy", description="entropy: ascending output_entropy (the card); shuffle: ablation.")
    loss: LossConfig = Field(default_factory=LossConfig)
    lr: float = Field(2e-5, gt=0.0)
    lr_scheduler: str = Field("cosine", description="transformers scheduler name.")
    warmup_steps: int = Field(200, ge=0)
    adam_beta1: float = Field(0.9)
    adam_beta2: float = Field(0.95)
    adam_eps: float = Field(1e-8)
    weight_decay: float = Field(0.1)
    grad_clip: float | None = Field(1.0, description="Max global grad norm; null disables.")
    mixed_precision: Literal["auto", "no", "bf16", "fp16"] = Field("auto", description="auto: bf16 where supported, else fp32.")
    gradient_checkpointing: bool = Field(False)
    compile: bool = Field(
        False, description="torch.compile each decoder block (regional compilation, dynamic shapes): fuses the "
        "norm/RoPE/SwiGLU elementwise work; costs a one-off compile (~30 s on CPU) at the first step. Needs a C++ "
        "compiler on CPU, Triton on GPU.",
    )
    seed: int = Field(42)
    checkpoint_every: int = Field(200, ge=1, description="Steps between resumable checkpoints.")
    keep_checkpoints: int = Field(2, ge=1, description="Complete checkpoints kept on disk.")
    log_every: int = Field(1, ge=1)
    eval_fraction: float = Field(0.0, ge=0.0, lt=1.0, description="Share of the cache held out for a validation loss.")
    eval_every: int = Field(0, ge=0, description="Steps between held-out loss evaluations (0: only at the end).")
    trackers: list[Literal["tensorboard", "wandb"]] = Field(default_factory=list)

    @model_validator(mode="after")
    def _one_batch_unit(self) -> "TrainConfig":
        if self.batch_tokens is not None:
            self.__dict__["batch_sequences"] = None  # tokens win; avoid re-validation recursion
        elif self.batch_sequences is None:
            raise ValueError("set train.batch_sequences or train.batch_tokens")
        return self


class EvalConfig(Section):
    """lm-evaluation-harness runs (stage 6); see docs/eval.md."""

    output_dir: Path | None = Field(None, description="Default: <output_dir>/eval.")
    suite: str | None = Field("card", description="Named suite: 'card' (the card's 7 benchmarks, hub data), 'local' or 'demo' (offline), or null.")
    tasks: list[str] = Field(default_factory=list, description="Extra lm-eval task names (any task lm-eval knows, or dante's local ones).")
    models: list[str] = Field(default_factory=lambda: ["student"], description="'student', 'teacher', 'base' or model paths / hub ids.")
    limit: float | None = Field(None, gt=0, description="lm-eval --limit: rows per task (>= 1) or a fraction (< 1). Scores are flagged as partial.")
    batch_size: int | str = Field(1, description="Batch size, or 'auto' / 'auto:N' (lm-eval).")
    dtype: str = Field("auto", description="Weights dtype: auto, float32, bfloat16, float16.")
    device: str = Field("auto", description="'auto' (cuda if available, else cpu), 'cpu', 'cuda', 'cuda:1', ...")
    num_fewshot: int | None = Field(None, ge=0, description="Override every task's shots (breaks comparability; flagged in the report).")
    allow_code_execution: bool = Field(False, description="Run generated code (HumanEval/MBPP). Off unless asked.")
    code_timeout_s: float = Field(10.0, gt=0.0, description="Per-sample timeout of code execution (dante's local code tasks).")
    max_gen_toks: int | None = Field(None, ge=1, description="Cap on generated tokens per sample (default: each task's own; flagged when set).")
    apply_chat_template: bool = Field(False, description="Render prompts with the model's chat template (few-shot as multi-turn).")
    log_samples: bool = Field(True, description="Write per-sample inputs/outputs next to the raw results.")
    seed: int | None = Field(None, description="Seed for lm-eval's python/numpy/torch/few-shot RNGs (default: lm-eval's own).")


class ReportConfig(Section):
    """The run report (tables, plots, model card); see docs/eval.md."""

    output_dir: Path | None = Field(None, description="Default: <output_dir>/report.")
    title: str | None = Field(None, description="Report title (default: the recipe name).")
    include_card_reference: bool = Field(True, description="Add the card's published numbers as reference rows (marked as not measured here).")
    model_card: bool = Field(True, description="Write a Hugging Face model card README.md for the student.")
    model_name: str | None = Field(None, description="Model name in the model card (default: the recipe name).")


class Recipe(Section):
    """A whole run: every stage reads this one tree."""

    name: str = Field("dante-run")
    output_dir: Path = Field(Path("runs/dante-run"), description="Run folder; stage folders default inside it.")
    teacher: TeacherConfig = Field(default_factory=TeacherConfig)
    prompts: PromptsConfig = Field(default_factory=PromptsConfig)
    cache: CacheConfig = Field(default_factory=CacheConfig)
    student: StudentConfig = Field(default_factory=StudentConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    report: ReportConfig = Field(default_factory=ReportConfig)
    source_file: str | None = Field(None, exclude=True, description="Where the recipe was loaded from (not saved).")

    # Stage folders: explicit setting, else inside output_dir.
    @property
    def cache_dir(self) -> Path:
        return Path(self.cache.dir) if self.cache.dir else self.output_dir / "cache"

    @property
    def student_dir(self) -> Path:
        return Path(self.train.output_dir) if self.train.output_dir else self.output_dir / "student"

    @property
    def eval_dir(self) -> Path:
        return Path(self.eval.output_dir) if self.eval.output_dir else self.output_dir / "eval"

    @property
    def report_dir(self) -> Path:
        return Path(self.report.output_dir) if self.report.output_dir else self.output_dir / "report"


# ---------------------------------------------------------------------------------------
# Loading, overrides, errors with locations
# ---------------------------------------------------------------------------------------


SECRET_FIELDS = frozenset({"api_key"})


def parse_override(text: str) -> tuple[list[str], Any]:
    """``'teacher.batch_size=16'`` -> (['teacher', 'batch_size'], 16). Values are YAML scalars."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} is not key=value", field=text, hint="e.g. teacher.batch_size=16")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {text!r} has an empty key", field=key)
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Set dotted keys in a nested dict (creating sections); returns the same dict."""
    for text in overrides:
        path, value = parse_override(text)
        node = data
        for part in path[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"cannot set {'.'.join(path)}: {part} is not a section", field=".".join(path))
            node = child
        node[path[-1]] = value
    return data


def _yaml_key_lines(text: str) -> dict[tuple[str, ...], int]:
    """Map each dotted key path in a YAML document to its 1-based line number."""
    lines: dict[tuple[str, ...], int] = {}
    try:
        root = yaml.compose(text)
    except yaml.YAMLError:
        return lines

    def walk(node: Any, prefix: tuple[str, ...]) -> None:
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                key = (*prefix, str(key_node.value))
                lines[key] = key_node.start_mark.line + 1
                walk(value_node, key)
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                key = (*prefix, str(i))
                lines[key] = item.start_mark.line + 1
                walk(item, key)

    walk(root, ())
    return lines


def _raise_validation(err: ValidationError, file: str | None, key_lines: dict[tuple[str, ...], int], overridden: set[str]) -> None:
    """Turn pydantic's errors into one ConfigError naming file, line and dotted key of each problem."""
    problems = []
    for e in err.errors():
        loc = tuple(str(p) for p in e["loc"])
        dotted = ".".join(loc)
        if dotted in overridden:
            where = "command-line override: "
        else:  # a missing nested key has no line of its own: point at the nearest parent
            line = next((key_lines[loc[:n]] for n in range(len(loc), 0, -1) if loc[:n] in key_lines), None)
            where = f"line {line}: " if line else ""
        if e["type"] == "extra_forbidden":
            problems.append(f"{where}{dotted}: unknown key")
        elif loc[-1] in SECRET_FIELDS:  # never echo a secret, even a mistyped one
            problems.append(f"{where}{dotted}: {e['msg']} (value not shown: it is a secret)")
        else:
            problems.append(f"{where}{dotted}: {e['msg']} (got {e.get('input')!r})")
    raise ConfigError("; ".join(problems), file=file or "<recipe>") from None


def load_recipe(path: str | Path | None = None, overrides: list[str] | None = None, data: dict | None = None) -> Recipe:
    """Load a recipe from YAML (or a dict), apply dotted overrides, validate.

    Errors name the file, the line and the dotted key: ``recipe.yaml: line 7: teacher.batch_sz: unknown key``.
    """
    overrides = list(overrides or [])
    file = str(path) if path is not None else None
    key_lines: dict[tuple[str, ...], int] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError("recipe file does not exist", file=file)
        text = p.read_text(encoding="utf-8")
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            raise ConfigError(f"not valid YAML: {getattr(exc, 'problem', exc)}", file=file, line=mark.line + 1 if mark else None) from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError("a recipe must be a YAML mapping of sections", file=file)
        key_lines = _yaml_key_lines(text)
        data = loaded
    data = dict(data or {})
    apply_overrides(data, overrides)
    overridden = {o.split("=", 1)[0].strip() for o in overrides}
    try:
        recipe = Recipe.model_validate(data)
    except ValidationError as err:
        _raise_validation(err, file, key_lines, overridden)
        raise  # unreachable
    recipe.source_file = file
    return recipe


def redact_url(url: str | None) -> str | None:
    """``https://user:key@host/v1`` -> ``https://***@host/v1``: credentials in a URL are never shown."""
    if not url or "@" not in url:
        return url
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if not parts.username and not parts.password:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"***@{host}"))


def resolved_dict(recipe: Recipe) -> dict[str, Any]:
    """The recipe as plain data, secrets masked (api_key and URL credentials are never written anywhere)."""
    data = recipe.model_dump(mode="json", exclude={"source_file"})
    teacher = data.get("teacher", {})
    if teacher.get("api_key") is not None:
        teacher["api_key"] = "**********"
    teacher["base_url"] = redact_url(teacher.get("base_url"))
    return data


def stable_hash(data: Any) -> str:
    """Short sha256 of JSON-able data, independent of key order."""
    blob = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def recipe_hash(recipe: Recipe, sections: tuple[str, ...] | None = None) -> str:
    """Stable short hash of the resolved recipe (or of some sections of it)."""
    data = resolved_dict(recipe)
    if sections is not None:
        data = {k: data[k] for k in sections}
    return stable_hash(data)


def save_resolved(recipe: Recipe, directory: str | Path, name: str = "resolved_recipe.yaml") -> Path:
    """Write the resolved recipe next to a stage's outputs (atomically)."""
    from dante.io import atomic_write_text

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    text = yaml.safe_dump(resolved_dict(recipe), sort_keys=False, allow_unicode=True)
    return atomic_write_text(directory / name, text)
