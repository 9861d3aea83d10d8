"""The recipe's schema: one typed config tree (teacher, prompts, cache, student, train, eval,
report). Every field has a default and a description; ``dante.config.loader`` reads YAML into it.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from dante import layout
from dante.errors import ConfigError


class Section(BaseModel):
    """Base of every config section: unknown keys are errors, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())


class VllmTeacherConfig(Section):
    """``teacher.backend: vllm``: the offline engine's parallelism and memory (``teacher.vllm``)."""

    tensor_parallel_size: int = Field(1, ge=1, description="vLLM tensor parallel degree.")
    pipeline_parallel_size: int = Field(1, ge=1, description="vLLM pipeline parallel degree.")
    gpu_memory_utilization: float = Field(0.9, gt=0.0, le=1.0, description="vLLM KV-cache memory share.")
    max_model_len: int | None = Field(None, ge=1, description="vLLM context length cap.")
    quantization: str | None = Field(None, description="vLLM quantization method (e.g. 'awq', 'compressed-tensors').")


class OpenAITeacherConfig(Section):
    """``teacher.backend: openai``: the OpenAI-compatible server and how it is called (``teacher.openai``)."""

    api: Literal["chat", "completions"] = Field("chat", description="OpenAI endpoint flavour.")
    base_url: str | None = Field(
        None, description="OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1 (env OPENAI_BASE_URL)."
    )
    api_key: SecretStr | None = Field(None, description="API key; prefer api_key_env. Never printed or saved.")
    api_key_env: str = Field("OPENAI_API_KEY", description="Environment variable holding the API key.")
    concurrency: int = Field(8, ge=1, description="Requests in flight at once.")
    max_retries: int = Field(6, ge=0, description="Retries per request on 429/5xx/timeouts/broken bodies.")
    request_timeout_s: float = Field(120.0, gt=0.0, description="Per-request timeout in seconds.")
    backoff_base_s: float = Field(1.0, ge=0.0, description="First back-off delay; doubles each retry (with jitter).")
    backoff_max_s: float = Field(60.0, ge=0.0, description="Back-off delay cap; Retry-After is honoured up to this.")
    max_tokens_field: Literal["max_tokens", "max_completion_tokens"] = Field(
        "max_tokens",
        description="The request field that carries teacher.max_new_tokens: OpenAI's reasoning models (o-series) "
        "accept only max_completion_tokens; vLLM, SGLang and llama.cpp accept both.",
    )


class RayConfig(Section):
    """``teacher.dispatch: ray``: teacher replicas as Ray actors (docs/scale.md)."""

    address: str | None = Field(
        None, description="Ray cluster to attach to (default: $RAY_ADDRESS, else a local cluster started here)."
    )
    replicas: int = Field(1, ge=1, description="Teacher replicas (each one dante Teacher of teacher.backend).")
    min_replicas: int | None = Field(
        None,
        ge=1,
        description="Autoscaling: start with this many ready replicas and take more, up to `replicas`, as the "
        "cluster grows (default: all `replicas`).",
    )
    cpus_per_replica: float = Field(1.0, gt=0.0, description="CPUs reserved per replica.")
    gpus_per_replica: float | None = Field(
        None,
        ge=0.0,
        description="GPUs per replica (default: tensor x pipeline parallel size for vllm, 0 for hf on CPU and openai).",
    )
    batches_in_flight: int = Field(
        2, ge=1, description="Batches queued per replica (backpressure: the rest of the prompts wait on the driver)."
    )
    max_restarts: int = Field(3, ge=0, description="Replicas restarted after a crash, in all; past that the run stops.")
    max_prompt_attempts: int = Field(
        2, ge=1, description="Attempts of a prompt on its own (after its batch failed) before it counts as failing."
    )
    on_prompt_failure: Literal["stop", "skip"] = Field(
        "stop",
        description="A prompt that keeps failing: 'stop' the run (records written stay), or 'skip' it (listed by "
        "id in the manifest's failed_prompts, never written as an empty record).",
    )
    start_timeout_s: float = Field(600.0, gt=0.0, description="Wait for min_replicas to be ready (model loaded).")
    num_cpus: int | None = Field(None, ge=1, description="CPUs of a local cluster started here (default: all).")

    @model_validator(mode="after")
    def _replicas(self) -> RayConfig:
        if self.min_replicas is not None and self.min_replicas > self.replicas:
            raise ValueError(f"min_replicas ({self.min_replicas}) is more than replicas ({self.replicas})")
        return self


class BatchConfig(Section):
    """``teacher.dispatch: batch``: the teacher through the OpenAI batch file format, for a hosted
    Batch API (OpenAI and others, about half the price per token) or vLLM's ``run_batch``
    (docs/batch.md). Needs ``teacher.backend: openai``."""

    completion_window: str = Field("24h", description="The provider's completion window for each batch.")
    file_purpose: str = Field(
        "batch", description="`purpose` of the uploaded requests file (OpenAI: batch; Together AI: batch-api)."
    )
    max_requests: int = Field(50_000, ge=1, description="Requests per batch file (OpenAI: at most 50,000).")
    max_bytes: int = Field(
        200_000_000, ge=1_000, description="Bytes per batch file (OpenAI: at most 200 MB); more start another batch."
    )
    poll_interval_s: float = Field(
        30.0, gt=0.0, description="First wait between status checks; doubles up to poll_max_s."
    )
    poll_max_s: float = Field(600.0, gt=0.0, description="Longest wait between status checks.")
    wait_hours: float = Field(
        26.0,
        ge=0.0,
        description="How long `dante cache` waits for its batches before it stops (they keep running: re-run to "
        "ingest); 0 submits and stops.",
    )


