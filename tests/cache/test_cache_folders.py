"""Caches that span folders (cache.dir: several folders or a glob): training, stats, validate
and export read their union; the same id twice is read once when the records are identical and
an error naming both files otherwise; folders of different teacher settings are reported, and
refused for training unless train.allow_mixed_caches."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).parents[1] / "train"))

from train_helpers import make_cache_lines, recipe_data, write_cache  # noqa: E402

from dante.cache.manifest import mixed_settings  # noqa: E402
from dante.cache.records import cache_files, read_cache, validate_cache  # noqa: E402
from dante.cache.stats import cache_stats  # noqa: E402
from dante.cli import app  # noqa: E402
from dante.config import load_recipe  # noqa: E402
from dante.errors import ConfigError, DanteError, DataError  # noqa: E402


def _node_caches(tmp_path: Path, overlap: int = 0, key: str = "k1", other_key: str | None = None) -> list[Path]:
    """Two node folders of one cache, split by rows; ``overlap`` rows in both (identical)."""
    rows = make_cache_lines(20)
    a = write_cache(tmp_path / "node-0" / "cache", rows[: 10 + overlap])
    b = write_cache(tmp_path / "node-1" / "cache", rows[10:])
    for folder, k in ((a, key), (b, other_key or key)):
        settings = {"teacher": {"model": f"teacher-{k}", "temperature": 0.0}, "prompts": {"source": "p.jsonl"}}
        (folder / "manifest.json").write_text(
            json.dumps({"cache_key": k, "teacher": {"model": f"teacher-{k}"}, "settings": settings})
        )
    return [a, b]


def test_a_glob_and_a_list_read_the_union(tmp_path):
    folders = _node_caches(tmp_path)
    by_glob = read_cache(str(tmp_path / "node-*" / "cache"))
    by_list = read_cache(folders)
    assert [r.id for r in by_glob] == [r.id for r in by_list] and len(by_list) == 20
    assert cache_files(folders) == [*cache_files(folders[0]), *cache_files(folders[1])]
    assert validate_cache(folders) == (20, [])
    assert cache_stats(folders)["records"] == 20
    with pytest.raises(DataError, match="no cache folder matches"):
        read_cache(str(tmp_path / "nothing-*"))


def test_the_same_record_in_two_folders_is_read_once_a_different_one_is_an_error(tmp_path):
    folders = _node_caches(tmp_path, overlap=2)  # rows 10 and 11 in both folders, identical
    assert len(read_cache(folders)) == 20 and validate_cache(folders) == (22, [])
    shard = folders[1] / "shard-00000.jsonl"
    lines = shard.read_text().splitlines()
    changed = json.loads(lines[0])
    changed["teacher_text"] = "another answer"
    shard.write_text("\n".join([json.dumps(changed), *lines[1:]]) + "\n")
    with pytest.raises(DataError) as err:
        read_cache(folders)
    message = err.value.render()
    assert f"duplicate id {changed['id']!r}" in message
    assert str(folders[0] / "shard-00000.jsonl") in message and str(shard) in message
    checked, problems = validate_cache(folders)
    assert [p.field for p in problems] == ["id"]


def test_training_reads_the_union_and_refuses_mixed_teachers_unless_allowed(tmp_path, student_dir):
    from dante.train.loop import train

    folders = _node_caches(tmp_path)
    data = recipe_data(tmp_path / "run", student_dir, folders[0], steps=2)
    data["cache"]["dir"] = str(tmp_path / "node-*" / "cache")
    result = train(load_recipe(data=data))
    manifest = json.loads((result.output_dir / "dante_manifest.json").read_text())
    assert manifest["train_records"] == 20 and manifest["cache_dir"] == [str(f) for f in folders]

    mixed = _node_caches(tmp_path / "mixed", other_key="k2")
    assert mixed_settings(mixed) and "teacher.model: 'teacher-k1' -> 'teacher-k2'" in mixed_settings(mixed)[0]
    data = recipe_data(tmp_path / "run2", student_dir, mixed[0], steps=2)
    data["cache"]["dir"] = [str(f) for f in mixed]
    with pytest.raises(DanteError, match="different teacher/prompt settings") as err:
        train(load_recipe(data=data))
    assert "train.allow_mixed_caches" in err.value.render()
    data["train"]["allow_mixed_caches"] = True
    assert train(load_recipe(data=data)).steps == 2


def test_dante_cache_writes_one_folder(tmp_path):
    recipe = load_recipe(data={"name": "x", "output_dir": str(tmp_path), "cache": {"dir": ["a", "b"]}})
    with pytest.raises(ConfigError, match="several folders"):
        _ = recipe.cache_dir
    assert recipe.cache_dirs == [Path("a"), Path("b")]


def test_cli_stats_validate_and_export_take_several_folders(tmp_path):
    folders = _node_caches(tmp_path, other_key="k2")
    runner = CliRunner()
    done = runner.invoke(app, ["cache", "validate", *map(str, folders)])
    assert done.exit_code == 0 and "20 lines checked, 0 bad" in done.output and "different teacher" in done.output
    done = runner.invoke(app, ["cache", "stats", str(tmp_path / "node-*" / "cache")])
    assert done.exit_code == 0 and "20" in done.output
    done = runner.invoke(app, ["cache", "export", *map(str, folders), "--to", str(tmp_path / "ds")])
    assert done.exit_code == 0, done.output
    assert len(read_cache(tmp_path / "ds")) == 20
