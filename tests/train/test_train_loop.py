"""The train loop end to end on a tiny student: learning, ablations, errors, outputs, resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from train_helpers import interrupt_at_step, make_cache_lines, recipe_data, write_cache

from dante.config import load_recipe
from dante.errors import DanteError, DataError
from dante.train.checkpoint import complete_checkpoints, latest_checkpoint
from dante.train.loop import train

ROOT = Path(__file__).resolve().parents[2]
PY = sys.executable


def _rows(path: Path) -> list[dict]:
    return [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()]


def _losses(path: Path) -> list[float]:
    return [r["loss"] for r in _rows(path) if "loss" in r]


def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def test_fifty_steps_lower_held_out_loss_and_write_outputs(tmp_path, student_dir, tiny_cache):
    recipe = load_recipe(
        data=recipe_data(
            tmp_path, student_dir, tiny_cache, steps=50, eval_fraction=0.25, eval_every=25, checkpoint_every=20
        )
    )
    result = train(recipe)
    assert result.steps == 50 and result.eval_loss < result.initial_eval_loss - 0.5
    out = recipe.student_dir
    rows = _rows(out / "metrics.jsonl")
    assert rows[0] == {"step": 0, "eval_loss": result.initial_eval_loss, "tokens": 0}
    steps = [r for r in rows if "loss" in r]
    assert [r["step"] for r in steps] == list(range(1, 51))
    for key in (
        "loss",
        "cwce",
        "ce",
        "tea",
        "lambda_ce",
        "lambda_tea",
        "lr",
        "grad_norm",
        "tokens",
        "tokens_per_s",
        "epoch",
    ):
        assert key in steps[0]
    assert steps[0]["lambda_tea"] == 1.0 and steps[-1]["lambda_tea"] == pytest.approx(0.1)
    assert [r["step"] for r in steps if "eval_loss" in r] == [25, 50]
    assert steps[-1]["records"] == 50 * 4  # batch_sequences records per step, packing or not
    manifest = json.loads((out / "dante_manifest.json").read_text())
    for key in (
        "config",
        "versions",
        "seed",
        "steps",
        "tokens_seen",
        "data",
        "wall_time_s",
        "device_type",
        "device_count",
        "device_hours",
    ):
        assert key in manifest
    assert manifest["tokens_seen"] == steps[-1]["tokens"] and manifest["data"]["truncated"] == 0
    assert manifest["device_name"].endswith(" bf16)") and " kernels, " in manifest["device_name"]  # the CPU's kernels
    assert (
        (out / "model.safetensors").is_file()
        and (out / "resolved_recipe.yaml").is_file()
        and (out / "tokenizer.json").is_file()
    )
    assert [p.name for p in complete_checkpoints(out)] == ["step-000020", "step-000040"]
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(out)  # a standard from_pretrained folder


@pytest.mark.parametrize(
    "flags",
    [
        {"loss": {"cwce": {"weighted": False}}},
        {"loss": {"tea": {"enabled": False}}},
        {"loss": {"cwce": {"schedule": False}}},
        {"curriculum": "shuffle"},
        {"curriculum": "none", "packing": False},
        {"batch_tokens": 150, "loss": {"cwce": {"normalise": "sequence"}}},
        {"loss": {"cwce": {"normalise": "card"}}, "gradient_checkpointing": True},
    ],
)
def test_ablation_flags_run(tmp_path, student_dir, tiny_cache, flags):
    recipe = load_recipe(data=recipe_data(tmp_path, student_dir, tiny_cache, steps=3, **flags))
    result = train(recipe)
    rows = [r for r in _rows(result.metrics_path) if "loss" in r]
    assert len(rows) == 3 and all(r["loss"] == r["loss"] for r in rows)
    if flags.get("loss", {}).get("tea") == {"enabled": False}:
        assert all(r["tea"] == 0.0 and r["lambda_tea"] == 0.0 for r in rows)
    if flags.get("loss", {}).get("cwce") == {"schedule": False}:
        assert all(r["lambda_ce"] == 1.0 for r in rows)


def test_hooks_see_every_micro_batch_and_step_and_replace_the_epoch_order(tmp_path, student_dir, tiny_cache):
    """The loop's hooks (what the benchmarks use instead of patching it): every collated micro-batch,
    every metrics row, and an epoch order from outside (bench/orders.py's diagnostics)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
    from dante.train.loop import Hooks
    from orders import entropy_batches

    def run(name, **hooks):
        seen, rows = [], []
        h = Hooks(micro_batch=lambda b: seen.append(b["input_ids"].tolist()), step_end=rows.append, **hooks)
        data = recipe_data(tmp_path / name, student_dir, tiny_cache, steps=3, curriculum="entropy", batch_tokens=150)
        train(load_recipe(data=data), hooks=h)
        return seen, rows

    card, card_rows = run("card")
    diagnostic, rows = run("batches", epoch_order=entropy_batches)
    assert [r["step"] for r in rows] == [1, 2, 3] and all("loss" in r for r in rows)
    assert len(card) >= 3 and diagnostic != card  # the same records in another order


def test_missing_entropy_with_curriculum_is_a_clear_error(tmp_path, student_dir):
    rows = make_cache_lines(6)
    rows[3]["output_entropy"] = None
    cache = write_cache(tmp_path / "cache", rows)
    with pytest.raises(DataError, match="'r003' has no output_entropy") as err:
        train(load_recipe(data=recipe_data(tmp_path, student_dir, cache, steps=1)))
    assert err.value.file.endswith("shard-00000.jsonl:4")
    train(
        load_recipe(data=recipe_data(tmp_path, student_dir, cache, steps=1, curriculum="shuffle"))
    )  # the ablation runs


def test_max_length_smaller_than_every_prompt(tmp_path, student_dir, tiny_cache):
    with pytest.raises(DataError, match="smaller than every prompt"):
        train(load_recipe(data=recipe_data(tmp_path, student_dir, tiny_cache, steps=1, max_length=8)))


@pytest.mark.parametrize("curriculum", ["entropy", "competence", "buckets"])
def test_resume_in_process_gives_the_same_losses(tmp_path, student_dir, tiny_cache, monkeypatch, curriculum):
    """Killed mid-epoch (step 5, checkpoint at 3) and resumed: the same losses, records and tokens,
    with the card's curriculum and the paced ones (a pure function of the stream position)."""
    kw = {"steps": 8, "checkpoint_every": 3, "keep_checkpoints": 1, "curriculum": curriculum}
    full = train(load_recipe(data=recipe_data(tmp_path / "a", student_dir, tiny_cache, **kw)))
    recipe = load_recipe(data=recipe_data(tmp_path / "b", student_dir, tiny_cache, **kw))
    undo = interrupt_at_step(monkeypatch, 5)
    with pytest.raises(KeyboardInterrupt):
        train(recipe)
    undo()
    assert latest_checkpoint(recipe.student_dir).name == "step-000003"
    with pytest.raises(DanteError, match="already holds checkpoints"):
        train(recipe)
    resumed = train(recipe, resume=True)
    assert resumed.resumed_from_step == 3
    assert _losses(resumed.metrics_path) == pytest.approx(_losses(full.metrics_path), rel=1e-6)
    assert resumed.tokens_seen == full.tokens_seen and resumed.records_seen == full.records_seen == 8 * 4


def test_sigkill_mid_run_then_resume_matches_uninterrupted(tmp_path, student_dir, tiny_cache):
    kw = {"steps": 10, "checkpoint_every": 3, "keep_checkpoints": 2}
    full = train(load_recipe(data=recipe_data(tmp_path / "a", student_dir, tiny_cache, **kw)))
    recipe_file = tmp_path / "b.yaml"
    recipe_file.write_text(yaml.safe_dump(recipe_data(tmp_path / "b", student_dir, tiny_cache, **kw)))
    out = tmp_path / "b" / "run" / "student"
    cmd = [PY, "-m", "dante.cli", "train", str(recipe_file)]
    # the CLI through the reliability suite's wrapper, which slows each train_step so the kill lands mid-run
    slow = [PY, str(ROOT / "tests" / "reliability" / "crashrun.py"), "train", str(recipe_file)]
    proc = subprocess.Popen(
        slow,
        cwd=ROOT,
        env={**_env(), "DANTE_CRASH_SLOW_STEP": "0.4"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 120
    while time.time() < deadline:
        if (out / "metrics.jsonl").exists() and any(r.get("step", 0) >= 7 for r in _rows(out / "metrics.jsonl")):
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL and not (out / "dante_manifest.json").exists()
    # a half-written checkpoint (no state file / temp name) is never picked up
    (out / "checkpoints" / ".tmp-step-000009").mkdir()
    (out / "checkpoints" / "step-000009").mkdir()
    assert latest_checkpoint(out).name == "step-000006"
    done = subprocess.run([*cmd, "--resume"], cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "resumed from" in done.stdout + done.stderr
    assert _losses(out / "metrics.jsonl") == pytest.approx(_losses(full.metrics_path), rel=1e-6)
    assert json.loads((out / "dante_manifest.json").read_text())["resumed_from_step"] == 6


def test_two_processes_match_one_process(tmp_path, student_dir, tiny_cache):
    """DDP on CPU (gloo, 2 ranks through torchrun) gives the same loss curve as 1 process."""
    kw = {"steps": 5, "batch_sequences": 6, "micro_batch_size": 2}
    single = train(load_recipe(data=recipe_data(tmp_path / "one", student_dir, tiny_cache, **kw)))
    recipe_file = tmp_path / "two.yaml"
    recipe_file.write_text(yaml.safe_dump(recipe_data(tmp_path / "two", student_dir, tiny_cache, **kw)))
    cmd = [
        PY,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        "29517",
        "-m",
        "dante.cli",
        "train",
        str(recipe_file),
    ]
    done = subprocess.run(
        cmd, cwd=ROOT, env={**_env(), "ACCELERATE_USE_CPU": "1"}, capture_output=True, text=True, timeout=240
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = tmp_path / "two" / "run" / "student"
    manifest = json.loads((out / "dante_manifest.json").read_text())
    assert manifest["device_count"] == 2 and manifest["distributed_type"] == "MULTI_CPU"
    two = _rows(out / "metrics.jsonl")
    assert [r["loss"] for r in two] == pytest.approx(_losses(single.metrics_path), rel=1e-4)
    assert [r["tokens"] for r in two] == [r["tokens"] for r in _rows(single.metrics_path)]


def test_compile_gives_the_same_losses_and_a_plain_checkpoint(tmp_path, student_dir, tiny_cache, capsys):
    """train.compile: every decoder block compiled in place (inductor's C++ backend on CPU);
    the losses match eager up to fused-kernel rounding, and the saved folder is the usual one."""
    from transformers import AutoModelForCausalLM

    eager = train(load_recipe(data=recipe_data(tmp_path / "eager", student_dir, tiny_cache, steps=3)))
    compiled = train(
        load_recipe(data=recipe_data(tmp_path / "compiled", student_dir, tiny_cache, steps=3, compile=True))
    )
    n_layers = AutoModelForCausalLM.from_pretrained(student_dir).config.num_hidden_layers
    assert f"compile: {n_layers} decoder blocks compiled" in capsys.readouterr().out
    assert _losses(compiled.metrics_path) == pytest.approx(_losses(eager.metrics_path), rel=1e-4)
    a = AutoModelForCausalLM.from_pretrained(eager.output_dir).state_dict()
    b = AutoModelForCausalLM.from_pretrained(compiled.output_dir).state_dict()
    assert a.keys() == b.keys()  # no "_orig_mod." prefixes
    assert max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-4
    torch._dynamo.reset()


def test_compile_blocks_compiles_each_decoder_layer_in_place(student_dir):
    from transformers import AutoModelForCausalLM

    from dante.train.model.accelerator import compile_blocks

    model = AutoModelForCausalLM.from_pretrained(student_dir)
    keys = list(model.state_dict())
    assert compile_blocks(model) == model.config.num_hidden_layers
    assert all(layer._compiled_call_impl is not None for layer in model.model.layers)
    assert model.lm_head._compiled_call_impl is None and list(model.state_dict()) == keys
    assert compile_blocks(torch.nn.Sequential(torch.nn.Linear(2, 2))) == 0  # nothing repeated: stays eager


def test_a_checkpoint_of_an_earlier_version_gives_each_source_its_own_state_back():
    """RunState holds each source's state under its name; a dante_state.json written before the
    sources kept their own (flat cursor keys) loads into the same places, so such a run resumes."""
    from dante.train.state import RunState

    old = {"step": 4, "tokens": 900, "records": 16, "wall_time_s": 3.5, "cursor": 16, "on_policy_cursor": 8,
           "on_policy_stats": {"samples": 8}, "from_a_later_version": 1}  # fmt: skip
    from dante.train.sources.on_policy import OnPolicySamples
    from dante.train.sources.records import CachedRecords

    state = RunState.from_dict(old)
    assert (state.step, state.tokens, state.records, state.wall_time_s) == (4, 900, 16, 3.5)
    assert state.source_state("records", CachedRecords.older_keys) == {"cursor": 16}
    assert state.source_state("on_policy", OnPolicySamples.older_keys) == {"cursor": 8, "stats": {"samples": 8}}
    state.sources = {"records": {"cursor": 20}}  # what this version writes: each source's own, and no old keys
    again = RunState.from_dict(state.as_dict())
    assert again.source_state("records", CachedRecords.older_keys) == {"cursor": 20} and again.older == {}
    import dante.train.loop as loop
    import dante.train.state as state_module

    for module in (loop, state_module):  # the loop and the state name no source
        text = Path(module.__file__).read_text()
        for name in (
            '"on_policy"',
            "on_policy_",
            "CachedRecords",
            "OnPolicySamples",
            "sources.records",
            "sources.on_policy",
        ):
            assert name not in text, (module.__name__, name)
