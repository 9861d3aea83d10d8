"""hf teacher: batched left-padded generation on CPU; entropies agree with topk_entropy of the logits."""

import math

import pytest
import torch

from dante.config import TeacherConfig
from dante.prompts import Prompt
from dante.teacher import Sampling, make_teacher
from dante.teacher.entropy import topk_entropy, topk_entropy_from_logits


def test_vectorised_entropy_matches_the_definition():
    torch.manual_seed(0)
    logits = torch.randn(3, 50) * 3
    got = topk_entropy_from_logits(logits, 5)
    for row, h in zip(logits, got, strict=True):
        top = torch.log_softmax(row.double(), -1).topk(5).values.tolist()
        assert h.item() == pytest.approx(topk_entropy(top), abs=1e-6)  # float32 softmax
    assert topk_entropy_from_logits(torch.zeros(1, 4), 4).item() == pytest.approx(math.log(4))  # k = V: exact entropy


@pytest.fixture(scope="module")
def teacher(teacher_dir):
    t = make_teacher(
        TeacherConfig(backend="hf", model=str(teacher_dir), device="cpu", max_new_tokens=6, top_logprobs=4)
    )
    yield t
    t.close()


def test_greedy_generation_and_first_token_entropy(teacher):
    prompts = [
        Prompt(id="a", prompt="What is 2 + 3?"),
        Prompt(id="b", prompt="Natalia sold clips to 48 of her friends in April."),
    ]
    out = teacher.generate(prompts, Sampling(max_new_tokens=6, temperature=0.0, top_logprobs=4))
    assert [len(g) for g in out] == [1, 1]
    g = out[0][0]
    assert g.finish_reason in ("stop", "length") and 1 <= g.completion_tokens <= 6
    assert len(g.token_entropies) == g.completion_tokens and g.prompt_tokens > 0
    # first generated token: recompute from a plain forward pass over the rendered prompt
    ids = teacher.tokenizer(teacher.render(prompts[0]), return_tensors="pt", add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logits = teacher.model(ids).logits[0, -1]
    top = torch.log_softmax(logits.double(), -1).topk(4).values.tolist()
    assert g.token_entropies[0] == pytest.approx(topk_entropy(top), abs=1e-4)
    assert 0 <= g.output_entropy <= math.log(5)
    # greedy is deterministic, batched or alone
    again = teacher.generate(prompts[:1], Sampling(max_new_tokens=6, temperature=0.0, top_logprobs=4))
    assert again[0][0].text == g.text


def test_samples_and_no_logprobs(teacher):
    prompts = [Prompt(id="a", prompt="hello"), Prompt(id="b", prompt="the quick brown fox")]
    out = teacher.generate(prompts, Sampling(max_new_tokens=5, temperature=1.0, top_logprobs=0, n=3, seed=1))
    assert [len(g) for g in out] == [3, 3]
    assert all(s.token_entropies is None and s.output_entropy is None for g in out for s in g)
    again = teacher.generate(prompts, Sampling(max_new_tokens=5, temperature=1.0, top_logprobs=0, n=3, seed=1))
    assert [s.text for s in again[0]] == [s.text for s in out[0]]  # seeded


def test_step_entropies_equal_those_of_generates_own_logits(teacher):
    """The hook sees the raw logits generate returns with output_logits=True: same numbers,
    every step, every row (a batch with left padding and rows that stop early)."""
    from dante.teacher.hf import StepEntropy

    prompts = ["What is 2 + 3?", "Natalia sold clips to 48 of her friends in April, and then half as many in May."]
    enc = teacher.tokenizer(prompts, return_tensors="pt", padding=True)
    kwargs = {
        "max_new_tokens": 7,
        "do_sample": False,
        "temperature": None,
        "top_p": None,
        "top_k": None,
        "repetition_penalty": 1.3,
        "pad_token_id": teacher.tokenizer.pad_token_id,
    }  # a processor must not leak in
    hook = StepEntropy(teacher.model, 4)
    with torch.no_grad():
        out = teacher.model.generate(**enc, **kwargs, return_dict_in_generate=True, output_logits=True)
    hook.remove()
    want = torch.stack([topk_entropy_from_logits(step, 4) for step in out.logits], dim=1)
    got = hook.per_row()
    assert want.shape == (2, len(out.logits)) and got == want.tolist()
    with torch.no_grad():
        teacher.model(enc["input_ids"][:1])
    assert len(hook.steps) == len(out.logits)  # removed: later calls add nothing


def test_stored_payload_equals_generates_own_logprobs(teacher):
    """store_logprobs K: per generated token its bytes and logprob and the top-K, equal to
    log_softmax of generate's own raw logits at that step (greedy and sampled; a sampled token
    outside the top-K keeps its logprob); the tokens join to the text (EOS as b"")."""
    prompts = [Prompt(id="a", prompt="What is 2 + 3?"), Prompt(id="b", prompt="Natalia sold clips to 48 friends.")]
    for sampling in (
        Sampling(max_new_tokens=7, temperature=0.0, top_logprobs=4, store_logprobs=3),
        Sampling(max_new_tokens=7, temperature=1.5, top_logprobs=0, store_logprobs=2, seed=3),
    ):
        gens = [g[0] for g in teacher.generate(prompts, sampling)]
        enc = teacher.tokenizer([teacher.render(p) for p in prompts], return_tensors="pt", padding=True)
        kwargs = {"max_new_tokens": 7, "pad_token_id": teacher.tokenizer.pad_token_id}
        if sampling.greedy:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        else:
            kwargs.update(do_sample=True, temperature=1.5, top_p=1.0, top_k=0)
            torch.manual_seed(3)
        with torch.no_grad():
            out = teacher.model.generate(**enc, **kwargs, return_dict_in_generate=True, output_logits=True)
        new = out.sequences[:, enc["input_ids"].shape[1] :]
        for row, g in enumerate(gens):
            pl = g.token_logprobs
            assert pl is not None and len(pl) == g.completion_tokens == len(pl.top)
            assert pl.text_bytes().decode("utf-8", errors="replace") == g.text
            for j in range(len(pl)):
                logp = torch.log_softmax(out.logits[j][row].float(), -1)
                top = logp.topk(sampling.store_logprobs)
                assert pl.top[j] == [
                    (teacher.token_bytes(int(i)), pytest.approx(float(v), abs=1e-5))
                    for i, v in zip(top.indices, top.values, strict=True)
                ]
                assert pl.tokens[j] == teacher.token_bytes(int(new[row, j]))
                assert pl.logprobs[j] == pytest.approx(float(logp[new[row, j]]), abs=1e-5)
    assert any(t == b"" for g in gens for t in g.token_logprobs.tokens) or all(
        g.finish_reason == "length" for g in gens
    )


def test_dante_cache_with_store_logprobs_20_writes_payloads_validate_accepts(tmp_path, teacher_dir):
    import json

    from dante.cache.payload import decode
    from dante.cache.records import read_cache, validate_cache
    from dante.cache.run import run_cache
    from dante.config import load_recipe

    prompts = tmp_path / "p.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"Question {i}: what is {i} + {i}?"}) + "\n" for i in range(6)))
    recipe = load_recipe(
        data={
            "output_dir": str(tmp_path / "run"),
            "teacher": {
                "backend": "hf",
                "model": str(teacher_dir),
                "device": "cpu",
                "max_new_tokens": 12,
                "batch_size": 3,
                "store_logprobs": 20,
            },
            "prompts": {"source": str(prompts)},
        }
    )
    run_cache(recipe)
    assert validate_cache(recipe.cache_dir) == (6, [])
    for r in read_cache(recipe.cache_dir):
        p = decode(r.token_logprobs)
        assert len(p) == r.completion_tokens and p.k == 20 and all(len(row) == 20 for row in p.top)
