"""`dante eval`: score checkpoints (student, teacher, base, any path) with lm-evaluation-harness
used as a library (stage 6); raw results per model and task, then a flat scores.json.

One ``simple_evaluate`` call per (model, task), so each task keeps its own shot count, a task
that cannot run (hub data offline) is recorded and the others still run, and raw files are
lm-eval's own. Generated code runs only with ``eval.allow_code_execution``.
"""

# lm-eval (and through it torch and transformers) is imported where a model is evaluated: the
# CLI and the report read this module's helpers without it.

from __future__ import annotations

import difflib
import importlib.metadata as md
import json
import os
import re
import time
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from importlib.util import find_spec
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from dante.benchmarks import TaskSpec, local_module, resolve_tasks, tasks_dir
from dante.config import EvalConfig, Recipe, save_resolved
from dante.errors import ConfigError, DanteError
from dante.eval.scores import read_json, write_scores
from dante.io import atomic_write_json, atomic_write_text
from dante.layout import ADAPTER_CONFIG, MERGED
from dante.models import default_device, resolve_dtype, resolve_model
from dante.procedural import DERIVED_FROM_BENCHMARKS
from dante.progress import stage_progress
from dante.prompts import is_procedural, procedural_task
from dante.teacher.reasoning import prompt_opens_thinking, split_inline

console = Console(stderr=True)


@dataclass(frozen=True)
class ModelRef:
    """A model to evaluate: its label (folder name under eval_dir) and where it comes from."""

    label: str
    ref: str
    gguf_file: str | None = None
    trust_remote_code: bool = False
    peft: str | None = None  # a LoRA adapter folder applied on ``ref`` (lm-eval's peft=)


@dataclass
class EvalSummary:
    """What `dante eval` did: scores.json per model and the headline numbers."""

    eval_dir: Path
    scores_files: list[Path] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)
    not_scored: list[dict[str, str]] = field(default_factory=list)
    seconds: float = 0.0

    def __rich__(self) -> Table:
        table = Table(title=f"eval: {self.eval_dir}", title_justify="left")
        for col in ("model", "task", "shots", "metric", "score", "95% CI", "n"):
            table.add_column(col, justify="right" if col in ("shots", "score", "n") else "left")
        for r in self.rows:
            ci = f"{r['ci95'][0]:.3f}-{r['ci95'][1]:.3f}" if r.get("ci95") else "-"
            table.add_row(
                r["model"],
                r["task"],
                str(r["shots"]),
                f"{r['metric']} ({r['filter']})",
                f"{r['value']:.4f}",
                ci,
                str(r.get("n_samples")),
            )
        for p in self.not_scored:
            table.add_row(p.get("model", ""), p["task"], "", p["status"], "-", p.get("reason", "")[:60], "")
        return table

    def __str__(self) -> str:
        lines = [f"eval: {self.eval_dir} ({self.seconds:.0f}s)"]
        lines += [
            f"  {r['model']} {r['task']} {r['shots']}-shot {r['metric']} ({r['filter']}): {r['value']:.4f} "
            f"n={r.get('n_samples')}"
            for r in self.rows
        ]
        lines += [f"  {p.get('model', '')} {p['task']}: {p['status']} ({p.get('reason', '')})" for p in self.not_scored]
        return "\n".join(lines)


# -- what to evaluate --------------------------------------------------------------------


def model_refs(recipe: Recipe) -> list[ModelRef]:
    """``eval.models`` -> ModelRefs: 'student' (the trained folder), 'teacher', 'base', or a path/hub id."""
    refs: list[ModelRef] = []
    for name in recipe.eval.models:
        if name == "student":
            ref = student_ref(recipe)
        elif name == "teacher":
            ref = ModelRef("teacher", recipe.teacher.model, None, recipe.teacher.trust_remote_code)
        elif name == "base":
            ref = ModelRef("base", recipe.student.model, recipe.student.gguf_file, recipe.student.trust_remote_code)
        else:
            ref = ModelRef(_label(name), name)
        if not ref.ref:
            raise ConfigError(
                f"model {name!r} is not set in the recipe",
                field="eval.models",
                hint="set teacher.model / student.model, or give a path",
            )
        if any(r.label == ref.label for r in refs):
            ref = replace(ref, label=f"{ref.label}-{len(refs)}")
        refs.append(ref)
    if not refs:
        raise ConfigError("no model to evaluate", field="eval.models", hint="e.g. [student, base]")
    return refs


