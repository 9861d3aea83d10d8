"""The hf teacher's refilling schedule (dante.teacher.refill): each row decoded as ``generate``
decodes it alone, rows leaving as they end and waiting prompts joining, and the engine falling
back to ``generate`` wherever the schedule would pick other tokens."""

from __future__ import annotations

import pytest
import torch

from dante.cache.manifest import cache_key
from dante.config import Recipe, TeacherConfig
from dante.prompts import Prompt
from dante.teacher import Sampling, make_teacher
from dante.teacher.base import TeacherRequest
from dante.teacher.entropy import topk_entropy_from_logits
from dante.teacher.refill import refill_greedy, shared_prefix

WORDS = [
    "What is 2 + 3?",
    "Natalia sold clips to 48 of her friends in April, and then half as many in May.",
    "hello",
    "the quick brown fox jumps over the lazy dog and keeps on running far away",
    "7 - 4 =",
    "Write a poem.",
    "A train leaves at noon.",
]


@pytest.fixture(scope="module")
def teacher(teacher_dir):
    t = make_teacher(
        TeacherConfig(
            backend="hf",
            model=str(teacher_dir),
            hf={"device": "cpu"},
            dtype="float32",
            max_new_tokens=8,
            top_logprobs=4,
        )
    )
    yield t
    t.close()


