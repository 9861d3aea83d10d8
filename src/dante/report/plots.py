"""The report's figures (last stage), drawn with matplotlib's Agg backend into PNG files:
scoreboard per benchmark, score vs training compute, training curves, cache entropy + w(H).

Each function takes plain data and a path, returns the path, or None (with nothing written)
when there is nothing to draw; the caller writes a note for the None case.
"""

# matplotlib (the report extra) is imported where a plot is drawn.

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

MEASURED_COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")
PUBLISHED_COLOR = "#b0b0b0"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update(
        {"font.size": 10, "axes.titlesize": 11, "axes.labelsize": 10, "legend.fontsize": 9, "figure.dpi": 110}
    )
    return plt


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


def scoreboard(bars: dict[str, list[dict[str, Any]]], path: Path) -> Path | None:
    """One panel per benchmark: bars of measured models (colours) and published rows (grey, hatched).

    ``bars[benchmark]`` = [{"label", "value" (percent), "published" (bool), "flagged" (bool),
    "ci" ([lo, hi] percent or None)}].
    """
    if not bars:
        return None
    plt = _pyplot()
    n = len(bars)
    cols = min(3, n)
    rows = math.ceil(n / cols)
    width = max(4.2, 0.55 * max(len(v) for v in bars.values()) + 1.5)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, 3.9 * rows), squeeze=False)
    colors = {}
    for ax, (bench, items) in zip(axes.flat, bars.items()):
        _score_panel(ax, bench, items, colors)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.suptitle(
        "Scores per benchmark: measured here (colour) vs published (grey, hatched; not measured here)\n"
        "* settings differ from the benchmark's measured settings (see report.md)",
        fontsize=10,
    )
    fig.tight_layout()
    return _save(fig, path)


def _score_panel(ax, bench: str, items: list[dict[str, Any]], colors: dict[str, str]) -> None:
    for i, item in enumerate(items):
        if item["published"]:
            color, hatch = PUBLISHED_COLOR, "//"
        else:
            color = colors.setdefault(item["label"], MEASURED_COLORS[len(colors) % len(MEASURED_COLORS)])
            hatch = None
        ax.bar(i, item["value"], color=color, hatch=hatch, edgecolor="black", linewidth=0.6)
        if item.get("ci"):
            lo, hi = item["ci"]
            ax.errorbar(
                i,
                item["value"],
                yerr=[[item["value"] - lo], [hi - item["value"]]],
                color="black",
                capsize=3,
                linewidth=1,
            )
        top = max(item["value"], item["ci"][1] if item.get("ci") else 0.0)  # above the interval, not on it
        ax.text(
            i,
            top + 1.5,
            f"{item['value']:.1f}" + ("*" if item.get("flagged") else ""),
            ha="center",
            va="bottom",
            fontsize=8,
        )
    ax.set_xticks(range(len(items)))
    ax.set_xticklabels(
        [it["label"].replace(" (published)", "\n(published)") for it in items], rotation=35, ha="right", fontsize=8
    )
    ax.set_ylim(0, 105)
    ax.set_ylabel("score (%)")
    ax.set_title(bench)
    ax.grid(axis="y", alpha=0.3)


def score_vs_compute(points: list[dict[str, Any]], baselines: list[dict[str, Any]], path: Path) -> Path | None:
    """Score (%) against training compute (device-hours, log axis), one colour per benchmark.

    ``points`` = [{"benchmark", "label", "hours", "unit", "value", "published"}]; ``baselines`` =
    [{"benchmark", "label", "value"}] drawn as dashed lines (models with no training compute of ours).
    Nothing is drawn without at least one measured point.
    """
    if not any(not p["published"] for p in points):
        return None  # published points alone say nothing about this run
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8.5, 5.2))
    benches = list(dict.fromkeys([p["benchmark"] for p in points] + [b["benchmark"] for b in baselines]))
    color = {b: MEASURED_COLORS[i % len(MEASURED_COLORS)] for i, b in enumerate(benches)}
    for p in points:
        face = "none" if p["published"] else color[p["benchmark"]]
        ax.scatter(
            p["hours"],
            p["value"],
            s=70,
            marker="o" if p["published"] else "s",
            facecolors=face,
            edgecolors=color[p["benchmark"]],
            linewidths=1.5,
            zorder=3,
        )
        ax.annotate(
            f"{p['label']}\n({p['hours']:.3g} {p['unit']})",
            (p["hours"], p["value"]),
            textcoords="offset points",
            xytext=(6, 4),
            fontsize=7,
        )
    for b in baselines:
        ax.axhline(b["value"], color=color[b["benchmark"]], linestyle="--", linewidth=1)
    ax.set_xscale("log")
    ax.set_ylim(-3, 105)
    ax.set_xlabel("training compute (device-hours, log scale; units differ per point, see labels)")
    ax.set_ylabel("score (%)")
    ax.grid(alpha=0.3, which="major")
    _compute_legend(ax, benches, color, bool(baselines))
    ax.set_title("Score vs training compute")
    fig.tight_layout()
    return _save(fig, path)


