"""`dante report RUN_DIR` (last stage): report.md, PNG plots and the student's model card,
from the files the other stages left in the run folder.

A stage that has not run (no cache, no training, no eval yet) becomes a note in the report;
the report is still written. Published figures of the card are reference rows, never scores.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console

from dante.config import LossConfig, ReportConfig
from dante.io import atomic_write_text
from dante.layout import ADAPTER_CONFIG, MERGED
from dante.report import plots
from dante.report.card import model_card
from dante.report.consistency import flag_rows
from dante.report.data import RunData, load_run
from dante.report.prompt_set import prompts_section
from dante.report.reference import CARD_COMPUTE, CARD_SCORES, COMPUTE_POINTS, Published, PublishedCompute
from dante.report.tables import (
    cache_section,
    compute_section,
    reasoning_section,
    reference_section,
    scores_section,
    settings_summary,
    student_compute,
    training_section,
)
from dante.train.objective.losses import cwce_weight

console = Console(stderr=True)
CARD_MARKER = "<!-- written by dante report -->"


def report_settings(data: RunData) -> dict[str, Any]:
    """The recipe's report section with defaults (the ReportConfig fields), from the saved plain data."""
    section = data.recipe.get("report") or {}
    known = {k: v for k, v in section.items() if k in ReportConfig.model_fields}
    try:
        return ReportConfig.model_validate(known).model_dump()
    except ValueError:
        return ReportConfig().model_dump()


def cwce_weight_fn(data: RunData):
    """w(H) with the run's loss settings (student manifest, else recipe, else the card's defaults)."""
    config = (data.student_manifest or {}).get("config") or data.recipe
    loss = ((config.get("train") or {}).get("loss")) or {}
    try:
        cfg = LossConfig.model_validate(loss)
    except ValueError:
        cfg = LossConfig()
    return lambda h: cwce_weight(h, cfg)


# -- plot data ---------------------------------------------------------------------------


def scoreboard_bars(data: RunData, refs: list[Published]) -> dict[str, list[dict[str, Any]]]:
    rows = data.primary_scores
    flags = flag_rows(rows, data.decontaminated)
    bars: dict[str, list[dict[str, Any]]] = {}
    for row, found in zip(rows, flags):
        ci = [100 * row["ci95"][0], 100 * row["ci95"][1]] if row.get("ci95") else None
        bars.setdefault(row["benchmark"], []).append(
            {"label": row["model"], "value": 100 * row["value"], "published": False, "flagged": bool(found), "ci": ci}
        )
    for ref in refs:
        if ref.benchmark in bars:  # published rows only next to a benchmark measured here
            bars[ref.benchmark].append(
                {"label": ref.model, "value": ref.value, "published": True, "flagged": True, "ci": None}
            )
    return bars


