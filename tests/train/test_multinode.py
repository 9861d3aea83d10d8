"""Two "machines" on loopback: `accelerate launch --num_machines 2 --machine_rank 0|1
--main_process_ip 127.0.0.1`, one gloo process each, trains like one process (same losses,
same tokens), and `dante plan` gives the per-node and per-GPU split of a step."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from train_helpers import recipe_data

from dante.config import load_recipe
from dante.plan import batch_layout
from dante.train.loop import train

ROOT = Path(__file__).resolve().parents[2]
ACCELERATE = Path(sys.executable).with_name("accelerate")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rows(path: Path) -> list[dict]:
    return [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()]


def test_two_machines_on_loopback_match_one_process(tmp_path, student_dir, tiny_cache):
    kw = {"steps": 4, "batch_sequences": 6, "micro_batch_size": 2}
    single = train(load_recipe(data=recipe_data(tmp_path / "one", student_dir, tiny_cache, **kw)))
    recipe_file = tmp_path / "two.yaml"
    recipe_file.write_text(yaml.safe_dump(recipe_data(tmp_path / "two", student_dir, tiny_cache, **kw)))
    env = {
        **os.environ,
        "ACCELERATE_USE_CPU": "1",  # gloo on CPU; --multi_gpu makes accelerate launch through torchrun
        "OMP_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    port = str(_free_port())
    machines = []
    for rank in (0, 1):
        cmd = [str(ACCELERATE), "launch", "--multi_gpu", "--num_machines", "2", "--num_processes", "2"]
        cmd += ["--machine_rank", str(rank), "--main_process_ip", "127.0.0.1", "--main_process_port", port]
        cmd += ["--mixed_precision", "no", "--dynamo_backend", "no", "-m", "dante.cli", "train", str(recipe_file)]
        machines.append(subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
    logs = []
    for proc in machines:
        try:
            logs.append(proc.communicate(timeout=300)[0].decode(errors="replace"))
        except subprocess.TimeoutExpired:
            for p in machines:
                p.kill()
            pytest.fail("the two machines did not finish in 300 s")
    assert [p.returncode for p in machines] == [0, 0], "\n".join(log[-2000:] for log in logs)
    out = tmp_path / "two" / "run" / "student"
    manifest = json.loads((out / "dante_manifest.json").read_text())
    assert manifest["device_count"] == 2 and manifest["distributed_type"] == "MULTI_CPU"
    two, one = _rows(out / "metrics.jsonl"), _rows(single.metrics_path)
    assert [r["loss"] for r in two] == pytest.approx([r["loss"] for r in one if "loss" in r], rel=1e-4)
    assert [r["tokens"] for r in two] == [r["tokens"] for r in one if "loss" in r]


def test_plan_splits_a_step_per_node_and_per_gpu(tmp_path, student_dir, tiny_cache):
    recipe = load_recipe(data=recipe_data(tmp_path, student_dir, tiny_cache, batch_sequences=128, micro_batch_size=8))
    lay = batch_layout(recipe, nodes=2, gpus_per_node=8, mean_tokens=500.0)
    assert lay["world_size"] == 16 and lay["sequences_per_node"] == 64 and lay["sequences_per_gpu"] == 8
    assert lay["micro_batches_per_gpu"] == 1 and lay["tokens_per_gpu"] == 128 * 500 / 16 and "note" not in lay
    odd = batch_layout(recipe, nodes=3, gpus_per_node=8, mean_tokens=500.0)
    assert odd["micro_batches_per_gpu"] == 1 and "do not split evenly" in odd["note"]  # ceil(128 / 24) = 6 <= 8
    few = batch_layout(recipe, nodes=4, gpus_per_node=8)
    assert few["micro_batches_per_gpu"] == 1 and few["sequences_per_gpu"] == 4
