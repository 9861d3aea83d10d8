"""`dante prompts check|build` and `dante plan` on a curated recipe: printed counts, located errors."""

import json

import yaml
from typer.testing import CliRunner

from dante.cli import app
from dante.layout import PROMPTS_MANIFEST


def write_recipe(tmp_path, **decontaminate):
    rows = [{"prompt": f"Tell me about the number {i} and why it matters to people."} for i in range(20)]
    rows += [{"prompt": rows[3]["prompt"].upper()}]  # an exact duplicate
    (tmp_path / "p.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "bench.jsonl").write_text(
        json.dumps({"question": "Tell me about the number 7 and why it matters to people."}) + "\n"
    )
    recipe = {
        "name": "cli",
        "output_dir": str(tmp_path / "run"),
        "prompts": {
            "source": "p.jsonl",  # relative to the recipe's folder
            "dedup": {"exact": True},
            "decontaminate": {"files": ["bench.jsonl"], **decontaminate},
        },
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def test_check_prints_and_writes_nothing_build_writes(tmp_path):
    recipe = write_recipe(tmp_path)
    result = CliRunner().invoke(app, ["prompts", "check", str(recipe)])
    assert result.exit_code == 0, result.output
    assert "19 prompts of 21 read (check: nothing written)" in result.output
    assert "bench.jsonl" in result.output
    assert not (tmp_path / "run").exists()
    result = CliRunner().invoke(app, ["prompts", "build", str(recipe)])
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "run" / "prompts" / "prompts_manifest.json").read_text())
    assert manifest["prompts"] == 19
    assert [(r["row"], r["step"]) for r in manifest["removed"]] == [(7, "decontaminate"), (20, "exact_dedup")]
    assert (tmp_path / "run" / "prompts" / "resolved_recipe.yaml").is_file()
    plan = CliRunner().invoke(app, ["plan", str(recipe)])
    assert plan.exit_code == 0, plan.output
    assert "curated set in" in plan.output and "21 read" in plan.output


def test_unknown_task_is_one_located_line(tmp_path):
    recipe = write_recipe(tmp_path, tasks=["gsm8k_locall"])
    result = CliRunner().invoke(app, ["prompts", "build", str(recipe)])
    assert result.exit_code == 1
    assert "prompts.decontaminate.tasks" in result.output and "unknown evaluation task" in result.output
    assert not (tmp_path / "run").exists()


def test_a_file_with_a_repeated_row_builds_and_the_repeat_is_counted_as_an_exact_duplicate(tmp_path):
    """A prompt file with the same line twice, as a user writes it, and a recipe that curates
    without dedup (like configs/demo.yaml): the repeat reaches exact dedup and is reported there."""
    (tmp_path / "p.jsonl").write_text(
        '{"prompt": "What is 2 + 2?"}\n{"prompt": "Name a colour."}\n{"prompt": "What is 2 + 2?"}\n'
    )
    (tmp_path / "bench.jsonl").write_text('{"question": "Nothing in common with the prompts above."}\n')
    recipe = {
        "name": "repeat",
        "output_dir": str(tmp_path / "run"),
        "prompts": {"source": "p.jsonl", "decontaminate": {"files": ["bench.jsonl"]}},
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    for verb in ("check", "build"):
        result = CliRunner().invoke(app, ["prompts", verb, str(path)])
        assert result.exit_code == 0, result.output
        assert "exact_dedup" in result.output and "p.jsonl:3" in result.output
    manifest = json.loads((tmp_path / "run" / "prompts" / PROMPTS_MANIFEST).read_text())
    assert [(r["location"], r["step"]) for r in manifest["removed"]] == [(f"{tmp_path / 'p.jsonl'}:3", "exact_dedup")]
    assert manifest["prompts"] == 2 and manifest["read"] == 3


def test_an_explicit_id_repeated_with_another_prompt_is_still_an_error(tmp_path):
    (tmp_path / "p.jsonl").write_text('{"id": "a", "prompt": "What is 2 + 2?"}\n{"id": "a", "prompt": "Other."}\n')
    recipe = {
        "name": "repeat",
        "output_dir": str(tmp_path / "run"),
        "prompts": {"source": "p.jsonl", "id_field": "id", "dedup": {"exact": True}},
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    result = CliRunner().invoke(app, ["prompts", "check", str(path)])
    assert result.exit_code != 0
    assert "p.jsonl:2" in result.output and "duplicate prompt id 'a'" in result.output
    assert "with a different prompt" in result.output
