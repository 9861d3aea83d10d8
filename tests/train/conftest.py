"""Fixtures for the trainer tests (helpers live in train_helpers.py, a unique module name)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from train_helpers import make_cache_lines, write_cache  # noqa: E402


@pytest.fixture()
def tiny_cache(tmp_path) -> Path:
    return write_cache(tmp_path / "cache", make_cache_lines())
