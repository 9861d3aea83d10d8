"""The llama.cpp engine (``teacher.backend: llamacpp``): dante starts llama.cpp's own server on
this machine (``dante.llamacpp.LlamaServer``: the teacher's GGUF, ``teacher.llamacpp.parallel``
slots with continuous batching and its prompt cache) and talks to it through the OpenAI-compatible
engine, chat endpoint, as many requests in flight as there are slots; ``close`` stops the server.

The server applies the GGUF's own chat template (``--jinja``) and returns each generated token's
bytes, logprob and top alternatives, so records validate and align as any engine's; its reasoning
parser is off, so a thinking teacher's text comes back as written and dante splits it (issue 46).
It cannot score a given text (no prompt logprobs): on-policy training is refused by the probe.
The weights are the GGUF's own (e.g. Q4_K_M), computed by llama.cpp's quantised kernels: not the
same numbers as the hf engine's converted weights (BENCHMARKS 17: same answers, 75% the same text).
"""

from __future__ import annotations

import os

from dante.config import TeacherConfig
from dante.llamacpp import LlamaServer, packaged_gguf
from dante.teacher.openai import OpenAITeacher


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


class LlamaCppTeacher(OpenAITeacher):
    """llama-server on the teacher's GGUF, started for this engine and stopped by ``close``."""

    def __init__(self, cfg: TeacherConfig) -> None:
        lc = cfg.llamacpp
        gguf = packaged_gguf(lc.gguf or cfg.model)
        self.server = LlamaServer(
            gguf,
            binary=lc.server,
            parallel=lc.parallel,
            ctx_per_slot=lc.ctx_per_slot,
            threads=lc.threads or _cpus(),
            start_timeout_s=lc.start_timeout_s,
            extra=lc.args,
        ).__enter__()
        served = cfg.openai.model_copy(
            update={
                "base_url": self.server.url,
                "api": "chat",
                "concurrency": lc.parallel,
                "request_timeout_s": lc.request_timeout_s,
                "api_key": None,
                "api_key_env": "DANTE_LLAMACPP_NO_KEY",  # never send a key meant for a hosted API
            }
        )
        try:
            super().__init__(cfg.model_copy(update={"openai": served}))
        except BaseException:
            self.server.stop()
            raise
        self.name = cfg.model or gguf.name
        self._device_name: str | None = None

    def device_info(self) -> dict:
        """This CPU, the llama.cpp build and its threads: llama.cpp picks its own kernels."""
        from dante.models import cpu_name

        if self._device_name is None:
            build = self.server.version()
            engine = f"llama.cpp {build}" if build else "llama.cpp"
            self._device_name = f"{cpu_name()} ({engine}, {self.server.threads} threads)"
        return {"device_type": "cpu", "device_count": 1, "device_name": self._device_name}

    def close(self) -> None:
        try:
            super().close()
        finally:
            self.server.stop()