class TeacherConfig(Section):
    """Who writes the completions, and how (stage 1 "spin up teacher")."""

    backend: Literal["hf", "vllm", "openai"] = Field("hf", description="Engine that runs the teacher.")
    model: str = Field("", description="Hub id, local folder, GGUF file, or packaged name (pypi:...).")
    revision: str | None = Field(None, description="Model revision (hub) for hf/vllm.")
    trust_remote_code: bool = Field(False, description="Allow model code from the model repo. Off unless you trust it.")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field("auto", description="Weights dtype (hf/vllm).")
    device: str = Field("auto", description="hf backend: 'auto', 'cpu', 'cuda', 'cuda:1', ...")
    use_chat_template: bool = Field(
        True, description="Render prompts with the teacher's chat template when it has one; raw text otherwise."
    )
    max_new_tokens: int = Field(512, ge=1, description="Completion length cap (the card: 512).")
    temperature: float = Field(0.0, ge=0.0, description="0 = greedy (the card).")
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="Nucleus sampling for T>0.")
    top_logprobs: int = Field(
        20, ge=0, le=20, description="k top logprobs per token for output_entropy (0 disables; OpenAI/vLLM cap 20)."
    )
    store_logprobs: int = Field(
        0,
        ge=0,
        le=20,
        description="K: keep each generated token's bytes and logprob and its top-K alternatives in the cache "
        "(main completion; for train.loss.token_kd). 0 keeps none.",
    )
    missing_logprobs: Literal["auto", "warn", "error"] = Field(
        "auto",
        description="A server that returns no logprobs: warn (records get null entropy / no payload) or stop; "
        "auto stops when store_logprobs > 0 and warns otherwise.",
    )
    batch_size: int = Field(8, ge=1, description="Prompts per generate call (hf) or per submitted chunk (vllm).")
    thinking: Literal["auto", "on", "off"] = Field(
        "auto",
        description="A thinking teacher's switch: auto leaves the model's default; on / off set the chat template's "
        "enable_thinking (hf and vllm templates; chat_template_kwargs for vLLM/SGLang servers). Reasoning the "
        "teacher returns is kept apart from the answer either way (docs/teachers.md, 'Thinking teachers').",
    )
    thinking_budget: int | None = Field(
        None,
        ge=1,
        description="hf engine: at most this many output tokens before the thinking ends; past it the end-of-"
        "thinking marker (</think>) is forced and the model goes on to its answer (needs max_new_tokens above it).",
    )
    reasoning_effort: Literal["low", "medium", "high"] | None = Field(
        None, description="A hosted reasoning API's effort setting (openai backend: the request's reasoning_effort)."
    )
    seed: int = Field(42, description="Sampling seed for self-consistency samples.")
    # self-consistency
    consistency_samples: int = Field(
        0, ge=0, description="k extra sampled completions for self_consistency; 0 records null."
    )
    consistency_temperature: float = Field(0.8, gt=0.0, description="Temperature of the consistency samples.")
    consistency_max_new_tokens: int | None = Field(
        None, ge=1, description="Length cap of consistency samples (default: max_new_tokens)."
    )
    dispatch: Literal["local", "ray", "batch"] = Field(
        "local",
        description="Where `dante cache` sends the teacher's requests: 'local', the engine in this process; 'ray', "
        "replicas on a Ray cluster (teacher.ray, extra [ray]); 'batch', a provider's Batch API in the OpenAI batch "
        "file format (teacher.batch_api, backend openai).",
    )
    ray: RayConfig = Field(default_factory=RayConfig, description="Settings of dispatch: ray.")
    batch_api: BatchConfig = Field(default_factory=BatchConfig, description="Settings of dispatch: batch.")
    vllm: VllmTeacherConfig = Field(default_factory=VllmTeacherConfig, description="Settings of backend: vllm.")
    openai: OpenAITeacherConfig = Field(
        default_factory=OpenAITeacherConfig, description="Settings of backend: openai (any OpenAI-compatible server)."
    )

    @model_validator(mode="after")
    def _budget_where_applied(self) -> TeacherConfig:
        if self.thinking_budget is not None and self.backend != "hf":
            raise ValueError(
                f"thinking_budget is applied by the hf engine only (backend is {self.backend}): for a server use "
                "its own setting (reasoning_effort, or the server's thinking budget), or leave it unset"
            )
        return self

    @model_validator(mode="before")
    @classmethod
    def _flat_backend_keys(cls, data: Any) -> Any:
        """A backend key written flat (``teacher.base_url``, as recipes did before the sections)
        goes into its section; the same key in both places is an error naming both."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        for section, keys in BACKEND_KEYS.items():
            flat = {k: data.pop(k) for k in keys if k in data}
            if not flat:
                continue
            nested = data.get(section)
            nested = nested.model_dump() if isinstance(nested, BaseModel) else dict(nested or {})
            both = sorted(set(flat) & set(nested))
            if both:
                raise ValueError(f"teacher.{both[0]} and teacher.{section}.{both[0]} are both set: keep one")
            data[section] = {**nested, **flat}
        return data


# The backend keys as they were written before the sections, still read (``_flat_backend_keys``).
BACKEND_KEYS = {"vllm": tuple(VllmTeacherConfig.model_fields), "openai": tuple(OpenAITeacherConfig.model_fields)}


class SourceFields(Section):
    """One prompt source and which fields mean what (``prompts`` itself, or one of ``prompts.sources``)."""

    source: str = Field(
        "",
        description="A .jsonl/.json/.parquet/.csv file, a folder of them, a datasets name, or a procedural task "
        "'reasoning_gym:TASK' (dante.procedural).",
    )
    format: Literal["auto", "jsonl", "json", "parquet", "csv", "datasets", "reasoning_gym"] = Field(
        "auto", description="How to read source (auto: from the file suffix or the 'reasoning_gym:' prefix)."
    )
    task_settings: dict[str, Any] = Field(
        default_factory=dict, description="reasoning_gym sources: the task's settings (e.g. {max_terms: 2})."
    )
    seed: int = Field(
        0,
        description="reasoning_gym sources: seed of the item stream (splits never meet, whatever the seed); "
        "a mixture's sampling seed.",
    )
    subset: str | None = Field(None, description="datasets config name (load_dataset(source, subset)).")
    split: str = Field(
        "train", description="datasets split; for reasoning_gym sources train, validation or test (distill on train)."
    )
    prompt_field: str = Field("prompt", description="Column holding the prompt text.")
    messages_field: str | None = Field(None, description="Column holding a chat message list (overrides prompt_field).")
    system_field: str | None = Field(None, description="Column holding a per-row system prompt.")
    system_prompt: str | None = Field(None, description="One system prompt for every row.")
    id_field: str | None = Field(None, description="Column with a stable id; default: hash of prompt and source.")
    template: str | None = Field(
        None, description="Python format string applied to the prompt text, e.g. 'Question: {prompt}\\nAnswer:'."
    )
    rows: str | None = Field(None, description="Declared row range 'start:stop' (e.g. '0:600'); the rest is held out.")
    limit: int | None = Field(None, ge=1, description="Use only the first N prompts (after rows).")
    max_prompt_chars: int = Field(200_000, ge=1, description="Longer prompts are an error naming the row.")


class SourceConfig(SourceFields):
    """One source of a prompt mixture (``prompts.sources``)."""

    weight: float | None = Field(
        None,
        ge=0.0,
        description="Share of the final set (weights are normalised); null on every source: all of each source.",
    )
    license: str | None = Field(None, description="The source's licence, as you declare it (dataset cards).")


class DedupConfig(Section):
    """Duplicate prompts, inside and across sources (dante.prompts.dedup); the first one is kept."""

    exact: bool = Field(False, description="Drop prompts whose normalised text (NFKC, case, spaces) was seen before.")
    near: bool = Field(False, description="Drop near duplicates: MinHash LSH (datasketch) on word shingles.")
    shingle: int = Field(5, ge=1, description="Words per shingle for near duplicates.")
    threshold: float = Field(
        0.8, gt=0.0, le=1.0, description="Jaccard similarity of shingle sets from which a prompt is a near duplicate."
    )
    num_perm: int = Field(128, ge=16, le=1024, description="MinHash permutations (accuracy of the LSH).")


class DecontaminateConfig(Section):
    """Benchmark decontamination (dante.prompts.decontaminate): a prompt sharing a word n-gram with an
    evaluated task's question or reference answer is removed, and the manifest names the match."""

    tasks: list[str] = Field(
        default_factory=list,
        description="lm-eval tasks whose documents are available offline (dante's local and procedural tasks, ...); "
        "'eval' adds every task the recipe's eval stage runs.",
    )
    files: list[str] = Field(
        default_factory=list, description="Files (.jsonl/.json/.parquet/.csv): every string field of a row is checked."
    )
    ngram: int = Field(13, ge=1, description="Words per n-gram (13: the GPT-3 paper's and lm-eval's choice).")
    min_words: int = Field(
        8,
        ge=1,
        description="A document field shorter than ngram words is matched whole when it has at least this many "
        "words (GPT-3's floor of 8); shorter ones cannot be checked and are counted.",
    )

    @model_validator(mode="before")
    @classmethod
    def _from_list(cls, data: Any) -> Any:
        """``decontaminate: [gsm8k_local, bench.jsonl]``: names that look like files are files."""
        if isinstance(data, list | tuple):
            files = [x for x in data if isinstance(x, str) and _looks_like_file(x)]
            return {"tasks": [x for x in data if x not in files], "files": files}
        return data

    @property
    def enabled(self) -> bool:
        return bool(self.tasks or self.files)