def alone(teacher, ids: list[int], max_new: int, eos: int | None):
    """``generate`` on one prompt, no padding: its tokens and raw logits per step."""
    kwargs = {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
    with torch.no_grad():
        out = teacher.model.generate(
            torch.tensor([ids]),
            max_new_tokens=max_new,
            eos_token_id=eos if eos is not None else teacher.tokenizer.eos_token_id,
            pad_token_id=teacher.tokenizer.pad_token_id,
            return_dict_in_generate=True,
            output_logits=True,
            **kwargs,
        )
    return out.sequences[0, len(ids) :].tolist(), [step[0] for step in out.logits]


SYSTEM = "You are a careful assistant. Think, then answer in one line. "


def prompt_ids(teacher, system: str = "") -> list[list[int]]:
    return [teacher.tokenizer(system + w)["input_ids"] for w in WORDS]


def test_shared_prefix_leaves_each_prompt_a_token_of_its_own():
    assert shared_prefix([[1, 2, 3, 4], [1, 2, 5], [1, 2, 3]]) == 2
    assert shared_prefix([[1, 2, 3], [1, 2, 3]]) == 2  # equal prompts: the last token is each one's own
    assert shared_prefix([[7, 1], [8, 1]]) == 0
    assert shared_prefix([[5]]) == 0 and shared_prefix([]) == 0


@pytest.mark.parametrize("system", ["", SYSTEM], ids=["no-shared-prefix", "shared-prefix"])
def test_each_row_is_decoded_as_generate_decodes_it_alone(teacher, system):
    """Three rows at a time over seven prompts of different lengths; an end-of-sequence id that
    some rows write early (taken from a first pass), so rows leave at different steps and the
    waiting ones join a running batch: tokens equal to ``generate`` alone, and per step the
    entropy, the chosen token's logprob and the top-K equal to its raw logits'. With a shared
    system prompt, that prefix is computed once and every row starts from a copy of it."""
    ids = prompt_ids(teacher, system)
    assert (shared_prefix(ids) >= 8) == bool(system)
    first = list(refill_greedy(teacher.model, ids, slots=7, max_new_tokens=8, eos_ids=set(), pad_id=0))
    eos = first[0].ids[2]  # some rows write it early, others never
    rows = list(refill_greedy(teacher.model, ids, slots=3, max_new_tokens=8, eos_ids={eos}, pad_id=0, top_k=4, store=3))
    assert sorted(r.index for r in rows) == list(range(len(ids)))
    lengths = set()
    for row in rows:
        want, logits = alone(teacher, ids[row.index], 8, eos)
        if eos in want:
            want = want[: want.index(eos) + 1]
        assert row.ids == want
        assert row.finish == ("stop" if want[-1] == eos else "length")
        lengths.add(len(row.ids))
        for j, step in enumerate(logits[: len(want)]):
            logp = torch.log_softmax(step.float(), -1)
            top = logp.topk(3)
            assert row.top_ids[j] == top.indices.tolist()
            assert row.top_lps[j] == pytest.approx(top.values.tolist(), abs=1e-5)
            assert row.chosen[j] == pytest.approx(float(logp[want[j]]), abs=1e-5)
            assert row.entropies[j] == pytest.approx(float(topk_entropy_from_logits(step[None], 4)[0]), abs=1e-5)
    assert len(lengths) > 1, "the end-of-sequence id must stop some rows early for this test to mean anything"


def test_rows_are_yielded_as_they_end_and_the_batch_is_refilled(teacher):
    """A row that ends early comes out before a row that started with it and runs to the cap;
    never more than ``slots`` rows decode at once; nothing is left behind."""
    ids = prompt_ids(teacher)
    first = list(refill_greedy(teacher.model, ids, slots=7, max_new_tokens=8, eos_ids=set(), pad_id=0))
    eos = first[0].ids[1]
    seen_live: list[int] = []
    from dante.teacher import refill

    original = refill._Batch.step

    def counting(self, last_tokens):
        seen_live.append(len(last_tokens))
        return original(self, last_tokens)

    refill._Batch.step = counting
    try:
        rows = list(refill_greedy(teacher.model, ids, slots=2, max_new_tokens=8, eos_ids={eos}, pad_id=0))
    finally:
        refill._Batch.step = original
    order = [r.index for r in rows]
    assert sorted(order) == list(range(len(ids)))
    assert max(seen_live) <= 2
    early = [r for r in rows if r.finish == "stop"]
    late = [r for r in rows if r.finish == "length"]
    assert early and late
    assert order.index(early[0].index) < order.index(late[-1].index)
    assert list(refill_greedy(teacher.model, ids[:2], slots=2, max_new_tokens=0, eos_ids=set(), pad_id=0))[0].ids == []


def test_a_leaving_row_takes_the_columns_only_it_used(teacher):
    """When the longest prompt's row leaves, the columns every other row masks are cut: the cache
    holds the rows that are left and no more, and their next step is unchanged."""
    from dante.teacher.refill import _Batch

    long, short = prompt_ids(teacher)[3], prompt_ids(teacher)[0]
    batch = _Batch(teacher.model)
    logits = batch.prefill([long, short], pad_id=0)
    batch.keep([1])
    assert batch.mask.shape == (1, len(short)) and bool(batch.mask.all())
    assert all(layer.keys.shape[-2] == len(short) for layer in batch.cache.layers)
    step = batch.step([int(logits[1].argmax())])
    _, want = alone(teacher, short, 2, None)
    assert torch.allclose(step[0], want[1], atol=1e-5)


def test_engine_refills_greedy_decoding_and_falls_back_elsewhere(teacher, teacher_dir):
    greedy = Sampling(max_new_tokens=8, temperature=0.0, top_logprobs=4)
    assert teacher.refills(greedy)
    assert not teacher.refills(Sampling(max_new_tokens=8, temperature=1.0, seed=1))
    batch = make_teacher(
        TeacherConfig(backend="hf", model=str(teacher_dir), dtype="float32", hf={"device": "cpu", "schedule": "batch"})
    )
    budget = make_teacher(
        TeacherConfig(backend="hf", model=str(teacher_dir), hf={"device": "cpu", "thinking_budget": 4})
    )
    penalised = make_teacher(TeacherConfig(backend="hf", model=str(teacher_dir), hf={"device": "cpu"}))
    penalised.model.generation_config.repetition_penalty = 1.3  # generate would process the logits
    try:
        assert not batch.refills(greedy) and not budget.refills(greedy) and not penalised.refills(greedy)
        prompts = [Prompt(id=str(i), prompt=w) for i, w in enumerate(WORDS)]
        a = [g[0] for g in batch.generate(prompts, greedy)]
        b = [g[0] for g in teacher.generate(prompts, greedy)]
        assert [g.text for g in a] == [g.text for g in b]
        assert [g.completion_tokens for g in a] == [g.completion_tokens for g in b]
        assert [g.prompt_tokens for g in a] == [g.prompt_tokens for g in b]
        for x, y in zip(a, b, strict=True):
            assert x.token_entropies == pytest.approx(y.token_entropies, abs=1e-5)
        # the cache's path streams them, each prompt once
        teacher.request = TeacherRequest.from_config(teacher.cfg)
        streamed = {c.prompt.id: c.main.text for c in teacher.iter_completions(prompts)}
        assert streamed == {p.id: g.text for p, g in zip(prompts, b, strict=True)}
    finally:
        for t in (batch, budget, penalised):
            t.close()


def test_the_schedule_does_not_change_the_cache_key(teacher_dir):
    """Like the batch size, the schedule decides how fast the same greedy records come: a cache
    written on one schedule resumes on the other."""
    base = {"teacher": {"backend": "hf", "model": str(teacher_dir)}}
    keys = {
        cache_key(Recipe.model_validate({**base, "teacher": {**base["teacher"], "hf": {"schedule": s}}}))
        for s in ("batch", "refill")
    }
    assert len(keys) == 1


def test_a_peft_wrapped_model_decodes_as_its_base(teacher):
    """lm-eval loads a LoRA student as a peft model (its forward passes **kwargs on): with a fresh
    adapter (B = 0) the schedule writes what the base model writes."""
    import copy

    from peft import LoraConfig, get_peft_model

    ids = prompt_ids(teacher, SYSTEM)
    wrapped = get_peft_model(copy.deepcopy(teacher.model), LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
    plain = [r.ids for r in refill_greedy(teacher.model, ids, slots=3, max_new_tokens=6, eos_ids=set(), pad_id=0)]
    lora = [r.ids for r in refill_greedy(wrapped, ids, slots=3, max_new_tokens=6, eos_ids=set(), pad_id=0)]
    assert lora == plain
