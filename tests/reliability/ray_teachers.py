"""Teachers for the Ray tests, importable by the Ray workers (the tests put this folder on their
PYTHONPATH): the tiny hf teacher with a log of what it was given, a delay, or a poisoned prompt."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from dante.teacher.hf import HFTeacher


class LoggedHF(HFTeacher):
    """The real hf teacher; every batch it is given is appended to ``log`` (one JSON line:
    the replica's pid and the prompt ids), after ``delay_s`` per batch, and a prompt whose text
    holds ``poison`` raises (a prompt that always breaks the teacher)."""

    def __init__(self, cfg, log: str | None = None, delay_s: float = 0.0, poison: str | None = None) -> None:
        super().__init__(cfg)
        self.log, self.delay_s, self.poison = log, delay_s, poison

    def complete(self, prompts):
        if self.poison and any(self.poison in p.prompt for p in prompts):
            raise ValueError(f"poisoned prompt in a batch of {len(prompts)}")
        if self.delay_s:
            time.sleep(self.delay_s)
        out = super().complete(prompts)
        if self.log:
            with open(self.log, "a") as fh:
                fh.write(json.dumps({"pid": os.getpid(), "ids": [p.id for p in prompts]}) + "\n")
        return out


def logged(log: Path) -> list[dict]:
    return [json.loads(line) for line in Path(log).read_text().splitlines()] if Path(log).exists() else []