def _looks_like_file(name: str) -> bool:
    return name.lower().endswith((".jsonl", ".ndjson", ".json", ".parquet", ".csv")) or "/" in name


class PromptsConfig(SourceFields):
    """Where prompts come from: one source (the fields above) or a mixture (``sources``), optionally
    de-duplicated and decontaminated into a curated set (``dante prompts build``)."""

    sources: list[SourceConfig] = Field(
        default_factory=list, description="A mixture of sources, each with its own fields, limit and weight."
    )
    size: int | None = Field(
        None, ge=1, description="Prompts in a weighted mixture (default: the most that keep the weights)."
    )
    dedup: DedupConfig = Field(default_factory=DedupConfig, description="Exact and near-duplicate removal.")
    decontaminate: DecontaminateConfig = Field(
        default_factory=DecontaminateConfig, description="Benchmark decontamination (word n-gram overlap)."
    )
    dir: Path | None = Field(None, description="Folder of the curated set (default: <output_dir>/prompts).")

    @model_validator(mode="after")
    def _one_form(self) -> PromptsConfig:
        if self.sources and self.source:
            raise ValueError("set prompts.source (one source) or prompts.sources (a mixture), not both")
        weights = [s.weight for s in self.sources]
        if any(w is not None for w in weights):
            if any(w is None for w in weights):
                missing = [i for i, w in enumerate(weights) if w is None]
                raise ValueError(f"give every source a weight or none (prompts.sources{missing} has none)")
            if sum(weights) <= 0:
                raise ValueError("the weights of prompts.sources are all zero")
        elif self.size is not None and self.sources:
            raise ValueError("prompts.size needs weights on prompts.sources")
        return self

    @property
    def curated(self) -> bool:
        """True when prompts go through ``dante prompts build`` (a mixture, dedup or decontamination)."""
        return bool(self.sources) or self.dedup.exact or self.dedup.near or self.decontaminate.enabled

    def source_list(self) -> list[SourceConfig]:
        """The sources of the set: ``sources``, or the one source the top-level fields describe."""
        if self.sources:
            return list(self.sources)
        fields = {k: getattr(self, k) for k in SourceFields.model_fields}
        return [SourceConfig(**fields)]


