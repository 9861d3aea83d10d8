"""Run the real `dante` CLI in this process with one crash point armed (tests/reliability).

    DANTE_CRASH=POINT:N[:SEED] python tests/reliability/crashrun.py cache recipe.yaml

At the N-th pass through POINT the process does the partial work that POINT simulates and
SIGKILLs itself: a real SIGKILL at an exact moment, with no hook in the product code. Points:

    cache.write    N-th append to a .partial shard: a random prefix of the bytes lands, then kill (torn line)
    cache.seal     N-th seal: kill just before the .partial -> shard-NNNNN.jsonl rename
    cache.sealed   N-th seal: kill just after that rename, before the manifest is updated
    manifest       N-th manifest write: temp file complete and fsynced, kill before it replaces manifest.json
    train.weights  N-th checkpoint: accelerate's files written, model.safetensors cut to half, kill
    train.state    N-th checkpoint: every accelerate file written, kill before dante_state.json replaces its temp
    train.rename   N-th checkpoint: .tmp-step-* complete (state file included), kill before the rename to step-*
    batch.upload   N-th upload of a batch requests file (teacher.dispatch: batch): kill before it is sent
    batch.created  N-th batch created at the provider: kill before its id is recorded in the manifest
    batch.poll     N-th status check of a batch: kill while waiting
    batch.ingest   N-th record ingested from a batch's results: kill after it was handed to the writer
    on_policy.score  N-th teacher score of a student sample written to the score cache: kill mid-step

DANTE_CRASH_SLOW=S sleeps S seconds before each teacher ``generate`` call (hf backend), so an
external SIGKILL at a random time lands during generation; DANTE_CRASH_SLOW_STEP=S sleeps S
seconds inside each training step (``dante.train.loop.train_step``), for the same reason.
"""

from __future__ import annotations

import os
import random
import signal
import sys
import time
from pathlib import Path

SPEC = os.environ.get("DANTE_CRASH", "")
POINT, _, REST = SPEC.partition(":")
TARGET = int(REST.split(":")[0]) if REST else 0
RNG = random.Random(int(REST.split(":")[1]) if REST.count(":") else 0)
HITS = {"n": 0}


def die(what: str) -> None:
    sys.stderr.write(f"crashrun: SIGKILL at {what}\n")
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def hit(point: str) -> bool:
    """True when this pass through ``point`` is the armed one."""
    if point != POINT:
        return False
    HITS["n"] += 1
    return HITS["n"] == TARGET


class TornFile:
    """A .partial shard file whose armed write lands only partly before the kill."""

    def __init__(self, fh) -> None:
        self._fh = fh

    def write(self, data: bytes) -> int:
        if hit("cache.write"):
            cut = RNG.randint(1, len(data) - 1)
            self._fh.write(data[:cut])
            self._fh.flush()
            die(f"cache.write #{TARGET} ({cut}/{len(data)} bytes written)")
        return self._fh.write(data)

    def __getattr__(self, name: str):
        return getattr(self._fh, name)


def arm_cache() -> None:
    import builtins

    import dante.cache.writer as writer

    real_open, real_replace = builtins.open, os.replace

    def open_(file, mode="r", *args, **kwargs):
        fh = real_open(file, mode, *args, **kwargs)
        return TornFile(fh) if Path(file).name.startswith(".partial-") and "a" in mode else fh

    def replace(src, dst, *args, **kwargs):
        s, d = Path(src).name, Path(dst).name
        if s.startswith(".partial-") and d.startswith("shard-"):
            if hit("cache.seal"):
                die(f"cache.seal #{TARGET} (before {s} -> {d})")
            if hit("cache.sealed"):
                real_replace(src, dst, *args, **kwargs)
                die(f"cache.sealed #{TARGET} (after {s} -> {d}, before the manifest)")
        if d == "manifest.json" and hit("manifest"):
            die(f"manifest #{TARGET} ({s} written, not renamed)")
        return real_replace(src, dst, *args, **kwargs)

    writer.open = open_  # module global: shadows the builtin inside the writer only
    os.replace = replace


