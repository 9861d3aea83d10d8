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


def _thinking_record(**over):
    from dante.cache.payload import encode
    from dante.tokens import TokenLogprobs

    pieces = [b"<think>", b"\n", b"Fox", b"es.", b"\n", b"</think>", b"\n\n", b"A", b" fox", b""]
    rec = {
        **GOOD,
        "prompt": "tell me about the fox",
        "teacher_text": "A fox",
        "teacher_reasoning": "Foxes.",
        "reasoning_status": "complete",
        "reasoning_tokens": 7,
        "completion_tokens": len(pieces),
        "token_logprobs": encode(TokenLogprobs(pieces, [-0.5] * len(pieces), [[]] * len(pieces)), 1),
    }
    return rec | over


@pytest.mark.parametrize(
    "patch, field, message",
    [
        ({}, None, None),
        ({"reasoning_tokens": 12, "completion_tokens": None}, "reasoning_tokens", "is 12, more than the payload's 10"),
        ({"reasoning_tokens": 12}, "reasoning_tokens", "12 thinking tokens, more than the 10 completion tokens"),
        ({"reasoning_tokens": None}, "reasoning_tokens", "reasoning_tokens is missing"),
        ({"teacher_reasoning": "Wolves."}, "token_logprobs.tokens", "do not spell teacher_reasoning"),
        ({"reasoning_tokens": 2}, "token_logprobs.tokens", "do not join to teacher_text (first difference at byte 0)"),
        (
            {"teacher_text": "A dog"},
            "token_logprobs.tokens",
            "do not join to teacher_text (first difference at byte 2)",
        ),
    ],
)
def test_validate_checks_a_thinking_payload_against_both_fields_by_the_rule(tmp_path, patch, field, message):
    f = tmp_path / "c.jsonl"
    f.write_text(json.dumps(_thinking_record(**patch)) + "\n")
    checked, problems = validate_cache(f)
    if field is None:
        assert (checked, problems) == (1, [])
        return
    assert [(p.field, message in p.message) for p in problems] == [(field, True)], problems
