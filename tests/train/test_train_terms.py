"""The objective's terms as units (dante.train.objective.terms): a term registered from outside
the package (here, a z-loss on the log-partition, as PaLM uses) trains through the plain and the
fused lm_head alike, is logged under its name, and counts in the step's loss; the built-in terms'
registry and error paths."""

from __future__ import annotations

import json

import pytest
import torch
from pydantic import BaseModel, Field
from train_helpers import recipe_data

from dante.config import TrainConfig, load_recipe
from dante.errors import DanteError
from dante.train.objective.chunked_ce import chunked_parts
from dante.train.objective.losses import IGNORE
from dante.train.objective.terms import (
    REGISTRY,
    CrossEntropy,
    DenseKL,
    PolicyGradient,
    Term,
    TileForm,
    TokenKD,
    plain_parts,
    register_term,
    scales,
    source_terms,
)


class ZLoss(Term):
    """Σ_t (log Z_t)² over the positions with a target, Z_t = Σ_i exp(z_ti); dS/dz_i = 2·log Z·p_i."""

    name = "z_loss"

    class Settings(BaseModel):
        weight: float = Field(1e-3, ge=0.0)

    def __init__(self, settings: ZLoss.Settings) -> None:
        self.settings = settings

    def weight(self, step, total_steps):
        return self.settings.weight

    def inputs(self, batch):
        return ((batch["targets"] != IGNORE).float(),)

    def plain(self, logits, targets, inputs):
        lse = torch.logsumexp(logits.float(), dim=-1)
        return {self.name: (inputs[0] * lse * lse).sum()}

    def tile(self, tile, inputs, scale):
        lse = tile.z_max + tile.sum_exp.log()
        m = inputs[0]
        return TileForm({self.name: (m * lse * lse).sum()}, 2.0 * scale * m * lse, None)


@pytest.fixture
def z_loss():
    register_term(ZLoss)
    yield ZLoss
    REGISTRY.pop("z_loss", None)


def _problem(seed=0, n=13, d=6, v=11):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(1, n, d, generator=g, requires_grad=True)
    w = torch.randn(v, d, generator=g, requires_grad=True)
    targets = torch.randint(0, v, (1, n), generator=g)
    targets[0, :3] = IGNORE
    weights = torch.rand(1, n, generator=g) * (targets != IGNORE)
    return h, w, targets, weights


@pytest.mark.parametrize("chunk", [1, 4, 64])
def test_a_registered_term_fuses_into_the_lm_head_with_the_plain_value_and_gradient(chunk):
    h, w, targets, weights = _problem()
    terms = [CrossEntropy(), ZLoss(ZLoss.Settings(weight=0.5))]
    kappas = [1.0, 0.25]
    inputs = [(targets, weights), ((targets != IGNORE).float(),)]
    logits = h @ w.t()
    plain = plain_parts(terms, kappas, logits, targets, inputs)
    fused = chunked_parts(h, w, targets, terms, kappas, inputs, chunk_tokens=chunk)
    lse = torch.logsumexp(logits[0, 3:], dim=-1)
    assert plain["z_loss"].item() == pytest.approx((lse * lse).sum().item(), rel=1e-6)  # by hand
    for name in ("objective", "cwce", "ce", "z_loss"):
        assert fused[name].item() == pytest.approx(plain[name].item(), rel=1e-5), name
    ga = torch.autograd.grad(plain["objective"], [h, w])
    gb = torch.autograd.grad(fused["objective"], [h, w])
    for a, b in zip(ga, gb, strict=True):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-6)


def _rows(path):
    return [json.loads(line) for line in path.read_text().splitlines() if '"loss"' in line]


def test_training_with_a_term_registered_from_outside(tmp_path, student_dir, tiny_cache, z_loss):
    """Adding a term = its unit + its settings: nothing in the loop changes. The term is logged with
    its λ, the step's loss is Σ λ·value, and a strong z-loss shrinks the log-partition it penalises."""
    from dante.train.loop import train

    def run(name, **loss):
        data = recipe_data(
            tmp_path / name, student_dir, tiny_cache, steps=8, lr=3e-2, loss={"tea": {"enabled": False}, **loss}
        )
        return _rows(train(load_recipe(data=data)).metrics_path)

    strong = run("strong", z_loss={"weight": 1.0})
    weak = run("weak", z_loss={"weight": 1e-9})
    without = run("plain")
    assert all("z_loss" in r and r["lambda_z_loss"] == 1.0 for r in strong)
    assert all("z_loss" not in r for r in without)
    for r in strong:
        assert r["loss"] == pytest.approx(r["lambda_ce"] * r["cwce"] + 1.0 * r["z_loss"], rel=1e-9)
    assert strong[0]["z_loss"] == pytest.approx(weak[0]["z_loss"], rel=1e-6)  # the same first batch and weights
    assert weak[0]["cwce"] == pytest.approx(without[0]["cwce"], rel=1e-6)
    assert strong[-1]["z_loss"] < 0.9 * weak[-1]["z_loss"]  # the term is what the gradient follows


