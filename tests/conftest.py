"""Shared fixtures: tiny teacher/student folders built once per session, offline env."""

import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).parent))

import tiny  # noqa: E402


@pytest.fixture(scope="session")
def teacher_dir(tmp_path_factory) -> Path:
    """A tiny random qwen2-architecture teacher with a ChatML tokenizer (vocab 384)."""
    return tiny.make_teacher_dir(tmp_path_factory.mktemp("teacher"))


@pytest.fixture(scope="session")
def student_dir(tmp_path_factory) -> Path:
    """A tiny random llama-architecture student with a different tokenizer (vocab 320)."""
    return tiny.make_student_dir(tmp_path_factory.mktemp("student"))


@pytest.fixture
def teacher_server():
    """``start(script, **kw)``: a FlakyServer (flaky_server.py) on 127.0.0.1; all are closed after the test."""
    from flaky_server import FlakyServer

    servers: list[FlakyServer] = []

    def start(script, **kw) -> FlakyServer:
        servers.append(FlakyServer(script, **kw))
        return servers[-1]

    yield start
    for s in servers:
        s.close()
