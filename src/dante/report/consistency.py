"""Consistency checks of the report: scores are compared only under the same settings.

Every score row carries its settings (task, shots, metric, filter, harness and version, rows
evaluated, generation cap, chat template). Rows of one benchmark are checked against the
settings most of the measured rows share; every difference is written out as a flag, and
published reference rows are always compared the same way, never silently.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from dante.report.reference import Published

METRIC_ALIASES = {"pass_at_1": "pass@1", "accuracy": "acc"}
# (field, label) of the settings that decide whether two numbers can be compared.
SETTINGS = (
    ("task", "task"),
    ("shots", "shots"),
    ("metric", "metric"),
    ("filter", "filter"),
    ("harness", "harness"),
    ("harness_version", "version"),
    ("n_samples", "n"),
    ("max_gen_toks", "max_gen_toks"),
    ("apply_chat_template", "chat template"),
    ("system_instruction", "system instruction"),
)


def settings_of(row: dict[str, Any]) -> dict[str, Any]:
    """The comparable settings of a measured score row (scores.json)."""
    return {
        "task": row.get("task"),
        "shots": row.get("shots"),
        "metric": METRIC_ALIASES.get(row.get("metric"), row.get("metric")),
        "filter": row.get("filter"),
        "harness": row.get("harness", "lm-eval"),
        "harness_version": row.get("lm_eval_version"),
        "n_samples": row.get("n_samples"),
        "max_gen_toks": row.get("max_gen_toks"),
        "apply_chat_template": bool(row.get("apply_chat_template", False)),
        "system_instruction": row.get("system_instruction"),
    }


def settings_of_published(ref: Published) -> dict[str, Any]:
    """The same settings for a published row; what the source does not state is None ("unknown")."""
    return {
        "task": ref.task,
        "shots": ref.shots,
        "metric": METRIC_ALIASES.get(ref.metric, ref.metric),
        "filter": ref.filter,
        "harness": ref.harness,
        "harness_version": ref.harness_version,
        "n_samples": ref.n_samples,
        "max_gen_toks": None,
        "apply_chat_template": False,
        "system_instruction": None,
    }


def describe(settings: dict[str, Any]) -> str:
    """'gsm8k_local, 8-shot, exact_match (strict-match), lm-eval 0.4.13, n=5'."""
    shots = "shots ?" if settings.get("shots") is None else f"{settings['shots']}-shot"
    filt = settings.get("filter")
    metric = settings.get("metric") + (f" ({filt})" if filt and filt not in ("none", "unknown") else "")
    harness = settings.get("harness") + (f" {settings['harness_version']}" if settings.get("harness_version") else "")
    parts = [
        str(settings.get("task")),
        shots,
        metric,
        harness,
        f"n={settings['n_samples']}" if settings.get("n_samples") else "n=?",
    ]
    if settings.get("max_gen_toks"):
        parts.append(f"max_gen_toks={settings['max_gen_toks']}")
    if settings.get("apply_chat_template"):
        parts.append("chat template")
    if settings.get("system_instruction"):
        parts.append(f"system instruction {settings['system_instruction'][:40]!r}")
    return ", ".join(parts)


def differences(settings: dict[str, Any], reference: dict[str, Any]) -> list[str]:
    """Human-readable differences of ``settings`` from ``reference`` ('shots 5 vs 8'); unknown counts as different."""
    out = []
    for key, label in SETTINGS:
        a, b = settings.get(key), reference.get(key)
        if a != b:
            out.append(f"{label} {'unknown' if a is None else a} vs {'unknown' if b is None else b}")
    return out


def reference_settings(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per benchmark, the settings most measured rows share (first seen wins a tie)."""
    by_bench: dict[str, list[tuple]] = {}
    for row in rows:
        by_bench.setdefault(row["benchmark"], []).append(tuple(sorted(settings_of(row).items(), key=lambda kv: kv[0])))
    return {bench: dict(Counter(items).most_common(1)[0][0]) for bench, items in by_bench.items()}


TRAINED_ELSEWHERE = ("teacher", "base")  # models whose scores the run's prompts cannot have contaminated


def flag_rows(rows: list[dict[str, Any]], checked: set[str] | None = None) -> list[list[str]]:
    """For each measured row, its differences from its benchmark's reference settings, plus
    partial-run and contamination notes. ``checked``: the tasks the run's prompt set was
    decontaminated against (None: unknown, no flag); a distilled model's score on any other
    task is flagged."""
    ref = reference_settings(rows)
    flags = []
    for row in rows:
        found = differences(settings_of(row), ref[row["benchmark"]])
        if row.get("n_total") and row.get("n_samples") and row["n_samples"] < row["n_total"]:
            found.append(f"partial: {row['n_samples']} of {row['n_total']} rows")
        if row.get("contamination"):
            found.append(f"contamination: {row['contamination']}")
        if checked is not None and row["model"] not in TRAINED_ELSEWHERE and row.get("task") not in checked:
            found.append("the prompt set was not checked against this task for contamination (prompts.decontaminate)")
        flags.append(found)
    return flags


def flag_published(refs: list[Published], rows: list[dict[str, Any]]) -> list[list[str]]:
    """For each published row, its differences from the measured settings of its benchmark (or 'not measured here')."""
    ref = reference_settings(rows)
    out = []
    for p in refs:
        if p.benchmark not in ref:
            out.append(["benchmark not measured in this run"])
        else:
            out.append(differences(settings_of_published(p), ref[p.benchmark]))
    return out
