"""Example teacher recipes load and validate."""

from pathlib import Path

import pytest

from dante.config import load_recipe

CONFIGS = Path(__file__).parents[2] / "configs"


@pytest.mark.parametrize("name", ["teacher-vllm.yaml", "teacher-openai.yaml"])
def test_example_teacher_recipes_validate(name):
    r = load_recipe(CONFIGS / name)
    assert r.teacher.backend in ("vllm", "openai") and r.teacher.top_logprobs == 20


def test_stored_sampling_settings_follow_the_request_the_engines_get():
    from dante.config import TeacherConfig
    from dante.teacher.base import TeacherRequest, sampling_settings

    cfg = TeacherConfig(max_new_tokens=64, temperature=0.0, consistency_samples=3, consistency_temperature=0.7)
    request = TeacherRequest.from_config(cfg)
    assert request.main.seed is None and request.main.n == 1  # greedy: no seed sent
    assert (request.consistency.n, request.consistency.max_new_tokens, request.consistency.seed) == (3, 64, 42)
    stored = sampling_settings(cfg)
    assert stored["consistency_max_new_tokens"] == 64 and stored["consistency_temperature"] == 0.7
    cfg = TeacherConfig(max_new_tokens=64, consistency_samples=3, consistency_max_new_tokens=16)
    assert sampling_settings(cfg)["consistency_max_new_tokens"] == 16
    none = sampling_settings(TeacherConfig(max_new_tokens=64))
    assert none["consistency_samples"] == 0 and none["consistency_temperature"] is None
    assert (
        none["consistency_max_new_tokens"] is None and TeacherRequest.from_config(TeacherConfig()).consistency is None
    )