def test_terms_per_source_and_their_weights():
    cfg = TrainConfig.model_validate(
        {"loss": {"token_kd": {"weight": 0.3}, "dense_kl": {"weight": 1.0, "top_k": 5}}, "on_policy": {"fraction": 0.5}}
    )
    assert [type(t) for t in source_terms("records", cfg)] == [CrossEntropy, TokenKD]
    assert [type(t) for t in source_terms("on_policy", cfg)] == [PolicyGradient, DenseKL]
    lams, kappas = scales(source_terms("records", cfg), 1, 10)
    assert lams == [0.7, 0.3] and kappas == [1.0, pytest.approx(0.3 / 0.7)]  # λ_CE(1) = 0.7 (card)
    plain = TrainConfig.model_validate({"loss": {"token_kd": {"weight": 0.3, "schedule": True}}})
    assert scales(source_terms("records", plain), 1, 10)[1] == [1.0, 0.0]  # λ_KD(1) = 0: left out


def test_an_unknown_term_is_a_clear_error():
    cfg = TrainConfig.model_validate({"loss": {"nope": {}}})
    with pytest.raises(DanteError, match="no loss term named 'nope'") as err:
        source_terms("records", cfg)
    assert err.value.field == "train.loss.nope"
    with pytest.raises(ValueError, match="train.loss.cwce_flor: unknown key"):  # a typo of a setting, not a term
        TrainConfig.model_validate({"loss": {"cwce_flor": 0.3}})


def test_a_term_without_settings_cannot_be_registered():
    class Bare(Term):
        name = "bare"

    with pytest.raises(ValueError, match="Settings"):
        register_term(Bare)


PLUGIN = '''"""A user's own loss term, in a file of its own outside the dante package."""

import torch
from pydantic import BaseModel, Field

from dante.train.objective.losses import IGNORE
from dante.train.objective.terms import Term, TileForm, register_term


@register_term
class LogitNorm(Term):
    name = "logit_norm"

    class Settings(BaseModel):
        weight: float = Field(1e-3, ge=0.0)

    def __init__(self, settings):
        self.settings = settings

    def weight(self, step, total_steps):
        return self.settings.weight

    def inputs(self, batch):
        return ((batch["targets"] != IGNORE).float(),)

    def plain(self, logits, targets, inputs):
        lse = torch.logsumexp(logits.float(), dim=-1)
        return {self.name: (inputs[0] * lse * lse).sum()}

    def tile(self, tile, inputs, scale):
        lse = tile.z_max + tile.sum_exp.log()
        m = inputs[0]
        return TileForm({self.name: (m * lse * lse).sum()}, 2.0 * scale * m * lse, None)
'''


def test_dante_train_loads_a_term_from_a_plugin_file_named_in_the_recipe(tmp_path, student_dir, tiny_cache):
    """train.loss.plugins: the recipe names a .py file next to it; `dante train` imports it, the
    term registers itself and trains, logged under its name. A missing file or an unregistered term
    is an error naming the key and the fix, before any training."""
    import yaml
    from typer.testing import CliRunner

    from dante.cli import app

    (tmp_path / "my_terms.py").write_text(PLUGIN)
    data = recipe_data(tmp_path, student_dir, tiny_cache, steps=2, loss={"tea": {"enabled": False}})
    data["train"]["loss"].update(plugins=["my_terms.py"], logit_norm={"weight": 0.5})
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(data))
    try:
        result = CliRunner().invoke(app, ["train", str(recipe)])
        assert result.exit_code == 0, result.output
        rows = _rows(tmp_path / "run" / "student" / "metrics.jsonl")
        assert rows and all(r["lambda_logit_norm"] == 0.5 and r["logit_norm"] > 0 for r in rows)
    finally:
        REGISTRY.pop("logit_norm", None)

    data["train"]["loss"]["plugins"] = ["missing_terms.py"]
    recipe.write_text(yaml.safe_dump({**data, "output_dir": str(tmp_path / "run2")}))
    result = CliRunner().invoke(app, ["train", str(recipe)])
    assert result.exit_code != 0 and "train.loss.plugins[0]" in result.output and "no such file" in result.output

    data["train"]["loss"]["plugins"] = []
    recipe.write_text(yaml.safe_dump({**data, "output_dir": str(tmp_path / "run3")}))
    result = CliRunner().invoke(app, ["train", str(recipe)])
    assert result.exit_code != 0 and "train.loss.logit_norm" in result.output
    assert "train.loss.plugins" in " ".join(result.output.split())


