"""Thinking teachers (dante.teacher.reasoning): the reasoning kept apart from the answer, under
each name servers use and inline between markers, the per-token payload covering exactly the
stored text with the boundary recorded, the thinking switch sent, and every odd case (cut
thinking, no answer, reasoning while thinking is off) a marked, counted record, never a silent
drop. Stand-in servers answer as vLLM's and SGLang's reasoning parsers and the DeepSeek API do
(reasoning_server.py)."""

from __future__ import annotations

import json

import pytest
from reasoning_server import ReasoningServer, answer, thinking

from dante.cache.payload import decode
from dante.cache.records import read_cache, validate_cache
from dante.cache.run import run_cache
from dante.config import load_recipe
from dante.teacher.base import Generation
from dante.teacher.openai import parse_response
from dante.teacher.reasoning import answer_start, separate, split_inline, status
from dante.tokens import TokenLogprobs

PROMPTS = ["what is 2 + 2?", "name a prime", "count the letters"]


@pytest.mark.parametrize(
    "text, reasoning, answer_, closed",
    [
        ("<think>\nstep 1\n</think>\n\nThe answer is 4.", "step 1", "The answer is 4.", True),
        ("step 1</think>\n\n4", "step 1", "4", True),  # the template opened the block in the prompt (R1)
        ("<think>\nstep 1, step 2", "step 1, step 2", "", False),  # cut inside the thinking
        ("<think>done</think>", "done", "", True),
        ("The answer is 4.", None, "The answer is 4.", True),  # nothing invented
        ("4, and <think> is a tag", None, "4, and <think> is a tag", True),
    ],
)
def test_inline_thinking_is_split_by_hand(text, reasoning, answer_, closed):
    s = split_inline(text)
    assert (s.reasoning, s.answer, s.closed) == (reasoning, answer_, closed)


def test_the_answers_first_token_is_found_in_the_whole_outputs_tokens():
    out = [b"<think>", b"hm", b"</think>", b"\n\n", b"The", b" answer"]
    assert answer_start(out, "The answer") == 4
    assert answer_start([b"hm", b"\n\nThe", b" answer"], "The answer") == 1  # the blank line in the first token
    assert answer_start([b"hmThe", b" answer"], "The answer") is None  # no token starts the answer
    assert answer_start([b"hm", b"The", b" end"], "The answer") is None  # the tokens spell another text
    assert answer_start(out, "") == len(out)


def test_status_marks_cut_thinking_and_a_missing_answer():
    assert status(split_inline("<think>a</think>b"), "stop") == "complete"
    assert status(split_inline("<think>a"), "length") == "cut"
    assert status(split_inline("a</think>"), "length") == "cut"  # stopped at the cap with no answer
    assert status(split_inline("a</think>  "), "stop") == "no_answer"
    assert status(split_inline("b"), "stop") is None


def test_an_engines_inline_output_is_separated_and_its_payload_kept_only_if_it_spells_the_text():
    pieces = [b"<think>", b"x", b"</think>", b"\n\n", b"4"]
    gen = Generation("<think>x</think>\n\n4", 5, "stop", [0.1] * 5, token_logprobs=TokenLogprobs(pieces, [-0.1] * 5))
    out = separate(gen)
    assert (out.text, out.reasoning, out.reasoning_tokens, out.token_logprobs) == ("4", "x", 4, gen.token_logprobs)
    assert out.answer_entropy == pytest.approx(0.1) and out.output_entropy == pytest.approx(0.1)
    wrong = Generation("<think>x</think>\n\n4", 2, "stop", token_logprobs=TokenLogprobs([b"a", b"b"], [-1, -1]))
    assert separate(wrong).token_logprobs is None and separate(wrong).reasoning == "x"
    assert separate(wrong).payload_dropped and not out.payload_dropped  # counted apart from a missing payload
    assert separate(gen, thinking="off") is gen


def _body(style: str) -> dict:
    from reasoning_server import response

    return response(style, PROMPTS[0], want_logprobs=True)


@pytest.mark.parametrize(
    "style, field",
    [("vllm", "reasoning_content"), ("vllm-new", "reasoning"), ("sglang", "reasoning_content"), ("inline", "inline")],
)
def test_each_servers_response_keeps_the_reasoning_and_a_payload_of_exactly_the_stored_text(style, field):
    (gen,) = parse_response(_body(style), "chat", 2, 1, store=2)
    assert gen.text == answer(PROMPTS[0]) and gen.reasoning == thinking(PROMPTS[0]) and gen.reasoning_source == field
    pieces = gen.token_logprobs.tokens
    assert len(pieces) == gen.completion_tokens == len(gen.token_entropies)  # every output token, the thinking's too
    assert b"".join(pieces[gen.reasoning_tokens :]).strip() == gen.text.encode()
    assert thinking(PROMPTS[0]).encode() in b"".join(pieces[: gen.reasoning_tokens])