def student_ref(recipe: Recipe) -> ModelRef:
    """The trained student: its folder, or for a LoRA student (``student.peft``) the merged folder
    or the base model with the adapter, as ``eval.student_weights`` says."""
    folder, choice = recipe.student_dir, recipe.eval.student_weights
    if not (folder / ADAPTER_CONFIG).is_file():
        if not (folder / "config.json").is_file():
            raise ConfigError(
                "no trained student checkpoint here (run `dante train` first)",
                file=folder,
                field="eval.models",
                hint="or evaluate another model with --model PATH",
            )
        return ModelRef("student", str(folder))
    merged = folder / MERGED
    if choice != "adapter" and (merged / "config.json").is_file():
        return ModelRef("student", str(merged))
    if choice == "merged":
        raise ConfigError(
            "this LoRA student was saved without its merged model",
            file=merged,
            field="eval.student_weights",
            hint="evaluate the adapter (eval.student_weights=adapter), or train with student.peft.save_merged=true",
        )
    st = recipe.student
    return ModelRef("student", st.model, st.gguf_file, st.trust_remote_code, peft=str(folder))


def _label(ref: str) -> str:
    stem = Path(ref.removeprefix("pypi:")).name or ref
    return re.sub(r"[^A-Za-z0-9._-]+", "-", Path(stem).stem if stem.endswith(".gguf") else stem).strip("-") or "model"


def task_manager(specs: list[TaskSpec]):
    """lm-eval's TaskManager with dante's task YAMLs; lm-eval's own tasks only when asked for."""
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=str(tasks_dir()), include_defaults=not all(s.local for s in specs))


def check_tasks(specs: list[TaskSpec], cfg: EvalConfig, manager) -> list[TaskSpec]:
    """Unknown names are errors; code tasks need eval.allow_code_execution (named ones: error, suite ones: skipped)."""
    runnable = []
    for spec in specs:
        entry = manager.task_index.get(spec.task)
        if entry is None:
            close = difflib.get_close_matches(spec.task, manager.all_tasks, n=3)
            raise ConfigError(
                f"lm-eval knows no task {spec.task!r}",
                field="eval.tasks",
                hint=f"did you mean {', '.join(close)}?" if close else "see `lm-eval ls tasks`",
            )
        unsafe = spec.code or bool((getattr(entry, "cfg", None) or {}).get("unsafe_code"))
        if unsafe and not cfg.allow_code_execution:
            if spec.task in cfg.tasks:
                raise ConfigError(
                    f"{spec.task} runs model-generated code",
                    field="eval.allow_code_execution",
                    hint=(
                        "pass --allow-code-execution (or eval.allow_code_execution=true) to run it, "
                        "sandboxed by a per-sample timeout"
                    ),
                )
            console.print(
                f"[yellow]skipped {spec.task}[/]: it runs generated code; pass --allow-code-execution to include it"
            )
            continue
        runnable.append(spec)
    return runnable


def contamination_note(recipe: Recipe, spec: TaskSpec) -> str | None:
    """A note when the distillation prompts come from the same GSM8K rows a local task evaluates,
    from the split a procedural task evaluates, or from a reasoning-gym task built on that benchmark."""
    p = recipe.prompts
    if is_procedural(p):
        task = procedural_task(p)
        derived = DERIVED_FROM_BENCHMARKS.get(task)
        if derived and derived.split()[0].lower() in spec.benchmark.lower():
            return f"distillation prompts are reasoning-gym {task}, derived from {derived}: not a held-out score"
        if spec.procedural == (task, p.split):
            return f"distillation prompts are the {p.split} split this task evaluates: distil on the train split"
        return None
    if not spec.task.startswith("gsm8k_local") or "gsm8k" not in (p.source or "").lower():
        return None
    if p.format == "datasets" and p.split != "test":
        return None
    parse_rows = local_module("gsm8k_local/gsm8k_utils.py").parse_rows
    a0, a1 = parse_rows(p.rows)
    b0, b1 = parse_rows(spec.rows)
    overlap = max(0, min(a1, b1) - max(a0, b0))
    if overlap == 0:
        return None
    return (
        f"{overlap} evaluated rows ({spec.rows}) are also distillation prompts (prompts.rows={p.rows or 'all'}); "
        "use gsm8k_local_heldout with prompts.rows='0:600'"
    )


