"""Cache records: the schema, the reader other stages use, and `validate`'s located problems."""

import json

import pytest

from dante.cache.records import CacheRecord, read_cache, validate_cache
from dante.errors import DataError
from dante.prompts import record_id

GOOD = {
    "prompt": "2+2?",
    "teacher_text": "4",
    "output_entropy": 0.25,
    "self_consistency": None,
    "difficulty_score": 0.1,
}


def test_card_only_record_gets_a_stable_id(tmp_path):
    f = tmp_path / "c.jsonl"
    f.write_text(json.dumps(GOOD) + "\n")
    [rec] = read_cache(f)
    assert rec.id == record_id("2+2?") and rec.output_entropy == 0.25


@pytest.mark.parametrize(
    "patch, field, message",
    [
        ({"output_entropy": float("nan")}, "output_entropy", "finite"),
        ({"output_entropy": -1.0}, "output_entropy", ">= 0"),
        ({"output_entropy": "low"}, "output_entropy", "number"),
        ({"prompt": "   "}, "prompt", "empty"),
        ({"self_consistency": 1.5}, "self_consistency", "[0, 1]"),
        ({"teacher_text": 7}, "teacher_text", "string"),
    ],
)
def test_bad_values_are_located(tmp_path, patch, field, message):
    f = tmp_path / "c.jsonl"
    f.write_text(json.dumps(GOOD) + "\n" + json.dumps({**GOOD, "prompt": "x", **patch}, allow_nan=True) + "\n")
    with pytest.raises(DataError) as exc:
        read_cache(f)
    assert exc.value.line == 2 and exc.value.field == field and message in str(exc.value)


def test_validate_reports_truncated_missing_and_wrong_type_with_lines(tmp_path):
    f = tmp_path / "c.jsonl"
    lines = [
        json.dumps(GOOD),
        json.dumps({**GOOD, "prompt": "b"})[:-10],  # truncated
        json.dumps({k: v for k, v in GOOD.items() if k != "teacher_text"} | {"prompt": "c"}),
        json.dumps({**GOOD, "prompt": "d", "output_entropy": "high"}),
    ]
    f.write_bytes(("\n".join(lines) + "\n").encode() + b'{"prompt": "\xff"}\n')
    checked, problems = validate_cache(f)
    got = {(p.line, p.field) for p in problems}
    assert checked == 5
    assert got == {(2, "<line>"), (3, "teacher_text"), (4, "output_entropy"), (5, "<line>")}
    assert "UTF-8" in str([p for p in problems if p.line == 5][0])


def test_duplicate_ids_are_an_error(tmp_path):
    f = tmp_path / "c.jsonl"
    f.write_text(json.dumps(GOOD) + "\n" + json.dumps(GOOD) + "\n")
    with pytest.raises(DataError, match="duplicate id"):
        read_cache(f)
    _, problems = validate_cache(f)
    assert [(p.line, p.field) for p in problems] == [(2, "id")]


def test_record_roundtrip_keeps_extra_fields():
    rec = CacheRecord.model_validate({**GOOD, "custom": 3})
    again = CacheRecord.model_validate_json(rec.to_json())
    assert again.model_extra == {"custom": 3} and again.id == rec.id
