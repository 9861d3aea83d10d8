"""`dante push` against a local stand-in for the Hub (HF_ENDPOINT, Xet off): the student folder
with its model card and the exported cache arrive, checkpoints stay home, and the token is sent
as a header but appears in nothing printed or written."""

from __future__ import annotations

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
    env = {
        **os.environ,
        "HF_ENDPOINT": hub.url,
        "HF_TOKEN": TOKEN,
        "HF_HUB_DISABLE_XET": "1",
        "HF_HUB_OFFLINE": "0",
        "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src"),
    }
    try:
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "dante.cli",
                "push",
                str(recipe),
                "--repo",
                "me/student",
                "--dataset-repo",
                "me/cache",
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
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
