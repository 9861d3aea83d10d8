"""The term with its own per-record target that lives in one file outside the package
(examples/loss_terms/chunk_confidence.py): its target by hand, its fused form against its plain
one, and `dante train` on a recipe that names the file, trained end to end."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
import torch

from dante.tokens import TokenLogprobs
from dante.train.align import align
from dante.train.objective.chunked_ce import chunked_parts
from dante.train.objective.losses import IGNORE
from dante.train.objective.targets import TARGETS, Aligned, collate_targets
from dante.train.objective.terms import REGISTRY, CrossEntropy, load_plugins, plain_parts

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "loss_terms" / "chunk_confidence.py"


@pytest.fixture
def example():
    """The example's module, imported the way a recipe's train.loss.plugins imports it."""
    load_plugins([str(EXAMPLE)])
    module = sys.modules[REGISTRY["chunk_confidence"].__module__]
    yield module
    REGISTRY.pop("chunk_confidence", None)
    TARGETS.pop("chunk_entropy", None)
    sys.modules.pop(module.__name__, None)


def test_chunk_entropy_target_by_hand(example):
    half, quarter = math.log(0.5), math.log(0.25)
    assert example.top_k_entropy([(b"a", half), (b"b", half)]) == pytest.approx(math.log(2))
    assert example.top_k_entropy([(b"a", quarter)]) == pytest.approx(0.0)  # one alternative, renormalised
    # teacher "ab" (two equal alternatives) "c" (one) against student "a" "bc": one chunk of both
    payload = TokenLogprobs([b"ab", b"c"], [half, 0.0], [[(b"ab", half), (b"x", half)], [(b"c", 0.0)]])
    chunks = align(payload.tokens, [b"a", b"bc"], b"abc")
    aligned = Aligned(payload, chunks, first=2, vocab={})
    spans = example.ChunkEntropy().build(aligned)
    assert [(s.start, s.end) for s in spans] == [(2, 4)]
    assert spans[0].value == pytest.approx(math.log(2) / 2)  # mean over the chunk's two teacher tokens
    assert aligned.counts == {"entropy_chunks": 1}
    batch = collate_targets([{"chunk_entropy": spans}, {}], 2, 5, [(0, 0), (1, 0)])
    assert batch["chunk_mask"].tolist() == [[0, 0, 1, 1, 0], [0] * 5]
    assert batch["chunk_entropy"][0, 2].item() == pytest.approx(math.log(2) / 2)


@pytest.mark.parametrize("chunk", [1, 4, 64])
def test_chunk_confidence_fuses_with_its_plain_value_and_gradient(example, chunk):
    g = torch.Generator().manual_seed(3)
    h = torch.randn(1, 13, 6, generator=g, requires_grad=True)
    w = torch.randn(11, 6, generator=g, requires_grad=True)
    targets = torch.randint(0, 11, (1, 13), generator=g)
    targets[0, :3] = IGNORE
    weights = torch.rand(1, 13, generator=g) * (targets != IGNORE)
    mask = torch.zeros(1, 13)
    mask[0, 5:11] = 1.0
    batch = {"targets": targets, "chunk_mask": mask, "chunk_entropy": torch.rand(1, 13, generator=g) * 2}
    term = example.ChunkConfidence(example.ChunkConfidence.Settings(weight=0.5, temperature=0.7))
    terms, kappas = [CrossEntropy(), term], [1.0, 0.5]
    inputs = [(targets, weights), term.inputs(batch)]
    logits = h @ w.t()
    plain = plain_parts(terms, kappas, logits, targets, inputs)
    ce = torch.nn.functional.cross_entropy(logits[0], targets[0].clamp_min(0), reduction="none")
    by_hand = (mask[0] * torch.exp(-batch["chunk_entropy"][0] / 0.7) * ce).sum()
    assert plain["chunk_confidence"].item() == pytest.approx(by_hand.item(), rel=1e-5)
    fused = chunked_parts(h, w, targets, terms, kappas, inputs, chunk_tokens=chunk)
    for name in ("objective", "cwce", "chunk_confidence"):
        assert fused[name].item() == pytest.approx(plain[name].item(), rel=1e-5), name
    ga = torch.autograd.grad(plain["objective"], [h, w])
    gb = torch.autograd.grad(fused["objective"], [h, w])
    for a, b in zip(ga, gb, strict=True):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-6)


def test_dante_train_trains_the_example_term_named_in_a_recipe(tmp_path, teacher_dir, student_dir):
    import yaml
    from test_train_token_kd import _payload_rows
    from train_helpers import make_cache_lines, recipe_data, write_cache
    from typer.testing import CliRunner

    from dante.cli import app

    cache = write_cache(tmp_path / "cache", _payload_rows(teacher_dir, make_cache_lines(16)))
    data = recipe_data(tmp_path, student_dir, cache, steps=3, loss={"tea": {"enabled": False}})
    data["train"]["loss"].update(plugins=[str(EXAMPLE)], chunk_confidence={"weight": 0.5, "temperature": 1.0})
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(data))
    try:
        result = CliRunner().invoke(app, ["train", str(recipe)])
        assert result.exit_code == 0, result.output
        run = tmp_path / "run" / "student"
        rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if '"loss"' in line]
        assert rows and all(r["chunk_confidence"] > 0 and r["lambda_chunk_confidence"] == 0.5 for r in rows)
        kd = json.loads((run / "dante_manifest.json").read_text())["data"]["token_kd"]
        assert kd["aligned"] > 0 and kd["entropy_chunks"] > 0 and "positions" not in kd  # only its target built
    finally:
        REGISTRY.pop("chunk_confidence", None)
        TARGETS.pop("chunk_entropy", None)