def compute_points(data: RunData, refs: list[Published]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Measured student points at its training device-hours, published points at the card's
    A100-hours, base as baselines."""
    points, baselines = [], []
    student = student_compute(data)
    for row in data.primary_scores:
        if row["model"] == "student" and student and student.get("hours"):
            unit = {"cuda": "GPU-h", "cpu": "CPU-h"}.get(student.get("device_type"), f"{student.get('device_type')}-h")
            points.append(
                {
                    "benchmark": row["benchmark"],
                    "label": "student (measured)",
                    "hours": student["hours"],
                    "unit": unit,
                    "value": 100 * row["value"],
                    "published": False,
                }
            )
        elif row["model"] == "base":
            baselines.append({"benchmark": row["benchmark"], "label": "base", "value": 100 * row["value"]})
    measured = {p["benchmark"] for p in points} | {b["benchmark"] for b in baselines}
    for ref in refs:
        if ref.model in COMPUTE_POINTS and ref.benchmark in measured:
            points.append(
                {
                    "benchmark": ref.benchmark,
                    "label": ref.model,
                    "hours": COMPUTE_POINTS[ref.model],
                    "unit": "A100-h",
                    "value": ref.value,
                    "published": True,
                }
            )
    return points, baselines


def make_figures(data: RunData, out: Path, refs: list[Published]) -> dict[str, Path | str]:
    """Every plot; a string in place of a path says why a plot was not drawn."""
    figures: dict[str, Path | str] = {}
    attempts = {
        "scoreboard": (lambda: plots.scoreboard(scoreboard_bars(data, refs), out / "scoreboard.png"), "no scores yet"),
        "score_vs_compute": (
            lambda: plots.score_vs_compute(*compute_points(data, refs), out / "score_vs_compute.png"),
            "needs student scores and the student's recorded training device-hours",
        ),
        "training_curves": (
            lambda: plots.training_curves(data.metrics, out / "training_curves.png"),
            "no training metrics",
        ),
        "cache_entropy": (
            lambda: plots.entropy_histogram(data.entropies, cwce_weight_fn(data), out / "cache_entropy.png"),
            "no cache records with output_entropy",
        ),
    }
    for name, (draw, why) in attempts.items():
        try:
            path = draw()
        except ImportError as exc:
            path, why = None, f"matplotlib is not installed ({exc}); pip install 'dante-distill[report]'"
        if path is None:
            for stale in out.glob(f"{name}.png"):  # a plot of an earlier report must not outlive its data
                stale.unlink()
        figures[name] = path if path is not None else why
    return figures


# -- report.md ---------------------------------------------------------------------------


def figures_section(figures: dict[str, Path | str], out: Path) -> str:
    titles = {
        "scoreboard": "Scoreboard per benchmark",
        "score_vs_compute": "Score vs training compute",
        "training_curves": "Training curves (loss, CWCE, TEA, λs, LR)",
        "cache_entropy": "Cache entropy and the CWCE weight w(H)",
    }
    lines = ["## Plots", ""]
    for name, value in figures.items():
        if isinstance(value, Path):
            lines += [f"### {titles[name]}", "", f"![{titles[name]}]({value.relative_to(out).as_posix()})", ""]
        else:
            lines += [f"### {titles[name]}", "", f"> not drawn: {value}", ""]
    return "\n".join(lines)


def consistency_section(data: RunData) -> str:
    rows = data.primary_scores
    lines = ["## Consistency checks", ""]
    if not rows:
        return "\n".join(lines + ["> nothing to check: no scores yet", ""])
    lines += ["Settings of the measured scores (a benchmark listed twice was measured under two settings):", ""]
    lines += [f"- {s}" for s in settings_summary(rows)]
    flagged = sum(1 for f in flag_rows(rows, data.decontaminated) if f)
    lines += [
        "",
        f"{flagged} of {len(rows)} measured scores are flagged; published rows are flagged against the "
        "measured settings above.",
        "",
    ]
    return "\n".join(lines)


def render_report(
    data: RunData,
    settings: dict[str, Any],
    figures: dict[str, Path | str],
    out: Path,
    refs: list[Published],
    compute_refs: list[PublishedCompute],
) -> str:
    title = settings.get("title") or f"dante report: {data.recipe.get('name') or data.run_dir.name}"
    when = datetime.now(UTC).isoformat(timespec="seconds")
    head = [f"# {title}", "", f"Run folder `{data.run_dir}`, report written {when}.", ""]
    run_notes = [f"> {n}" for n in data.notes.get("run", [])]
    parts = [
        "\n".join(head + run_notes),
        scores_section(data),
        reference_section(data, refs) if refs else "",
        compute_section(data, compute_refs),
        training_section(data),
        prompts_section(data),
        cache_section(data),
        reasoning_section(data),
        figures_section(figures, out),
        consistency_section(data),
    ]
    return "\n\n".join(p for p in parts if p).rstrip() + "\n"


def write_model_card(data: RunData, settings: dict[str, Any], out: Path) -> Path | None:
    """README.md in the report folder, and in the student folder unless one not written by dante is there."""
    if not settings.get("model_card", True):
        return None
    name = settings.get("model_name") or data.recipe.get("name") or data.run_dir.name
    rows = [r for r in data.primary_scores if r["model"] == "student"]
    adapter = bool(data.student_dir) and (data.student_dir / ADAPTER_CONFIG).is_file()
    text = model_card(name, data, rows, adapter=adapter) + f"\n{CARD_MARKER}\n"
    path = atomic_write_text(out / "README.md", text)
    targets = []
    if data.student_dir and ((data.student_dir / "config.json").is_file() or adapter):
        targets.append((data.student_dir / "README.md", text))
    if adapter and (data.student_dir / MERGED / "config.json").is_file():  # the merged LoRA student's own card
        merged_text = model_card(name, data, rows) + f"\n{CARD_MARKER}\n"
        targets.append((data.student_dir / MERGED / "README.md", merged_text))
    for target, body in targets:
        if not target.exists() or CARD_MARKER in target.read_text(encoding="utf-8", errors="replace"):
            atomic_write_text(target, body)
    return path


def build_report(run_dir: str | Path, output_dir: str | Path | None = None) -> Path:
    """Write report.md, the plots and the model card for a run folder; returns report.md's path."""
    data = load_run(run_dir)
    settings = report_settings(data)
    out = Path(output_dir) if output_dir else data.report_dir
    out.mkdir(parents=True, exist_ok=True)
    refs = list(CARD_SCORES) if settings.get("include_card_reference", True) else []
    compute_refs = list(CARD_COMPUTE) if refs else []
    figures = make_figures(data, out, refs)
    card = write_model_card(data, settings, out)
    text = render_report(data, settings, figures, out, refs, compute_refs)
    if card is not None:
        text += f"\nModel card for the student: `{card.name}` (also copied into the student folder when it exists).\n"
    path = atomic_write_text(out / "report.md", text)
    for part, notes in data.notes.items():
        for n in notes:
            console.print(f"[yellow]{part}[/]: {n}", highlight=False)
    return path
