"""dtype 'auto' on a CPU: bf16 only where the CPU computes it natively (AVX512-BF16 / AMX);
elsewhere torch emulates bf16 several times slower than fp32, so auto means fp32 there."""

from __future__ import annotations

import pytest
import torch

import dante.models as models
from dante.config import TeacherConfig
from dante.errors import DanteError


@pytest.mark.parametrize("native, expected", [(True, "bfloat16"), (False, "float32")])
def test_auto_on_cpu_follows_the_cpus_bf16_support(monkeypatch, native, expected):
    monkeypatch.setattr(models, "cpu_computes_bf16", lambda: native)
    assert models.resolve_dtype("auto", "cpu") == expected
    assert models.resolve_dtype(None, "cpu") == expected
    assert models.resolve_dtype("auto", "cuda:0") == "auto"  # a GPU keeps the checkpoint's dtype
    assert models.resolve_dtype("bf16", "cpu") == "bfloat16"  # an explicit choice is kept
    assert models.resolve_dtype("float32", "cpu") == "float32"


def test_cpu_probe_reads_torchs_own_capability_report(monkeypatch):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    assert models.cpu_computes_bf16() is False
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
    assert models.cpu_computes_bf16() is True


def test_the_cpu_is_named_with_the_kernels_torch_picked(monkeypatch):
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    monkeypatch.setattr(models, "cpu_computes_bf16", lambda: False)
    assert models.cpu_description().endswith(" (AVX2 kernels, emulated bf16)")
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    monkeypatch.setattr(models, "cpu_computes_bf16", lambda: True)
    assert models.cpu_description().endswith(" (AVX512 kernels, native bf16)")
    assert models.device_name("cpu") == models.device_name(torch.device("cpu")) == models.cpu_description()


def test_unknown_dtype_is_an_error():
    with pytest.raises(DanteError, match="unknown dtype"):
        models.resolve_dtype("int3", "cpu")


@pytest.mark.parametrize("native, expected", [(True, torch.bfloat16), (False, torch.float32)])
def test_hf_teacher_loads_in_the_resolved_dtype(monkeypatch, teacher_dir, native, expected):
    from dante.teacher import make_teacher

    monkeypatch.setattr(models, "cpu_computes_bf16", lambda: native)
    teacher = make_teacher(TeacherConfig(backend="hf", model=str(teacher_dir), device="cpu", dtype="auto"))
    try:
        assert teacher.model.dtype == expected and teacher.dtype == str(expected).removeprefix("torch.")
    finally:
        teacher.close()
