"""The capability-transfer bench's statistics (bench/capability_transfer.py) against hand values."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from dante.eval.scores import mcnemar_exact

_SPEC = importlib.util.spec_from_file_location(
    "capability_transfer", Path(__file__).parents[2] / "bench" / "capability_transfer.py"
)
capability = importlib.util.module_from_spec(_SPEC)
sys.modules["capability_transfer"] = capability  # dataclasses look their module up while the file runs
_SPEC.loader.exec_module(capability)


def test_mcnemar_exact_by_hand():
    a = dict.fromkeys(range(10), False)
    b = {i: i < 5 for i in range(10)}  # b right on 5 rows a got wrong, never the reverse
    assert mcnemar_exact(a, b) == {"rows": 10, "b_only": 5, "a_only": 0, "p_value": pytest.approx(2 / 32)}
    b[9], a[8] = True, True  # 6 vs 1 discordant: p = 2 * (C(7,0) + C(7,1)) / 2^7
    assert mcnemar_exact(a, b)["p_value"] == pytest.approx(2 * 8 / 128)
    assert mcnemar_exact(a, a)["p_value"] == 1.0  # no discordant rows


def test_recipe_scales_the_demo_and_a_replicate_varies_prompts_teacher_dtype_and_seed():
    args = capability.parse_args(["--prompts", "40", "--epochs", "2", "--batch", "8", "--out", "/tmp/x"])
    recipe = capability.recipe_for(args, 1, *capability.SETTINGS["sft"].flags)
    t = recipe.train
    assert t.steps == 10 and t.loss.cwce.ramp_end == 10 and recipe.prompts.limit == 40
    assert not (t.loss.cwce.weighted or t.loss.tea.enabled or t.loss.cwce.schedule) and t.curriculum == "shuffle"
    assert recipe.eval.tasks == ["rg_chain_sum_2x2_validation"] and recipe.eval.suite is None
    assert (recipe.prompts.seed, t.seed, recipe.teacher.dtype) == (0, 1, "auto")  # replicate 1: the recipe's prompts
    two = capability.recipe_for(args, 2)
    assert (two.prompts.seed, two.train.seed, two.teacher.dtype) == (1, 2, "float32")
    assert str(two.cache_dirs[0]).endswith("/tmp/x/r2/cache")
    test = capability.recipe_for(capability.parse_args(["--task", "products", "--split", "test"]), None)
    assert test.eval.tasks == ["rg_products_2x2"] and test.teacher.model == "pypi:qwen2.5-coder-1.5b-instruct"


def test_each_ablation_switches_exactly_one_addition_off():
    args = capability.parse_args(["--prompts", "32", "--batch", "16", "--out", "/tmp/x"])
    full = capability.recipe_for(args, 1, *capability.SETTINGS["dante"].flags).train
    assert (
        full.loss.cwce.weighted and full.loss.tea.enabled and full.loss.cwce.schedule and full.curriculum == "entropy"
    )
    assert capability.recipe_for(args, 1).train.curriculum == "shuffle"  # the demo's, chosen on validation

    def off(t):
        switches = {"cwce": t.loss.cwce.weighted, "tea": t.loss.tea.enabled, "ce_schedule": t.loss.cwce.schedule}
        return [k for k, on in switches.items() if not on]

    for name, key in (("no-cwce", "cwce"), ("no-tea", "tea"), ("no-ce-schedule", "ce_schedule")):
        t = capability.recipe_for(args, 1, *capability.SETTINGS[name].flags).train
        assert off(t) == [key]
        assert t.curriculum == "entropy"
        t = capability.recipe_for(args, 1, *capability.SETTINGS[f"shuffled-{name}"].flags).train
        assert off(t) == [key]
        assert t.curriculum == "shuffle"
    t = capability.recipe_for(args, 1, *capability.SETTINGS["no-curriculum"].flags).train
    assert t.curriculum == "shuffle" and off(t) == []


def test_on_policy_settings_start_from_sft_and_the_baselines_match_their_budget(tmp_path):
    args = capability.parse_args(["--out", str(tmp_path)])
    dense = capability.SETTINGS["sft-op-dense"]
    t = capability.recipe_for(args, 1, *dense.flags).train
    assert dense.warm == "sft" and t.on_policy.fraction == 1.0 and t.loss.policy_gradient.kl_coef == 0.0
    dense_kl = t.loss.dense_kl
    assert dense_kl.weight == 1.0 and dense_kl.top_k == 20 and dense_kl.direction == "reverse"
    assert capability.SETTINGS["sft-long"].steps == 2.0 and capability.SETTINGS["op-dense"].warm is None
    # sft-tokens: as many teacher tokens as SFT's cache plus what the on-policy run scored, in whole batches
    folder = capability.student_dir(args, 1, "sft-op-dense")
    folder.mkdir(parents=True)
    compute = {"tokens_generated": 6000, "tokens_scored": 12000}
    (folder / "dante_manifest.json").write_text(json.dumps({"train_records": 300, "teacher_compute": compute}))
    assert capability.extra_prompts(args, 1) == 300 + 16 * 38  # 12000 / 20 per record = 600 -> 608
    assert all(s.warm is None or s.warm in capability.SETTINGS for s in capability.SETTINGS.values())


def test_the_reference_setting_is_checked_like_the_others():
    assert capability.parse_args(["--reference", "sft-long"]).reference == "sft-long"
    with pytest.raises(SystemExit, match="unknown settings"):
        capability.main(["--settings", "sft", "--reference", "sft-longer", "--eval-only"])


def test_on_policy_trace_averages_the_first_and_last_sampled_steps_by_hand(tmp_path):
    args = capability.parse_args(["--out", str(tmp_path)])
    folder = capability.student_dir(args, 1, "op-dense")
    folder.mkdir(parents=True)
    rows = [{"step": 1, "loss": 1.0}]  # an off-policy step (no samples) is not a sampled step
    rows += [
        {"step": s, "on_policy_samples": 2, "on_policy_tokens": 2 * s, "on_policy_kl_per_token": 0.1 * s}
        for s in range(2, 6)
    ]
    rows.append({"step": 5, "on_policy_samples": 2, "on_policy_tokens": 20, "on_policy_kl_per_token": 0.9})  # resumed
    (folder / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    trace = capability.on_policy_trace(args, "op-dense", [1, 2], last=2)  # replicate 2 has no run: left out
    # sampled steps 2, 3, 4, 5 (the re-logged 5 counts): first two 0.2, 0.3; last two 0.4, 0.9
    assert trace == {
        "kl_first": pytest.approx(0.25),
        "kl_last": pytest.approx(0.65),
        "tokens_first": pytest.approx(2.5),  # 4/2 and 6/2 tokens per sample
        "tokens_last": pytest.approx(7.0),  # 8/2 and 20/2
        "replicates": 1,
    }
    assert capability.on_policy_trace(args, "sft", [1]) is None


def test_curriculum_diagnosis_sorts_questions_into_their_problem_types():
    spec = importlib.util.spec_from_file_location(
        "curriculum_diagnosis", Path(__file__).parents[2] / "bench" / "curriculum_diagnosis.py"
    )
    diag = importlib.util.module_from_spec(spec)
    sys.modules["curriculum_diagnosis"] = diag
    spec.loader.exec_module(diag)
    assert set(diag.TASKS) == set(capability.TASKS)  # every task of the capability bench has its problem types
    assert diag.generator_settings("products") == {"min_digits": 1, "max_digits": 2}  # from configs/products.yaml
    chain, products = diag.TASKS["chain_sum"], diag.TASKS["products"]
    assert chain.kind("State the final answer to the following arithmetic problem: 12 + 7 =", "19") == "addition"
    assert chain.kind("... problem: 7 - 12 =", "-5") == "subtraction, negative"
    assert chain.kind("... problem: 12 - 7 =", "5") == "subtraction, ≥ 0"
    assert products.kind("Solve the following multiplication: 8 * 2. Give only the result.", "16") == products.kinds[0]
    assert products.kind("Solve the following multiplication: 47 * 83.", "3901") == products.kinds[1]
    with pytest.raises(ValueError, match="same length"):
        products.kind("Solve the following multiplication: 47 * 8.", "376")


def test_the_end_of_turn_settings_score_the_end_and_subtract_a_baseline(tmp_path):
    args = capability.parse_args(["--out", str(tmp_path)])
    t = capability.recipe_for(args, 1, *capability.SETTINGS["sft-op-end"].flags).train
    pg = t.loss.policy_gradient
    assert pg.score_end and pg.baseline == "mean" and pg.kl_coef == 1.0
    plain = capability.recipe_for(args, 1, *capability.SETTINGS["sft-op"].flags).train
    assert not plain.loss.policy_gradient.score_end and plain.loss.policy_gradient.baseline == "none"


def test_every_setting_loads_as_a_recipe_and_names_a_known_diagnostic_order():
    """The curriculum diagnostics are not recipe values any more (bench/orders.py, through the
    trainer's hook): every setting's flags must still load, and an order must exist."""
    sys.path.insert(0, str(Path(__file__).parents[2] / "bench"))
    from orders import ORDERS

    args = capability.parse_args(["--prompts", "40", "--out", "/tmp/x"])
    for name, setting in capability.SETTINGS.items():
        capability.recipe_for(args, 1, *setting.flags)
        assert setting.order is None or setting.order in ORDERS, name
    assert capability.SETTINGS["dante-reversed"].order == "entropy_reversed"


@pytest.mark.slow  # needs trl, which `make test-slow` installs (the bench extra)
def test_the_gold_peer_trains_on_the_cache_records_and_writes_what_the_summary_reads(
    tmp_path, teacher_dir, student_dir
):
    sys.path.insert(0, str(Path(__file__).parents[1] / "train"))
    from train_helpers import make_cache_lines, write_cache

    from dante.cache.records import read_cache

    records = read_cache(write_cache(tmp_path / "cache", make_cache_lines(12)))
    folder = tmp_path / "student-gold"
    manifest = capability.run_gold(records, str(student_dir), str(teacher_dir), folder, steps=2, batch=4, lr=1e-3)
    assert manifest["steps"] == 2 and manifest["train_records"] == 12
    assert manifest["teacher_compute"]["tokens_scored"] > 0  # the teacher ran on every step's sequences
    assert json.loads((folder / "dante_manifest.json").read_text())["teacher_compute"] == manifest["teacher_compute"]
    assert (folder / "model.safetensors").is_file() and not (folder / "trl").exists()
    losses = [h["loss"] for h in manifest["log_history"] if "loss" in h]
    assert len(losses) == 2 and all(loss == loss for loss in losses)  # logged and not NaN
    assert capability.SETTINGS["gold"].gold and not capability.SETTINGS["gold"].flags


def test_the_test_split_uses_only_a_direction_registered_before_its_first_read(tmp_path, monkeypatch):
    """A one-sided test needs an entry in the directions file written before the first test read;
    a sign the validation folders show but nobody registered is said and not used; the read is stamped."""
    import directions

    path = tmp_path / "directions.json"
    data = {"comparisons": {}}
    directions.register(data, "chain_sum:sft-kd:sft", "less", "validation -2", now="2026-12-01T00:00:00+00:00")
    directions.save(data, path)
    args = capability.parse_args(["--split", "test", "--directions", str(path)])
    monkeypatch.setattr(capability, "validation_direction", lambda args, name, replicates: 1)
    registered, notes = directions.load(path), []
    assert capability.test_direction(args, "sft-kd", [1], registered, notes)[0] == -1
    sign, why = capability.test_direction(args, "sft-chunk", [1], registered, notes)
    assert sign == 0 and "show greater, not registered, so not used" in why and len(notes) == 2
    assert registered["comparisons"]["chain_sum:sft-kd:sft"]["first_test_read"] is not None
    validation = capability.parse_args(["--split", "validation", "--directions", str(path)])
    assert capability.test_direction(validation, "sft-kd", [1], registered, [])[0] == 0


def test_the_summary_keeps_every_model_it_read_question_by_question(tmp_path):
    """keep_per_question: the teacher, the student before and each setting of each replicate,
    merged into bench/per_question.py's file, which replaces a model evaluated again."""
    import per_question

    args = capability.parse_args(["--out", str(tmp_path / "run"), "--per-question", str(tmp_path / "kept")])
    task = capability.eval_task(args)

    def evaluated(folder: Path, right: list[bool]) -> None:
        folder.mkdir(parents=True)
        rows = [{"doc_id": q, "filter": "none", "exact_match": float(ok)} for q, ok in enumerate(right)]
        rows.append({"doc_id": 0, "filter": "strict", "exact_match": 0.0})  # another filter: not read
        (folder / f"samples_{task}.jsonl").write_text("\n".join(json.dumps(r) for r in rows))

    evaluated(capability.eval_dir(args, None) / "teacher", [True, True, False])
    evaluated(capability.eval_dir(args, None) / "base", [False, False, False])
    evaluated(capability.eval_dir(args, 2) / "student-sft", [True, False, False])
    evaluated(capability.eval_dir(args, 2) / "student-sft-kd", [True, False, True])
    path = capability.keep_per_question(args, ["sft-kd", "sft-op"], [2])  # sft-op was never evaluated
    assert path == tmp_path / "kept" / "chain_sum-validation.json.gz"  # the default split
    data = per_question.load(path)
    assert data["eval_task"] == task and data["questions"] == [0, 1, 2]
    assert data["models"] == {"base": "000", "r2/student-sft": "100", "r2/student-sft-kd": "101", "teacher": "110"}


def test_equal_token_caches_are_sized_from_the_teachers_tokens_and_grow_from_the_smaller_one(tmp_path, monkeypatch):
    """direct-tokens (control (c) of issue 49): the direct cache at --prompts first, its tokens per
    record, then as many prompts as the main cache's tokens buy, in whole batches; a larger cache
    starts as a copy of the smaller one so only the new prompts are written."""
    args = capability.parse_args(["--task", "reasoning", "--out", str(tmp_path)])
    assert args.on_policy == "think-op-dense"  # the reasoning task's on-policy run, for think-tokens
    assert capability.cache_folder(args, 300) == "cache" and capability.cache_folder(args, 636) == "cache-636"
    assert capability.cache_folder(args, 300, "direct") == "cache-direct"
    assert capability.cache_folder(args, 1408, "direct") == "cache-direct-1408"

    def cache(folder: Path, tokens: list[int]) -> None:
        folder.mkdir(parents=True)
        rows = [
            {"id": f"p{i}", "prompt": f"q{i}", "teacher_text": "The answer is 1.", "completion_tokens": t}
            for i, t in enumerate(tokens)
        ]
        (folder / "shard-00000.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        (folder / "manifest.json").write_text("{}")

    cache(tmp_path / "r1" / "cache", [42] * 300)  # 12 600 reasoning tokens
    cache(tmp_path / "r1" / "cache-direct", [9] * 299 + [10])  # 2 701: 9.0033 a record
    assert capability.cache_tokens(tmp_path / "r1" / "cache-direct") == (300, 2701)
    monkeypatch.setattr("dante.cache.run.run_cache", lambda recipe: None)  # both caches are there
    prompts = capability.equal_token_prompts(args, 1, "direct")
    assert prompts == 16 * 88  # 12 600 / 9.0033 = 1399.4 prompts -> 88 batches of 16 = 1408
    capability.seeded_cache(args, 1, prompts, "direct")
    assert capability.cache_tokens(tmp_path / "r1" / "cache-direct-1408") == (300, 2701)  # the 300 already written
    capability.seeded_cache(args, 1, 300, "direct")  # the --prompts cache itself: nothing to copy
    assert sorted(p.name for p in (tmp_path / "r1").iterdir()) == ["cache", "cache-direct", "cache-direct-1408"]
    setting = capability.SETTINGS["direct-tokens"]
    assert setting.equal_tokens and setting.cache == "direct" and setting.warm is None
    assert (
        capability.SETTINGS["think-tokens"].extra_prompts
        and capability.SETTINGS["think-tokens"].warm == "think-keep-long"
    )


def test_teacher_tokens_count_a_warm_starts_cache_once_and_a_larger_cache_beyond_it(tmp_path):
    """The summary's teacher tokens: the SFT start's cache, plus what an on-policy run scored, plus
    what a control's larger cache generated beyond the start's (think-tokens), by hand."""
    args = capability.parse_args(["--task", "reasoning", "--out", str(tmp_path)])

    def trained(name, generated, scored=0):
        folder = capability.student_dir(args, 1, name)
        folder.mkdir(parents=True)
        compute = {"tokens_generated": generated, "tokens_scored": scored}
        (folder / "dante_manifest.json").write_text(json.dumps({"teacher_compute": compute}))

    trained("think-keep-long", 12_451)
    trained("think-op-pg", 12_451, scored=15_299)  # the same cache: counted once
    trained("think-tokens", 26_031)  # its own cache of 636 records, the first 300 the start's
    assert capability.teacher_tokens(args, "think-keep-long", [1]) == 12_451
    assert capability.teacher_tokens(args, "think-op-pg", [1]) == 12_451 + 15_299
    assert capability.teacher_tokens(args, "think-tokens", [1]) == 26_031
    assert capability.teacher_tokens(args, "think-more", [1]) is None  # not trained