def _compute_legend(ax, benches: list[str], color: dict[str, str], has_baselines: bool) -> None:
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=color[b], marker="s", linestyle="", label=b) for b in benches]
    handles += [
        Line2D([], [], color="black", marker="s", linestyle="", label="measured here"),
        Line2D(
            [],
            [],
            color="black",
            marker="o",
            markerfacecolor="none",
            linestyle="",
            label="published (not measured here)",
        ),
    ]
    if has_baselines:
        handles.append(Line2D([], [], color="black", linestyle="--", label="before distillation (base, measured)"))
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)


def training_curves(metrics: list[dict[str, Any]], path: Path) -> Path | None:
    """Four panels over optimizer steps: losses (total, CWCE, CE, held-out), TEA, λ_CE and λ_TEA, learning rate."""
    train = [m for m in metrics if m.get("step", 0) > 0 and m.get("loss") is not None]
    if not train:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(2, 2, figsize=(11, 7), sharex=True)
    panels = [
        (
            axes[0, 0],
            "Loss",
            "loss",
            [("loss", "total loss"), ("cwce", "CWCE (weighted CE)"), ("ce", "CE (unweighted)")],
        ),
        (axes[0, 1], "TEA anchor ||E - E0||²", "TEA", [("tea", "TEA")]),
        (axes[1, 0], "Loss weights", "λ", [("lambda_ce", "λ_CE"), ("lambda_tea", "λ_TEA")]),
        (axes[1, 1], "Learning rate", "learning rate", [("lr", "LR")]),
    ]
    for ax, title, ylabel, series in panels:
        _curve_panel(ax, train, series)
        ax.set_title(title)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    held = [(m["step"], m["eval_loss"]) for m in metrics if m.get("eval_loss") is not None]
    if held:
        axes[0, 0].plot(*zip(*held), "o--", color="black", label="held-out loss", markersize=4)
    axes[0, 0].legend()
    for ax in axes[1]:
        ax.set_xlabel("optimizer step")
    fig.suptitle("Student training curves")
    fig.tight_layout()
    return _save(fig, path)


def _curve_panel(ax, rows: list[dict[str, Any]], series: list[tuple[str, str]]) -> None:
    drawn = False
    for (key, label), style in zip(series, ("-", "--", ":")):  # styles keep overlapping curves visible
        pts = [(r["step"], r[key]) for r in rows if isinstance(r.get(key), (int, float))]
        if pts:
            ax.plot(*zip(*pts), style, label=label, linewidth=1.6)
            drawn = True
    if drawn:
        ax.legend()
    else:
        ax.text(0.5, 0.5, "not recorded", ha="center", va="center", transform=ax.transAxes, color="grey")


def entropy_histogram(entropies: list[float], weight, path: Path, *, bins: int = 30) -> Path | None:
    """Histogram of the cache's output_entropy with the CWCE weight curve w(H) on a second axis.

    ``weight`` maps an entropy (nats) to w(H), e.g. ``dante.train.objective.losses.cwce_weight`` with the run's config.
    """
    if not entropies:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.6))
    hi = max(max(entropies) * 1.05, 3.0)
    ax.hist(
        entropies, bins=bins, range=(0, hi), color="#9ecae1", edgecolor="#3182bd", label=f"records (n={len(entropies)})"
    )
    mean = sum(entropies) / len(entropies)
    ax.axvline(mean, color="#3182bd", linestyle=":", label=f"mean H = {mean:.2f} nats")
    ax.set_xlabel("teacher output entropy H (nats per token)")
    ax.set_ylabel("records")
    ax2 = ax.twinx()
    xs = [hi * i / 200 for i in range(201)]
    mean_w = sum(float(weight(h)) for h in entropies) / len(entropies)
    ax2.plot(
        xs,
        [float(weight(x)) for x in xs],
        color="#d62728",
        linewidth=2,
        label=f"CWCE weight w(H) (mean over records {mean_w:.2f})",
    )
    ax2.set_ylim(0, 1.05)
    ax2.set_ylabel("CWCE weight w(H)", color="#d62728")
    ax2.tick_params(axis="y", colors="#d62728")
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    ax.legend(h1 + h2, l1 + l2, loc="upper right")
    ax.set_title("Teacher cache: output entropy and the CWCE weight over it")
    fig.tight_layout()
    return _save(fig, path)
