"""Thinking teachers (dante.teacher.reasoning): one rule for where the reasoning ends and the
answer starts, exact to the byte on every engine, so the stored fields and the per-token payload
always join and `dante cache validate` accepts what `dante cache` wrote. Stand-in servers replay
what vLLM's qwen3 and deepseek_r1 parsers (both field names), SGLang, llama.cpp's server and the
DeepSeek API send (reasoning_server.py); every odd case (cut thinking, no answer, thinking while
off, prompt-opened thinking) is a marked, counted record, never a silent drop."""

from __future__ import annotations

import json

import pytest
from reasoning_server import ReasoningServer, answer, thinking

from dante.cache.payload import decode
from dante.cache.records import read_cache, validate_cache
from dante.cache.run import run_cache
from dante.config import load_recipe
from dante.errors import DanteError
from dante.teacher.base import Generation
from dante.teacher.reasoning import (
    answer_start,
    payload_problem,
    prompt_opens_thinking,
    separate,
    split_inline,
    status,
)
from dante.tokens import TokenLogprobs

PROMPTS = ["what is 2 + 2?", "name a prime", "count the letters"]


@pytest.mark.parametrize(
    "text, reasoning, answer_, closed",
    [
        ("<think>\nstep 1\n</think>\n\nThe answer is 4.", "step 1", "The answer is 4.", True),
        ("step 1</think>\n\n4", "step 1", "4", True),  # the template opened the block in the prompt (R1)
        ("<think>\nstep 1, step 2", "step 1, step 2", "", False),  # cut inside the thinking
        ("<think>done</think>", "done", "", True),
        ("<think> \t step \n</think> \n4 \n", "step", "4 \n", True),  # the rule's whitespace, and only it
        ("The answer is 4.", None, "The answer is 4.", True),  # nothing invented
        ("4, and <think> is a tag", None, "4, and <think> is a tag", True),
    ],
)
def test_inline_thinking_is_split_by_hand(text, reasoning, answer_, closed):
    s = split_inline(text)
    assert (s.reasoning, s.answer, s.closed) == (reasoning, answer_, closed)


def test_a_prompt_that_opened_the_thinking_makes_an_unended_output_a_cut_thought_never_an_answer():
    assert prompt_opens_thinking("<|im_start|>assistant\n<think>\n")  # QwQ, Qwen3-Thinking
    assert prompt_opens_thinking("<｜Assistant｜><think>\n")  # DeepSeek-R1-Distill
    assert not prompt_opens_thinking("<|im_start|>assistant\n<think>\n\n</think>\n\n")  # Qwen3, thinking off
    assert not prompt_opens_thinking("Answer inside <think> tags, please.\n<|im_start|>assistant\n")
    s = split_inline("Let me add 2 and 2, which", opened=True)
    assert (s.reasoning, s.answer, s.closed) == ("Let me add 2 and 2, which", "", False)
    assert status(s, "length") == "cut"
    assert split_inline("Let me add 2 and 2, which").reasoning is None  # not opened: an answer


def test_the_answers_first_token_is_found_in_the_whole_outputs_tokens():
    out = [b"<think>", b"hm", b"</think>", b"\n\n", b"The", b" answer"]
    assert answer_start(out, "The answer") == 4
    assert answer_start([b"hm", b"\n\nThe", b" answer"], "The answer") == 1  # the blank line in the first token
    assert answer_start([b"hmThe", b" answer"], "The answer") is None  # no token starts the answer
    assert answer_start([b"hm", b"The", b" end"], "The answer") is None  # the tokens spell another text
    assert answer_start(out, "") == len(out)


