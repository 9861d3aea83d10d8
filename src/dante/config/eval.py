"""The evaluation's and report's sections of the recipe (stages 5-6, ``dante.eval``, ``dante.report``)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from dante.config.base import Section


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
    schedule: Literal["refill", "batch"] = Field(
        "refill",
        description="Greedy generation (hf backend): 'refill' decodes batch_size rows at a time across a task's "
        "requests, a finished row replaced at once and the shared prompt prefix computed once "
        "(dante.teacher.refill); 'batch' is lm-eval's, each batch until its longest row ends.",
    )
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