# -- running ------------------------------------------------------------------------------


@contextmanager
def code_execution(cfg: EvalConfig):
    """Allow dante's local code tasks to run code (and set their timeout) only inside this block."""
    # HF_ALLOW_CODE_EVAL: the opt-in of lm-eval's stock humaneval/mbpp (hf evaluate's code_eval).
    keys = {
        "DANTE_ALLOW_CODE_EXECUTION": "1",
        "DANTE_CODE_TIMEOUT_S": str(cfg.code_timeout_s),
        "HF_ALLOW_CODE_EVAL": "1",
    }
    old = {k: os.environ.get(k) for k in keys}
    if cfg.allow_code_execution:
        os.environ.update(keys)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def thinking_args(cfg: EvalConfig) -> dict[str, Any]:
    """lm-eval's own handling of thinking models (HFLM and VLLM alike): the generation cut after the
    end-of-thinking marker before the task's answer extraction, and the template's thinking switch."""
    args: dict[str, Any] = {}
    if cfg.think_end_token is not None:
        args["think_end_token"] = cfg.think_end_token
    if cfg.enable_thinking is not None:
        args["enable_thinking"] = cfg.enable_thinking
    return args


def generation_budget(cfg: EvalConfig, label: str) -> int | None:
    """The model's own eval.max_gen_toks_by_model entry, else eval.max_gen_toks (None: the task's)."""
    return cfg.max_gen_toks_by_model.get(label, cfg.max_gen_toks)


def vllm_model_args(model: ModelRef, resolved, cfg: EvalConfig, lora_rank: int | None = None) -> dict[str, Any]:
    """lm-eval's ``VLLM(...)`` arguments for a model: the folder (GGUF refs converted by dante),
    dtype, batch size, tensor and data parallel sizes, and a LoRA adapter as vLLM's LoRA request
    (lm-eval's ``lora_local_path``; ``max_lora_rank`` from ``student.peft.r``)."""
    v = cfg.vllm
    dtype = cfg.dtype if cfg.dtype in ("auto", "float16", "bfloat16", "float32") else "auto"
    args: dict[str, Any] = {
        "pretrained": resolved.path,
        "dtype": dtype,
        "batch_size": cfg.batch_size if cfg.batch_size != 1 else "auto",  # vLLM batches itself
        "tensor_parallel_size": v.tensor_parallel_size,
        "data_parallel_size": v.data_parallel_size,
        "gpu_memory_utilization": v.gpu_memory_utilization,
        "trust_remote_code": model.trust_remote_code,
        "seed": 1234 if cfg.seed is None else cfg.seed,
    }
    if v.max_model_len:
        args["max_model_len"] = v.max_model_len
    args.update(thinking_args(cfg))
    if model.peft:
        args.update(lora_local_path=model.peft, max_lora_rank=max(lora_rank or 16, 8))
    return args


def load_vllm(model: ModelRef, cfg: EvalConfig, lora_rank: int | None = None):
    """lm-eval's VLLM model; vLLM is optional (extra [vllm]) and needs a GPU."""
    resolved = resolve_model(model.ref, model.gguf_file)
    if find_spec("vllm") is None:
        raise ConfigError(
            "eval.backend: vllm needs vLLM installed (and a GPU)",
            field="eval.backend",
            hint="pip install 'dante-distill[vllm]', or eval.backend=hf",
        )
    if resolved.gguf_file:
        raise ConfigError(
            "eval.backend: vllm takes a transformers folder, not a GGUF file",
            file=resolved.path,
            field="eval.backend",
            hint="evaluate GGUF models with eval.backend=hf (dante converts them)",
        )
    from lm_eval.models.vllm_causallms import VLLM

    return VLLM(**vllm_model_args(model, resolved, cfg, lora_rank)), resolved, "cuda"


