"""Record-by-record SDPA for packed rows: the same logits, losses and gradients as the
block-diagonal mask, with no attention computed across records."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch

from dante.models import load_causal_lm
from dante.train.model.attention import NAME, record_bounds
from dante.train.objective.forward import Forward
from dante.train.sources.collate import collate
from dante.train.sources.examples import make_example

CPU = SimpleNamespace(device=torch.device("cpu"))


def _examples():
    return [
        make_example("a", [5, 6, 7], [8, 9, 10, 11, 2], 0.3, False),
        make_example("b", [12, 13], [14, 15, 2], 2.0, False),
        make_example("c", [16], list(range(17, 40)) + [2], 1.1, False),
    ]


def test_record_bounds_are_cumulative_lengths():
    seg = torch.tensor([[0, 0, 0, 1, 1, 2, 2, 2, 2]])
    assert record_bounds(seg).tolist() == [0, 3, 5, 9]
    assert record_bounds(seg).dtype == torch.int32


@pytest.mark.parametrize("chunked_ce", [False, True])
def test_packed_sdpa_matches_the_block_mask_in_loss_and_gradient(student_dir, chunked_ce):
    masked_model = load_causal_lm(str(student_dir), dtype="float32", attn_implementation="sdpa")
    packed_model = load_causal_lm(str(student_dir), dtype="float32", attn_implementation="sdpa")
    batch = collate(_examples(), [0.9, 0.4, 0.7], packing=True, pad_id=0)
    masked = Forward(masked_model, masked_model, CPU, chunked_ce=chunked_ce)
    packed = Forward(packed_model, packed_model, CPU, chunked_ce=chunked_ce, packed_attention=True)
    assert masked.attn == "sdpa" and packed.attn == NAME
    a, b = masked.loss_sums(batch), packed.loss_sums(batch)
    assert b["objective"].item() == pytest.approx(a["objective"].item(), rel=1e-5)
    ga = torch.autograd.grad(a["objective"], list(masked_model.parameters()))
    gb = torch.autograd.grad(b["objective"], list(packed_model.parameters()))
    for x, y in zip(ga, gb):
        assert torch.allclose(x, y, rtol=1e-4, atol=1e-6)


def test_packed_sdpa_logits_equal_each_record_alone_and_padded_rows_keep_their_mask(student_dir):
    model = load_causal_lm(str(student_dir), dtype="float32", attn_implementation="sdpa")
    fwd = Forward(model, model, CPU, packed_attention=True)
    exs = _examples()
    with torch.no_grad():
        packed = fwd(collate(exs, [1.0] * 3, packing=True, pad_id=0))[0][0]
        padded = fwd(collate(exs, [1.0] * 3, packing=False, pad_id=0))[0]
        alone = [model(input_ids=torch.tensor([ex.input_ids]), use_cache=False).logits[0] for ex in exs]
    # packed logits are kept only at target positions: compare record by record at those
    start = 0
    for r, (ex, ref) in enumerate(zip(exs, alone)):
        tgt = [j for j, t in enumerate(ex.targets) if t != -100]
        n_before = sum(sum(t != -100 for t in e.targets) for e in exs[:r])
        assert torch.allclose(packed[n_before : n_before + len(tgt)], ref[tgt], atol=1e-5)
        start += len(ex)
    keep_cols = list(range(padded.shape[1]))
    assert len(keep_cols) > 0
    for r, (ex, ref) in enumerate(zip(exs, alone)):
        # padded rows: logits are kept for every column that has a target in any row
        cols = [j for j in range(len(ex)) if any(e.targets[j] != -100 for e in exs if j < len(e))]
        assert torch.allclose(
            padded[r, : len(cols)][[cols.index(j) for j in cols if ex.targets[j] != -100]],
            ref[[j for j in cols if ex.targets[j] != -100]],
            atol=1e-5,
        )


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_sliding_window_students_keep_their_window_in_packed_rows(tmp_path, attn):
    from transformers import AutoModelForCausalLM, Qwen2Config

    from tiny import make_tokenizer

    tok = make_tokenizer(tmp_path, flavour="student", vocab_size=320)
    torch.manual_seed(0)
    config = Qwen2Config(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        use_sliding_window=True,
        sliding_window=4,
        max_window_layers=0,
        layer_types=["sliding_attention", "sliding_attention"],
        pad_token_id=tok.pad_token_id,
    )
    AutoModelForCausalLM.from_config(config).save_pretrained(tmp_path)
    masked_model = load_causal_lm(str(tmp_path), dtype="float32", attn_implementation="sdpa")
    packed_model = load_causal_lm(str(tmp_path), dtype="float32", attn_implementation=attn)
    exs = _examples()
    with torch.no_grad():
        packed = Forward(packed_model, packed_model, CPU, packed_attention=True).loss_sums(
            collate(exs, [1.0] * 3, packing=True, pad_id=0)
        )["ce"]
        alone = sum(
            Forward(masked_model, masked_model, CPU).loss_sums(collate([ex], [1.0], packing=False, pad_id=0))["ce"]
            for ex in exs
        )
    assert packed.item() == pytest.approx(alone.item(), rel=1e-5)  # windows shorter than the records are kept


def test_the_saved_student_is_plain_sdpa(student_dir, tmp_path):
    model = load_causal_lm(str(student_dir), dtype="float32", attn_implementation="sdpa")
    Forward(model, model, CPU, packed_attention=True)
    model.save_pretrained(tmp_path)
    assert NAME not in json.dumps(json.loads((tmp_path / "config.json").read_text()))
    assert load_causal_lm(str(tmp_path), dtype="float32").config._attn_implementation == "sdpa"
