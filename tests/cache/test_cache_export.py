"""`dante cache export`: Parquet shards + a dataset card that `datasets` reads both ways, and
an exported folder that `dante train` reads back as a cache (round trip, payload included)."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).parents[1] / "train"))

from dante.cache.payload import decode, encode
from dante.cache.records import read_cache, validate_cache
from dante.cli import app
from dante.tokens import TokenLogprobs


def _cache(tmp_path: Path) -> Path:
    from train_helpers import make_cache_lines, write_cache

    rows = make_cache_lines(12)
    for i, row in enumerate(rows[:6]):  # half the records carry a payload
        toks = [t.encode() for t in row["teacher_text"].split(" ")]
        toks = [t + b" " for t in toks[:-1]] + toks[-1:]
        row["token_logprobs"] = encode(
            TokenLogprobs(toks, [-0.1] * len(toks), [[(t, -0.1), (b"x", -3.0)] for t in toks]), 2
        )
        row["completion_tokens"] = len(toks)
        row["sampling"] = {"temperature": 0.0, "top_logprobs": 20, "seed": i}
    cache = write_cache(tmp_path / "cache", rows)
    (cache / "resolved_recipe.yaml").write_text(
        yaml.safe_dump({"name": "exp", "prompts": {"source": "data.jsonl", "license": "cc-by-4.0"}})
    )
    return cache


def test_export_reads_with_datasets_both_ways_and_round_trips(tmp_path):
    import datasets

    cache = _cache(tmp_path)
    out = tmp_path / "export"
    result = CliRunner().invoke(app, ["cache", "export", str(cache), "--to", str(out)])
    assert result.exit_code == 0, result.output
    assert "exported 12 records, 6 with token logprobs" in result.output
    card = (out / "README.md").read_text()
    header = yaml.safe_load(card.split("---")[1])
    assert header["configs"][0]["data_files"][0]["path"] == "data/train-*"
    assert {f["name"] for f in header["dataset_info"]["features"]} >= {"prompt", "teacher_text", "token_logprobs"}
    assert header["dataset_info"]["splits"][0]["num_examples"] == 12
    assert header["license"] == "cc-by-4.0" and "cc-by-4.0" in card and "not checked against any benchmark" in card
    by_folder = datasets.load_dataset(str(out), split="train")
    by_files = datasets.load_dataset("parquet", data_files=str(out / "data" / "*.parquet"), split="train")
    assert len(by_folder) == len(by_files) == 12
    assert by_folder[0]["teacher_text"] == read_cache(cache)[0].teacher_text
    assert by_folder[0]["token_logprobs"]["tokens"][0] == b"The "
    assert by_folder[11]["token_logprobs"] is None
    # back as a cache: same records, same payloads
    original, again = read_cache(cache), read_cache(out)
    assert [r.id for r in again] == [r.id for r in original]
    for a, b in zip(again, original, strict=True):
        assert (a.prompt, a.teacher_text, a.output_entropy, a.sampling) == (
            b.prompt,
            b.teacher_text,
            b.output_entropy,
            b.sampling,
        )
        if b.token_logprobs is None:
            assert a.token_logprobs is None
        else:
            pa, pb = decode(a.token_logprobs), decode(b.token_logprobs)
            assert pa.tokens == pb.tokens and pa.logprobs == pytest.approx(pb.logprobs, abs=1e-3)
    assert validate_cache(out) == (12, [])


def test_dante_train_reads_an_exported_folder(tmp_path, student_dir):
    from train_helpers import recipe_data

    from dante.cache.export import export_cache
    from dante.config import load_recipe
    from dante.train.loop import train

    out = tmp_path / "export"
    export_cache(_cache(tmp_path), out)
    result = train(load_recipe(data=recipe_data(tmp_path, student_dir, out, steps=3)))
    manifest = json.loads(result.manifest_path.read_text())
    assert manifest["train_records"] + manifest["heldout_records"] == 12 and math.isfinite(result.final_loss)