def thinking_hflm():
    """lm-eval's HFLM that also keeps every generation as the model wrote it, before lm-eval cuts
    the thinking off (``think_end_token``) and logs only what follows: the report's reasoning
    lengths need the thinking. Kept in the order lm-eval generated them (by length, not by
    question), in ``raw_generations``, each with whether its thinking never ended; ``doc_ids`` then
    gives, per generation, the question it answered (lm-eval's doc_id), from the context lm-eval
    hands its cache hook right after decoding each continuation.

    The rule for a generation whose thinking never ended (it opened ``<think>``, or the model's
    template opened it in the prompt: ``prompt_opened``, and no ``think_end_token`` followed): it
    is scored as no answer (an empty response), since the thinking is not an answer, and counted
    (``unclosed``). A generation with no thinking at all is scored as it is."""
    from lm_eval.models.huggingface import HFLM

    class ThinkingHFLM(HFLM):
        raw_generations: list[tuple[str, bool]]
        doc_ids: list[int | None]
        prompt_opened = False
        _keeping = False

        def generate_until(self, requests, disable_tqdm: bool = False):
            self.raw_generations, self.doc_ids, self._keeping = [], [], True
            waiting: dict[str, list[int | None]] = {}  # context -> the doc_ids of its requests, in order
            for req in requests:
                waiting.setdefault(req.args[0], []).append(getattr(req, "doc_id", None))
            hook = self.cache_hook
            owner = self

            class Pairing:  # lm-eval calls add_partial once per continuation, right after tok_decode
                def add_partial(self, attr, req, res):
                    ids = waiting.get(req[0])
                    owner.doc_ids.append(ids.pop(0) if ids else None)
                    return hook.add_partial(attr, req, res)

                def __getattr__(self, name):
                    return getattr(hook, name)

            self.cache_hook = Pairing()
            try:
                return super().generate_until(requests, disable_tqdm)
            finally:
                self._keeping, self.cache_hook = False, hook

        def tok_decode(self, tokens, skip_special_tokens: bool = True):
            text = super().tok_decode(tokens, skip_special_tokens=skip_special_tokens)
            if self._keeping and isinstance(tokens, list):  # a continuation (the end-of-text id is an int)
                unclosed = thinking_never_ended(text, self.think_end_token, self.prompt_opened)
                self.raw_generations.append((text, unclosed))
                if unclosed:
                    return ""
            return text

    return ThinkingHFLM


# generation kwargs a task may give that leave decoding greedy and unprocessed (lm-eval's own)
_GREEDY_KWARGS = {"until", "max_gen_toks", "do_sample", "temperature"}


def greedy_requests(requests) -> bool:
    """Every request decodes greedily with nothing but stop strings and a length (refillable)."""
    for req in requests:
        kwargs = req.args[1] if len(req.args) > 1 and isinstance(req.args[1], dict) else {}
        if set(kwargs) - _GREEDY_KWARGS or kwargs.get("do_sample") or (kwargs.get("temperature") or 0.0) > 0.0:
            return False
    return True


class StopAfterThinking:
    """A row ends once one of lm-eval's stop strings appears in what it wrote after its thinking
    (after the ``think_end`` marker that closes it; nowhere while a thinking block it or its
    prompt opened is still open), which is where lm-eval cuts the answer. lm-eval's batch path
    checks the strings anywhere, but stops no row before the whole batch has: a row that met one
    inside its thinking wrote on to its answer only while others still ran.

    Called as ``stop(index, ids)`` after each new token of row ``index``. A fast tokenizer's text
    is decoded one token at a time (``tokenizers``' ``DecodeStream``), so a step costs the same at
    the 30 000th token as at the first. Decoding the whole row at every step costs about 0.25 us
    per token (Qwen2.5's tokenizer, AMD EPYC): about 2 s of stop checks for a 4 096-token row, but
    over 2 minutes for a 32 768-token reasoning budget. The streamed text is the whole decode's,
    except that a token ending inside a UTF-8 character waits for the rest of it. Other
    tokenizers, and those that clean up spaces on decode, decode the whole row."""

    def __init__(self, tokenizer: Any, stops: list[str], think_end: Any, prompt_opened: bool) -> None:
        self.tokenizer, self.stops, self.prompt_opened = tokenizer, [s for s in stops if s], prompt_opened
        self.think_end = think_end if isinstance(think_end, str) and think_end else None
        backend = getattr(tokenizer, "backend_tokenizer", None)
        self._backend = None if getattr(tokenizer, "clean_up_tokenization_spaces", False) else backend
        self._rows: dict[int, tuple[Any, int, str]] = {}  # index -> (stream, tokens read, text)

    def text(self, index: int, ids: list[int]) -> str:
        """Row ``index``'s text so far, ``ids`` being all of its tokens."""
        if self._backend is None:
            return self.tokenizer.decode(ids)
        from tokenizers.decoders import DecodeStream

        stream, read, text = self._rows.get(index, (None, 0, ""))
        if stream is None or read > len(ids):  # a new row (or one called out of order): from its start
            stream, read, text = DecodeStream(skip_special_tokens=False), 0, ""
        for token in ids[read:]:
            text += stream.step(self._backend, token) or ""
        self._rows[index] = (stream, len(ids), text)
        return text

    def __call__(self, index: int, ids: list[int]) -> bool:
        if not self.stops:
            return False
        text = self.text(index, ids)
        if self.think_end is not None:
            split = split_inline(text, self.think_end, opened=self.prompt_opened)
            if split.reasoning is not None and not split.closed:
                return False
            text = split.answer if split.reasoning is not None else text
        found = any(s in text for s in self.stops)
        if found:
            self._rows.pop(index, None)
        return found


