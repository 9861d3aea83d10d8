"""A thinking teacher's reasoning in the student's own convention (train.reasoning): kept in the
student's chat template when it has a thinking convention (a Qwen3-style template writes an
assistant turn's reasoning_content), in the documented plain format otherwise, or dropped (the
answer-only ablation); records over max_length dropped and counted, never cut mid-thought; cut
thinking filtered; a run trains on it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from train_helpers import make_cache_lines, recipe_data, write_cache

import tiny
from dante.config import FilterConfig, StudentConfig, load_recipe
from dante.train.sources.examples import build_examples
from dante.train.sources.render import plain_thinking, render_record_text, thinking_convention
from dante.train.sources.splits import filter_records

# A Qwen3-style template: the assistant turn writes its reasoning in a think block (empty without
# one), and the generation prompt opens an empty block when thinking is switched off.
THINKING = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
    "{% if m['role'] == 'assistant' %}<think>\n{{ m.get('reasoning_content') or '' }}\n</think>\n\n{% endif %}"
    "{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n"
    "{% if enable_thinking is defined and not enable_thinking %}<think>\n\n</think>\n\n{% endif %}{% endif %}"
)


class Rec:
    def __init__(self, answer="The answer is 4.", reasoning="2 + 2 is 4.", status="complete", rid="r1"):
        self.id, self.prompt, self.system, self.messages = rid, "What is 2 + 2?", None, None
        self.teacher_text, self.teacher_reasoning, self.reasoning_status = answer, reasoning, status
        self.finish_reason, self.self_consistency, self.output_entropy = "stop", None, 1.0


@pytest.fixture(scope="module")
def thinking_tok(tmp_path_factory):
    tok = tiny.make_tokenizer(tmp_path_factory.mktemp("tok"), flavour="teacher")
    tok.chat_template = THINKING
    return tok


@pytest.fixture(scope="module")
def plain_tok(tmp_path_factory):
    return tiny.make_tokenizer(tmp_path_factory.mktemp("plain"), flavour="student")


def _decode(tok, ids):
    return tok.decode(ids, skip_special_tokens=False)


def test_kept_reasoning_goes_into_a_thinking_template(thinking_tok):
    assert thinking_convention(thinking_tok) == "chat template"
    r = render_record_text(Rec(), thinking_tok, chat=True)
    assert r.completion_text == "<think>\n2 + 2 is 4.\n</think>\n\nThe answer is 4.<|im_end|>\n"
    assert _decode(thinking_tok, r.prompt_ids).endswith("<|im_start|>assistant\n")  # thinking on: no empty block
    assert r.completion_text[r.answer_start :].startswith("The answer is 4.")


def test_dropped_reasoning_is_the_answer_alone_after_the_templates_empty_block(thinking_tok):
    r = render_record_text(Rec(), thinking_tok, chat=True, reasoning="drop")
    assert r.completion_text == "The answer is 4.<|im_end|>\n"
    assert _decode(thinking_tok, r.prompt_ids).endswith("assistant\n<think>\n\n</think>\n\n")  # thinking off
    assert r.answer_start == 0


def test_a_student_without_a_thinking_template_gets_the_plain_format(plain_tok):
    assert thinking_convention(plain_tok) == "plain"
    r = render_record_text(Rec(), plain_tok, chat=True)
    assert plain_thinking("2 + 2 is 4.", "The answer is 4.") == "<think>\n2 + 2 is 4.\n</think>\n\nThe answer is 4."
    assert r.completion_text.startswith(plain_thinking("2 + 2 is 4.", "The answer is 4."))
    raw = render_record_text(Rec(), plain_tok, chat=False)
    assert raw.completion_text == plain_thinking("2 + 2 is 4.", "The answer is 4.")
    none = render_record_text(Rec(reasoning=None), plain_tok, chat=True)  # a teacher that did not think
    assert "<think>" not in none.completion_text


def test_reasoning_over_max_length_is_dropped_and_counted_never_cut(thinking_tok):
    long = Rec(reasoning="step " * 200, rid="long")
    short = Rec(rid="short")
    plain = Rec(reasoning=None, answer="word " * 200, rid="plain")
    examples, stats = build_examples([long, short, plain], thinking_tok, StudentConfig(), 64)
    assert [e.id for e in examples] == ["short", "plain"]
    assert (stats.reasoning_too_long, stats.reasoning, stats.truncated) == (1, 1, 1)  # the plain one is cut, as before
    assert stats.reasoning_template == "chat template"
    dropped, stats = build_examples([long, short], thinking_tok, StudentConfig(), 64, reasoning="drop")
    assert [e.id for e in dropped] == ["long", "short"] and stats.reasoning == 0


def test_cut_thinking_and_no_answer_are_filtered_by_default_and_counted():
    records = [
        Rec(rid="a"),
        Rec(status="cut", rid="b"),
        Rec(status="no_answer", answer="", rid="c"),
        Rec(None, rid="d"),
    ]
    kept, counts = filter_records(records, FilterConfig())
    assert [r.id for r in kept] == ["a", "d"] and counts.dropped["incomplete_reasoning"] == 2
    kept, _ = filter_records(records, FilterConfig(complete_reasoning=False))
    assert len(kept) == 4


def test_a_student_trains_on_reasoning_and_answer(tmp_path, student_dir):
    rows = make_cache_lines(12)
    for i, row in enumerate(rows):
        row["teacher_reasoning"] = f"First, the topic. Then {i % 7}."
        row["reasoning_status"] = "complete"
    cache = write_cache(tmp_path / "cache", rows)
    from dante.train.loop import train

    with pytest.raises(Exception, match="longer than train.max_length=90 with its teacher's reasoning"):
        train(load_recipe(data=recipe_data(tmp_path / "short", student_dir, cache, steps=2, max_length=90)))
    result = train(load_recipe(data=recipe_data(tmp_path, student_dir, cache, steps=2, max_length=256)))
    data = json.loads(result.manifest_path.read_text())["data"]
    assert data["reasoning"] == 12 and data["reasoning_too_long"] == 0
    drop = train(
        load_recipe(data=recipe_data(tmp_path / "drop", student_dir, cache, steps=2, max_length=256, reasoning="drop"))
    )
    assert json.loads(drop.manifest_path.read_text())["data"]["reasoning"] == 0
    assert data["completion_tokens"] > json.loads(drop.manifest_path.read_text())["data"]["completion_tokens"]


def test_the_teachers_instruction_is_kept_or_dropped_for_the_student(plain_tok):
    rec = Rec()
    rec.system = "Solve the problem step by step."
    kept = render_record_text(rec, plain_tok, chat=True)
    dropped = render_record_text(rec, plain_tok, chat=True, system="drop")
    assert "step by step" in _decode(plain_tok, kept.prompt_ids)
    assert "step by step" not in _decode(plain_tok, dropped.prompt_ids)
    assert "What is 2 + 2?" in _decode(plain_tok, dropped.prompt_ids)
    assert dropped.completion_text == kept.completion_text
    raw = render_record_text(rec, plain_tok, chat=False, system="drop")
    assert "step by step" not in _decode(plain_tok, raw.prompt_ids)


def test_the_reasoning_recipe_loads():
    recipe = load_recipe(Path(__file__).resolve().parents[2] / "configs" / "reasoning.yaml")
    assert recipe.train.reasoning == "keep" and recipe.train.system_prompt == "drop"
    assert "<think>" in recipe.prompts.system_prompt and recipe.eval.think_end_token == "</think>"


@pytest.mark.parametrize("name", ["R1_DISTILL", "QWQ"])
def test_templates_that_delete_the_thinking_still_train_on_it_in_their_own_format(tmp_path, name):
    """R1-Distill's and QwQ's real templates strip everything up to </think> from assistant turns
    and open <think> in the generation prompt: the completion continues the opened block (the
    thinking, </think>, a blank line, the answer, the template's end of turn), as the model writes
    at inference, never the answer alone and never a second <think>; the manifest counts it."""
    import thinking_templates

    tok = tiny.make_tokenizer(tmp_path, flavour="teacher")
    tok.chat_template = getattr(thinking_templates, name)
    end = "<｜end▁of▁sentence｜>" if name == "R1_DISTILL" else "<|im_end|>\n"
    r = render_record_text(Rec(), tok, chat=True)
    assert _decode(tok, r.prompt_ids).endswith("<think>\n")
    assert r.completion_text == "2 + 2 is 4.\n</think>\n\nThe answer is 4." + end
    assert r.reasoning_format == "prompt-opened" and r.completion_text[r.answer_start :].startswith("The answer")
    # the template itself, given the same turn, would have trained the answer alone
    full = tok.apply_chat_template(
        [
            {"role": "user", "content": "What is 2 + 2?"},
            {"role": "assistant", "content": plain_thinking("2 + 2 is 4.", "A")},
        ],
        tokenize=False,
    )
    assert "2 + 2 is 4." not in full
    examples, stats = build_examples([Rec(), Rec(reasoning=None, rid="r2")], tok, StudentConfig(), 256)
    assert (stats.reasoning, stats.reasoning_template, len(examples)) == (1, "prompt-opened", 2)
    assert render_record_text(Rec(), tok, chat=True, reasoning="drop").reasoning_format is None


def test_a_template_that_loses_the_reasoning_is_an_error_naming_the_fix(plain_tok, monkeypatch):
    """The probe: the reasoning must be in the rendered training text; where it is not, the
    record is refused with the field and the fix, never trained on its answer alone."""
    import dante.train.sources.render as render

    monkeypatch.setattr(render, "plain_thinking", lambda reasoning, answer: answer)  # a format that loses it
    with pytest.raises(Exception, match="drops the teacher's reasoning") as err:
        render_record_text(Rec(), plain_tok, chat=True)
    assert err.value.field == "student.chat_template" and "train.reasoning=drop" in err.value.hint
