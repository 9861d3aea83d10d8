"""Example teacher recipes load and validate."""

from pathlib import Path

import pytest

from dante.config import load_recipe

CONFIGS = Path(__file__).parents[1] / "configs"


@pytest.mark.parametrize("name", ["teacher-vllm.yaml", "teacher-openai.yaml"])
def test_example_teacher_recipes_validate(name):
    r = load_recipe(CONFIGS / name)
    assert r.teacher.backend in ("vllm", "openai") and r.teacher.top_logprobs == 20
