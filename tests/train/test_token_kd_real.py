"""Token-level distillation on the real offline models (slow): the Qwen2.5 teacher writes a
payload with the hf backend that `dante cache validate` accepts, SmolLM2 trains on it with
train.loss.token_kd and its held-out loss falls; and `dante cache` against `transformers serve`
(a real OpenAI-compatible server nobody here wrote), which ignores logprobs, says so."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from dante import offline
from dante.cache.payload import decode
from dante.cache.records import read_cache, validate_cache
from dante.cache.run import run_cache
from dante.config import load_recipe
from dante.errors import DanteError

TEACHER, STUDENT = "qwen2.5-coder-0.5b-instruct", "smollm2-135m-instruct"
SETTINGS = {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 2}


def _require(*names: str) -> None:
    for name in names:
        missing = offline.missing_packages(offline.packaged_model(name))
        if missing:
            message = f"packages of pypi:{name} not installed ({', '.join(missing)}); {offline.EXTRA_HINT}"
            if os.environ.get("DANTE_REQUIRE_OFFLINE_MODELS") == "1":
                pytest.fail(message)
            pytest.skip(message)


@pytest.mark.slow
def test_qwen_payload_validates_and_smollm2_trains_on_it(tmp_path):
    import reasoning_gym  # noqa: F401  (make test-slow installs it: a broken import fails)

    _require(TEACHER, STUDENT)
    data = {
        "name": "token-kd-real",
        "output_dir": str(tmp_path / "run"),
        "teacher": {
            "backend": "hf",
            "model": f"pypi:{TEACHER}",
            "device": "cpu",
            "max_new_tokens": 24,
            "batch_size": 8,
            "top_logprobs": 20,
            "store_logprobs": 20,
        },
        "prompts": {"source": "reasoning_gym:chain_sum", "task_settings": SETTINGS, "limit": 24},
        "student": {"model": f"pypi:{STUDENT}"},
        "train": {
            "steps": 6,
            "batch_sequences": 8,
            "micro_batch_size": 8,
            "max_length": 96,
            "lr": 2e-4,
            "eval_fraction": 0.25,
            "eval_every": 6,
            "loss": {"token_kd": {"weight": 1.0}},
        },
    }
    recipe = load_recipe(data=data)
    run_cache(recipe)
    assert validate_cache(recipe.cache_dir) == (24, [])
    records = read_cache(recipe.cache_dir)
    for r in records:
        p = decode(r.token_logprobs)
        assert p.text_bytes().decode() == r.teacher_text and len(p) == r.completion_tokens and p.k == 20
    from dante.train.loop import train

    result = train(recipe)
    assert result.eval_loss < result.initial_eval_loss
    kd = json.loads(result.manifest_path.read_text())["data"]["token_kd"]
    # Qwen2.5 and SmolLM2 both write digits one per token: most answer tokens align one to one
    assert kd["aligned"] == kd["records"] and kd["one_to_one_share"] > 0.5


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_cache_against_transformers_serve_says_it_returned_no_logprobs(tmp_path):
    import fastapi  # noqa: F401  (the serving extra, which make test-slow installs)
    import uvicorn  # noqa: F401

    _require(TEACHER)
    folder = str(offline.resolve_packaged(TEACHER))
    port = _free_port()
    cli = Path(sys.executable).with_name("transformers")
    server = subprocess.Popen(
        [
            str(cli),
            "serve",
            folder,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--device",
            "cpu",
            "--dtype",
            "float32",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"},
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.5)
        else:
            pytest.fail(f"transformers serve did not start: {server.stderr.read1(4000)!r}")
        prompts = tmp_path / "p.jsonl"
        prompts.write_text("".join(json.dumps({"prompt": f"What is {i} + {i}?"}) + "\n" for i in range(3)))

        def recipe(out: str, **teacher):
            return load_recipe(
                data={
                    "output_dir": str(tmp_path / out),
                    "teacher": {
                        "backend": "openai",
                        "model": folder,
                        "base_url": f"http://127.0.0.1:{port}/v1",
                        "max_new_tokens": 8,
                        "concurrency": 1,
                        "request_timeout_s": 120,
                        "top_logprobs": 20,
                        **teacher,
                    },
                    "prompts": {"source": str(prompts)},
                }
            )

        with pytest.raises(DanteError, match="returned no logprobs"):
            run_cache(recipe("payload", store_logprobs=20))
        summary = run_cache(recipe("text"))
        assert summary.written == 3
        records = read_cache(tmp_path / "text" / "cache")
        assert all(r.output_entropy is None and r.teacher_text for r in records)
        manifest = json.loads((tmp_path / "text" / "cache" / "manifest.json").read_text())
        assert manifest["logprobs_returned"] == {"asked": 3, "entropy": 0, "payload": 0}
    finally:
        server.terminate()
        server.wait(30)
