"""The student seam (dante.train.student): one object per kind of student, chosen by the recipe,
and what an on-policy trainer needs of it: completions sampled from the model being trained and
the logprobs of a given completion under it, equal to what HF generate itself computed."""

from __future__ import annotations

import pytest
import torch
from accelerate import Accelerator
from train_helpers import recipe_data

from dante.config import load_recipe
from dante.train.student import FullStudent, LoraStudent, make_student


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
    """Greedy completions from ``generate`` (KV cache, left padding), scored again by
    ``token_logprobs`` in one teacher-forced pass: the same log-probabilities (1e-4)."""
    student = _student(tmp_path, student_dir, tiny_cache, peft)
    model, _ = student.load(Accelerator(cpu=True))
    model.train()  # as in the train loop
    prompts = _prompts(student)
    completions = student.generate(model, prompts, max_new_tokens=8, temperature=0.0)
    assert [len(c) for c in completions] == [1, 1] and all(0 < len(c[0]) <= 8 for c in completions)
    net = model.get_base_model() if peft else model
    for prompt, (completion,) in zip(prompts, completions, strict=True):
        out = net.generate(
            input_ids=torch.tensor([prompt]),
            max_new_tokens=len(completion),
            do_sample=False,
            output_logits=True,
            return_dict_in_generate=True,
            pad_token_id=student.tokenizer.pad_token_id,
        )
        assert out.sequences[0, len(prompt) :].tolist() == completion
        reference = torch.stack(
            [torch.log_softmax(step[0].float(), -1)[t] for step, t in zip(out.logits, completion, strict=True)]
        )
        got = student.token_logprobs(model, prompt, completion)
        assert got.shape == (len(completion),)
        assert torch.allclose(got, reference, atol=1e-4)
    assert model.training  # generate leaves the model in the mode it found


def test_sampling_follows_the_global_seed_and_logprobs_carry_gradients(tmp_path, student_dir, tiny_cache):
    student = _student(tmp_path, student_dir, tiny_cache)
    model, _ = student.load(Accelerator(cpu=True))
    prompts = _prompts(student)
    torch.manual_seed(3)
    a = student.generate(model, prompts, max_new_tokens=6, temperature=1.0, num_samples=3)
    torch.manual_seed(3)
    b = student.generate(model, prompts, max_new_tokens=6, temperature=1.0, num_samples=3)
    assert a == b and [len(c) for c in a] == [3, 3]
    lp = student.token_logprobs(model, prompts[0], a[0][0])
    lp.sum().backward()
    assert model.get_input_embeddings().weight.grad is not None
    assert (lp <= 0).all()


def test_greedy_with_several_samples_is_refused(tmp_path, student_dir, tiny_cache):
    student = _student(tmp_path, student_dir, tiny_cache)
    model, _ = student.load(Accelerator(cpu=True))
    with pytest.raises(ValueError, match="temperature 0"):
        student.generate(model, _prompts(student), max_new_tokens=4, temperature=0.0, num_samples=2)
