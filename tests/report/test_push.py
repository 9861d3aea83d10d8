"""`dante push` against a local stand-in for the Hub (HF_ENDPOINT, Xet off): the student folder
with its model card and the exported cache arrive, checkpoints stay home, and the token is sent
as a header but appears in nothing printed or written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml
from fake_hub import FakeHub
from fake_run import make_run

from dante.report.build import build_report

TOKEN = "hf_dantePushFAKE1234567890"


def test_push_uploads_the_student_and_the_cache_and_never_the_token(tmp_path):
    run = make_run(tmp_path / "run")
    student = run / "student"
    (student / "model.safetensors").write_bytes(b"\x00" * 1024)
    (student / "checkpoints" / "step-000010").mkdir(parents=True)
    (student / "checkpoints" / "step-000010" / "optimizer.bin").write_bytes(b"x")
    build_report(run)  # writes the model card into the student folder
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({"name": "push", "output_dir": str(run)}))
    hub = FakeHub()
    try:
        done = _push(recipe, hub, "--repo", "me/student", "--dataset-repo", "me/cache")
    finally:
        hub.close()
    assert done.returncode == 0, done.stderr[-3000:]
    assert hub.repos == {"me/student": "model", "me/cache": "dataset"}
    model_files = {p for (repo, p) in hub.files if repo == "me/student"}
    assert {"README.md", "config.json", "model.safetensors", "dante_manifest.json"} <= model_files
    assert not any(p.startswith("checkpoints/") for p in model_files)
    assert hub.files[("me/student", "model.safetensors")] == b"\x00" * 1024
    dataset_files = {p for (repo, p) in hub.files if repo == "me/cache"}
    assert "README.md" in dataset_files and any(
        p.startswith("data/train-") and p.endswith(".parquet") for p in dataset_files
    )
    assert set(hub.validated) == {"dataset", "model"}  # both cards went through the Hub's YAML check
    assert hub.auth == {f"Bearer {TOKEN}"}
    assert TOKEN not in done.stdout + done.stderr
    written = [p for p in run.rglob("*") if p.is_file()]
    assert all(TOKEN.encode() not in p.read_bytes() for p in written)
    assert all(TOKEN.encode() not in content for content in hub.files.values())


def _push(recipe: Path, hub: FakeHub, *args: str) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "HF_ENDPOINT": hub.url,
        "HF_TOKEN": TOKEN,
        "HF_HUB_DISABLE_XET": "1",
        "HF_HUB_OFFLINE": "0",
        "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src"),
    }
    cmd = [sys.executable, "-m", "dante.cli", "push", str(recipe), *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)


def test_push_a_lora_student_sends_the_adapter_or_with_merged_the_merged_model(tmp_path):
    """A LoRA student's folder is peft's adapter folder (card: library peft); --merged pushes
    <student>/merged alone (card: library transformers)."""
    run = make_run(tmp_path / "run")
    student = run / "student"
    (student / "config.json").unlink()
    (student / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 4}))
    (student / "adapter_model.safetensors").write_bytes(b"\x01" * 64)
    (student / "merged").mkdir()
    (student / "merged" / "config.json").write_text("{}")
    (student / "merged" / "model.safetensors").write_bytes(b"\x02" * 256)
    manifest = json.loads((student / "dante_manifest.json").read_text())
    manifest.update(peft={"method": "lora", "adapter": ".", "merged": "merged"}, trainable_parameters=10)
    manifest["total_parameters"] = 1000
    config = manifest.setdefault("config", {})
    config.setdefault("student", {})["peft"] = {"r": 4, "alpha": 8, "target_modules": "all-linear"}
    (student / "dante_manifest.json").write_text(json.dumps(manifest))
    build_report(run)
    adapter_card, merged_card = (student / "README.md").read_text(), (student / "merged" / "README.md").read_text()
    assert "library_name: peft" in adapter_card and "- lora" in adapter_card and "10 of 1,000" in adapter_card
    assert "library_name: transformers" in merged_card and "merged in" in merged_card
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({"name": "push", "output_dir": str(run)}))
    hub = FakeHub()
    try:
        adapter = _push(recipe, hub, "--repo", "me/adapter")
        merged = _push(recipe, hub, "--repo", "me/merged", "--merged")
    finally:
        hub.close()
    assert adapter.returncode == 0 and merged.returncode == 0, adapter.stderr[-2000:] + merged.stderr[-2000:]
    sent = {repo: {p for (r, p) in hub.files if r == repo} for repo in ("me/adapter", "me/merged")}
    assert {"adapter_config.json", "adapter_model.safetensors", "README.md"} <= sent["me/adapter"]
    assert not any(p.startswith("merged/") for p in sent["me/adapter"]) and "config.json" not in sent["me/adapter"]
    assert sent["me/merged"] == {"config.json", "model.safetensors", "README.md"}
    assert hub.files[("me/merged", "README.md")].decode() == merged_card
    assert TOKEN not in adapter.stdout + adapter.stderr + merged.stdout + merged.stderr


def test_push_merged_of_a_full_fine_tuned_student_is_an_error(tmp_path):
    run = make_run(tmp_path / "run")
    build_report(run)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({"name": "push", "output_dir": str(run)}))
    hub = FakeHub()
    try:
        done = _push(recipe, hub, "--repo", "me/x", "--merged")
    finally:
        hub.close()
    assert done.returncode != 0 and "no merged LoRA model" in done.stdout + done.stderr
    assert not hub.files
