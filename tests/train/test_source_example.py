"""Adding a batch source, done once as docs/training.md says: a source that replays plain text
(general-domain text mixed into distillation so the student does not forget it, as continual
pre-training recipes do) and its lead term, both in this file. The only line outside it a real
source needs is its entry in ``sources.build_sources`` (patched here); the loop, ``RunState``,
the checkpoint and the schema are not touched, and a killed run resumes to the same losses because
the source saves and restores its own cursor."""

from __future__ import annotations

import json

import pytest
from pydantic import BaseModel, Field
from train_helpers import interrupt_at_step, recipe_data

import dante.train.loop as loop
import dante.train.sources as sources_pkg
from dante.config import load_recipe
from dante.train.checkpoint import latest_checkpoint
from dante.train.loop import train
from dante.train.objective.losses import IGNORE
from dante.train.objective.terms import REGISTRY, CrossEntropy, Term, register_term, scales, source_terms
from dante.train.sources.base import Draw, micro_batches, rank_slice
from dante.train.sources.collate import collate
from dante.train.sources.examples import Example
from dante.train.sources.records import empty_example

TEXTS = [f"Replay text number {i}: the quick brown fox jumps over the lazy dog." for i in range(7)]


class ReplayCE(CrossEntropy):
    """The replay source's lead term: plain CE on every token of the text, λ = ``weight``."""

    name = "replay_ce"
    sources = ("replay",)
    lead = True
    logs = ("replay_plain",)

    class Settings(BaseModel):
        weight: float = Field(0.5, gt=0.0)
        share: float = Field(0.25, gt=0.0, le=1.0)  # the source's weight in the step's mix

    def __init__(self, settings: ReplayCE.Settings) -> None:
        self.settings = settings

    @classmethod
    def from_recipe(cls, cfg):  # a registered term's rule (CrossEntropy's lead is always on): train.loss.replay_ce
        return Term.from_recipe.__func__(cls, cfg)

    def weight(self, step, total_steps):
        return self.settings.weight

    def log(self, value, lam):
        return {"replay_ce": value, "lambda_replay": lam}


class Replay:
    """Two texts a step, in order, round and round; its state is the position in ``TEXTS``."""

    name = "replay"
    older_keys: dict[str, str] = {}
    active = True

    def __init__(self, recipe, student, accelerator, pad_id: int) -> None:
        self.cfg, self.accelerator, self.pad_id = recipe.train, accelerator, pad_id
        self.terms = source_terms(self.name, self.cfg)
        self.share = self.terms[0].settings.share
        ids = [student.tokenizer(t)["input_ids"] for t in TEXTS]
        self.examples = [Example(f"replay-{i}", x, x[1:] + [IGNORE], len(x) - 1, None) for i, x in enumerate(ids)]
        self.cursor = 0

    def draw(self, step: int) -> Draw:
        batch = [(self.cursor + j) % len(self.examples) for j in range(2)]
        self.cursor += len(batch)
        acc = self.accelerator
        groups = micro_batches(
            rank_slice(batch, acc.process_index, acc.num_processes), len(batch), acc.num_processes, 2
        )
        lams, kappas = scales(self.terms, step, self.cfg.steps)
        denom = float(sum(self.examples[i].n_completion for i in batch))
        return ReplayDraw(self, groups, lams, kappas, denom)

    def state_dict(self):
        return {"cursor": self.cursor}

    def load_state_dict(self, state):
        self.cursor = int(state.get("cursor", 0))

    def held_out_loss(self, forward):
        return None

    def manifest(self, accelerator):
        return {"replay": {"texts_seen": self.cursor}}

    def close(self, seal: bool = True) -> None:
        pass


class ReplayDraw(Draw):
    def __init__(self, source: Replay, groups, lams, kappas, denom) -> None:
        super().__init__(source.terms, lams, kappas, source.share, denom, source.accelerator.num_processes, len(groups))
        self.source, self.groups = source, groups
        self.records = sum(len(g) for g in groups)
        self.tokens = sum(len(source.examples[i].input_ids) for g in groups for i in g)

    def micro_batch(self, k):
        src, group = self.source, self.groups[k]
        return collate(
            [src.examples[i] for i in group] or [empty_example(src.pad_id)],
            [1.0] * len(group) or [0.0],
            packing=src.cfg.packing,
            pad_id=src.pad_id,
        )

    def log(self, accelerator):
        value = self.reduced(accelerator, ["replay_ce"])[0] / self.denom
        return {"loss": self.lams[0] * value, **self.terms[0].log(value, self.lams[0])}


@pytest.fixture()
def with_replay(monkeypatch):
    """The source's one line in ``build_sources``, and its term registered (as a plugin module would)."""
    register_term(ReplayCE)
    real = sources_pkg.build_sources

    def build(recipe, student, accelerator, model, pad_id, hooks=None):
        return [*real(recipe, student, accelerator, model, pad_id, hooks), Replay(recipe, student, accelerator, pad_id)]

    monkeypatch.setattr(loop, "build_sources", build)
    yield
    REGISTRY.pop(ReplayCE.name, None)


def _rows(path):
    return [json.loads(line) for line in path.read_text().splitlines() if '"loss"' in line]


def test_a_new_source_trains_logs_and_resumes_through_the_unchanged_loop(
    tmp_path, student_dir, tiny_cache, monkeypatch, with_replay
):
    kw = {"steps": 6, "checkpoint_every": 2, "keep_checkpoints": 1, "loss": {"replay_ce": {"weight": 0.5}}}
    full = train(load_recipe(data=recipe_data(tmp_path / "a", student_dir, tiny_cache, **kw)))
    rows = _rows(full.metrics_path)
    assert len(rows) == 6 and all(r["lambda_replay"] == 0.5 and r["replay_ce"] > 0 for r in rows)
    for r in rows:  # the step's loss mixes the sources by their shares: records 1.0, replay 0.25
        records = r["lambda_ce"] * r["cwce"]
        assert r["loss"] == pytest.approx(records + 0.25 * 0.5 * r["replay_ce"] + r["lambda_tea"] * r["tea"], rel=1e-6)
    manifest = json.loads(full.manifest_path.read_text())
    assert manifest["replay"] == {"texts_seen": 12}

    recipe = load_recipe(data=recipe_data(tmp_path / "b", student_dir, tiny_cache, **kw))
    undo = interrupt_at_step(monkeypatch, 5)
    with pytest.raises(KeyboardInterrupt):
        train(recipe)
    undo()
    assert latest_checkpoint(recipe.student_dir).name == "step-000004"
    resumed = train(recipe, resume=True)
    assert [r["loss"] for r in _rows(resumed.metrics_path)] == pytest.approx([r["loss"] for r in rows], rel=1e-6)
    assert json.loads(resumed.manifest_path.read_text())["replay"] == {"texts_seen": 12}
