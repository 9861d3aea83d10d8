"""Disk full and read-only output: the cache stage stops with one clear error naming the path
(exit 1, no traceback) and leaves a cache that a later run completes, every prompt exactly once.

Real faults where the machine allows (a size- or inode-limited tmpfs, remounted read-only:
needs root), simulated ones at every boundary of the writer otherwise (OSError ENOSPC / EACCES
/ EROFS raised where the writer touches the disk)."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from rel_support import EchoTeacher, cache_state, count, prompt_lines, snapshot

from dante.cache.records import read_cache, validate_cache
from dante.cache.run import run_cache
from dante.config import load_recipe
from dante.errors import DanteError

N = 24
pytestmark = pytest.mark.timeout(300)


def invoke(args):
    from typer.testing import CliRunner

    from dante.cli import app

    return CliRunner().invoke(app, [str(a) for a in args])


def assert_clean_failure(result, *fragments: str) -> str:
    """Exit 1 through the CLI's error path: a located one-line message, no traceback."""
    text = " ".join(result.output.split())
    assert result.exit_code == 1, text
    assert isinstance(result.exception, SystemExit), f"uncaught {result.exception!r}"
    assert "Traceback" not in result.output and "error:" in text
    for fragment in fragments:
        assert fragment.lower() in text.lower(), f"{fragment!r} not in {text!r}"
    return text


def check_exactly_once(cache: Path, n: int = N) -> None:
    records = read_cache(cache)
    assert len(records) == n and len({r.id for r in records}) == n
    assert validate_cache(cache) == (n, [])
    count("records checked: disk faults", n)


@pytest.fixture
def tmpfs(tmp_path):
    """mount(options) -> a fresh tmpfs folder; unmounted at teardown. Skips where mounting is not allowed."""
    mounted: list[Path] = []

    def mount(options: str) -> Path:
        if os.geteuid() != 0 or shutil.which("mount") is None:
            pytest.skip(
                "a real tmpfs needs root and mount(8); the simulated ENOSPC/EROFS/EACCES tests below cover this"
            )
        path = tmp_path / f"tmpfs{len(mounted)}"
        path.mkdir()
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True, text=True
        )
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip()}); the simulated tests cover this")
        mounted.append(path)
        return path

    yield mount
    for path in mounted:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def remount(path: Path, options: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{options}", str(path)], check=True, capture_output=True)


def hf_recipe(tmp_path: Path, teacher_dir: Path, cache: Path, **prompts) -> Path:
    source = tmp_path / "prompts.jsonl"
    source.write_text(prompt_lines(N))
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        yaml.safe_dump(
            {
                "output_dir": str(tmp_path / "run"),
                "teacher": {
                    "backend": "hf",
                    "model": str(teacher_dir),
                    "device": "cpu",
                    "max_new_tokens": 6,
                    "batch_size": 4,
                    "top_logprobs": 5,
                },
                "prompts": {"source": str(source), **prompts},
                "cache": {"dir": str(cache), "shard_size": 4, "flush_every": 2},
            }
        )
    )
    return recipe


# --- real faults: a small tmpfs ------------------------------------------------------------


@pytest.mark.parametrize("options", ["size=4k", "size=8k", "size=12k", "size=20k", "size=1m,nr_inodes=6"])
def test_full_disk_stops_clearly_and_resumes_exactly_once(tmp_path, tmpfs, teacher_dir, options):
    mnt = tmpfs(options)
    cache = mnt / "cache"
    recipe = hf_recipe(tmp_path, teacher_dir, cache)
    first = assert_clean_failure(invoke(["cache", recipe]), "disk full", str(cache))
    count("faults: disk full (real tmpfs, ENOSPC)")
    kept = cache_state(cache)  # sealed shards valid, manifest whole
    assert len(kept.ids) < N, first

    # still full: the same clear error, nothing lost
    assert_clean_failure(invoke(["cache", recipe]), "disk full", str(cache))
    count("faults: disk full (real tmpfs, ENOSPC)")
    assert kept.ids <= cache_state(cache).ids

    remount(mnt, "size=4m,nr_inodes=1000")
    done = invoke(["cache", recipe])
    assert done.exit_code == 0, done.output
    check_exactly_once(cache)


def test_read_only_output_stops_clearly_without_touching_the_cache(tmp_path, tmpfs, teacher_dir):
    mnt = tmpfs("size=4m")
    cache = mnt / "cache"
    partial = invoke(
        ["cache", hf_recipe(tmp_path, teacher_dir, cache, limit=10)]
    )  # limit is operational: a resume may raise it
    assert partial.exit_code == 0, partial.output
    before = snapshot(cache)
    remount(mnt, "ro")
    recipe = hf_recipe(tmp_path, teacher_dir, cache)
    assert_clean_failure(invoke(["cache", recipe]), "read-only file system", str(cache))
    count("faults: read-only output (real tmpfs remounted ro, EROFS)")
    assert snapshot(cache) == before
    remount(mnt, "rw")
    done = invoke(["cache", recipe])
    assert done.exit_code == 0, done.output
    check_exactly_once(cache)


