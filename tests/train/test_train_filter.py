"""train.filter: only finished, answered, consistent teacher records are trained on; the counts
kept and dropped per reason reach the training manifest and the report."""

from __future__ import annotations

import json

import pytest
from train_helpers import make_cache_lines, recipe_data, write_cache

from dante.cache.records import CacheRecord
from dante.config import FilterConfig, load_recipe
from dante.errors import DataError
from dante.train.loop import train
from dante.train.sources.splits import filter_records


def rec(i: int, text: str, finish: str = "stop", consistency: float | None = None) -> CacheRecord:
    return CacheRecord(
        id=f"r{i}", prompt=f"q{i}", teacher_text=text, finish_reason=finish, self_consistency=consistency
    )


RECORDS = [
    rec(0, "3 + 4 = 7. The answer is \\boxed{7}.", consistency=1.0),
    rec(1, "First 12 + 30 is 42, then we add", finish="length", consistency=1.0),  # truncated, has a number
    rec(2, "I am not sure how to do this.", consistency=0.2),  # no answer, low consistency
    rec(3, "#### 12", consistency=0.4),  # answered, low consistency
    rec(4, "The answer is 5", finish="length", consistency=0.0),  # truncated and low: counted once, as truncated
]


def test_each_reason_drops_what_it_should_and_counts_it_once():
    kept, counts = filter_records(RECORDS, FilterConfig())
    assert kept == RECORDS and counts.as_dict() == {
        "read": 5,
        "kept": 5,
        "dropped": {"truncated": 0, "no_answer": 0, "low_consistency": 0, "incomplete_reasoning": 0},
    }
    kept, counts = filter_records(RECORDS, FilterConfig(drop_truncated=True))
    assert [r.id for r in kept] == ["r0", "r2", "r3"] and counts.dropped["truncated"] == 2
    kept, counts = filter_records(RECORDS, FilterConfig(require_answer=True))
    assert [r.id for r in kept] == ["r0", "r1", "r3", "r4"] and counts.dropped["no_answer"] == 1
    full = FilterConfig(drop_truncated=True, require_answer=True, min_self_consistency=0.5)
    kept, counts = filter_records(RECORDS, full)
    assert [r.id for r in kept] == ["r0"]
    assert counts.as_dict() == {
        "read": 5,
        "kept": 1,
        "dropped": {"truncated": 2, "no_answer": 1, "low_consistency": 1, "incomplete_reasoning": 0},
    }
    assert counts.kept + sum(counts.dropped.values()) == counts.read


def test_a_threshold_without_consistency_samples_and_an_empty_result_are_located_errors():
    with pytest.raises(DataError, match="no self_consistency") as err:
        filter_records([rec(0, "#### 1")], FilterConfig(min_self_consistency=0.5), "runs/x/cache")
    assert "runs/x/cache" in str(err.value) and "consistency_samples" in str(err.value)
    with pytest.raises(DataError, match="dropped every record"):
        filter_records([rec(1, "x", finish="length")], FilterConfig(drop_truncated=True), "runs/x/cache")


def test_training_reports_the_filter_counts_in_its_manifest(tmp_path, student_dir):
    rows = make_cache_lines(12)
    for row in rows[:3]:
        row["finish_reason"] = "length"
    cache = write_cache(tmp_path / "cache", rows)
    recipe = load_recipe(data=recipe_data(tmp_path, student_dir, cache, steps=2, filter={"drop_truncated": True}))
    result = train(recipe)
    manifest = json.loads(result.manifest_path.read_text())
    assert manifest["data"]["filter"] == {
        "read": 12,
        "kept": 9,
        "dropped": {"truncated": 3, "no_answer": 0, "low_consistency": 0, "incomplete_reasoning": 0},
    }
    assert manifest["train_records"] == 9
    from dante.report.build import build_report

    report = build_report(recipe.output_dir).read_text()
    assert "| records kept by train.filter | 9 of 12 (dropped: truncated 3) |" in report
