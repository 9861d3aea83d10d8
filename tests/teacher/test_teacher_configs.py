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


def test_devices_per_engine_are_worked_out_in_one_place():
    """engine_devices: vLLM's tensor × pipeline GPUs, one device for hf, none for a server; a Ray
    replica and the report's compute table both read it (the report used to read the vLLM degrees
    flat, and so missed them in every recipe written with the teacher.vllm section)."""
    from dante.config import RayConfig, TeacherConfig, load_recipe, resolved_dict
    from dante.report.tables import _teacher_devices
    from dante.teacher import engine_devices
    from dante.teacher.ray_pool import replica_resources

    vllm = TeacherConfig(backend="vllm", vllm={"tensor_parallel_size": 4, "pipeline_parallel_size": 2})
    assert engine_devices(vllm) == (8, "GPU (vLLM)")
    assert engine_devices(TeacherConfig(backend="hf", device="cpu")) == (1, "cpu")
    assert engine_devices(TeacherConfig(backend="openai")) == (None, "remote server")
    assert replica_resources(vllm, RayConfig())["num_gpus"] == 8.0
    assert replica_resources(TeacherConfig(backend="hf"), RayConfig(), cluster_gpus=2)["num_gpus"] == 1.0
    assert replica_resources(TeacherConfig(backend="hf", device="cpu"), RayConfig(), cluster_gpus=2)["num_gpus"] == 0.0
    recipe = load_recipe(None, ["teacher.backend=vllm", "teacher.vllm.tensor_parallel_size=4"])
    assert _teacher_devices(resolved_dict(recipe)) == (4, "GPU (vLLM)")
    assert _teacher_devices({"teacher": {"backend": "vllm", "tensor_parallel_size": 2}}) == (
        2,
        "GPU (vLLM)",
    )  # flat, older runs