def refilling(base):
    """lm-eval's HFLM class ``base`` whose greedy generation runs on the hf teacher's refilling
    schedule (``dante.teacher.refill``; ``eval.schedule: refill``): all of a task's requests in one
    call, ``refill_slots`` rows decoding at a time, a finished row replaced at once, the prompts'
    shared prefix computed once. Sampling, other generation kwargs, and models ``generate`` would
    process or with sliding-window caches keep lm-eval's batches."""

    class Refilling(base):
        refill_slots = 16
        prompt_opened = False

        def _refills(self) -> bool:
            from dante.teacher.refill import refillable

            if getattr(self, "_refill_model", None) is None:
                self._refill_model = refillable(self.model)
            return self._refill_model

        def generate_until(self, requests, disable_tqdm: bool = False):
            if not requests or not greedy_requests(requests) or not self._refills():
                return super().generate_until(requests, disable_tqdm)
            from tqdm import tqdm

            batch, self.batch_size_per_gpu, self._refilling = self.batch_size_per_gpu, len(requests), True
            # lm-eval's own bar moves once per batch, here once per task: this one moves as rows end
            self._refill_bar = tqdm(
                total=len(requests),
                disable=disable_tqdm or self.rank != 0,
                desc="Running generate_until requests (refilling)",
            )
            try:  # one lm-eval batch: the schedule keeps refill_slots rows decoding
                return super().generate_until(requests, disable_tqdm=True)
            finally:
                self.batch_size_per_gpu, self._refilling = batch, False
                self._refill_bar.close()

        def _model_generate(self, context, max_length: int, stop: list[str], **generation_kwargs):
            if not getattr(self, "_refilling", False):
                return super()._model_generate(context, max_length, stop, **generation_kwargs)
            import torch

            from dante.teacher.refill import refill_greedy

            mask = generation_kwargs.get("attention_mask")
            if mask is None:
                mask = torch.ones_like(context)
            rows = [ids[m.bool()].tolist() for ids, m in zip(context, mask, strict=True)]  # lm-eval pads left
            eos = self.model.generation_config.eos_token_id
            eos_ids = set(eos if isinstance(eos, list) else [eos]) | {self.tokenizer.eos_token_id}
            pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else min(eos_ids - {None})
            width = context.shape[1]
            out = torch.full((len(rows), max_length), pad, dtype=context.dtype, device=context.device)
            out[:, :width] = context
            for row in refill_greedy(
                self.model,
                rows,
                slots=self.refill_slots,
                max_new_tokens=max_length - width,
                eos_ids=eos_ids - {None},
                pad_id=pad,
                stop=StopAfterThinking(self.tokenizer, stop, self.think_end_token, self.prompt_opened),
            ):
                out[row.index, width : width + len(row.ids)] = torch.tensor(row.ids, dtype=context.dtype)
                self._refill_bar.update(1)
            return out

    return Refilling


def generations_jsonl(lm) -> str:
    """The kept generations, one JSON line each, in question order with their ``doc_id`` where
    every one was paired with its question (else in the order lm-eval generated them, without)."""
    rows = [{"text": t, "thinking_unclosed": u} for t, u in lm.raw_generations]
    ids = getattr(lm, "doc_ids", [])
    if len(ids) == len(rows) and None not in ids:
        rows = [{"doc_id": i, **row} for i, row in sorted(zip(ids, rows, strict=True), key=lambda x: x[0])]
    return "".join(json.dumps(row) + "\n" for row in rows)