class CacheConfig(Section):
    """The teacher cache on disk (stage 2 "generate cache")."""

    dir: Path | list[Path] | None = Field(
        None,
        description="Cache folder (default: <output_dir>/cache). Training, stats, validate and export also take "
        "several folders or a glob (runs/node-*/cache): their union; `dante cache` writes one.",
    )
    shard_size: int = Field(1000, ge=1, description="Records per JSONL shard.")
    flush_every: int = Field(16, ge=1, description="Records buffered before they are made durable.")
    difficulty_entropy_scale: float = Field(
        3.0, gt=0.0, description="Entropy (nats) mapped to full difficulty in difficulty_score."
    )


class PeftConfig(Section):
    """LoRA adapters on the student through the ``peft`` library (``student.peft``; full
    fine-tuning when unset). Only the adapters and ``modules_to_save`` train."""

    method: Literal["lora"] = Field("lora", description="Adapter type (peft's LoRA).")
    r: int = Field(16, ge=1, description="LoRA rank.")
    alpha: float = Field(32.0, gt=0.0, description="LoRA alpha: the update is scaled by alpha / r.")
    dropout: float = Field(
        0.0,
        ge=0.0,
        lt=1.0,
        description="Dropout on the LoRA branch's input (peft's default 0; > 0 keeps a copy of every adapted "
        "layer's input, which costs memory: docs/training.md).",
    )
    target_modules: list[str] | Literal["all-linear"] = Field(
        "all-linear",
        description="Module names (or name suffixes) that get adapters; 'all-linear': every linear layer but the head.",
    )
    modules_to_save: list[str] = Field(
        default_factory=list,
        description="Modules trained in full next to the adapters (e.g. [embed_tokens]; a tied head follows it).",
    )
    save_merged: bool = Field(
        True, description="Also write the base with the adapters merged in, to <student dir>/merged."
    )
    base_dtype: Literal["auto", "float32", "bfloat16"] = Field(
        "auto",
        description=(
            "dtype of the frozen base weights: 'auto' = bfloat16 when train.mixed_precision resolves to bf16 "
            "(half the weight memory; adapters stay fp32), else float32."
        ),
    )

    @model_validator(mode="after")
    def _targets(self) -> PeftConfig:
        if isinstance(self.target_modules, list) and not self.target_modules:
            raise ValueError("target_modules is empty: name the modules that get adapters, or 'all-linear'")
        return self


class StudentConfig(Section):
    """The model being distilled into (stage 3 "init student")."""

    model: str = Field("", description="Hub id, local folder, GGUF file, or packaged name (pypi:...).")
    revision: str | None = Field(None, description="Model revision (hub).")
    gguf_file: str | None = Field(None, description="GGUF file name inside model folder, if any.")
    trust_remote_code: bool = Field(False, description="Allow model code from the model repo.")
    use_chat_template: bool = Field(
        True, description="Render records with the student's chat template; raw text when False."
    )
    require_chat_template: bool = Field(
        False, description="Error if use_chat_template is on and the tokenizer has none."
    )
    attn_implementation: str | None = Field(
        None, description="'sdpa', 'eager', 'flash_attention_2', ... (default: transformers' choice)."
    )
    peft: PeftConfig | None = Field(
        None, description="LoRA adapters through peft (e.g. {r: 16, alpha: 32}); unset: full fine-tuning."
    )
    num_parameters: int | None = Field(
        None, ge=1, description="Parameter count hint for `dante plan` when the model is not local."
    )
    num_layers: int | None = Field(
        None, ge=1, description="Decoder layers hint for `dante plan`'s attention FLOPs when the model is not local."
    )
    hidden_size: int | None = Field(
        None, ge=1, description="Hidden size hint for `dante plan`'s attention FLOPs when the model is not local."
    )


