"""Compute estimate and the shipped recipes / accelerate configs."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from dante.config import load_recipe
from dante.train.model.flops import estimate_training

ROOT = Path(__file__).resolve().parents[2]


def test_card_recipe_matches_the_card():
    r = load_recipe(ROOT / "configs" / "dante-mosaic-3.5b.yaml")
    t = r.train
    assert (r.teacher.backend, r.teacher.model, r.teacher.vllm.tensor_parallel_size) == (
        "vllm",
        "moonshotai/Kimi-K2-Instruct",
        16,
    )
    assert (r.student.model, r.student.num_parameters) == ("HuggingFaceTB/SmolLM3-3B", 3_080_000_000)
    assert (t.steps, t.batch_sequences, t.max_length, t.lr, t.warmup_steps, t.seed) == (2000, 128, 4096, 2e-5, 200, 42)
    assert (t.adam_beta1, t.adam_beta2, t.adam_eps, t.weight_decay, t.grad_clip) == (0.9, 0.95, 1e-8, 0.1, 1.0)
    assert (
        t.mixed_precision == "bf16"
        and t.gradient_checkpointing
        and t.lr_scheduler == "cosine"
        and t.curriculum == "entropy"
    )


def test_flops_estimate_by_hand():
    r = load_recipe(ROOT / "configs" / "dante-mosaic-3.5b.yaml")
    est = estimate_training(r, num_parameters=3e9, n_layers=36, hidden=2048, mean_tokens_per_record=500)
    tokens = 2000 * 128 * 500
    assert est["tokens"] == tokens
    assert est["flops"] == pytest.approx(tokens * (6 * 3e9 + 12 * 36 * 2048 * 500))
    assert est["device_hours"] == pytest.approx(est["flops"] / (0.4 * 312e12) / 3600)
    r2 = load_recipe(data={"train": {"batch_tokens": 1000, "steps": 10}})
    est2 = estimate_training(
        r2, num_parameters=1e6, n_layers=None, hidden=None, mean_tokens_per_record=100, mfu=0.5, peak_tflops=989
    )
    assert est2["tokens"] == 10_000 and est2["flops"] == 6e6 * 10_000 and "note" in est2


@pytest.mark.parametrize("name", ["ddp", "fsdp-8gpu", "fsdp-2node-16gpu", "deepspeed-zero2", "cpu-2proc"])
def test_accelerate_configs_parse(name):
    cfg = yaml.safe_load((ROOT / "configs" / "accelerate" / f"{name}.yaml").read_text())
    assert cfg["distributed_type"] in ("MULTI_GPU", "FSDP", "DEEPSPEED", "MULTI_CPU")
    from accelerate.commands.config.config_args import load_config_from_file

    loaded = load_config_from_file(str(ROOT / "configs" / "accelerate" / f"{name}.yaml"))  # accelerate's own loader
    assert loaded.num_processes == cfg["num_processes"]


def test_the_lora_recipes_load_and_the_lora_demo_is_the_demo_with_adapters():
    """configs/lora-*.yaml validate; lora-demo differs from the demo only in the student's
    adapters, its learning rate and its names, so it can train on the demo's cache."""
    from dante.cache.manifest import cache_key

    demo = load_recipe(ROOT / "configs" / "demo.yaml")
    lora = load_recipe(ROOT / "configs" / "lora-demo.yaml")
    big = load_recipe(ROOT / "configs" / "lora-smollm3-3b-1gpu.yaml")
    assert lora.student.peft is not None and big.student.peft is not None and demo.student.peft is None
    assert cache_key(lora) == cache_key(demo)
    a, b = demo.model_dump(mode="json"), lora.model_dump(mode="json")
    a["student"].pop("peft"), b["student"].pop("peft"), a["train"].pop("lr"), b["train"].pop("lr")
    for key in ("name", "output_dir", "report", "source_file"):
        a.pop(key, None), b.pop(key, None)
    assert a == b
