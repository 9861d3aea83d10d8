"""Suites and the offline task data: what `dante eval` runs, with which shots and metric."""

import pytest

from dante.benchmarks import SUITES, local_module, resolve_tasks
from dante.config import EvalConfig
from dante.errors import ConfigError


def test_card_suite_has_the_cards_seven_settings():
    card = {s.task: (s.shots, s.metric, s.filter) for s in SUITES["card"]}
    assert card == {
        "hellaswag": (10, "acc_norm", "none"),
        "gsm8k": (8, "exact_match", "strict-match"),
        "arc_challenge": (25, "acc_norm", "none"),
        "mmlu": (5, "acc", "none"),
        "mmlu_pro": (5, "exact_match", "custom-extract"),
        "humaneval": (0, "pass@1", "create_test"),
        "mbpp": (0, "pass_at_1", "none"),
    }
    assert {s.task for s in SUITES["card"] if s.code} == {"humaneval", "mbpp"}


def test_card_suite_names_real_lm_eval_tasks():
    from lm_eval.tasks import TaskManager

    from dante.benchmarks import tasks_dir

    manager = TaskManager(include_path=str(tasks_dir()))
    for suite in SUITES.values():
        for spec in suite:
            assert spec.task in manager.all_tasks, spec.task


def test_resolve_tasks_suite_then_extra_tasks_without_duplicates():
    specs = resolve_tasks(EvalConfig(suite="demo", tasks=["gsm8k_local_heldout", "arc_easy"]))
    assert [s.task for s in specs] == ["gsm8k_local_heldout", "humaneval_local", "arc_easy"]
    assert specs[-1].shots is None and specs[-1].metric is None  # ad-hoc task: lm-eval's defaults


def test_num_fewshot_override_is_recorded_in_the_spec():
    (spec,) = resolve_tasks(EvalConfig(suite=None, tasks=["gsm8k_local"], num_fewshot=2))
    assert spec.shots == 2 and "overridden" in spec.note


def test_unknown_suite_and_empty_selection_are_config_errors():
    with pytest.raises(ConfigError, match="eval.suite"):
        resolve_tasks(EvalConfig(suite="cardd"))
    with pytest.raises(ConfigError, match="nothing to evaluate"):
        resolve_tasks(EvalConfig(suite=None))


def test_gsm8k_local_rows_and_heldout_split():
    gsm = local_module("gsm8k_local/gsm8k_utils.py")
    full = gsm.read_rows("0:1319")
    heldout = gsm.read_rows("600:1319")
    assert len(full) == 1319 and len(heldout) == 719
    assert heldout[0]["row"] == 600 and heldout[0]["question"] == full[600]["question"]
    assert all("#### " in r["answer"] for r in full[:20])
    with pytest.raises(ValueError):
        gsm.parse_rows("600:2000")


def test_gsm8k_fewshot_exemplars_are_not_test_rows():
    gsm = local_module("gsm8k_local/gsm8k_utils.py")
    questions = {r["question"].strip() for r in gsm.read_rows(None)}
    shots = gsm.fewshot_samples()
    assert len(shots) == 8
    assert not questions & {s["question"].strip() for s in shots}
    assert all(s["answer"].rstrip().split("#### ")[-1].isdigit() for s in shots)


def test_humaneval_local_has_164_problems():
    he = local_module("humaneval_local/humaneval_utils.py")
    problems = he.read_problems()
    assert len(problems) == 164 and problems[0]["task_id"] == "HumanEval/0"
