"""Generated code runs only when the user opted in, and then in a process with a timeout."""

import pytest

from dante.benchmarks import local_module, resolve_tasks
from dante.config import load_recipe
from dante.errors import ConfigError
from dante.eval.run import check_tasks, code_execution, evaluate, task_manager


def test_humaneval_refuses_without_allow_code_execution(tmp_path):
    recipe = load_recipe(
        data={
            "output_dir": str(tmp_path),
            "student": {"model": "/nonexistent/model"},
            "eval": {"suite": None, "tasks": ["humaneval_local"], "models": ["base"]},
        }
    )
    with pytest.raises(ConfigError) as err:
        evaluate(recipe)  # refused before any model is loaded
    assert err.value.field == "eval.allow_code_execution"
    assert "--allow-code-execution" in err.value.render()
    assert not (tmp_path / "eval" / "base").exists()


def test_suite_code_tasks_are_skipped_not_run_without_opt_in():
    recipe = load_recipe(data={"eval": {"suite": "demo"}})
    specs = resolve_tasks(recipe.eval)
    kept = check_tasks(specs, recipe.eval, task_manager(specs))
    assert [s.task for s in kept] == ["gsm8k_local_heldout"]


def test_metric_refuses_to_execute_without_the_opt_in(monkeypatch):
    he = local_module("humaneval_local/humaneval_utils.py")
    monkeypatch.delenv("DANTE_ALLOW_CODE_EXECUTION", raising=False)
    monkeypatch.delenv("HF_ALLOW_CODE_EVAL", raising=False)
    with pytest.raises(RuntimeError, match="allow-code-execution"):
        he.pass_at_1(["def check(c):\n    assert c() == 1\n\ncheck(f)"], [["def f():\n    return 1\n"]])


def test_opt_in_is_scoped_to_the_run(monkeypatch):
    monkeypatch.delenv("DANTE_ALLOW_CODE_EXECUTION", raising=False)
    cfg = load_recipe(data={"eval": {"allow_code_execution": True, "code_timeout_s": 3}}).eval
    he = local_module("humaneval_local/humaneval_utils.py")
    with code_execution(cfg):
        assert he.execution_allowed() and he.timeout_s() == 3.0
    assert not he.execution_allowed()


def test_code_runs_in_a_process_with_a_timeout():
    he = local_module("humaneval_local/humaneval_utils.py")
    problem = he.read_problems()[0]
    program = problem["prompt"] + problem["canonical_solution"]
    assert he.run_tests(program, problem["test"], problem["entry_point"], timeout=10)
    assert not he.run_tests(
        problem["prompt"] + "    return None\n", problem["test"], problem["entry_point"], timeout=10
    )
    assert not he.run_tests(
        problem["prompt"] + "    while True:\n        pass\n", problem["test"], problem["entry_point"], timeout=1
    )


def test_cli_eval_refuses_code_task_and_names_the_flag(tmp_path):
    from typer.testing import CliRunner

    from dante.cli import app

    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"output_dir: {tmp_path}\nstudent:\n  model: /nonexistent\neval:\n  models: [base]\n")
    result = CliRunner().invoke(app, ["eval", str(recipe), "--suite", "none", "--task", "humaneval_local"])
    assert result.exit_code == 1
    assert "eval.allow_code_execution" in result.output and "--allow-code-execution" in result.output
