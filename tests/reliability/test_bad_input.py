"""Bad input corpus (tests/reliability/corpus/cases.yaml): every malformed prompt file, cache
record and recipe gives a clear, located error through the real CLI (exit 1, `file:line: field:
problem`, no traceback), and the outputs that existed before are left byte for byte as they were."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from rel_support import ROOT, cli_env, count, snapshot, train_recipe, write_train_cache

CORPUS = Path(__file__).with_name("corpus")
CASES = yaml.safe_load((CORPUS / "cases.yaml").read_text())
GOOD = [{"id": f"p{i}", "prompt": f"Question {i}: what is {i} plus {i}?"} for i in range(3)]
pytestmark = pytest.mark.timeout(300)


def case_id(case: dict) -> str:
    return Path(case.get("file") or case["generate"]).stem + "".join(f"[{a}]" for a in case.get("args", []))


def invoke(args):
    from typer.testing import CliRunner

    from dante.cli import app

    return CliRunner().invoke(app, [str(a) for a in args])


def assert_clean_failure(result, fragments: list[str]) -> None:
    text = " ".join(result.output.split())
    assert result.exit_code == 1, text
    assert isinstance(result.exception, SystemExit), f"uncaught {result.exception!r}"
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in text, f"{fragment!r} not in {text!r}"


def write_prompts(path: Path, rows: list[dict]) -> None:
    if path.suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), path)
    elif path.suffix == ".json":
        path.write_text(json.dumps(rows, indent=2))
    else:
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))


GENERATE = {
    "huge_prompt.jsonl": lambda p: write_prompts(
        p, [GOOD[0], {"id": "p1", "prompt": "x" * (10 * 1024 * 1024)}, GOOD[2]]
    ),
    "wrong_column.parquet": lambda p: write_prompts(p, [{"id": r["id"], "question": r["prompt"]} for r in GOOD]),
    "missing_file.jsonl": lambda p: p.unlink(),
    "missing_recipe.yaml": lambda p: None,
}


def put_input(case: dict, path: Path) -> None:
    if "file" in case:
        shutil.copyfile(CORPUS / case["file"], path)
    else:
        GENERATE[case["generate"]](path)


@pytest.mark.parametrize("case", CASES["prompts"], ids=case_id)
def test_bad_prompt_file_is_a_located_error_and_the_cache_is_untouched(tmp_path, teacher_dir, case):
    source = tmp_path / "data" / f"prompts{Path(case.get('file') or case['generate']).suffix}"
    source.parent.mkdir()
    write_prompts(source, GOOD)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        yaml.safe_dump(
            {
                "output_dir": str(tmp_path / "run"),
                "teacher": {
                    "backend": "hf",
                    "model": str(teacher_dir),
                    "device": "cpu",
                    "max_new_tokens": 2,
                    "top_logprobs": 2,
                },
                "prompts": {"source": str(source)},
            }
        )
    )
    args = ["cache", recipe, *case.get("args", [])]
    first = invoke(args)  # a finished cache made from the good file
    assert first.exit_code == 0, first.output
    before = snapshot(tmp_path / "run")
    put_input(case, source)  # the user then edits (breaks) the prompt file and re-runs
    assert_clean_failure(invoke(args), [f.format(file=source) for f in case["expect"]])
    assert snapshot(tmp_path / "run") == before
    count("faults: bad inputs rejected (prompt files)")


def previous_student(folder: Path) -> None:
    """A finished student folder from an earlier run, which a failing run must not touch."""
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(b"weights of an earlier run")
    (folder / "metrics.jsonl").write_text('{"step": 1, "loss": 2.5}\n')
    (folder / "dante_manifest.json").write_text('{"steps": 1}\n')


@pytest.mark.parametrize("case", CASES["records"], ids=case_id)
def test_bad_cache_record_is_a_located_error_in_validate_and_train(tmp_path, student_dir, case):
    cache = tmp_path / "cache"
    cache.mkdir()
    shard = cache / "shard-00000.jsonl"
    put_input(case, shard)
    expect = [f.format(file=shard) for f in case["expect"]]
    checked = invoke(["cache", "validate", cache])
    assert_clean_failure(checked, expect)
    assert "bad" in checked.output

    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(train_recipe(tmp_path / "run", student_dir, cache, steps=1)))
    previous_student(tmp_path / "run" / "student")
    before = snapshot(tmp_path / "run")
    assert_clean_failure(invoke(["train", recipe]), expect)
    assert snapshot(tmp_path / "run") == before
    count("faults: bad inputs rejected (cache records, validate + train)", 2)


@pytest.mark.parametrize("command", ["cache", "train"])
@pytest.mark.parametrize("case", CASES["recipes"], ids=case_id)
def test_bad_recipe_is_a_located_error_and_nothing_is_written(tmp_path, monkeypatch, case, command):
    monkeypatch.chdir(tmp_path)  # the recipes' output_dir is relative
    recipe = tmp_path / Path(case.get("file") or case["generate"]).name
    put_input(case, recipe)
    (tmp_path / "run" / "cache").mkdir(parents=True)
    (tmp_path / "run" / "cache" / "shard-00000.jsonl").write_text(
        json.dumps({"prompt": "p", "teacher_text": "t"}) + "\n"
    )
    before = snapshot(tmp_path)
    assert_clean_failure(
        invoke([command, recipe, *case.get("args", [])]), [f.format(file=recipe) for f in case["expect"]]
    )
    assert snapshot(tmp_path) == before
    count("faults: bad inputs rejected (recipes)")


def damage(cache: Path, how: str) -> None:
    first = (cache / "shard-00000.jsonl").read_text().splitlines()[0]
    if how == "manifest_not_json":
        (cache / "manifest.json").write_text('{"records": 3, "shards": [')
    elif how == "manifest_not_an_object":
        (cache / "manifest.json").write_text("[]\n")
    elif how == "bad_line_in_sealed_shard":
        with open(cache / "shard-00000.jsonl", "a") as fh:
            fh.write('{"prompt": "half a rec\n')
    elif how == "duplicate_id_across_shards":
        with open(cache / "shard-00001.jsonl", "a") as fh:
            fh.write(first + "\n")
    elif how == "partial_repeats_a_sealed_id":
        (cache / ".partial-00002.jsonl").write_text(first + "\n")
    else:
        raise ValueError(how)


@pytest.mark.parametrize("case", CASES["cache-folders"], ids=lambda c: c["damage"])
def test_damaged_cache_folder_is_a_located_error_and_is_left_as_found(tmp_path, teacher_dir, case):
    source = tmp_path / "prompts.jsonl"
    write_prompts(source, GOOD)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        yaml.safe_dump(
            {
                "output_dir": str(tmp_path / "run"),
                "teacher": {
                    "backend": "hf",
                    "model": str(teacher_dir),
                    "device": "cpu",
                    "max_new_tokens": 2,
                    "top_logprobs": 2,
                },
                "prompts": {"source": str(source)},
                "cache": {"shard_size": 2},
            }
        )
    )
    assert invoke(["cache", recipe]).exit_code == 0
    cache = tmp_path / "run" / "cache"
    damage(cache, case["damage"])
    before = snapshot(cache)
    assert_clean_failure(invoke(["cache", recipe]), [f.format(cache=cache) for f in case["expect"]])
    assert snapshot(cache) == before
    count("faults: bad inputs rejected (damaged cache folders)")


@pytest.mark.parametrize(
    "args",
    [
        ["cache", "validate", CORPUS / "records" / "entropy_nan.jsonl"],
        ["cache", CORPUS / "recipes" / "unknown_key.yaml"],
    ],
    ids=["validate", "recipe"],
)
def test_the_installed_dante_command_prints_no_traceback(args):
    """The same path through the real console script, in its own process."""
    dante = Path(sys.executable).with_name("dante")
    cmd = [str(dante)] if dante.exists() else [sys.executable, "-m", "dante.cli"]
    done = subprocess.run([*cmd, *map(str, args)], cwd=ROOT, env=cli_env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and "Traceback" not in done.stdout + done.stderr
    assert f"{args[-1]}:" in " ".join((done.stdout + done.stderr).split())
    count("faults: bad inputs rejected (installed console script)")


def test_prompt_longer_than_max_length_is_a_counted_skip(tmp_path, student_dir):
    """The documented skip: a record whose prompt alone fills train.max_length is dropped and counted."""
    cache = write_train_cache(tmp_path / "cache", n=8)
    long = {"id": "long", "prompt": "tell me about the fox " * 60, "teacher_text": "fox.", "output_entropy": 1.0}
    with open(cache / "shard-00000.jsonl", "a") as fh:
        fh.write(json.dumps(long) + "\n")
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(train_recipe(tmp_path / "run", student_dir, cache, steps=1)))
    done = invoke(["train", recipe])
    assert done.exit_code == 0, done.output
    assert CASES["train-skip"][0]["expect"][0] in " ".join(done.output.split())
    data = json.loads((tmp_path / "run" / "student" / "dante_manifest.json").read_text())["data"]
    assert data["dropped"] == 1 and data["dropped_ids"] == ["long"] and data["kept"] == 8
    count("bad inputs skipped and counted (train data)")
