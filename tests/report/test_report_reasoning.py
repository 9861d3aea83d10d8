"""The report's reasoning section: how long the teacher and each evaluated model think, from the
cache's stats and the raw responses lm-eval logged; absent when nobody thought."""

from __future__ import annotations

import json

from dante.report.data import RunData
from dante.report.tables import reasoning_section, thinking_lengths


def _samples(path, texts):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"doc_id": i, "resps": [[t]]}) + "\n" for i, t in enumerate(texts)))


def test_thinking_lengths_by_hand(tmp_path):
    f = tmp_path / "student" / "samples_rg.jsonl"
    _samples(f, ["<think>\n1 + 2 = 3\n</think>\n\nThe answer is 3.", "<think>\nstill going", "The answer is 4."])
    got = thinking_lengths(f)
    assert got == {
        "responses": 3,
        "with_thinking": 2,
        "closed": 1,
        "unclosed": 1,
        "thinking_chars": (len("1 + 2 = 3") + len("still going")) / 2,
        "answer_chars": (len("The answer is 3.") + len("The answer is 4.")) / 3,
    }


def test_the_section_shows_before_and_after(tmp_path):
    _samples(tmp_path / "eval" / "base" / "samples_rg.jsonl", ["The answer is 5."])
    _samples(tmp_path / "eval" / "student" / "samples_rg.jsonl", ["<think>\n2 + 3 = 5\n</think>\n\nThe answer is 5."])
    data = RunData(run_dir=tmp_path, eval_dir=tmp_path / "eval")
    data.cache_stats = {"reasoning": {"records": 10, "status": {"complete": 9}, "reasoning_chars": {"mean": 42.0}}}
    text = reasoning_section(data)
    assert "## Reasoning" in text
    assert "| teacher (cache) | distillation prompts | 10 | 10 | 9 | 0 | 42 |" in text
    assert "| base | rg | 1 | 0 | 0 | 0 |  | 16 |" in text
    assert "| student | rg | 1 | 1 | 1 | 0 | 9 | 16 |" in text


def test_no_section_when_nobody_thought(tmp_path):
    _samples(tmp_path / "eval" / "base" / "samples_rg.jsonl", ["The answer is 5."])
    assert reasoning_section(RunData(run_dir=tmp_path, eval_dir=tmp_path / "eval")) == ""


def test_the_raw_generations_are_read_when_lm_eval_cut_the_thinking(tmp_path):
    # lm-eval logs the answer alone (think_end_token); dante eval keeps the generation as written
    _samples(tmp_path / "eval" / "student" / "samples_rg.jsonl", ["The answer is 5."])
    raw = tmp_path / "eval" / "student" / "generations_rg.jsonl"
    raw.write_text(json.dumps({"text": "<think>\n2 + 3 = 5\n</think>\n\nThe answer is 5."}) + "\n")
    text = reasoning_section(RunData(run_dir=tmp_path, eval_dir=tmp_path / "eval"))
    assert "| student | rg | 1 | 1 | 1 | 0 | 9 | 16 |" in text


def test_generations_whose_thinking_never_ended_are_counted_per_model(tmp_path):
    """dante eval marks a generation whose thinking never ended (a template that opened it in the
    prompt leaves no <think> in the text, so the mark, not the text, says so): counted apart."""
    _samples(tmp_path / "eval" / "student" / "samples_rg.jsonl", ["", "The answer is 5."])
    raw = tmp_path / "eval" / "student" / "generations_rg.jsonl"
    rows = [{"text": "2 + 3 is", "thinking_unclosed": True}, {"text": "5</think>\n\nThe answer is 5."}]
    raw.write_text("".join(json.dumps(r) + "\n" for r in rows))
    text = reasoning_section(RunData(run_dir=tmp_path, eval_dir=tmp_path / "eval"))
    assert "| student | rg | 2 | 2 | 1 | 1 | 4 | 8 |" in text  # thinking (8 + 1) / 2 chars, answers (0 + 16) / 2
    assert "scored as no answer" in text
