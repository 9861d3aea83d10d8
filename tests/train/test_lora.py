"""LoRA students (student.peft): only adapters (and modules_to_save) train, losses fall, resume
is exact, the merged model is the adapter model, TEA means what dante.train.model.lora says, DDP
matches one process, `dante plan` counts what trains, and `dante eval` scores either folder."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from train_helpers import interrupt_at_step, recipe_data

from dante.config import load_recipe
from dante.errors import DanteError
from dante.layout import MERGED
from dante.train.checkpoint import latest_checkpoint
from dante.train.loop import train

ROOT = Path(__file__).resolve().parents[2]
LORA = {"r": 4, "alpha": 8, "dropout": 0.0}


def lora_recipe(tmp: Path, student_dir: Path, cache: Path, peft: dict | None = None, **train_kw):
    kw = {"steps": 6, "lr": 1e-2, **train_kw}
    data = recipe_data(tmp, student_dir, cache, **kw)
    data["student"]["peft"] = {**LORA, **(peft or {})}
    return data


def _rows(path: Path) -> list[dict]:
    return [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()]


def _losses(path: Path) -> list[float]:
    return [r["loss"] for r in _rows(path) if "loss" in r]


def _state(folder: Path) -> dict[str, torch.Tensor]:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(folder).state_dict()


def _changed(base: dict[str, torch.Tensor], merged: dict[str, torch.Tensor]) -> set[str]:
    assert base.keys() == merged.keys()
    return {k for k in base if not torch.equal(base[k], merged[k])}


def test_lora_trains_only_adapters_its_losses_fall_and_merged_equals_adapter(tmp_path, student_dir, tiny_cache, capsys):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    data = lora_recipe(tmp_path, student_dir, tiny_cache, steps=12, eval_fraction=0.25, eval_every=12)
    result = train(load_recipe(data=data))
    out = result.output_dir
    log = capsys.readouterr().out
    assert "LoRA: training" in log and "TEA: off" in log  # frozen embedding: the anchor is 0 and switched off
    assert result.eval_loss < result.initial_eval_loss
    assert all(r["tea"] == 0.0 for r in _rows(out / "metrics.jsonl") if "tea" in r)

    # the folder is peft's adapter folder; merged/ is a plain transformers model; no peft placeholder card
    assert (out / "adapter_config.json").is_file() and (out / "adapter_model.safetensors").is_file()
    assert not (out / "config.json").exists() and not (out / "README.md").exists()
    assert (out / MERGED / "config.json").is_file() and (out / MERGED / "tokenizer_config.json").is_file()
    from safetensors import safe_open

    with safe_open(str(out / "adapter_model.safetensors"), framework="pt") as f:
        adapter_sizes = {k: f.get_slice(k).get_shape() for k in f.keys()}  # noqa: SIM118 - safe_open is no dict
    assert adapter_sizes and all("lora_A" in k or "lora_B" in k for k in adapter_sizes)

    # only the adapted matrices moved: embeddings, norms and the (tied) head are the base's
    changed = _changed(_state(student_dir), _state(out / MERGED))
    targets = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    assert changed and all(k.endswith(".weight") and k.split(".")[-2] in targets for k in changed)
    assert {k.split(".")[-2] for k in changed} == set(targets)

    manifest = json.loads((out / "dante_manifest.json").read_text())
    trainable = sum(torch.Size(shape).numel() for shape in adapter_sizes.values())
    assert manifest["trainable_parameters"] == trainable and manifest["peft"]["merged"] == MERGED

    ids = torch.randint(4, 300, (2, 24), generator=torch.Generator().manual_seed(0))
    adapter = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(student_dir), out).eval()
    merged = AutoModelForCausalLM.from_pretrained(out / MERGED).eval()
    with torch.no_grad():
        a, b = adapter(input_ids=ids).logits, merged(input_ids=ids).logits
        base = AutoModelForCausalLM.from_pretrained(student_dir).eval()(input_ids=ids).logits
    assert (a - b).abs().max() < 1e-4
    assert (a - base).abs().max() > 1e-3  # the adapter did change the model


def test_modules_to_save_trains_and_anchors_the_embedding_copy(tmp_path, student_dir, tiny_cache, capsys):
    """modules_to_save: [embed_tokens] on a tied student: the copy trains, the head follows it
    (still tied in the merged model), and TEA anchors the copy (> 0 once it moved)."""
    data = lora_recipe(tmp_path, student_dir, tiny_cache, peft={"modules_to_save": ["embed_tokens"]})
    out = train(load_recipe(data=data)).output_dir
    assert "TEA: anchoring the trained copy" in capsys.readouterr().out
    teas = [r["tea"] for r in _rows(out / "metrics.jsonl") if "tea" in r]
    assert teas[-1] > 0.0
    merged = _state(out / MERGED)
    changed = _changed(_state(student_dir), merged)
    assert "model.embed_tokens.weight" in changed
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(out / MERGED)
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()  # still tied


def test_an_adapter_on_an_untied_embedding_is_anchored_on_its_update(tmp_path, tiny_cache, capsys):
    """target_modules with embed_tokens on an untied student: E = E0 + ΔE, TEA is ‖ΔE‖² (0 at
    the start, where peft's B is 0, then > 0), the embedding's adapter is saved, and the merged
    model is the adapter model."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    import tiny

    untied = tiny.make_student_dir(tmp_path / "untied", tie=False)
    peft = {"target_modules": ["q_proj", "v_proj", "embed_tokens"]}
    out = train(load_recipe(data=lora_recipe(tmp_path, untied, tiny_cache, peft=peft))).output_dir
    assert "the anchor is ‖ΔE‖² of its update" in capsys.readouterr().out
    teas = [r["tea"] for r in _rows(out / "metrics.jsonl") if "tea" in r]
    assert teas[0] == 0.0 and teas[-1] > 0.0
    changed = _changed(_state(untied), _state(out / MERGED))
    assert "model.embed_tokens.weight" in changed and "lm_head.weight" not in changed
    ids = torch.randint(4, 300, (2, 16), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        a = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(untied), out).eval()(input_ids=ids).logits
        b = AutoModelForCausalLM.from_pretrained(out / MERGED).eval()(input_ids=ids).logits
    assert (a - b).abs().max() < 1e-4


def test_lora_on_a_tied_embedding_is_refused(tmp_path, student_dir, tiny_cache):
    data = lora_recipe(tmp_path, student_dir, tiny_cache, peft={"target_modules": ["q_proj", "embed_tokens"]})
    with pytest.raises(DanteError, match="modules_to_save"):
        train(load_recipe(data=data))


def test_unknown_target_module_names_the_field(tmp_path, student_dir, tiny_cache):
    data = lora_recipe(tmp_path, student_dir, tiny_cache, peft={"target_modules": ["no_such_proj"]})
    with pytest.raises(DanteError, match="student.peft.target_modules"):
        train(load_recipe(data=data))


@pytest.mark.parametrize("trained_head", [False, True])
def test_lora_with_and_without_chunked_ce_gives_the_same_losses(tmp_path, student_dir, tiny_cache, trained_head):
    """The chunked head runs inside peft's wrapper: on the frozen head (no weight gradient
    computed) or on the trained head copy (modules_to_save, tied to the embedding copy)."""
    peft = {"modules_to_save": ["embed_tokens"] if trained_head else [], "save_merged": False}
    runs = []
    for chunked in (True, False):
        data = lora_recipe(tmp_path / str(chunked), student_dir, tiny_cache, peft=peft, steps=3)
        data["train"]["loss"] = {"chunked_ce": chunked}
        runs.append(_losses(train(load_recipe(data=data)).metrics_path))
    assert runs[0] == pytest.approx(runs[1], rel=1e-5)


def test_lora_resume_gives_the_same_losses_from_adapter_only_checkpoints(
    tmp_path, student_dir, tiny_cache, monkeypatch
):
    kw = {"steps": 8, "checkpoint_every": 3, "keep_checkpoints": 1}
    peft = {"modules_to_save": ["embed_tokens"], "save_merged": False}
    full = train(load_recipe(data=lora_recipe(tmp_path / "a", student_dir, tiny_cache, peft=peft, **kw)))
    recipe = load_recipe(data=lora_recipe(tmp_path / "b", student_dir, tiny_cache, peft=peft, **kw))
    undo = interrupt_at_step(monkeypatch, 5)
    with pytest.raises(KeyboardInterrupt):
        train(recipe)
    undo()
    ckpt = latest_checkpoint(recipe.student_dir)
    from safetensors import safe_open

    with safe_open(str(ckpt / "model.safetensors"), framework="pt") as f:
        keys = set(f.keys())  # noqa: SIM118 - safe_open is no dict
    # only what trains: the adapters and the embedding copy, not the frozen base
    assert keys and all("lora_" in k or "modules_to_save" in k for k in keys)
    resumed = train(recipe, resume=True)
    assert resumed.resumed_from_step == 3
    assert _losses(resumed.metrics_path) == pytest.approx(_losses(full.metrics_path), rel=1e-6)

    # resuming with other adapter settings is refused, naming the field
    other = lora_recipe(tmp_path / "b", student_dir, tiny_cache, peft={"r": 2, "save_merged": False}, **kw)
    (recipe.student_dir / "dante_manifest.json").unlink()
    with pytest.raises(DanteError, match="student.peft"):
        train(load_recipe(data=other), resume=True)


def test_lora_two_processes_match_one_process(tmp_path, student_dir, tiny_cache):
    """DDP on CPU (gloo, 2 ranks) with LoRA gives the same losses as 1 process."""
    kw = {"steps": 4, "batch_sequences": 6, "micro_batch_size": 2}
    peft = {"save_merged": False}
    single = train(load_recipe(data=lora_recipe(tmp_path / "one", student_dir, tiny_cache, peft=peft, **kw)))
    recipe_file = tmp_path / "two.yaml"
    recipe_file.write_text(yaml.safe_dump(lora_recipe(tmp_path / "two", student_dir, tiny_cache, peft=peft, **kw)))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29531"]
    done = subprocess.run(
        [*cmd, "-m", "dante.cli", "train", str(recipe_file)],
        cwd=ROOT,
        env={**_env(), "ACCELERATE_USE_CPU": "1"},
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = tmp_path / "two" / "run" / "student"
    assert json.loads((out / "dante_manifest.json").read_text())["device_count"] == 2
    assert _losses(out / "metrics.jsonl") == pytest.approx(_losses(single.metrics_path), rel=1e-4)


def _env() -> dict:
    import os

    return {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def test_plan_counts_the_trainable_parameters_the_trainer_trains(tmp_path, student_dir, tiny_cache):
    from dante.plan import make_plan

    for peft in ({}, {"modules_to_save": ["embed_tokens"]}, {"target_modules": ["q_proj", "v_proj"]}):
        data = lora_recipe(tmp_path / str(len(peft)), student_dir, tiny_cache, peft={**peft, "save_merged": False})
        data["train"]["steps"] = 1
        recipe = load_recipe(data=data)
        plan = make_plan(recipe).training
        manifest = json.loads((train(recipe).output_dir / "dante_manifest.json").read_text())
        assert plan["trainable_parameters"] == manifest["trainable_parameters"]
        assert plan["num_parameters"] == manifest["total_parameters"]
        assert plan["optimizer_state_bytes"] == 8 * manifest["trainable_parameters"]
    full = make_plan(load_recipe(data=recipe_data(tmp_path / "full", student_dir, tiny_cache))).training
    assert full["trainable_parameters"] == full["num_parameters"]


def test_eval_scores_the_adapter_and_the_merged_student_alike(tmp_path, student_dir, tiny_cache):
    from dante.eval.run import evaluate, model_refs

    data = lora_recipe(tmp_path, student_dir, tiny_cache)
    data["eval"] = {
        "suite": None,
        "tasks": ["gsm8k_local"],
        "models": ["student"],
        "limit": 3,
        "max_gen_toks": 6,
        "device": "cpu",
        "dtype": "float32",
        "batch_size": 3,
    }
    recipe = load_recipe(data=data)
    train(recipe)
    samples = {}
    for weights in ("merged", "adapter"):
        recipe.eval.student_weights = weights
        recipe.eval.output_dir = tmp_path / f"eval-{weights}"
        (ref,) = model_refs(recipe)
        assert (ref.peft is None) == (weights == "merged")
        evaluate(recipe)
        folder = recipe.eval_dir / "student"
        info = json.loads((folder / "dante_gsm8k_local.json").read_text())
        assert info["status"] == "ok" and (info["peft_adapter"] is None) == (weights == "merged")
        lines = (folder / "samples_gsm8k_local.jsonl").read_text().splitlines()
        samples[weights] = [json.loads(ln)["resps"] for ln in lines]
    assert samples["merged"] == samples["adapter"]  # greedy answers of the same model


def test_student_weights_merged_without_a_merged_folder_is_an_error(tmp_path, student_dir, tiny_cache):
    from dante.errors import ConfigError
    from dante.eval.run import model_refs

    data = lora_recipe(tmp_path, student_dir, tiny_cache, peft={"save_merged": False}, steps=1)
    data["eval"] = {"models": ["student"], "student_weights": "merged"}
    recipe = load_recipe(data=data)
    train(recipe)
    with pytest.raises(ConfigError, match="eval.student_weights"):
        model_refs(recipe)
    recipe.eval.student_weights = "auto"
    (ref,) = model_refs(recipe)
    assert ref.peft == str(recipe.student_dir) and ref.ref == str(student_dir)


def test_bf16_base_under_bf16_autocast_keeps_fp32_adapters_and_learns(tmp_path, student_dir, tiny_cache):
    """base_dtype auto + mixed_precision bf16: the frozen base is bf16 (half the memory), the
    adapters and the embedding copy fp32; losses are finite and fall. (A fresh process: accelerate
    fixes the mixed precision once per process.)"""
    from safetensors import safe_open

    peft = {"modules_to_save": ["embed_tokens"], "save_merged": False}
    data = lora_recipe(tmp_path, student_dir, tiny_cache, peft=peft, steps=8, mixed_precision="bf16")
    recipe_file = tmp_path / "bf16.yaml"
    recipe_file.write_text(yaml.safe_dump(data))
    done = subprocess.run(
        [sys.executable, "-m", "dante.cli", "train", str(recipe_file)],
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "frozen base in bfloat16" in done.stdout + done.stderr
    out = tmp_path / "run" / "student"
    with safe_open(str(out / "adapter_model.safetensors"), framework="pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.float32}  # noqa: SIM118
    losses = _losses(out / "metrics.jsonl")
    assert all(x == x for x in losses) and losses[-1] < losses[0]


def test_bf16_base_without_bf16_autocast_is_refused(tmp_path, student_dir, tiny_cache):
    data = lora_recipe(tmp_path, student_dir, tiny_cache, peft={"base_dtype": "bfloat16"}, mixed_precision="no")
    with pytest.raises(DanteError, match="student.peft.base_dtype"):
        train(load_recipe(data=data))
