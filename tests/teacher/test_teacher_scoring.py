"""Teacher.score (on-policy distillation: the student writes, the teacher scores): the hf engine's
tiled scores equal a direct forward's logprobs; vLLM's prompt_logprobs map to the completion's
tokens; an OpenAI-compatible server with echo + logprobs scores through /v1/completions; servers
that cannot score (llama.cpp's "Only no echo is supported", transformers serve's missing
logprobs, a chat endpoint) fail the probe with an error naming teacher.backend."""

from __future__ import annotations

import math
from collections import namedtuple

import pytest
import torch

from dante.config import TeacherConfig
from dante.errors import DanteError
from dante.models import load_causal_lm
from dante.prompts import Prompt
from dante.teacher.hf import HFTeacher
from dante.teacher.openai import OpenAITeacher, parse_echo
from dante.teacher.vllm import score_from_prompt_logprobs
from dante.tokens import TokenBytes

PROMPTS = [Prompt(id="a", prompt="What is 2 + 3?"), Prompt(id="b", prompt="Name a colour.", system="Be brief.")]
TEXTS = ["The answer is 5.", " red, or blue" * 30]  # the second one longer than a scoring tile


@pytest.fixture(scope="module")
def hf_teacher(teacher_dir):
    teacher = HFTeacher(TeacherConfig(backend="hf", model=str(teacher_dir), device="cpu", dtype="float32"))
    teacher.SCORE_TILE = 16
    return teacher


def test_hf_scores_equal_a_direct_forward(hf_teacher, teacher_dir):
    scored = hf_teacher.score(PROMPTS, TEXTS, k=3)
    model = load_causal_lm(str(teacher_dir), dtype="float32")
    tok = hf_teacher.tokenizer
    for prompt, text, got in zip(PROMPTS, TEXTS, scored, strict=True):
        prompt_ids = tok(hf_teacher.render(prompt), add_special_tokens=False)["input_ids"]
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert b"".join(got.tokens) == text.encode() and len(got) == len(ids)
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([prompt_ids + ids])).logits[0].float()
        logp = torch.log_softmax(logits[len(prompt_ids) - 1 : -1], -1)
        want = logp.gather(1, torch.tensor(ids)[:, None]).squeeze(1)
        assert torch.allclose(torch.tensor(got.logprobs), want, atol=1e-4)
        best = logp.topk(3, -1)
        assert [lp for _, lp in got.top[5]] == pytest.approx(best.values[5].tolist(), abs=1e-4)
    assert len(scored[1]) > hf_teacher.SCORE_TILE  # several tiles
    hf_teacher.check_scoring(k=3)  # the probe passes


def test_an_empty_sample_scores_empty_and_one_that_does_not_round_trip_is_none(hf_teacher):
    empty, odd = hf_teacher.score(PROMPTS, ["", "\ufffe\U0010ffff"], k=0)
    assert empty is not None and len(empty) == 0
    tok_bytes = TokenBytes(hf_teacher.tokenizer)
    ids = hf_teacher.tokenizer("\ufffe\U0010ffff", add_special_tokens=False)["input_ids"]
    if b"".join(tok_bytes(i) for i in ids) != "\ufffe\U0010ffff".encode():
        assert odd is None  # the tiny tokenizer maps it to <unk>: no exact score, never a made-up one


Logprob = namedtuple("Logprob", "logprob rank decoded_token")


def test_vllm_prompt_logprobs_map_to_the_completion(hf_teacher):
    tb = TokenBytes(hf_teacher.tokenizer)
    ids = hf_teacher.tokenizer(" The answer", add_special_tokens=False)["input_ids"]
    n_prompt = 3
    entries = [None] + [{5: Logprob(-1.0, 1, "x")}] * (n_prompt - 1)
    for j, t in enumerate(ids):  # the position's own token, outside the top-2 at j = 0
        entries.append(
            {t: Logprob(-3.0 - j, 4 if j == 0 else 1, "?"), 7: Logprob(-0.5, 1, "y"), 8: Logprob(-0.9, 2, "z")}
        )
    got = score_from_prompt_logprobs(entries, n_prompt, ids, 2, tb)
    assert got.logprobs == pytest.approx([-3.0 - j for j in range(len(ids))])
    assert got.top[0] == [(tb(7), -0.5), (tb(8), -0.9)] and b"".join(got.tokens) == b" The answer"


def openai_teacher(url, **server):
    return OpenAITeacher(
        TeacherConfig(
            backend="openai",
            model="fake",
            openai={"base_url": url, "api": "completions", "max_retries": 1, "backoff_base_s": 0.01, **server},
        )
    )


def test_an_echo_server_scores_through_completions(teacher_server):
    srv = teacher_server(lambda text, attempt, body: "ok")
    teacher = openai_teacher(srv.url)
    (got,) = teacher.score([Prompt(id="p", prompt="Say the answer.")], [" The answer is 42."], k=1)
    assert [t.decode() for t in got.tokens] == [" The", " answer", " is", " 42."]
    assert all(lp < 0 for lp in got.logprobs) and got.top[0][0][0] == b" The"
    teacher.check_scoring(k=1)
    # a completion that starts inside the prompt's last token cannot be scored exactly
    assert parse_echo(srv.echo("Say the answer.", {}), 10, "answer.", 0) is None