def test_unwritable_folder_without_root(tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root ignores permission bits; the read-only tmpfs test and the simulated EACCES cases cover this")
    recipe = echo_recipe(tmp_path)
    run_cache(echo_recipe(tmp_path, limit=6), teacher=EchoTeacher(recipe.teacher))
    os.chmod(recipe.cache_dir, 0o555)
    try:
        with pytest.raises(DanteError, match="permission denied"):
            run_cache(recipe, teacher=EchoTeacher(recipe.teacher))
    finally:
        os.chmod(recipe.cache_dir, 0o755)
    count("faults: read-only folder (chmod, EACCES)")


# --- simulated faults at every boundary of the writer ---------------------------------------


def echo_recipe(tmp_path: Path, n: int = N, limit: int | None = None):
    source = tmp_path / "prompts.jsonl"
    source.write_text(prompt_lines(n))
    return load_recipe(
        data={
            "output_dir": str(tmp_path / "run"),
            "teacher": {"model": "echo", "top_logprobs": 3},
            "prompts": {"source": str(source), "limit": limit},
            "cache": {"shard_size": 4, "flush_every": 2},
        }
    )


class Fault:
    """Raise OSError(code) at the ``nth`` disk operation of kind ``boundary`` inside ``folder``."""

    def __init__(self, monkeypatch, folder: Path, boundary: str, code: int, nth: int) -> None:
        import builtins
        import pathlib

        import dante.cache.writer as writer

        self.folder, self.boundary, self.code, self.nth, self.seen, self.fired = str(folder), boundary, code, nth, 0, 0
        real_open, real_os_open, real_replace, real_read = builtins.open, os.open, os.replace, pathlib.Path.read_bytes
        fault = self

        def file_open(file, mode="r", *args, **kwargs):
            if "a" in mode:
                fault.check("create", file)
                fh = real_open(file, mode, *args, **kwargs)
                return FlakyFile(fh, fault, file)
            if "r" in mode and "+" not in mode:
                fault.check("read", file)
            return real_open(file, mode, *args, **kwargs)

        def os_open(path, flags, *args, **kwargs):
            fault.check("lock" if str(path).endswith(".lock") else "other", path)
            return real_os_open(path, flags, *args, **kwargs)

        def replace(src, dst, *args, **kwargs):
            name = Path(dst).name
            kind = (
                "seal"
                if name.startswith("shard-")
                else "manifest"
                if name == "manifest.json"
                else "recipe"
                if name == "resolved_recipe.yaml"
                else "other"
            )
            fault.check(kind, dst)
            return real_replace(src, dst, *args, **kwargs)

        def read_bytes(path):
            fault.check("read", path)
            return real_read(path)

        monkeypatch.setattr(writer, "open", file_open, raising=False)
        monkeypatch.setattr(os, "open", os_open)
        monkeypatch.setattr(os, "replace", replace)
        monkeypatch.setattr(pathlib.Path, "read_bytes", read_bytes)

    def check(self, kind: str, path) -> None:
        if kind != self.boundary or not str(path).startswith(self.folder):
            return
        self.seen += 1
        if self.seen == self.nth:
            self.fired += 1
            raise OSError(self.code, os.strerror(self.code), str(path))


class FlakyFile:
    def __init__(self, fh, fault: Fault, path) -> None:
        self._fh, self._fault, self._path = fh, fault, path

    def flush(self) -> None:
        self._fault.check("write", self._path)
        self._fh.flush()

    def __getattr__(self, name):
        return getattr(self._fh, name)


REASON = {errno.EACCES: "permission denied", errno.EROFS: "read-only file system", errno.ENOSPC: "disk full"}
# boundary -> which pass through it fails (after some records are durable where possible)
BOUNDARIES = {"lock": 1, "create": 2, "write": 3, "seal": 2, "manifest": 3, "recipe": 1, "read": 1}


@pytest.mark.parametrize("code", [errno.EACCES, errno.EROFS, errno.ENOSPC], ids=["EACCES", "EROFS", "ENOSPC"])
@pytest.mark.parametrize("boundary", list(BOUNDARIES))
def test_simulated_disk_error_at_each_writer_boundary(tmp_path, monkeypatch, boundary, code):
    recipe = echo_recipe(tmp_path)
    if boundary == "read":  # reading an existing cache back: make one first
        run_cache(echo_recipe(tmp_path, limit=6), teacher=EchoTeacher(recipe.teacher))
    before = cache_state(recipe.cache_dir).ids
    with monkeypatch.context() as m:
        fault = Fault(m, recipe.cache_dir, boundary, code, BOUNDARIES[boundary])
        with pytest.raises(DanteError) as err:
            run_cache(recipe, teacher=EchoTeacher(recipe.teacher))
    assert fault.fired == 1
    count(f"faults: simulated {errno.errorcode[code]} at the writer")
    message = str(err.value)
    assert REASON[code] in message.lower() and str(recipe.cache_dir) in message and "re-run" in message, message
    assert before <= cache_state(recipe.cache_dir).ids  # nothing durable lost
    run_cache(recipe, teacher=EchoTeacher(recipe.teacher))
    check_exactly_once(recipe.cache_dir)