def thinking_never_ended(text: str, close: Any, prompt_opened: bool) -> bool:
    """A generation whose thinking block (opened by it, or by its prompt) has no end marker."""
    if not isinstance(close, str) or not close:
        return False  # an end given as a token id: lm-eval cut the thinking before decoding
    split = split_inline(text, close, opened=prompt_opened)
    return split.reasoning is not None and not split.closed


def load_lm(model: ModelRef, cfg: EvalConfig, lora_rank: int | None = None):
    """lm-eval's HFLM (or, with ``eval.backend: vllm``, its VLLM) on the resolved folder
    (pypi:/GGUF refs resolved by dante.models)."""
    if cfg.backend == "vllm":
        return load_vllm(model, cfg, lora_rank)
    from lm_eval.models.huggingface import HFLM

    resolved = resolve_model(model.ref, model.gguf_file)
    device = default_device() if cfg.device == "auto" else cfg.device
    kwargs: dict[str, Any] = {
        "pretrained": resolved.path,
        "device": device,
        "dtype": resolve_dtype(cfg.dtype, device),  # auto: bf16 on a CPU only where it is native
        "batch_size": cfg.batch_size,
        "trust_remote_code": model.trust_remote_code,
    }
    if resolved.gguf_file:
        kwargs["gguf_file"] = resolved.gguf_file
    kwargs.update(thinking_args(cfg))
    if model.peft:  # the base with the LoRA adapter applied by peft; the adapter folder has the tokenizer
        kwargs.update(peft=model.peft, tokenizer=model.peft)
    try:
        cls = thinking_hflm() if cfg.think_end_token is not None else HFLM
        if cfg.schedule == "refill":
            cls = refilling(cls)
        lm = cls(**kwargs)
        if cfg.schedule == "refill" and isinstance(cfg.batch_size, int):
            lm.refill_slots = cfg.batch_size
    except (OSError, ValueError) as exc:
        raise DanteError(
            f"lm-eval cannot load model {model.label!r}: {exc}", file=resolved.path, field="eval.models"
        ) from None
    if cfg.think_end_token is not None and cfg.apply_chat_template:
        lm.prompt_opened = prompt_opens_thinking(lm.apply_chat_template([{"role": "user", "content": "q"}]))
    return lm, resolved, device


def lm_eval_limit(cfg: EvalConfig) -> int | float | None:
    """eval.limit as lm-eval reads it: a row count (int) from 1 up, a fraction below 1."""
    return None if cfg.limit is None else (int(cfg.limit) if cfg.limit >= 1 else cfg.limit)


def run_task(
    lm, spec: TaskSpec, cfg: EvalConfig, manager, max_gen_toks: int | None = None, system: str | None = None
) -> dict[str, Any]:
    """One lm-eval run; returns lm-eval's result dict (with 'samples' when logged). ``max_gen_toks``:
    the model's generation budget (``generation_budget``; None: the task's own); ``system``: its
    system instruction (eval.system_instruction_by_model)."""
    import lm_eval

    limit = lm_eval_limit(cfg)
    seeds = (
        {}
        if cfg.seed is None
        else dict.fromkeys(("random_seed", "numpy_random_seed", "torch_random_seed", "fewshot_random_seed"), cfg.seed)
    )
    return lm_eval.simple_evaluate(
        model=lm,
        tasks=[spec.task],
        num_fewshot=spec.shots,
        limit=limit,
        task_manager=manager,
        gen_kwargs={"max_gen_toks": max_gen_toks} if max_gen_toks else None,
        apply_chat_template=cfg.apply_chat_template,
        fewshot_as_multiturn=cfg.apply_chat_template,
        log_samples=cfg.log_samples,
        confirm_run_unsafe_code=cfg.allow_code_execution,
        system_instruction=system,
        **seeds,
    )


def save_raw(model_dir: Path, task: str, raw: dict[str, Any]) -> None:
    """results_<task>.json (lm-eval's dict as is, samples apart) and samples_<task>.jsonl."""
    from lm_eval.utils import handle_non_serializable

    samples = raw.pop("samples", None)
    atomic_write_text(
        model_dir / f"results_{task}.json", json.dumps(raw, indent=2, default=handle_non_serializable) + "\n"
    )
    if samples is not None:
        lines = [
            json.dumps(s, default=handle_non_serializable) for task_samples in samples.values() for s in task_samples
        ]
        atomic_write_text(model_dir / f"samples_{task}.jsonl", "\n".join(lines) + "\n")