def test_the_payload_check_is_the_rule_by_hand():
    out = [b"<think>", b"\n", b"hm", b"\n", b"</think>", b"\n\n", b"4", b""]
    assert payload_problem(out, 5, "hm", "4") is None
    assert payload_problem(out[5:], 0, "hm", "4") is None  # a server whose logprobs cover the answer alone
    assert "do not join to teacher_text" in payload_problem(out, 0, "hm", "4")  # the thinking is not the answer
    assert "first difference at character 1" in payload_problem(out, 5, "ho", "4")
    assert "do not join to teacher_text" in payload_problem(out, 5, "hm", "5")
    assert payload_problem(out, 9, "hm", "4") == "reasoning_tokens is 9, more than the payload's 8 tokens"
    assert "reasoning_tokens is missing" in payload_problem(out, None, "hm", "4")
    assert payload_problem([b"4"], None, None, "4") is None


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
    off = separate(gen, thinking="off")  # a teacher told not to think that thinks: kept apart all the same
    assert (off.text, off.reasoning) == ("4", "x")
    cut = Generation("so 2 + 2", 3, "length", token_logprobs=TokenLogprobs([b"so", b" 2 +", b" 2"], [-1] * 3))
    opened = separate(cut, opened=True)
    assert (opened.text, opened.reasoning, opened.reasoning_closed, opened.reasoning_tokens) == (
        "",
        "so 2 + 2",
        False,
        3,
    )


def _recipe(tmp_path, url, **teacher):
    tmp_path.mkdir(parents=True, exist_ok=True)
    f = tmp_path / "prompts.jsonl"
    f.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in PROMPTS))
    openai = {"base_url": url, "concurrency": 2, "max_retries": 1, "request_timeout_s": 5, **teacher.pop("openai", {})}
    data = {
        "output_dir": str(tmp_path / "run"),
        "teacher": {"backend": "openai", "model": "thinker", "openai": openai, "top_logprobs": 2, "store_logprobs": 2}
        | teacher,
        "prompts": {"source": str(f)},
        "cache": {"shard_size": 2, "flush_every": 1},
    }
    return load_recipe(data=data)


@pytest.fixture
def server():
    started = []

    def start(style, **kw):
        started.append(ReasoningServer(style, **kw))
        return started[-1]

    yield start
    for s in started:
        s.close()


def _manifest(recipe):
    return json.loads((recipe.cache_dir / "manifest.json").read_text())


def kd_alignment(records, tmp_path):
    """What token-level KD makes of ``records`` for a student with another tokenizer: the
    training path's own rendering and alignment (dante.train.sources)."""
    import tiny
    from dante.train.sources.kd_data import KDStats, StudentVocab, align_record
    from dante.train.sources.render import render_record_text

    student = tiny.make_tokenizer(tmp_path / "student-tok", flavour="student")
    vocab, stats = StudentVocab(student), KDStats()
    for rec in records:
        ids = render_record_text(rec, student, True).completion_ids
        align_record(rec, [vocab.token_bytes(i) for i in ids], vocab, stats)
    return stats


SERVERS = [
    ("vllm-qwen3", "reasoning_content"),
    ("vllm-qwen3", "reasoning"),
    ("vllm-deepseek_r1", "reasoning_content"),
    ("vllm-deepseek_r1", "reasoning"),
    ("sglang", "reasoning_content"),
    ("llamacpp", "reasoning_content"),
    ("inline", "inline"),
]


@pytest.mark.parametrize("style, field", SERVERS)
def test_a_cache_from_each_real_server_validates_and_aligns_with_no_skips(tmp_path, server, style, field):
    """The stored fields are the rule applied to what the server sent; the payload covers every
    output token (the thinking's, the markers, the end of sequence) and spells them; dante cache
    validate accepts every record and token-level KD skips none."""
    srv = server(style, field=field)
    recipe = _recipe(tmp_path, srv.url, thinking="on")
    run_cache(recipe)
    assert all(b["chat_template_kwargs"] == {"enable_thinking": True} for b in srv.bodies)  # the switch was sent
    records = read_cache(recipe.cache_dir)
    assert len(records) == len(PROMPTS)
    for rec in records:
        assert rec.teacher_text == answer(rec.prompt) and rec.teacher_reasoning == thinking(rec.prompt)
        assert rec.reasoning_status == "complete" and rec.answer_entropy is not None
        payload = decode(rec.token_logprobs)
        assert len(payload.tokens) == rec.completion_tokens  # every output token, the thinking's too
        assert b"".join(payload.tokens[rec.reasoning_tokens :]).lstrip() == rec.teacher_text.encode()
    assert validate_cache(recipe.cache_dir) == (len(PROMPTS), [])
    seen = _manifest(recipe)["reasoning"]
    assert seen["with_reasoning"] == len(PROMPTS) and seen["status"] == {"complete": len(PROMPTS)}
    assert seen["source"] == {field: len(PROMPTS)} and seen["payload_not_matching"] == 0
    stats = kd_alignment(records, tmp_path)
    assert (stats.aligned, stats.not_joining, stats.template_changed, stats.unaligned) == (len(PROMPTS), 0, 0, {})