@pytest.mark.parametrize(
    "case, match",
    [
        ("no-echo", "Only no echo is supported"),  # llama.cpp's server
        ("ignores-logprobs", "no echoed logprobs"),  # transformers serve
        ("chat", "teacher.openai.api=completions"),
    ],
)
def test_a_server_that_cannot_score_fails_the_probe_naming_the_backend(teacher_server, monkeypatch, case, match):
    if case == "no-echo":
        srv = teacher_server(lambda text, attempt, body: ("400", "Only no echo is supported"))
    else:
        srv = teacher_server(lambda text, attempt, body: "ok")
    if case == "ignores-logprobs":
        monkeypatch.setattr("flaky_server.FlakyServer.ignore_logprobs", True, raising=False)
    teacher = openai_teacher(srv.url, **({"api": "chat"} if case == "chat" else {}))
    with pytest.raises(DanteError, match=match) as exc:
        teacher.check_scoring()
    assert exc.value.field == "teacher.backend" and "teacher cannot score" in str(exc.value)


def test_engines_without_scoring_say_so():
    from dante.teacher.base import Teacher

    with pytest.raises(DanteError, match="cannot score") as exc:
        Teacher(TeacherConfig()).check_scoring()
    assert exc.value.field == "teacher.backend" and math.isfinite(1.0)


# -- the end of turn (train.loss.policy_gradient.score_end) ------------------------------------------------


def test_hf_scores_the_end_of_turn_after_an_ended_text_as_a_direct_forward(hf_teacher, teacher_dir):
    scored = hf_teacher.score(PROMPTS, TEXTS, k=2, ended=[True, False])
    plain = hf_teacher.score(PROMPTS, TEXTS, k=2)
    tok = hf_teacher.tokenizer
    end = hf_teacher.end_of_turn_id()
    assert end == tok.eos_token_id
    # the ended one: the same tokens and logprobs, then one more token with no bytes
    assert scored[0].tokens == [*plain[0].tokens, b""] and scored[0].logprobs[:-1] == plain[0].logprobs
    assert scored[1] == plain[1]  # not ended: nothing added
    model = load_causal_lm(str(teacher_dir), dtype="float32")
    prompt_ids = tok(hf_teacher.render(PROMPTS[0]), add_special_tokens=False)["input_ids"]
    ids = tok(TEXTS[0], add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([prompt_ids + ids])).logits[0, -1].float()
    assert scored[0].logprobs[-1] == pytest.approx(torch.log_softmax(logits, -1)[end].item(), abs=1e-4)
    assert len(scored[0].top[-1]) == 2
    hf_teacher.check_scoring(k=2, end=True)  # the probe with the end passes


class _FakeVLLM:
    """vLLM's offline engine as far as ``VLLMTeacher.score`` uses it, over a transformers model:
    ``generate`` returns each prompt position's logprob dict (its own token and the top-k)."""

    def __init__(self, model_dir):
        from transformers import AutoTokenizer

        self.model = load_causal_lm(str(model_dir), dtype="float32")
        self.tokenizer = AutoTokenizer.from_pretrained(str(model_dir))

    def generate(self, inputs, params, use_tqdm=False):
        from types import SimpleNamespace

        out = []
        for row in inputs:
            ids = row["prompt_token_ids"]
            with torch.no_grad():
                logp = torch.log_softmax(self.model(input_ids=torch.tensor([ids])).logits[0].float(), -1)
            entries = [None]
            for pos in range(1, len(ids)):
                top = logp[pos - 1].topk(params.prompt_logprobs)
                entry = {int(i): Logprob(float(v), r + 1, "") for r, (i, v) in enumerate(zip(top.indices, top.values))}
                entry[ids[pos]] = Logprob(float(logp[pos - 1, ids[pos]]), 0, "")
                entries.append(entry)
            out.append(SimpleNamespace(prompt_logprobs=entries))
        return out


def test_vllm_scores_equal_hf_scores_with_and_without_the_end(hf_teacher, teacher_dir, monkeypatch):
    import sys
    import types

    from dante.teacher.vllm import VLLMTeacher

    fake = types.ModuleType("vllm")
    fake.SamplingParams = lambda **kw: types.SimpleNamespace(**kw)
    monkeypatch.setitem(sys.modules, "vllm", fake)
    teacher = object.__new__(VLLMTeacher)  # the engine without a GPU: its score method over _FakeVLLM
    teacher.cfg = hf_teacher.cfg
    teacher.llm = _FakeVLLM(teacher_dir)
    teacher.tokenizer, teacher.token_bytes, teacher.name = teacher.llm.tokenizer, None, "tiny"
    ended = [True, False]
    got = teacher.score(PROMPTS, TEXTS, k=2, ended=ended)
    want = hf_teacher.score(PROMPTS, TEXTS, k=2, ended=ended)
    for g, w in zip(got, want, strict=True):
        assert g.tokens == w.tokens and g.logprobs == pytest.approx(w.logprobs, abs=1e-4)
        assert [lp for _, lp in g.top[-1]] == pytest.approx([lp for _, lp in w.top[-1]], abs=1e-4)
    assert got[0].tokens[-1] == b""


def test_an_engine_that_cannot_score_the_end_names_the_setting(teacher_server):
    srv = teacher_server(lambda text, attempt, body: "ok")
    teacher = openai_teacher(srv.url)
    teacher.check_scoring(k=1)  # it scores texts
    with pytest.raises(DanteError, match="cannot score the teacher's end of turn") as exc:
        teacher.check_scoring(k=1, end=True)
    assert exc.value.field == "train.loss.policy_gradient.score_end"