def test_the_deepseek_api_keeps_the_reasoning_and_its_token_count_without_logprobs():
    (gen,) = parse_response(_body("deepseek"), "chat", 2, 1, store=2)
    assert gen.reasoning == thinking(PROMPTS[0]) and gen.token_logprobs is None
    assert gen.reasoning_tokens == _body("deepseek")["usage"]["completion_tokens_details"]["reasoning_tokens"]


def _recipe(tmp_path, url, **teacher):
    tmp_path.mkdir(parents=True, exist_ok=True)
    f = tmp_path / "prompts.jsonl"
    f.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in PROMPTS))
    data = {
        "output_dir": str(tmp_path / "run"),
        "teacher": {
            "backend": "openai",
            "model": "thinker",
            "openai": {"base_url": url, "concurrency": 2, "max_retries": 1, "request_timeout_s": 5},
            "top_logprobs": 2,
            "store_logprobs": 2,
            **teacher,
        },
        "prompts": {"source": str(f)},
        "cache": {"shard_size": 2, "flush_every": 1},
    }
    return load_recipe(data=data)


@pytest.fixture
def server():
    started = []

    def start(style):
        started.append(ReasoningServer(style))
        return started[-1]

    yield start
    for s in started:
        s.close()


def _manifest(recipe):
    return json.loads((recipe.cache_dir / "manifest.json").read_text())


@pytest.mark.parametrize("style", ["vllm", "sglang", "inline"])
def test_a_cache_from_a_thinking_server_keeps_reasoning_answer_and_boundary_and_validates(tmp_path, server, style):
    srv = server(style)
    recipe = _recipe(tmp_path, srv.url, thinking="on")
    run_cache(recipe)
    assert all(b["chat_template_kwargs"] == {"enable_thinking": True} for b in srv.bodies)  # the switch was sent
    records = read_cache(recipe.cache_dir)
    assert len(records) == len(PROMPTS)
    for rec in records:
        assert rec.teacher_text == answer(rec.prompt) and rec.teacher_reasoning == thinking(rec.prompt)
        assert rec.reasoning_status == "complete" and rec.answer_entropy is not None
        payload = decode(rec.token_logprobs)
        assert b"".join(payload.tokens[rec.reasoning_tokens :]).strip() == rec.teacher_text.encode()
    assert validate_cache(recipe.cache_dir)[1] == []
    seen = _manifest(recipe)["reasoning"]
    assert seen["with_reasoning"] == len(PROMPTS) and seen["status"] == {"complete": len(PROMPTS)}


def test_cut_thinking_and_an_empty_answer_are_marked_and_counted_not_dropped(tmp_path, server):
    for style, mark in (("cut", "cut"), ("empty", "no_answer")):
        recipe = _recipe(tmp_path / style, server(style).url)
        run_cache(recipe)
        records = read_cache(recipe.cache_dir)
        assert len(records) == len(PROMPTS) and all(r.reasoning_status == mark for r in records)
        assert all(r.teacher_text == "" and r.teacher_reasoning for r in records)
        assert _manifest(recipe)["reasoning"]["status"] == {mark: len(PROMPTS)}


def test_reasoning_sent_while_thinking_is_off_is_kept_and_counted(tmp_path, server, capsys):
    srv = server("vllm")
    recipe = _recipe(tmp_path, srv.url, thinking="off")
    run_cache(recipe)
    assert all(b["chat_template_kwargs"] == {"enable_thinking": False} for b in srv.bodies)
    assert all(r.teacher_reasoning for r in read_cache(recipe.cache_dir))
    assert _manifest(recipe)["reasoning"]["while_off"] == len(PROMPTS)


def test_a_teacher_that_does_not_think_writes_records_as_before(tmp_path, server):
    srv = server("plain")
    recipe = _recipe(tmp_path, srv.url)
    run_cache(recipe)
    assert all("chat_template_kwargs" not in b for b in srv.bodies)  # auto: the model's default
    lines = [json.loads(x) for f in sorted(recipe.cache_dir.glob("shard-*.jsonl")) for x in f.read_text().splitlines()]
    assert lines and not any(k in line for line in lines for k in ("teacher_reasoning", "reasoning_status"))
    assert "reasoning" not in _manifest(recipe)


def test_a_resumed_cache_keeps_the_reasoning_exactly_once(tmp_path, server):
    srv = server("sglang")
    recipe = _recipe(tmp_path, srv.url)
    run_cache(recipe)
    again = run_cache(recipe)
    assert again.written == 0 and len(srv.bodies) == len(PROMPTS)
    assert sorted(r.teacher_reasoning for r in read_cache(recipe.cache_dir)) == sorted(thinking(p) for p in PROMPTS)


