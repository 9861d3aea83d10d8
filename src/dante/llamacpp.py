"""llama.cpp's own server for a teacher on a CPU: the GGUF a packaged model ships, served by
``llama-server`` with parallel slots (continuous batching, its prompt cache), which dante's
OpenAI-compatible engine talks to like any server (docs/teachers.md, "llama.cpp").

``server_binary()`` finds the program (``$DANTE_LLAMA_SERVER``, ``llama-server`` on PATH, or the
one ``scripts/build_llama_server.sh`` builds into the dante cache); ``packaged_gguf`` gives a
model's GGUF file (a packaged model's chunks joined once into the dante cache); ``LlamaServer``
starts the program on a free local port, waits until the model is loaded, reports its peak
memory and stops it.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

from dante.errors import DanteError
from dante.offline import cache_root

BUILD_HINT = (
    "build it with `make llama-server` (scripts/build_llama_server.sh: llama.cpp from PyPI's llama-cpp-python source)"
)


def server_binary(path: str | Path | None = None) -> Path:
    """The ``llama-server`` program: ``path``, else ``$DANTE_LLAMA_SERVER``, else one on PATH, else
    the one built into ``<dante cache>/llama.cpp/bin``."""
    for candidate in (path, os.environ.get("DANTE_LLAMA_SERVER"), shutil.which("llama-server")):
        if candidate:
            found = Path(candidate).expanduser()
            if not (found.is_file() and os.access(found, os.X_OK)):
                raise DanteError("not an executable llama-server program", file=found, hint=BUILD_HINT)
            return found
    built = cache_root() / "llama.cpp" / "bin" / "llama-server"
    if built.is_file():
        return built
    raise DanteError("llama-server not found", hint=BUILD_HINT)


def packaged_gguf(model: str) -> Path:
    """The GGUF file of ``model``: a ``.gguf`` path as given, or a packaged model's (``pypi:name``)
    chunks joined once into ``<dante cache>/gguf/`` (checked against the package's sha256)."""
    if not model.startswith("pypi:"):
        path = Path(model).expanduser()
        if path.suffix != ".gguf" or not path.is_file():
            raise DanteError(
                "llama.cpp serves a GGUF file: give a .gguf path or a packaged model (pypi:...)", file=path
            )
        return path
    from dante.offline import join_package_gguf, packaged_model

    spec = packaged_model(model.removeprefix("pypi:"))
    out = cache_root() / "gguf" / spec.gguf_name
    if out.is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_suffix(".gguf.partial")
    join_package_gguf(spec, partial)
    partial.replace(out)
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LlamaServer:
    """``llama-server`` on ``gguf``: ``parallel`` slots of ``ctx_per_slot`` tokens each, ``threads``
    CPU threads, greedy-friendly defaults (its reasoning parser off, so the text comes back as the
    model wrote it); a context manager that waits for the model to load and stops the program."""

    def __init__(
        self,
        gguf: Path,
        *,
        binary: str | Path | None = None,
        parallel: int = 8,
        ctx_per_slot: int = 512,
        threads: int = 2,
        port: int | None = None,
        start_timeout_s: float = 300.0,
        extra: list[str] | None = None,
    ) -> None:
        self.binary = server_binary(binary)
        self.gguf, self.parallel, self.threads = Path(gguf), parallel, threads
        self.port = port or _free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.cmd = [
            str(self.binary),
            "--model", str(self.gguf),
            "--host", "127.0.0.1",
            "--port", str(self.port),
            "--parallel", str(parallel),
            "--ctx-size", str(ctx_per_slot * parallel),
            "--threads", str(threads),
            "--threads-batch", str(threads),
            "--jinja",
            "--reasoning-format", "none",
            "--no-webui",
            *(extra or []),
        ]  # fmt: skip
        self.start_timeout_s = start_timeout_s
        self.proc: subprocess.Popen | None = None
        self.loaded_seconds = 0.0
        self.log_path: Path | None = None

    def __enter__(self) -> LlamaServer:
        import tempfile

        self.log_path = Path(tempfile.mkstemp(prefix="llama-server-", suffix=".log")[1])
        t0 = time.perf_counter()
        with self.log_path.open("wb") as log:  # the child keeps its own descriptor
            self.proc = subprocess.Popen(self.cmd, stdout=log, stderr=subprocess.STDOUT)
        deadline = t0 + self.start_timeout_s
        while time.perf_counter() < deadline:
            if self.proc.poll() is not None:
                raise DanteError(
                    f"llama-server exited with code {self.proc.returncode} while loading: {self.log_tail()}",
                    file=self.gguf,
                )
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=2) as r:
                    if r.status == 200:
                        self.loaded_seconds = time.perf_counter() - t0
                        return self
            except OSError:
                pass
            time.sleep(0.25)
        self.stop()
        raise DanteError(f"llama-server did not load the model in {self.start_timeout_s:.0f} s", file=self.gguf)

    def version(self) -> str | None:
        """What ``llama-server --version`` names (``0.5.0-dev (build 1, commit 0c1e570)``), None
        where it names nothing: with the CPU, what a cache's numbers were computed by."""
        try:
            done = subprocess.run([str(self.binary), "--version"], capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            return None
        for line in (done.stderr + done.stdout).splitlines():  # the program writes it to stderr
            if line.startswith("version:"):
                return line.split(":", 1)[1].strip() or None
        return None

    def log_tail(self, n: int = 2000) -> str:
        return self.log_path.read_text(errors="replace")[-n:] if self.log_path and self.log_path.exists() else ""

    def peak_rss_mib(self) -> float:
        """The server's peak resident memory so far (VmHWM), MiB; 0 where /proc does not say."""
        try:
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        except (OSError, AttributeError):
            pass
        return 0.0

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __exit__(self, *exc) -> None:
        self.stop()