class LossConfig(Section):
    """The DANTE objective; every component can be switched off (ablations are one flag)."""

    cwce: bool = Field(True, description="Confidence weighting w(H); off = plain masked CE.")
    cwce_floor: float = Field(0.30, ge=0.0, description="w(inf): the weight of a completion the teacher was unsure of.")
    cwce_span: float = Field(
        0.70,
        ge=0.0,
        description="w(-inf) - w(inf): floor + span is the weight of a fully confident one (0: constant w).",
    )
    cwce_slope: float = Field(
        1.5, gt=0.0, description="Logistic slope in H (per nat): how fast w falls around the center."
    )
    cwce_center: float = Field(1.5, description="Entropy (nats) where w is halfway between floor + span and floor.")
    normalise: Literal["token", "sequence", "card"] = Field(
        "token",
        description=(
            "token: sum_t w_t*CE_t / sum_t w_t over the global batch; sequence: mean CE per record, then "
            "weighted mean; "
            "card: (1/N) sum_i w_i*CE_i literally (see dante.train.objective.losses)."
        ),
    )
    tea: bool = Field(True, description="Embedding anchor ||E - E0||_F^2.")
    tea_start: float = Field(1.0, ge=0.0, description="lambda_TEA at the first step.")
    tea_end: float = Field(0.1, ge=0.0, description="lambda_TEA at the last step (linear in between).")
    ce_schedule: bool = Field(True, description="lambda_CE ramp; off = 1.0 throughout.")
    ce_start: float = Field(0.70, gt=0.0, description="lambda_CE during warm-up.")
    ce_end: float = Field(1.0, gt=0.0, description="lambda_CE at ce_ramp_end.")
    ce_warmup_steps: int = Field(200, ge=0, description="Steps held at ce_start.")
    ce_ramp_end: int = Field(2000, ge=1, description="Step where lambda_CE reaches ce_end.")
    chunked_ce: bool = Field(
        True,
        description="Compute the lm_head and CE in token chunks (never the full tokens x vocab logits): "
        "less memory, same gradients (dante.train.objective.chunked_ce).",
    )
    token_kd: float = Field(
        0.0,
        ge=0.0,
        description="lambda_KD: weight of token-level distillation from the cached teacher logprobs "
        "(teacher.store_logprobs); 0 = text only (docs/training.md).",
    )
    token_kd_schedule: bool = Field(
        False, description="Ramp lambda_KD from token_kd_start to token_kd over lambda_CE's warm-up and ramp steps."
    )
    token_kd_start: float = Field(0.0, ge=0.0, description="lambda_KD before ce_warmup_steps when scheduled.")
    chunk_kd: float = Field(
        0.0,
        ge=0.0,
        description="lambda_chunk: weight of the chunk term, approximate likelihood matching on every chunk "
        "aligned between the teacher's and the student's tokens (needs teacher.store_logprobs); 0 = off "
        "(docs/training.md, 'A term on every chunk').",
    )
    chunk_kd_temperature: float = Field(
        100.0, gt=0.0, description="tau of the chunk term's binarised divergence (ALM's default: 100)."
    )
    terms: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="Further loss terms by name, each with its settings: terms registered with "
        "dante.train.objective.terms.register_term (docs/training.md, 'Adding a loss term').",
    )

    @model_validator(mode="after")
    def _ramp_after_warmup(self) -> LossConfig:
        if self.ce_schedule and self.ce_ramp_end <= self.ce_warmup_steps:
            raise ValueError(
                f"ce_ramp_end ({self.ce_ramp_end}) must come after ce_warmup_steps ({self.ce_warmup_steps}): "
                "lambda_CE ramps from ce_start to ce_end between them"
            )
        return self


class FilterConfig(Section):
    """Which teacher records are trained on: finished, answered, consistent ones (no gold answers:
    every test looks only at what the teacher wrote). Counts go to the training manifest."""

    drop_truncated: bool = Field(
        False, description="Drop records the teacher stopped at max_new_tokens (finish_reason: length)."
    )
    require_answer: bool = Field(
        False,
        description="Drop records with no extractable final answer (\\boxed{}, '####', 'the answer is', a number).",
    )
    min_self_consistency: float | None = Field(
        None,
        ge=0.0,
        le=1.0,
        description="Drop records whose self_consistency is below this (needs teacher.consistency_samples).",
    )
    complete_reasoning: bool = Field(
        True,
        description="Drop a thinking teacher's records whose thinking was cut at the length limit or has no "
        "answer after it (reasoning_status cut / no_answer).",
    )


class OnPolicyConfig(Section):
    """On-policy distillation across tokenizers (``train.on_policy``, dante.train.sources.on_policy): the
    student writes completions of the recipe's prompts, the teacher (``teacher.*``, any engine
    that can score) scores them, and the student learns from the chunk-level reverse KL of its
    own samples, mixed with the cached off-policy records by ``fraction``. Off when fraction is 0."""

    fraction: float = Field(
        0.0, ge=0.0, le=1.0, description="Share of each step's prompts written by the student (GKD's λ); 0: off."
    )
    samples_per_prompt: int = Field(1, ge=1, description="Student completions per on-policy prompt.")
    temperature: float = Field(1.0, ge=0.0, description="Sampling temperature of the student (0: greedy).")
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="Nucleus sampling of the student.")
    max_new_tokens: int = Field(128, ge=1, description="Length cap of a student sample.")
    kl_coef: float = Field(
        1.0,
        ge=0.0,
        description="β: a chunk's advantage is β · (log p_T − log p_S); 0 with dense_kl > 0: the dense term alone.",
    )
    top_k: int = Field(
        0, ge=0, le=20, description="Top-k alternatives the teacher returns per scored token (the dense term's)."
    )
    dense_kl: float = Field(
        0.0,
        ge=0.0,
        description="Weight of the dense term: the sparse top-k KL at the positions one token on both sides "
        "(needs top_k > 0); 0: off.",
    )
    dense_direction: Literal["reverse", "forward"] = Field(
        "reverse", description="The dense term's KL: reverse KL(student ‖ teacher) or forward KL(teacher ‖ student)."
    )
    score_end: bool = Field(
        False,
        description="Score the teacher's end of turn after a sample the student ended: its term "
        "log p_T(end) − log p_S(end) goes to the student's end-of-sequence token in the policy gradient, so "
        "stopping where the teacher would not is penalised (hf and vllm engines).",
    )
    baseline: Literal["none", "mean"] = Field(
        "none",
        description="Subtracted from every token's advantage in the policy gradient: none, or mean: the mean "
        "advantage over the step's sampled tokens (all ranks), which leaves the gradient unbiased and lowers "
        "its variance.",
    )
    generate_batch: int = Field(32, ge=1, description="Student samples written per batched generate call.")
    warm_start: str | None = Field(
        None, description="A student folder to start from (e.g. an SFT run's output) instead of student.model."
    )

    @model_validator(mode="after")
    def _samples(self) -> OnPolicyConfig:
        if self.temperature == 0 and self.samples_per_prompt > 1:
            raise ValueError(
                f"temperature 0 (greedy) writes one completion per prompt, not samples_per_prompt="
                f"{self.samples_per_prompt}: set a temperature > 0 or one sample"
            )
        if self.kl_coef == 0 and self.dense_kl == 0:
            raise ValueError("kl_coef 0 leaves nothing to train on the samples: set kl_coef > 0 or dense_kl > 0")
        if self.dense_kl > 0 and self.top_k == 0:
            raise ValueError("dense_kl needs the teacher's top-k alternatives: set train.on_policy.top_k (e.g. 20)")
        return self

    @property
    def enabled(self) -> bool:
        return self.fraction > 0