def test_stats_export_and_its_round_trip_know_the_reasoning(tmp_path, server):
    from dante.cache.export import export_cache
    from dante.cache.stats import cache_stats

    recipe = _recipe(tmp_path, server("vllm").url)
    run_cache(recipe)
    stats = cache_stats(recipe.cache_dir)["reasoning"]
    assert stats["records"] == len(PROMPTS) and stats["status"] == {"complete": len(PROMPTS)}
    assert stats["reasoning_tokens"] > 0 and stats["answer_entropy"] is not None
    export_cache(recipe.cache_dir, tmp_path / "export")
    card = (tmp_path / "export" / "README.md").read_text()
    assert "teacher_reasoning" in card
    back = read_cache(tmp_path / "export")  # training reads an exported folder too
    assert {r.teacher_reasoning for r in back} == {thinking(p) for p in PROMPTS}
    by_id = {r.id: json.loads(r.to_json()) for r in read_cache(recipe.cache_dir)}
    assert {r.id: json.loads(r.to_json()) for r in back} == by_id


def test_token_level_kd_reads_the_answers_part_of_a_thinking_payload(tmp_path, server):
    """Token-level KD aligns the teacher's answer tokens with the student's answer: the thinking's
    tokens and the blank line after them are left out (dante.train.sources.kd_data)."""
    from dante.train.sources.kd_data import answer_payload

    recipe = _recipe(tmp_path, server("sglang").url)
    run_cache(recipe)
    for rec in read_cache(recipe.cache_dir):
        part = answer_payload(decode(rec.token_logprobs), rec.reasoning_tokens)
        assert b"".join(part.tokens) == rec.teacher_text.encode() and len(part.top) == len(part.tokens)
    plain = TokenLogprobs([b"a", b"b"], [-1.0, -1.0])
    assert answer_payload(plain, None) is plain


@pytest.mark.parametrize("api", ["chat", "completions"])
def test_a_request_carries_one_prompt_field_and_the_switches_asked_for(api):
    """Servers refuse unknown fields (transformers serve: HTTP 422), so a chat request has no
    ``prompt`` and a completions request no ``messages``, whatever the thinking settings."""
    from dante.config import TeacherConfig
    from dante.prompts import Prompt
    from dante.teacher.base import TeacherRequest
    from dante.teacher.openai import request_body

    for settings in ({}, {"thinking": "on", "reasoning_effort": "high"}, {"thinking": "off"}):
        cfg = TeacherConfig(backend="openai", model="m", openai={"api": api}, **settings)
        body = request_body(cfg, Prompt(id="p", prompt="q"), TeacherRequest.from_config(cfg).main)
        assert ("messages" in body, "prompt" in body) == ((True, False) if api == "chat" else (False, True))
        assert body.get("reasoning_effort") == settings.get("reasoning_effort")
        switch = settings.get("thinking")
        expected = {"enable_thinking": switch == "on"} if api == "chat" and switch else None
        assert body.get("chat_template_kwargs") == expected


def test_the_hf_and_vllm_engines_switch_thinking_through_the_chat_template(tmp_path):
    """A local model's template with a thinking switch (Qwen3's style): off opens and closes an
    empty block in the generation prompt, on and auto leave the model to think."""
    import tiny
    from dante.prompts import Prompt, render_prompt

    tok = tiny.make_tokenizer(tmp_path)
    tok.chat_template = (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n"
        "{% if enable_thinking is defined and not enable_thinking %}<think>\n\n</think>\n\n{% endif %}{% endif %}"
    )
    p = Prompt(id="p", prompt="q")
    assert render_prompt(p, tok, thinking="off").endswith("assistant\n<think>\n\n</think>\n\n")
    assert render_prompt(p, tok, thinking="on").endswith("assistant\n")
    assert render_prompt(p, tok).endswith("assistant\n")


def test_the_hf_engine_ends_the_thinking_at_its_budget_and_the_answer_follows(tmp_path):
    """teacher.thinking_budget: past N output tokens without the end-of-thinking marker, the marker
    is forced (token by token) and the model goes on; the record then has closed reasoning of at
    most N tokens and an answer after it. Other engines refuse the setting by name."""
    import tiny
    from dante.config import TeacherConfig
    from dante.prompts import Prompt
    from dante.teacher import make_teacher
    from dante.teacher.base import TeacherRequest

    folder = tiny.make_teacher_dir(tmp_path / "t")
    cfg = TeacherConfig(
        backend="hf", model=str(folder), device="cpu", dtype="float32", max_new_tokens=12, thinking_budget=3
    )
    teacher = make_teacher(cfg)
    try:
        (gens,) = teacher.generate([Prompt(id="p", prompt="What is 2 + 2?")], TeacherRequest.from_config(cfg).main)
    finally:
        teacher.close()
    gen = gens[0]
    assert gen.reasoning is not None and gen.reasoning_closed
    close = teacher.tokenizer("</think>", add_special_tokens=False)["input_ids"]
    assert len(teacher.tokenizer(gen.reasoning, add_special_tokens=False)["input_ids"]) <= 3 + 1  # ≤ budget
    assert gen.completion_tokens > 3 + len(close)  # it went on after the marker
    with pytest.raises(ValueError, match="thinking_budget is applied by the hf engine only"):
        TeacherConfig(backend="openai", model="m", thinking_budget=10)
