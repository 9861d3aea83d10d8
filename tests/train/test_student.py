"""The student seam (dante.train.model.student): one object per kind of student, chosen by the recipe,
and what an on-policy trainer needs of it: completions sampled from the model being trained and
the logprobs of a given completion under it, equal to what HF generate itself computed."""

from __future__ import annotations

import pytest
import torch
from accelerate import Accelerator
from train_helpers import recipe_data

from dante.config import load_recipe
from dante.train.model.student import FullStudent, LoraStudent, make_student


def _student(tmp_path, student_dir, tiny_cache, peft=None) -> FullStudent:
    data = recipe_data(tmp_path, student_dir, tiny_cache)
    if peft is not None:
        data["student"]["peft"] = peft
    return make_student(load_recipe(data=data))


def _prompts(student: FullStudent) -> list[list[int]]:
    tok = student.tokenizer
    return [tok("Question 3: tell me about the fox.")["input_ids"], tok("Question 10: the dog?")["input_ids"]]


def test_the_recipe_chooses_the_kind_of_student(tmp_path, student_dir, tiny_cache):
    assert type(_student(tmp_path, student_dir, tiny_cache)) is FullStudent
    lora = _student(tmp_path, student_dir, tiny_cache, peft={"r": 4})
    assert isinstance(lora, LoraStudent) and lora.kind == "lora"
    assert lora.manifest() == {"method": "lora", "adapter": ".", "merged": "merged"}
    assert FullStudent.manifest(lora) is None


@pytest.mark.parametrize("peft", [None, {"r": 4}])
def test_logprobs_of_a_sample_equal_what_generate_computed(tmp_path, student_dir, tiny_cache, peft):
    """Greedy completions from ``generate`` (one batch, KV cache, left padding): the tokens HF's
    own greedy generate writes for each prompt alone, and the logprobs that come with them equal
    HF's own logits and ``token_logprobs``' one teacher-forced pass (1e-4)."""
    student = _student(tmp_path, student_dir, tiny_cache, peft)
    model, _ = student.load(Accelerator(cpu=True))
    model.train()  # as in the train loop
    prompts = _prompts(student)
    written = student.generate(model, prompts, max_new_tokens=8, temperature=0.0)
    assert len(written) == 2 and all(0 < len(w.ids) == len(w.logprobs) <= 8 for w in written)
    net = model.get_base_model() if peft else model
    for prompt, w in zip(prompts, written, strict=True):
        out = net.generate(
            input_ids=torch.tensor([prompt]),
            max_new_tokens=len(w.ids),
            do_sample=False,
            output_logits=True,
            return_dict_in_generate=True,
            pad_token_id=student.tokenizer.pad_token_id,
        )
        assert out.sequences[0, len(prompt) :].tolist() == w.ids
        reference = torch.stack(
            [torch.log_softmax(step[0].float(), -1)[t] for step, t in zip(out.logits, w.ids, strict=True)]
        )
        assert torch.allclose(torch.tensor(w.logprobs), reference, atol=1e-4)
        got = student.token_logprobs(model, prompt, w.ids)
        assert got.shape == (len(w.ids),)
        assert torch.allclose(got, reference, atol=1e-4)
    assert model.training  # generate leaves the model in the mode it found


def test_a_rows_sample_depends_on_its_seed_alone_and_logprobs_carry_gradients(tmp_path, student_dir, tiny_cache):
    """Per-row generators: the same seed gives the same sample alone or batched with other rows
    (so one process and several draw alike), other seeds give other samples; the recorded
    logprobs are the model's own (temperature 1) at the chosen tokens."""
    student = _student(tmp_path, student_dir, tiny_cache)
    model, _ = student.load(Accelerator(cpu=True))
    prompts = _prompts(student)
    batched = student.generate(model, [prompts[0], prompts[1], prompts[0]], max_new_tokens=6, seeds=[3, 4, 5])
    alone = student.generate(model, [prompts[1]], max_new_tokens=6, seeds=[4])
    again = student.generate(model, [prompts[0]], max_new_tokens=6, seeds=[3])
    assert alone[0].ids == batched[1].ids and again[0].ids == batched[0].ids
    assert alone[0].logprobs == pytest.approx(batched[1].logprobs, abs=1e-4)
    draws = {tuple(w.ids) for w in student.generate(model, [prompts[0]] * 6, max_new_tokens=6, seeds=range(6))}
    assert len(draws) > 1  # a random tiny model: other seeds, other samples
    lp = student.token_logprobs(model, prompts[0], batched[0].ids)
    assert lp.tolist() == pytest.approx(batched[0].logprobs, abs=1e-4)
    lp.sum().backward()
    assert model.get_input_embeddings().weight.grad is not None
    assert (lp <= 0).all()


def test_sampling_draws_from_the_tempered_nucleus(tmp_path, student_dir, tiny_cache):
    """The Gumbel-max rows are exact samples: over many seeds, first-token frequencies match
    softmax(z / T) inside the top-p nucleus, and no token outside it is drawn."""
    student = _student(tmp_path, student_dir, tiny_cache)
    model, _ = student.load(Accelerator(cpu=True))
    prompt = _prompts(student)[0]
    with torch.no_grad():
        z = model(input_ids=torch.tensor([prompt])).logits[0, -1].float()
    temperature, top_p, n = 2.0, 0.5, 1500
    p = torch.softmax(z / temperature, -1)
    ranked = p.argsort(descending=True)
    nucleus = ranked[: int(((p[ranked].cumsum(0) - p[ranked]) < top_p).sum())]
    firsts = [
        w.ids[0]
        for w in student.generate(
            model, [prompt] * n, max_new_tokens=1, temperature=temperature, top_p=top_p, seeds=range(n)
        )
    ]
    assert set(firsts) <= set(nucleus.tolist())
    q = p[nucleus] / p[nucleus].sum()
    top = nucleus[0].item()
    assert firsts.count(top) / n == pytest.approx(q[0].item(), abs=4 * (q[0].item() * (1 - q[0].item()) / n) ** 0.5)


def test_sampling_without_seeds_is_refused(tmp_path, student_dir, tiny_cache):
    student = _student(tmp_path, student_dir, tiny_cache)
    model, _ = student.load(Accelerator(cpu=True))
    with pytest.raises(ValueError, match="one seed per prompt"):
        student.generate(model, _prompts(student), max_new_tokens=4, temperature=1.0)