class PacingConfig(Section):
    """The paced curricula (``train.curriculum: competence | buckets``, dante.train.sources.curriculum):
    how fast they open up from the easiest records to all of them."""

    c0: float = Field(
        0.1, gt=0.0, le=1.0, description="competence: the share of the records (easiest first) open at the start."
    )
    buckets: int = Field(3, ge=1, description="buckets: entropy buckets visited easy to hard, one stage each.")
    full_mix: float = Field(
        0.25, ge=0.0, lt=1.0, description="Share of the run, at its end, over every record in shuffled epochs."
    )


class TrainConfig(Section):
    """Optimisation and data (stage 4 "train", stage 5 "save")."""

    output_dir: Path | None = Field(None, description="Student checkpoint folder (default: <output_dir>/student).")
    steps: int = Field(2000, ge=1, description="Optimizer steps.")
    batch_sequences: int | None = Field(128, ge=1, description="Effective batch in sequences (records) per step.")
    batch_tokens: int | None = Field(
        None, ge=1, description="Effective batch in tokens per step (instead of batch_sequences)."
    )
    micro_batch_size: int = Field(
        4,
        ge=1,
        description="Records per forward pass per device: packed into one padding-free row (packing), or padded rows.",
    )
    max_length: int = Field(4096, ge=8, description="Max tokens per record (prompt + completion).")
    packing: bool = Field(True, description="Padding-free packing of several records per row.")
    reasoning: Literal["keep", "drop"] = Field(
        "keep",
        description="A thinking teacher's reasoning: keep trains on it and the answer, in the student's own "
        "thinking convention (its chat template's, else <think>...</think> before the answer); drop trains on "
        "the answer alone (the ablation). A record with reasoning longer than max_length is dropped and counted, "
        "never cut mid-thought.",
    )
    system_prompt: Literal["keep", "drop"] = Field(
        "keep",
        description="The system prompt the teacher was given (prompts.system_prompt / system_field): keep shows it "
        "to the student too; drop trains the student on the conversation without it, so that it learns to do "
        "unasked what the teacher was told to do (a teacher prompted to reason step by step, say).",
    )
    curriculum: Literal["shuffle", "entropy", "competence", "buckets", "none"] = Field(
        "shuffle",
        description="Order of the cached records: shuffle, a seeded permutation each epoch; entropy, ascending "
        "output_entropy every epoch (the card's curriculum); competence / buckets, easy to hard paced over the "
        "run, ending on the full mix (train.pacing); none, the cache's order (docs/training.md).",
    )
    pacing: PacingConfig = Field(
        default_factory=PacingConfig, description="How the competence and buckets curricula open up."
    )
    loss: LossConfig = Field(
        default_factory=LossConfig, description="The DANTE objective (dante.train.objective.losses)."
    )
    on_policy: OnPolicyConfig = Field(
        default_factory=OnPolicyConfig, description="On-policy distillation: the student writes, the teacher scores."
    )
    filter: FilterConfig = Field(default_factory=FilterConfig, description="Which teacher records to train on.")
    allow_mixed_caches: bool = Field(
        False,
        description="Train on cache folders written with different teacher/prompt settings (cache.dir with several "
        "folders); refused otherwise.",
    )
    lr: float = Field(2e-5, gt=0.0, description="Peak learning rate of AdamW (after warm-up).")
    lr_scheduler: str = Field(
        "cosine", description="transformers scheduler name (get_scheduler): cosine, linear, constant, ..."
    )
    warmup_steps: int = Field(200, ge=0, description="Steps of linear learning-rate warm-up from 0 to lr.")
    adam_beta1: float = Field(0.9, ge=0.0, lt=1.0, description="AdamW beta1 (the card: 0.9).")
    adam_beta2: float = Field(0.95, ge=0.0, lt=1.0, description="AdamW beta2 (the card: 0.95).")
    adam_eps: float = Field(1e-8, gt=0.0, description="AdamW epsilon.")
    weight_decay: float = Field(
        0.1, ge=0.0, description="AdamW weight decay on matrices (not on biases and norm gains)."
    )
    grad_clip: float | None = Field(1.0, description="Max global grad norm; null disables.")
    mixed_precision: Literal["auto", "no", "bf16", "fp16"] = Field(
        "auto", description="auto: bf16 where supported, else fp32."
    )
    gradient_checkpointing: bool = Field(
        False, description="Recompute activations in backward: less memory, more compute (one more forward)."
    )
    compile: bool = Field(
        False,
        description="torch.compile each decoder block (regional compilation, dynamic shapes): fuses the "
        "norm/RoPE/SwiGLU elementwise work; costs a one-off compile (~30 s on CPU) at the first step. Needs a C++ "
        "compiler on CPU, Triton on GPU.",
    )
    seed: int = Field(42, description="Seed of the weights' RNGs, the curriculum shuffle and the held-out split.")
    checkpoint_every: int = Field(200, ge=1, description="Steps between resumable checkpoints.")
    keep_checkpoints: int = Field(2, ge=1, description="Complete checkpoints kept on disk.")
    log_every: int = Field(1, ge=1, description="Steps between rows of metrics.jsonl (and the trackers).")
    eval_fraction: float = Field(0.0, ge=0.0, lt=1.0, description="Share of the cache held out for a validation loss.")
    eval_every: int = Field(0, ge=0, description="Steps between held-out loss evaluations (0: only at the end).")
    trackers: list[Literal["tensorboard", "wandb"]] = Field(
        default_factory=list,
        description="accelerate trackers that also get every logged row (extra dante-distill[tracking]).",
    )

    @model_validator(mode="after")
    def _one_batch_unit(self) -> TrainConfig:
        if self.batch_tokens is not None:
            self.__dict__["batch_sequences"] = None  # tokens win; avoid re-validation recursion
        elif self.batch_sequences is None:
            raise ValueError("set train.batch_sequences or train.batch_tokens")
        return self