def arm_train() -> None:
    import accelerate

    real_save, real_replace = accelerate.Accelerator.save_state, os.replace

    def save_state(self, output_dir=None, *args, **kwargs):
        result = real_save(self, output_dir, *args, **kwargs)
        if hit("train.weights"):
            weights = Path(output_dir) / "model.safetensors"
            size = weights.stat().st_size
            with open(weights, "r+b") as fh:
                fh.truncate(size // 2)
            die(f"train.weights #{TARGET} ({weights} cut to {size // 2}/{size} bytes)")
        return result

    def replace(src, dst, *args, **kwargs):
        s, d = Path(src), Path(dst)
        if d.name == "dante_state.json" and hit("train.state"):
            die(f"train.state #{TARGET} ({s} written, not renamed)")
        if s.name.startswith(".tmp-step-") and d.name.startswith("step-") and hit("train.rename"):
            die(f"train.rename #{TARGET} (before {s.name} -> {d.name})")
        return real_replace(src, dst, *args, **kwargs)

    accelerate.Accelerator.save_state = save_state
    os.replace = replace


def arm_batch() -> None:
    import dante.teacher.batch as batch

    real_upload, real_create, real_get, real_ingest = (
        batch.BatchClient.upload,
        batch.BatchClient.create,
        batch.BatchClient.get,
        batch.ingest,
    )

    def upload(self, path, *args, **kwargs):
        if hit("batch.upload"):
            die(f"batch.upload #{TARGET} (before {path.name} is sent)")
        return real_upload(self, path, *args, **kwargs)

    def create(self, *args, **kwargs):
        result = real_create(self, *args, **kwargs)
        if hit("batch.created"):
            die(f"batch.created #{TARGET} ({result['id']} created, not recorded)")
        return result

    def get(self, batch_id):
        if hit("batch.poll"):
            die(f"batch.poll #{TARGET} (waiting for {batch_id})")
        return real_get(self, batch_id)

    def ingest(recipe, prompts, files, sink, all_ids=()):
        def sink_then_die(c):
            rec = sink(c)
            if hit("batch.ingest"):
                die(f"batch.ingest #{TARGET} (after record {rec.id})")
            return rec

        return real_ingest(recipe, prompts, files, sink_then_die, all_ids)

    batch.BatchClient.upload, batch.BatchClient.create, batch.BatchClient.get = upload, create, get
    batch.ingest = ingest


def arm_on_policy() -> None:
    """``on_policy.score``: SIGKILL right after the Nth teacher score is written to the score
    cache, mid-step (its samples scored, the step not yet trained or checkpointed)."""
    from dante.train.sources.on_policy import ScoreCache

    real_put = ScoreCache.put

    def put(self, *args, **kwargs):
        stored = real_put(self, *args, **kwargs)
        if hit("on_policy.score"):
            die(f"on_policy.score #{TARGET}")
        return stored

    ScoreCache.put = put


def slow_teacher(seconds: float) -> None:
    from dante.teacher.hf import HFTeacher

    real = HFTeacher.generate

    def generate(self, *args, **kwargs):
        time.sleep(seconds)
        return real(self, *args, **kwargs)

    HFTeacher.generate = generate


def slow_train_step(seconds: float) -> None:
    import dante.train.loop as loop

    real = loop.train_step

    def train_step(run, step):
        time.sleep(seconds)
        return real(run, step)

    loop.train_step = train_step


def main() -> None:
    if POINT.startswith(("cache.", "manifest")):
        arm_cache()
    elif POINT.startswith("train."):
        arm_train()
    elif POINT.startswith("batch."):
        arm_batch()
    elif POINT.startswith("on_policy."):
        arm_on_policy()
    elif POINT:
        raise SystemExit(f"crashrun: unknown crash point {POINT!r}")
    if os.environ.get("DANTE_CRASH_SLOW"):
        slow_teacher(float(os.environ["DANTE_CRASH_SLOW"]))
    if os.environ.get("DANTE_CRASH_SLOW_STEP"):
        slow_train_step(float(os.environ["DANTE_CRASH_SLOW_STEP"]))
    from dante.cli import app

    app(prog_name="dante", args=sys.argv[1:])


if __name__ == "__main__":
    main()
