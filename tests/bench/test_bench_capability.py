"""The capability-transfer bench's statistics (bench/capability_transfer.py) against hand values."""

import importlib.util
from pathlib import Path

import pytest

from dante.eval.scores import mcnemar_exact

_SPEC = importlib.util.spec_from_file_location(
    "capability_transfer", Path(__file__).parents[2] / "bench" / "capability_transfer.py"
)
capability = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(capability)


def test_mcnemar_exact_by_hand():
    a = dict.fromkeys(range(10), False)
    b = {i: i < 5 for i in range(10)}  # b right on 5 rows a got wrong, never the reverse
    assert mcnemar_exact(a, b) == {"rows": 10, "b_only": 5, "a_only": 0, "p_value": pytest.approx(2 / 32)}
    b[9], a[8] = True, True  # 6 vs 1 discordant: p = 2 * (C(7,0) + C(7,1)) / 2^7
    assert mcnemar_exact(a, b)["p_value"] == pytest.approx(2 * 8 / 128)
    assert mcnemar_exact(a, a)["p_value"] == 1.0  # no discordant rows


def test_recipe_scales_the_demo_and_sft_switches_every_dante_addition_off():
    args = capability.parse_args(["--prompts", "40", "--epochs", "2", "--batch", "8", "--out", "/tmp/x"])
    recipe = capability.recipe_for(args, *capability.SFT_FLAGS)
    t = recipe.train
    assert t.steps == 10 and t.loss.ce_ramp_end == 10 and recipe.prompts.limit == 40
    assert not (t.loss.cwce or t.loss.tea or t.loss.ce_schedule) and t.curriculum == "shuffle"
    assert recipe.eval.tasks == [capability.TASK] and recipe.eval.suite is None


def test_each_ablation_switches_exactly_one_addition_off():
    args = capability.parse_args(["--prompts", "32", "--batch", "16", "--out", "/tmp/x"])
    full = capability.recipe_for(args).train
    assert full.loss.cwce and full.loss.tea and full.loss.ce_schedule and full.curriculum == "entropy"
    for name, off in (("no-cwce", "cwce"), ("no-tea", "tea"), ("no-ce-schedule", "ce_schedule")):
        t = capability.recipe_for(args, *capability.SETTINGS[name]).train
        assert [k for k in ("cwce", "tea", "ce_schedule") if not getattr(t.loss, k)] == [off]
        assert t.curriculum == "entropy"
    t = capability.recipe_for(args, *capability.SETTINGS["no-curriculum"]).train
    assert t.curriculum == "shuffle" and t.loss.cwce and t.loss.tea and t.loss.ce_schedule
    assert capability.recipe_for(capability.parse_args(["--split", "validation"])).eval.tasks == [
        capability.TASKS["validation"]
    ]
