"""Crash anywhere, resume, lose nothing: `dante train` SIGKILLed while a checkpoint is being
saved (weights half written, state file not yet in place, complete but not yet renamed) and at
a random moment during a step, then resumed with --resume. A half-written checkpoint is never
picked up, the latest complete one never goes backwards, and the resumed run ends with the
same losses, step for step, as a run that was never interrupted."""

from __future__ import annotations

import json
import signal
import time

import pytest
import yaml
from rel_support import count, rng, run_cli, start_cli, tail, train_recipe, write_train_cache

from dante.config import load_recipe
from dante.train.checkpoint import STATE_FILE, checkpoint_root, latest_checkpoint, read_state
from dante.train.loop import train

STEPS, EVERY = 14, 2
POINTS = ["train.weights", "train.state", "train.rename", "random"]


def metric_rows(out) -> list[dict]:
    path = out / "metrics.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.exists() else []


def check_checkpoint(ckpt) -> int:
    """A checkpoint that latest_checkpoint returns is whole: its state, weights and optimizer load."""
    from safetensors.torch import load_file

    state = read_state(ckpt)
    assert ckpt.name == f"step-{state['step']:06d}"
    assert load_file(ckpt / "model.safetensors")  # a truncated file does not load
    assert (ckpt / "optimizer.bin").stat().st_size > 0
    return state["step"]


def kill_during_a_step(args, out, r) -> str | None:
    start = max([x.get("step", 0) for x in metric_rows(out)], default=0)
    proc = start_cli(args, DANTE_CRASH_SLOW_STEP="0.25")
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            if any(x.get("step", 0) > start for x in metric_rows(out)):
                break
        except ValueError:
            pass  # a line being appended
        time.sleep(0.02)
    time.sleep(r.uniform(0.0, 0.5))
    if proc.poll() is not None:
        return None
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    return "random moment during a step"


@pytest.mark.timeout(500)
def test_train_killed_mid_checkpoint_and_mid_step_resumes_to_same_losses(tmp_path, student_dir):
    r = rng("train-crash")
    cache = write_train_cache(tmp_path / "cache")
    reference = train(
        load_recipe(data=train_recipe(tmp_path / "ref", student_dir, cache, steps=STEPS, checkpoint_every=EVERY))
    )
    want = [x["loss"] for x in metric_rows(reference.output_dir) if "loss" in x]

    recipe = tmp_path / "crashed.yaml"
    recipe.write_text(
        yaml.safe_dump(train_recipe(tmp_path / "crashed", student_dir, cache, steps=STEPS, checkpoint_every=EVERY))
    )
    out = tmp_path / "crashed" / "student"
    points = list(POINTS)
    r.shuffle(points)
    latest_step, kills = 0, []
    for point in points:
        args = ["train", recipe, *(["--resume"] if latest_checkpoint(out) else [])]
        if point == "random":
            what = kill_during_a_step(args, out, r)
            if what is None:
                continue
        else:
            saves_left = (STEPS - 1) // EVERY - latest_step // EVERY
            if saves_left < 1:
                continue
            n = r.randint(1, min(2, saves_left))
            done = run_cli(args, DANTE_CRASH=f"{point}:{n}")
            assert done.returncode == -signal.SIGKILL and f"crashrun: SIGKILL at {point} #{n}" in done.stderr, tail(
                done
            )
            what = done.stderr.strip().splitlines()[-1]
            half = latest_step + n * EVERY  # the checkpoint being saved when the process died
            temp = checkpoint_root(out) / f".tmp-step-{half:06d}"
            assert temp.is_dir() and not (checkpoint_root(out) / f"step-{half:06d}").exists(), what
            assert (temp / STATE_FILE).exists() == (point == "train.rename")
        kills.append(what)
        count(f"kills: dante train ({point})")
        ckpt = latest_checkpoint(out)
        step = check_checkpoint(ckpt) if ckpt else 0
        assert step >= latest_step, "the latest complete checkpoint went backwards"
        if point != "random":
            assert step == latest_step + (n - 1) * EVERY, f"{what}: picked {ckpt}"
        latest_step = step
        count("checkpoints checked after a kill")
    assert len(kills) >= 3, kills

    done = run_cli(["train", recipe, *(["--resume"] if latest_step else [])])
    assert done.returncode == 0, tail(done)
    rows = [x for x in metric_rows(out) if "loss" in x]
    assert [x["step"] for x in rows] == list(range(1, STEPS + 1)), "every step logged exactly once"
    assert [x["loss"] for x in rows] == pytest.approx(want, rel=1e-6)
    assert [x["records"] for x in rows] == [x["records"] for x in metric_rows(reference.output_dir) if "loss" in x]
    manifest = json.loads((out / "dante_manifest.json").read_text())
    assert manifest["resumed_from_step"] == (latest_step or None) and manifest["steps"] == STEPS
    count("train steps compared with an uninterrupted run", STEPS)


def test_resume_survives_a_torn_metrics_line(tmp_path):
    from dante.train.metrics import MetricsLog

    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "loss": 1.0}\n{"step": 2, "loss": 0.9}\n{"step": 3, "lo')
    count("faults: torn metrics.jsonl line")
    log = MetricsLog(path, enabled=True, resume_step=2)
    assert [x["step"] for x in log.rows()] == [1, 2]