class EvalVLLMConfig(Section):
    """``eval.backend: vllm``: lm-eval's vLLM model (GPUs; extra [vllm])."""

    tensor_parallel_size: int = Field(1, ge=1, description="GPUs per model copy.")
    data_parallel_size: int = Field(
        1, ge=1, description="Model copies, each on tensor_parallel_size GPUs (lm-eval runs them as Ray workers)."
    )
    gpu_memory_utilization: float = Field(0.9, gt=0.0, le=1.0, description="Share of each GPU vLLM may take.")
    max_model_len: int | None = Field(None, ge=1, description="Context length (default: the model's).")


class EvalConfig(Section):
    """lm-evaluation-harness runs (stage 6); see docs/eval.md."""

    output_dir: Path | None = Field(None, description="Default: <output_dir>/eval.")
    backend: Literal["hf", "vllm"] = Field(
        "hf", description="lm-eval model: 'hf' (transformers, CPU or GPU) or 'vllm' (GPUs, data parallel)."
    )
    vllm: EvalVLLMConfig = Field(default_factory=EvalVLLMConfig, description="Settings of eval.backend: vllm.")
    suite: str | None = Field(
        "card",
        description="Named suite: 'card' (the card's 7 benchmarks, hub data), 'local' or 'demo' (offline), or null.",
    )
    tasks: list[str] = Field(
        default_factory=list, description="Extra lm-eval task names (any task lm-eval knows, or dante's local ones)."
    )
    models: list[str] = Field(
        default_factory=lambda: ["student"], description="'student', 'teacher', 'base' or model paths / hub ids."
    )
    student_weights: Literal["auto", "merged", "adapter"] = Field(
        "auto",
        description=(
            "A LoRA student: 'merged' (<student>/merged), 'adapter' (the base with peft's adapter, lm-eval's "
            "peft=), or 'auto' (merged when it was saved)."
        ),
    )
    limit: float | None = Field(
        None,
        gt=0,
        description="lm-eval --limit: rows per task (>= 1) or a fraction (< 1). Scores are flagged as partial.",
    )
    batch_size: int | str = Field(1, description="Batch size, or 'auto' / 'auto:N' (lm-eval).")
    dtype: str = Field("auto", description="Weights dtype: auto, float32, bfloat16, float16.")
    device: str = Field("auto", description="'auto' (cuda if available, else cpu), 'cpu', 'cuda', 'cuda:1', ...")
    num_fewshot: int | None = Field(
        None, ge=0, description="Override every task's shots (breaks comparability; flagged in the report)."
    )
    allow_code_execution: bool = Field(False, description="Run generated code (HumanEval/MBPP). Off unless asked.")
    code_timeout_s: float = Field(
        10.0, gt=0.0, description="Per-sample timeout of code execution (dante's local code tasks)."
    )
    max_gen_toks: int | None = Field(
        None, ge=1, description="Cap on generated tokens per sample (default: each task's own; flagged when set)."
    )
    max_gen_toks_by_model: dict[str, int] = Field(
        default_factory=dict,
        description="A generation budget per model label (teacher, base, student, or the path as in eval.models), "
        "over max_gen_toks: a thinking model needs room for its thinking before the answer.",
    )
    system_instruction_by_model: dict[str, str] = Field(
        default_factory=dict,
        description="A system prompt per model label (teacher, base, student, or the path as in eval.models), "
        "lm-eval's system_instruction: score a teacher as it was asked to answer in the cache (prompts.system_prompt, "
        "e.g. told to reason step by step) while the students get the question alone. Flagged in the report.",
    )
    think_end_token: str | None = Field(
        None,
        description="The end-of-thinking marker of thinking models (e.g. '</think>'): each generation is cut "
        "after its last occurrence before answers are extracted and scored (lm-eval's think_end_token). With the "
        "hf backend a generation whose thinking block never ended (opened by it or its template's prompt) is "
        "scored as no answer and counted in the report; one with no thinking is scored as it is. Null: "
        "generations scored whole.",
    )
    enable_thinking: bool | None = Field(
        None, description="The chat template's thinking switch at evaluation (with apply_chat_template); null: default."
    )
    apply_chat_template: bool = Field(
        False, description="Render prompts with the model's chat template (few-shot as multi-turn)."
    )
    log_samples: bool = Field(True, description="Write per-sample inputs/outputs next to the raw results.")
    seed: int | None = Field(
        None, description="Seed for lm-eval's python/numpy/torch/few-shot RNGs (default: lm-eval's own)."
    )


