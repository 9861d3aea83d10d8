"""Student data: chat rendering, prompt masks, EOS, truncation counts, packing without cross-talk."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from dante.cache.records import CacheRecord
from dante.config import StudentConfig
from dante.errors import DanteError, DataError
from dante.models import load_causal_lm, load_tokenizer
from dante.train.model.attention import block_diagonal_causal_mask
from dante.train.objective.forward import Forward
from dante.train.objective.losses import IGNORE
from dante.train.sources.collate import collate
from dante.train.sources.examples import build_examples
from dante.train.sources.render import render_record


def _rec(i, prompt="what is the answer?", text="The answer is 42.", **kw):
    return CacheRecord(id=f"r{i}", prompt=prompt, teacher_text=text, output_entropy=0.5, **kw)


@pytest.fixture(scope="module")
def tok(student_dir):
    return load_tokenizer(str(student_dir))


def test_chat_rendering_masks_prompt_and_appends_eos(tok):
    rec = _rec(0, system="be brief")
    prompt_ids, completion_ids = render_record(rec, tok, chat=True)
    prompt_text = tok.decode(prompt_ids)
    assert prompt_text.startswith("<turn>system: be brief</turn>") and prompt_text.endswith("<turn>assistant: ")
    assert tok.decode(completion_ids) == "The answer is 42.</turn>\n</s>"
    assert completion_ids[-1] == tok.eos_token_id
    [ex], stats = build_examples([rec], tok, StudentConfig(model="x"), 512)
    assert stats.chat_template and stats.truncated == stats.dropped == 0
    p = len(prompt_ids)
    assert ex.targets[: p - 1] == [IGNORE] * (p - 1)
    assert ex.targets[p - 1 : -1] == completion_ids and ex.targets[-1] == IGNORE
    assert ex.n_completion == len(completion_ids)


def test_messages_and_raw_text(tok):
    rec = _rec(
        1,
        messages=[
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "hello"},
            {"role": "user", "content": "2+3?"},
        ],
    )
    p, _ = render_record(rec, tok, chat=True)
    assert "<turn>assistant: hello</turn>" in tok.decode(p)
    p, c = render_record(_rec(2), tok, chat=False)
    assert tok.decode(p) == "what is the answer?" and tok.decode(c) == "The answer is 42.</s>"
    [ex], stats = build_examples([_rec(2)], tok, StudentConfig(model="x", use_chat_template=False), 512)
    assert not stats.chat_template


def test_require_chat_template_error(student_dir, tok):
    tok2 = load_tokenizer(str(student_dir))
    tok2.chat_template = None
    with pytest.raises(DanteError, match="no chat template") as err:
        build_examples(
            [_rec(0)],
            tok2,
            StudentConfig(model=str(student_dir), require_chat_template=True),
            512,
            model_ref=str(student_dir),
        )
    assert err.value.field == "student.require_chat_template" and str(student_dir) in str(err.value)
    [ex], stats = build_examples([_rec(0)], tok2, StudentConfig(model="x"), 512)  # not required: raw text
    assert not stats.chat_template


def test_truncation_and_drops_are_counted(tok):
    long = _rec(0, text="The answer is 42. " * 40)
    long_prompt = _rec(1, prompt="tell me " * 60)
    fine = _rec(2)
    exs, stats = build_examples([long, long_prompt, fine], tok, StudentConfig(model="x"), 48, source="cache/")
    assert (stats.records, stats.kept, stats.truncated, stats.dropped) == (3, 2, 1, 1)
    assert stats.dropped_ids == ["r1"] and all(len(e) <= 48 for e in exs)
    assert exs[0].truncated and exs[0].n_completion > 0
    with pytest.raises(DataError, match="smaller than every prompt") as err:
        build_examples([long_prompt], tok, StudentConfig(model="x"), 48, source="cache/")
    assert err.value.field == "train.max_length" and err.value.file == "cache/"


def test_block_diagonal_mask():
    seg = torch.tensor([[0, 0, 1, 1, 1]])
    m = block_diagonal_causal_mask(seg, as_bool=True)[0, 0]
    expect = torch.tensor(
        [[1, 0, 0, 0, 0], [1, 1, 0, 0, 0], [0, 0, 1, 0, 0], [0, 0, 1, 1, 0], [0, 0, 1, 1, 1]], dtype=torch.bool
    )
    assert torch.equal(m, expect)
    f = block_diagonal_causal_mask(seg, as_bool=False)[0, 0]
    assert torch.equal(f == 0, expect)


def _per_record_losses(fwd, exs, packing):
    batch = collate(exs, [1.0] * len(exs), packing=packing, pad_id=0)
    logits, targets, _ = fwd(batch)
    keep = (batch["targets"] != IGNORE).any(dim=0).nonzero().flatten()
    ce = F.cross_entropy(logits.float().transpose(1, 2), targets.clamp_min(0), reduction="none")
    ce = torch.where(targets != IGNORE, ce, 0.0)
    if packing:
        seg = batch["segment_ids"][0, keep]
        return [ce[0, seg == k].sum().item() / exs[k].n_completion for k in range(len(exs))]
    return [ce[r].sum().item() / exs[r].n_completion for r in range(len(exs))]


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_packed_batch_equals_records_one_by_one(student_dir, tok, attn):
    torch.manual_seed(0)
    model = load_causal_lm(str(student_dir), dtype="float32", attn_implementation=attn)
    recs = [
        _rec(0),
        _rec(1, prompt="def add(a, b):", text="    return a + b"),
        _rec(2, prompt="The quick brown fox", text="jumps over the lazy dog. " * 3),
    ]
    exs, _ = build_examples(recs, tok, StudentConfig(model="x"), 256)
    fwd = Forward(model, model, SimpleNamespace(device=torch.device("cpu")))
    with torch.no_grad():
        alone = [_per_record_losses(fwd, [e], packing=False)[0] for e in exs]
        packed = _per_record_losses(fwd, exs, packing=True)
        padded = _per_record_losses(fwd, exs, packing=False)
    assert packed == pytest.approx(alone, rel=1e-5, abs=1e-5)
    assert padded == pytest.approx(alone, rel=1e-5, abs=1e-5)
    # without the block mask (plain causal over the row) records would see each other
    with torch.no_grad():
        batch = collate(exs, [1.0] * 3, packing=True, pad_id=0)
        leak = model(input_ids=batch["input_ids"], attention_mask=torch.ones_like(batch["input_ids"])).logits
        ok = model(
            input_ids=batch["input_ids"],
            position_ids=batch["position_ids"],
            attention_mask=block_diagonal_causal_mask(batch["segment_ids"], as_bool=attn == "sdpa"),
        ).logits
    assert not torch.allclose(leak[0, -1], ok[0, -1], atol=1e-4)
