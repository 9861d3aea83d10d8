"""On-policy distillation on the real offline pair (slow): SmolLM2-135M (GPT-2-style tokenizer)
writes answers to chain_sum questions, Qwen2.5-Coder-0.5B (Qwen2 tokenizer) scores them, every
sample aligns across the two tokenizers with its chunk log-ratios adding up to
log p_T(y) − log p_S(y), the teacher's scores equal a direct forward pass, and two on-policy
steps train with the dense top-k term."""

from __future__ import annotations

import json

import pytest
import torch
from accelerate import Accelerator
from test_token_kd_real import SETTINGS, STUDENT, TEACHER, _require

from dante.config import load_recipe
from dante.train.loop import train
from dante.train.model.student import make_student
from dante.train.sources.on_policy import OnPolicy


def _recipe(tmp_path, **train):
    return load_recipe(
        data={
            "name": "on-policy-real",
            "output_dir": str(tmp_path / "run"),
            "teacher": {"backend": "hf", "model": f"pypi:{TEACHER}", "device": "cpu", "dtype": "float32"},
            "prompts": {"source": "reasoning_gym:chain_sum", "task_settings": SETTINGS, "limit": 8},
            "student": {"model": f"pypi:{STUDENT}", "use_chat_template": True},
            "train": {
                "steps": 2,
                "batch_sequences": 4,
                "micro_batch_size": 4,
                "max_length": 128,
                "lr": 5e-5,
                "warmup_steps": 1,
                "mixed_precision": "no",
                "on_policy": {
                    "fraction": 1.0,
                    "samples_per_prompt": 2,
                    "max_new_tokens": 32,
                },
                "loss": {"dense_kl": {"weight": 0.5, "top_k": 5}},
                **train,
            },
        }
    )


@pytest.mark.slow
def test_real_pair_samples_align_and_score_exactly(tmp_path):
    import reasoning_gym  # noqa: F401  (make install has the procedural extra: a broken import fails)

    _require(TEACHER, STUDENT)
    recipe = _recipe(tmp_path)
    student = make_student(recipe)
    model, _ = student.load(Accelerator(cpu=True))
    op = OnPolicy(recipe, student, Accelerator(cpu=True))
    samples = op.samples(model, op.prompts[:4], step=1)
    assert op.stats.samples == 8 and len(samples) == 8 - op.stats.skipped_empty  # every written text aligns
    teacher = op.teacher.model
    for s in samples:
        assert sum(s.log_ratios) == pytest.approx(sum(s.score.logprobs) - sum(s.logprobs[: s.text_tokens]), abs=1e-3)
        assert b"".join(s.score.tokens).decode() == student.tokenizer.decode(s.ids[: s.text_tokens])
    # the teacher's scores of one sample against a direct forward of its own rendering
    s, p = samples[0], op.prompts[0]
    tok = op.teacher.tokenizer
    prompt_ids = tok(op.teacher.render(p), add_special_tokens=False)["input_ids"]
    ids = tok(b"".join(s.score.tokens).decode(), add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logits = teacher(input_ids=torch.tensor([prompt_ids + ids])).logits[0, len(prompt_ids) - 1 : -1].float()
    want = torch.log_softmax(logits, -1).gather(1, torch.tensor(ids)[:, None]).squeeze(1)
    assert torch.allclose(torch.tensor(s.score.logprobs), want, rtol=1e-3, atol=1e-3)  # kept in float16
    op.close()


@pytest.mark.slow
def test_real_pair_trains_two_on_policy_steps_with_the_dense_term(tmp_path):
    import reasoning_gym  # noqa: F401  (make install has the procedural extra: a broken import fails)

    _require(TEACHER, STUDENT)
    result = train(_recipe(tmp_path))
    rows = [json.loads(x) for x in result.metrics_path.read_text().splitlines() if x.strip()]
    rows = [r for r in rows if "loss" in r]
    assert len(rows) == 2 and all(r["on_policy_samples"] > 0 for r in rows)
    assert all(r["on_policy_dense_kl"] is not None and r["on_policy_dense_kl"] >= 0 for r in rows)
    compute = json.loads(result.manifest_path.read_text())["teacher_compute"]
    assert compute["tokens_scored"] > 0 and compute["on_policy"]["dense_positions"] > 0