class ReportConfig(Section):
    """The run report (tables, plots, model card); see docs/eval.md."""

    output_dir: Path | None = Field(None, description="Default: <output_dir>/report.")
    title: str | None = Field(None, description="Report title (default: the recipe name).")
    include_card_reference: bool = Field(
        True, description="Add the card's published numbers as reference rows (marked as not measured here)."
    )
    model_card: bool = Field(True, description="Write a Hugging Face model card README.md for the student.")
    model_name: str | None = Field(None, description="Model name in the model card (default: the recipe name).")


# Recipe keys renamed since recipes were first written: (old path, new path). A recipe or an
# override that uses an old name still loads, with a one-line notice (``Recipe._renamed_keys``).
RENAMED_KEYS = (
    (("cache", "engine"), ("teacher", "dispatch")),
    (("cache", "ray"), ("teacher", "ray")),
    (("cache", "batch"), ("teacher", "batch_api")),
)


def rename_keys(data: dict[str, Any], notice=None) -> dict[str, Any]:
    """``data`` with every old key of ``RENAMED_KEYS`` moved to its new place (an error when both
    are set); ``notice`` gets one line per key moved."""
    for (old_sec, old_key), (new_sec, new_key) in RENAMED_KEYS:
        section = data.get(old_sec)
        if not isinstance(section, dict) or old_key not in section:
            continue
        data[old_sec] = section = dict(section)
        value = section.pop(old_key)
        target = data.get(new_sec)
        target = target.model_dump() if isinstance(target, BaseModel) else dict(target or {})
        if new_key in target:
            raise ValueError(f"{old_sec}.{old_key} and {new_sec}.{new_key} are both set: keep {new_sec}.{new_key}")
        data[new_sec] = {**target, new_key: value}
        if notice is not None:
            notice(f"recipe key {old_sec}.{old_key} is now {new_sec}.{new_key}; read as such")
    return data


def _notice(line: str) -> None:
    print(f"dante: {line}", file=sys.stderr)


class Recipe(Section):
    """A whole run: every stage reads this one tree."""

    @model_validator(mode="before")
    @classmethod
    def _renamed_keys(cls, data: Any) -> Any:
        return rename_keys(dict(data), _notice) if isinstance(data, dict) else data

    name: str = Field(
        "dante-run", description="Run name: the report's title, the trackers' project, the model card's name."
    )
    output_dir: Path = Field(Path("runs/dante-run"), description="Run folder; stage folders default inside it.")
    teacher: TeacherConfig = Field(
        default_factory=TeacherConfig, description="Who writes the completions, and how (dante.teacher)."
    )
    prompts: PromptsConfig = Field(
        default_factory=PromptsConfig, description="Where the prompts come from (dante.prompts)."
    )
    cache: CacheConfig = Field(default_factory=CacheConfig, description="The teacher cache on disk (dante.cache).")
    student: StudentConfig = Field(default_factory=StudentConfig, description="The model being distilled into.")
    train: TrainConfig = Field(
        default_factory=TrainConfig, description="Optimisation, data and the objective (dante.train)."
    )
    eval: EvalConfig = Field(default_factory=EvalConfig, description="lm-evaluation-harness runs (dante.eval).")
    report: ReportConfig = Field(default_factory=ReportConfig, description="The run report (dante.report).")
    source_file: str | None = Field(None, exclude=True, description="Where the recipe was loaded from (not saved).")

    # Stage folders: explicit setting, else inside output_dir (dante.layout).
    @property
    def prompts_dir(self) -> Path:
        return layout.stage_dir(self.output_dir, "prompts", self.prompts.dir)

    @property
    def cache_dir(self) -> Path:
        """The one cache folder (``dante cache`` writes it); an error when cache.dir names several."""
        paths = self.cache.dir if isinstance(self.cache.dir, list) else [self.cache.dir]
        if len(paths) > 1 or layout.is_pattern(paths[0]):
            raise ConfigError(
                "cache.dir names several folders; this step writes or reads one",
                field="cache.dir",
                hint="give one folder here (several folders are for train, stats, validate and export)",
            )
        return layout.stage_dir(self.output_dir, "cache", paths[0])

    @property
    def cache_dirs(self) -> list[Path]:
        """The cache folders to read (training, stats, export): cache.dir's folders and globs expanded."""
        if not isinstance(self.cache.dir, list) and not layout.is_pattern(self.cache.dir):
            return [self.cache_dir]
        return layout.expand_folders(self.cache.dir)

    @property
    def student_dir(self) -> Path:
        return layout.stage_dir(self.output_dir, "student", self.train.output_dir)

    @property
    def eval_dir(self) -> Path:
        return layout.stage_dir(self.output_dir, "eval", self.eval.output_dir)

    @property
    def report_dir(self) -> Path:
        return layout.stage_dir(self.output_dir, "report", self.report.output_dir)