def _info(model: ModelRef, resolved, device: str, spec: TaskSpec, cfg: EvalConfig, recipe: Recipe) -> dict[str, Any]:
    return {
        "model": model.label,
        "model_ref": model.ref,
        "model_path": resolved.path,
        "peft_adapter": model.peft,
        "gguf_file": resolved.gguf_file,
        "spec": spec.as_dict(),
        "limit": lm_eval_limit(cfg),
        "max_gen_toks": generation_budget(cfg, model.label),
        "system_instruction": cfg.system_instruction_by_model.get(model.label),
        "think_end_token": cfg.think_end_token,
        "apply_chat_template": cfg.apply_chat_template,
        "backend": cfg.backend,
        "dtype": resolve_dtype(cfg.dtype, device) if cfg.backend == "hf" else cfg.dtype,  # what was loaded
        "device": device,
        "batch_size": cfg.batch_size,
        "seed": cfg.seed,
        "lm_eval_version": md.version("lm_eval"),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "contamination": contamination_note(recipe, spec),
    }


def evaluate_model(model: ModelRef, specs: list[TaskSpec], recipe: Recipe, manager, progress, bar) -> Path:
    """Every task on one model; returns its scores.json."""
    cfg = recipe.eval
    model_dir = recipe.eval_dir / model.label
    model_dir.mkdir(parents=True, exist_ok=True)
    save_resolved(recipe, model_dir)
    lm, resolved, device = load_lm(model, cfg, recipe.student.peft.r if recipe.student.peft else None)
    for spec in specs:
        progress.update(bar, description=f"{model.label}: {spec.task}")
        info = _info(model, resolved, device, spec, cfg, recipe)
        t0 = time.perf_counter()
        try:
            with code_execution(cfg):
                raw = run_task(lm, spec, cfg, manager, info["max_gen_toks"], info["system_instruction"])
        except Exception as exc:  # a task that cannot run (e.g. hub data offline) must not lose the others
            console.print(f"[red]{model.label} {spec.task} failed[/]: {type(exc).__name__}: {exc}")
            atomic_write_json(
                model_dir / f"dante_{spec.task}.json",
                {**info, "status": "failed", "reason": f"{type(exc).__name__}: {exc}"},
            )
            progress.advance(bar)
            continue
        save_raw(model_dir, spec.task, raw)
        if getattr(lm, "raw_generations", None) is not None:  # the thinking lm-eval cut off, for the report
            atomic_write_text(model_dir / f"generations_{spec.task}.jsonl", generations_jsonl(lm))
        atomic_write_json(
            model_dir / f"dante_{spec.task}.json", {**info, "status": "ok", "wall_time_s": time.perf_counter() - t0}
        )
        progress.advance(bar)
    return write_scores(model_dir)


def evaluate(recipe: Recipe) -> EvalSummary:
    """Run ``eval.suite`` + ``eval.tasks`` on every model of ``eval.models``; write raw results and scores.json."""
    t0 = time.perf_counter()
    cfg = recipe.eval
    specs = resolve_tasks(cfg)
    models = model_refs(recipe)
    manager = task_manager(specs)
    specs = check_tasks(specs, cfg, manager)
    if not specs:
        raise ConfigError(
            "every task was skipped", field="eval.allow_code_execution", hint="allow code execution or add other tasks"
        )
    recipe.eval_dir.mkdir(parents=True, exist_ok=True)
    save_resolved(recipe, recipe.eval_dir)
    summary = EvalSummary(recipe.eval_dir)
    with stage_progress("", console=console) as progress:
        bar = progress.add_task("eval", total=len(models) * len(specs), info="")
        for model in models:
            path = evaluate_model(model, specs, recipe, manager, progress, bar)
            data = read_json(path)
            summary.scores_files.append(path)
            summary.rows += [r for r in data["scores"] if r["primary"] and r["task"] in {s.task for s in specs}]
            summary.not_scored += [
                {**p, "model": model.label} for p in data["not_scored"] if p["task"] in {s.task for s in specs}
            ]
    summary.seconds = time.perf_counter() - t0
    if not summary.rows and summary.not_scored:
        first = summary.not_scored[0]
        raise DanteError(
            f"no task could be scored ({len(summary.not_scored)} failed; first: {first['task']}: "
            f"{first.get('reason', '')})",
            file=recipe.eval_dir,
            field="eval.tasks",
            hint="hub tasks need network access; offline, use suite 'local' or 'demo'",
        )
    return summary