def test_a_plain_vllm_answer_ending_in_its_end_of_sequence_text_validates(tmp_path, server):
    """vLLM decodes each logprob token alone, so the last is the text "<|im_end|>": kept with no
    bytes, as the hf engine keeps a special token, so the payload spells teacher_text."""
    recipe = _recipe(tmp_path, server("plain").url)
    run_cache(recipe)
    records = read_cache(recipe.cache_dir)
    assert all(decode(r.token_logprobs).tokens[-1] == b"" for r in records)
    assert validate_cache(recipe.cache_dir) == (len(PROMPTS), [])
    assert kd_alignment(records, tmp_path).aligned == len(PROMPTS)


@pytest.mark.parametrize("style", ["vllm-qwen3", "vllm-deepseek_r1", "sglang", "llamacpp"])
def test_thinking_cut_by_the_length_limit_is_marked_cut_and_validates(tmp_path, server, style):
    recipe = _recipe(tmp_path, server(style).url, max_new_tokens=5)
    run_cache(recipe)
    records = read_cache(recipe.cache_dir)
    assert len(records) == len(PROMPTS) and all(r.reasoning_status == "cut" for r in records)
    assert all(r.teacher_text == "" and r.teacher_reasoning for r in records)
    assert _manifest(recipe)["reasoning"]["status"] == {"cut": len(PROMPTS)}
    assert validate_cache(recipe.cache_dir) == (len(PROMPTS), [])


def test_thinking_with_nothing_after_it_is_no_answer_and_validates(tmp_path, server):
    recipe = _recipe(tmp_path, server("vllm-qwen3", no_answer=True).url)
    run_cache(recipe)
    records = read_cache(recipe.cache_dir)
    assert all(r.reasoning_status == "no_answer" and r.teacher_text == "" for r in records)
    assert validate_cache(recipe.cache_dir) == (len(PROMPTS), [])


def test_the_deepseek_api_refuses_logprobs_by_name_and_without_them_keeps_reasoning_and_its_count(tmp_path, server):
    srv = server("deepseek")
    with pytest.raises(DanteError) as err:
        run_cache(_recipe(tmp_path / "a", srv.url))
    assert err.value.field == "teacher.top_logprobs" and "store_logprobs=0" in err.value.hint
    recipe = _recipe(tmp_path / "b", srv.url, top_logprobs=0, store_logprobs=0)
    run_cache(recipe)
    records = read_cache(recipe.cache_dir)
    assert all(r.teacher_reasoning == thinking(r.prompt) and r.teacher_text == answer(r.prompt) for r in records)
    assert all(0 < r.reasoning_tokens < r.completion_tokens for r in records)  # the API's own count
    assert validate_cache(recipe.cache_dir) == (len(PROMPTS), [])