def test_an_old_recipe_loads_its_flat_term_keys_into_each_terms_settings(tmp_path, capsys):
    """Recipes written before each term owned its settings: the flat keys of the card's terms and
    of token KD and the chunk term, train.loss.terms, and the on-policy terms' keys in train.on_policy
    land in the new places, one notice a key, and give the recipe the new form gives."""
    import yaml

    old_loss = {
        "cwce": False,
        "cwce_floor": 0.2,
        "cwce_span": 0.6,
        "cwce_slope": 2.0,
        "cwce_center": 1.0,
        "normalise": "sequence",
        "ce_schedule": True,
        "ce_start": 0.5,
        "ce_end": 0.9,
        "ce_warmup_steps": 3,
        "ce_ramp_end": 9,
        "tea": False,
        "tea_start": 2.0,
        "tea_end": 0.5,
        "token_kd": 0.3,
        "token_kd_schedule": True,
        "token_kd_start": 0.1,
        "chunk_kd": 1.0,
        "chunk_kd_temperature": 50.0,
        "terms": {"z_loss": {"weight": 0.5}},
    }
    old_on_policy = {
        "fraction": 0.5,
        "kl_coef": 0.0,
        "score_end": True,
        "baseline": "mean",
        "dense_kl": 0.4,
        "dense_direction": "forward",
        "top_k": 7,
    }
    old = tmp_path / "old.yaml"
    old.write_text(yaml.safe_dump({"train": {"loss": old_loss, "on_policy": old_on_policy}}))
    loaded = load_recipe(old).train
    notices = [line for line in capsys.readouterr().err.splitlines() if line.startswith("dante: recipe key")]
    new = load_recipe(
        data={
            "train": {
                "loss": {
                    "cwce": {
                        "weighted": False,
                        "floor": 0.2,
                        "span": 0.6,
                        "slope": 2.0,
                        "center": 1.0,
                        "normalise": "sequence",
                        "schedule": True,
                        "start": 0.5,
                        "end": 0.9,
                        "warmup_steps": 3,
                        "ramp_end": 9,
                    },
                    "tea": {"enabled": False, "start": 2.0, "end": 0.5},
                    "token_kd": {"weight": 0.3, "schedule": True, "start": 0.1},
                    "chunk_kd": {"weight": 1.0, "temperature": 50.0},
                    "policy_gradient": {"kl_coef": 0.0, "score_end": True, "baseline": "mean"},
                    "dense_kl": {"weight": 0.4, "direction": "forward", "top_k": 7},
                    "z_loss": {"weight": 0.5},
                },
                "on_policy": {"fraction": 0.5},
            }
        }
    ).train
    assert capsys.readouterr().err == ""  # the new form: no notice
    assert loaded.model_dump() == new.model_dump()
    assert loaded.loss.term_settings() == {"z_loss": {"weight": 0.5}}
    assert len(notices) == len(old_loss) + len(old_on_policy) - 1  # every old key but fraction, once
    assert any("train.loss.terms.z_loss is now train.loss.z_loss" in n for n in notices)
    assert any("train.on_policy.dense_kl is now train.loss.dense_kl.weight" in n for n in notices)
    assert any("train.loss.tea (a value) is now train.loss.tea.enabled" in n for n in notices)
    over = load_recipe(
        data={"train": {"loss": {"token_kd": {"weight": 0.3}}}}, overrides=["train.loss.chunk_kd.weight=2"]
    )
    assert over.train.loss.chunk_kd.weight == 2.0 and capsys.readouterr().err == ""
    with pytest.raises(Exception, match="both set"):
        load_recipe(data={"train": {"loss": {"token_kd": {"schedule": True}, "token_kd_schedule": False}}})
    with pytest.raises(Exception, match="train.loss.cwce_floor and train.loss.cwce.floor are both set"):
        load_recipe(data={"train": {"loss": {"cwce": {"floor": 0.1}, "cwce_floor": 0.2}}})
    with pytest.raises(Exception, match="train.on_policy.top_k and train.loss.dense_kl.top_k are both set"):
        load_recipe(data={"train": {"loss": {"dense_kl": {"top_k": 3}}, "on_policy": {"top_k": 5}}})
