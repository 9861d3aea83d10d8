"""What a training run shows and keeps of each step (stage 4): ``metrics.jsonl``, the progress
bar with its metrics line, and the finite-or-None rule for logged numbers.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from dante.io import atomic_write_text
from dante.progress import stage_progress


class MetricsLog:
    """``metrics.jsonl``: one JSON object per line, appended and flushed every logged step."""

    def __init__(self, path: Path, *, enabled: bool, resume_step: int | None) -> None:
        self.path, self.enabled = path, enabled
        if not enabled:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        if resume_step is None:
            path.write_text("")
        elif path.exists():  # drop rows written after the checkpoint we resume from
            kept = [json.dumps(r) for r in self.rows() if r.get("step", 0) <= resume_step]
            atomic_write_text(path, "".join(ln + "\n" for ln in kept))

    def rows(self) -> list[dict[str, Any]]:
        """Every complete row; a torn line (a kill or full disk mid-append) is skipped."""
        if not self.path.exists():
            return []
        rows = []
        for ln in self.path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                row = json.loads(ln)
            except json.JSONDecodeError:
                continue
            if isinstance(row, dict):
                rows.append(row)
        return rows

    def write(self, row: dict[str, Any]) -> None:
        if self.enabled:
            with open(self.path, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(row) + "\n")
                fh.flush()


def progress_bar(enabled: bool, total: int, completed: int):
    """The training bar: step counter, rate, ETA and a metrics line (``format_info``)."""
    progress = stage_progress("train", enabled=enabled)
    task = progress.add_task("train", total=total, completed=completed, info="")
    return progress, task


INFO = (  # the progress bar's fields, each shown when the step logged it (a run without records has no cwce)
    ("loss", "loss", ".4f"),
    ("cwce", "cwce", ".4f"),
    ("on_policy_kl_per_token", "kl/tok", ".4f"),
    ("tea", "tea", ".3g"),
    ("lambda_ce", "λce", ".2f"),
    ("lambda_tea", "λtea", ".2f"),
    ("lr", "lr", ".2e"),
)


def format_info(row: dict[str, Any]) -> str:
    parts = [f"{label} {row[key]:{spec}}" for key, label, spec in INFO if row.get(key) is not None]
    return " ".join([*parts, f"{row.get('tokens_per_s', 0.0):.0f} tok/s"])


def finite(x: float) -> float | None:
    return x if isinstance(x, (int, float)) and math.isfinite(x) else None