def test_an_o_series_endpoint_names_each_refused_field_and_works_with_the_fields_it_accepts(tmp_path, server):
    srv = server("o-series")
    with pytest.raises(DanteError) as err:
        run_cache(_recipe(tmp_path / "a", srv.url, reasoning_effort="high", top_logprobs=0, store_logprobs=0))
    assert err.value.field == "teacher.openai.max_tokens_field"
    settings = {"top_logprobs": 0, "store_logprobs": 0, "reasoning_effort": "high"}
    with pytest.raises(DanteError) as err:
        run_cache(_recipe(tmp_path / "b", srv.url, openai={"max_tokens_field": "max_completion_tokens"}, **settings))
    assert err.value.field == "teacher.temperature"
    recipe = _recipe(
        tmp_path / "c", srv.url, openai={"max_tokens_field": "max_completion_tokens"}, temperature=1, **settings
    )
    run_cache(recipe)
    assert srv.bodies[-1]["reasoning_effort"] == "high" and "max_tokens" not in srv.bodies[-1]
    assert {r.teacher_text for r in read_cache(recipe.cache_dir)} == {answer(p) for p in PROMPTS}


def test_inline_thinking_while_thinking_is_off_is_kept_apart_warned_and_counted(tmp_path, server, capsys):
    srv = server("inline")
    recipe = _recipe(tmp_path, srv.url, thinking="off")
    run_cache(recipe)
    assert all(b["chat_template_kwargs"] == {"enable_thinking": False} for b in srv.bodies)
    records = read_cache(recipe.cache_dir)
    assert all(r.teacher_reasoning == thinking(r.prompt) and r.teacher_text == answer(r.prompt) for r in records)
    assert _manifest(recipe)["reasoning"]["while_off"] == len(PROMPTS)
    assert "although teacher.thinking is off" in " ".join(capsys.readouterr().err.split())


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

    recipe = _recipe(tmp_path, server("vllm-qwen3").url)
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
    tokens and the whitespace after them are left out (dante.train.sources.kd_data)."""
    from dante.train.sources.kd_data import answer_payload

    recipe = _recipe(tmp_path, server("vllm-qwen3").url)
    run_cache(recipe)
    for rec in read_cache(recipe.cache_dir):
        part = answer_payload(decode(rec.token_logprobs), rec.reasoning_tokens)
        assert b"".join(part.tokens) == rec.teacher_text.encode() and len(part.top) == len(part.tokens)
    plain = TokenLogprobs([b"a", b"b"], [-1.0, -1.0])
    assert answer_payload(plain, None) is plain
    merged = TokenLogprobs([b"x", b"</think>", b"\n\nThe", b" end"], [-1.0] * 4, [[]] * 4)  # the gap in a token
    assert answer_payload(merged, 2).tokens == [b"The", b" end"]


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


OPENING = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n<think>\n{% endif %}"
)


def _hf_generate(folder, prompt="What is 2 + 2?", **settings):
    from dante.config import TeacherConfig
    from dante.prompts import Prompt
    from dante.teacher import make_teacher
    from dante.teacher.base import TeacherRequest

    cfg = TeacherConfig(backend="hf", model=str(folder), device="cpu", dtype="float32", **settings)
    teacher = make_teacher(cfg)
    try:
        (gens,) = teacher.generate([Prompt(id="p", prompt=prompt)], TeacherRequest.from_config(cfg).main)
    finally:
        teacher.close()
    return gens[0], teacher


def _opening_teacher(tmp_path, special_markers=False):
    """A tiny teacher whose chat template opens the thinking block in the generation prompt (QwQ's
    and R1-Distill's way), its markers optionally special tokens."""
    from transformers import AutoTokenizer

    import tiny

    folder = tiny.make_teacher_dir(tmp_path / "t")
    tok = AutoTokenizer.from_pretrained(folder)
    tok.chat_template = OPENING
    if special_markers:
        tok.add_special_tokens({"additional_special_tokens": ["<think>", "</think>"]})
    tok.save_pretrained(folder)
    return folder


def test_the_hf_engine_ends_the_thinking_at_its_budget_and_the_answer_follows(tmp_path):
    """teacher.hf.thinking_budget: past N output tokens of thinking (here the prompt opened the block)
    without the end-of-thinking marker, the marker is forced (token by token) and the model goes
    on; the record then has closed reasoning of at most N tokens and an answer after it. Other
    engines refuse the setting by name."""
    from dante.config import TeacherConfig

    gen, teacher = _hf_generate(_opening_teacher(tmp_path), max_new_tokens=12, thinking_budget=3)
    assert gen.reasoning is not None and gen.reasoning_closed
    close = teacher.tokenizer("</think>", add_special_tokens=False)["input_ids"]
    assert len(teacher.tokenizer(gen.reasoning, add_special_tokens=False)["input_ids"]) <= 3 + 1  # ≤ budget
    assert gen.completion_tokens > 3 + len(close)  # it went on after the marker
    with pytest.raises(ValueError, match="thinking_budget is applied by the hf engine only"):
        TeacherConfig(backend="openai", model="m", thinking_budget=10)


def test_a_budget_on_a_teacher_that_does_not_think_changes_nothing(tmp_path):
    """The budget forces the end of thinking only where a thinking block is open: on a teacher
    that does not think it invents no reasoning, and its output is the same as without it."""
    import tiny

    folder = tiny.make_teacher_dir(tmp_path / "t")
    with_budget, _ = _hf_generate(folder, max_new_tokens=12, thinking_budget=3)
    without, _ = _hf_generate(folder, max_new_tokens=12)
    assert with_budget.reasoning is None and with_budget.text == without.text


def test_the_hf_engine_keeps_prompt_opened_thinking_cut_by_the_limit_as_cut_not_as_an_answer(tmp_path):
    """A template that opens <think> in the generation prompt: the random model never writes
    </think>, so everything it wrote is thinking cut at max_new_tokens; its payload still spells it."""
    gen, _ = _hf_generate(_opening_teacher(tmp_path), max_new_tokens=8, store_logprobs=2)
    assert gen.reasoning is not None and not gen.reasoning_closed and gen.text == ""
    assert gen.reasoning_tokens == len(gen.token_logprobs.tokens) == gen.completion_tokens
    assert payload_problem(list(gen.token_logprobs.tokens), gen.reasoning_tokens, gen.reasoning, "") is None


def test_markers_that_the_tokenizer_marks_special_survive_the_hf_engines_decoding(tmp_path):
    """A tokenizer with <think> and </think> as special tokens: skipping special tokens would
    erase them and with them the split; the engine keeps them (text and payload bytes)."""
    from dante.config import TeacherConfig
    from dante.teacher import make_teacher
    from dante.tokens import TokenBytes, marker_ids

    folder = _opening_teacher(tmp_path, special_markers=True)
    teacher = make_teacher(TeacherConfig(backend="hf", model=str(folder), device="cpu", dtype="float32"))
    teacher.close()
    tok = teacher.tokenizer
    ids = tok("<think>", add_special_tokens=False)["input_ids"] + tok("hm", add_special_tokens=False)["input_ids"]
    ids += tok("</think>", add_special_tokens=False)["input_ids"] + tok(" 4", add_special_tokens=False)["input_ids"]
    ids += [tok.eos_token_id]
    assert teacher.decode(ids) == "<think>hm</think> 4"  # the end of sequence skipped, the markers kept
    assert tok.decode(ids, skip_special_tokens=True) == "hm 4"  # what plain decoding would have stored
    kept = TokenBytes(tok, keep=marker_ids(tok, ("<think>", "</think>")))
    assert b"".join(kept(i) for i in ids) == b"<think>hm</think> 4"


def _completions_body(pieces: list[str], finish: str) -> dict:
    """A vLLM /v1/completions choice (no reasoning parser there): the text skips the special end
    of sequence, the logprobs decode each token alone, so it is there as text."""
    text = "".join(p for p in pieces if p != "<|im_end|>")
    offsets = [sum(len(p) for p in pieces[:i]) for i in range(len(pieces))]
    lp = {
        "tokens": pieces,
        "token_logprobs": [-0.5] * len(pieces),
        "top_logprobs": [{p: -0.5, "x": -1.5} for p in pieces],
        "text_offset": offsets,
    }
    return {"choices": [{"index": 0, "text": text, "logprobs": lp, "finish_reason": finish}], "usage": {}}


def test_the_completions_api_splits_prompt_opened_thinking_by_the_same_rule():
    """The completions API sends the rendered prompt, so dante knows when it opened the block: an
    answered output splits at </think>, a cut one is all thinking (status cut), never an answer."""
    from dante.teacher.openai import parse_response

    answered = ["2 +", " 2", "\n", "</think>", "\n\n", "The", " answer", " is 4.", "<|im_end|>"]
    (gen,) = parse_response(_completions_body(answered, "stop"), "completions", 2, 1, store=2, opened=True)
    assert (gen.text, gen.reasoning, gen.reasoning_tokens) == ("The answer is 4.", "2 + 2", 5)  # "\n\n": thinking's
    assert gen.token_logprobs.tokens[-1] == b""  # the end of sequence, kept with no bytes
    assert payload_problem(list(gen.token_logprobs.tokens), 5, gen.reasoning, gen.text) is None
    (cut,) = parse_response(_completions_body(answered[:3], "length"), "completions", 2, 1, store=2, opened=True)
    assert (cut.text, cut.reasoning, cut.reasoning_closed, cut.reasoning_tokens) == ("", "2 + 2", False, 3)
    (plain,) = parse_response(_completions_body(answered[:3], "length"), "completions", 2, 1, store=2)
    assert plain.reasoning is None and plain.text == "2 + 2\n"  # not opened: an answer, as the server sent it


def test_the_vllm_engine_splits_by_the_same_rule_and_knows_prompt_opened_thinking():
    from types import SimpleNamespace

    from dante.teacher.vllm import generations_from_request_outputs

    done = SimpleNamespace(text="2 + 2\n</think>\n\n4", token_ids=[1, 2, 3], logprobs=None, finish_reason="stop")
    cut = SimpleNamespace(text="2 + 2 and", token_ids=[1, 2, 3], logprobs=None, finish_reason="length")
    outs = [SimpleNamespace(prompt_token_ids=[9], outputs=[c]) for c in (done, cut, cut)]
    a, b, c = (g[0] for g in generations_from_request_outputs(outs, 0, opened=[True, True, False]))
    assert (a.text, a.reasoning, a.reasoning_closed) == ("4", "2 + 2", True)
    assert (b.text, b.reasoning, b.reasoning_closed) == ("", "2 + 2 and", False)
    assert (c.text, c.reasoning) == ("2 + 2 and", None)
    decoded = generations_from_request_outputs(outs[:1], 0, decode=lambda ids: "<think>x</think> 5")
    assert (decoded[0][0].text, decoded[0][0].reasoning) == ("5", "x")  # markers vLLM's text skipped


def test_a_batch_api_cache_from_a_reasoning_server_validates_and_aligns(tmp_path, monkeypatch):
    """teacher.dispatch: batch reads the provider's result bodies with the same parser: bodies as
    vLLM's qwen3 parser writes them give the same records as the synchronous path."""
    import sys
    from pathlib import Path

    import reasoning_server

    sys.path.insert(0, str(Path(__file__).parents[1] / "cache"))
    from fake_batch_api import FakeBatchAPI

    def reply(body):
        return reasoning_server.response("vllm-qwen3", body["messages"][-1]["content"], body)[1]

    monkeypatch.setattr(FakeBatchAPI, "answer", staticmethod(reply))
    api = FakeBatchAPI()
    try:
        recipe = _recipe(tmp_path, api.url, dispatch="batch")
        recipe.teacher.batch_api.poll_interval_s = recipe.teacher.batch_api.poll_max_s = 0.01
        run_cache(recipe)
    finally:
        api.close()
    records = read_cache(recipe.cache_dir)
    assert {(r.teacher_text, r.teacher_reasoning) for r in records} == {(answer(p), thinking(p)) for p in PROMPTS}
    assert validate_cache(recipe.cache_dir) == (len(PROMPTS), [])
    assert kd_alignment(records, tmp_path).aligned == len(PROMPTS)
