"""The progress bar every stage shows (cache, train, eval): a label, the bar, done / total,
elapsed time, ETA and one line of the stage's own figures (rates, losses)."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


def stage_progress(label: str, *, console: Console | None = None, enabled: bool = True) -> Progress:
    """A rich Progress whose tasks take an ``info`` field (``add_task(..., info="")``)."""
    return Progress(
        TextColumn(f"[bold]{label}" if label else "{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[info]}"),
        console=console or Console(stderr=True),
        disable=not enabled,
        transient=False,
    )
