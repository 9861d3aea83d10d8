"""Markdown sections of report.md (last stage): measured scores with their settings and flags,
the card's published rows (marked as not measured here), compute, training and cache summaries.

Functions take ``RunData`` (dante.report.data) and return markdown text; nothing here reads files.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

from dante.config import TeacherConfig
from dante.eval.scores import correct_by_doc, gap_recovered, mcnemar_exact
from dante.report.consistency import describe, flag_published, flag_rows, settings_of
from dante.report.data import RunData
from dante.report.reference import Published, PublishedCompute
from dante.teacher import engine_devices
from dante.teacher.reasoning import split_inline

NOT_RECORDED = "not recorded"


def md_table(headers: list[str], rows: list[list[Any]], align: str | None = None) -> str:
    """A GitHub markdown table; ``align`` is one letter per column (l/r)."""
    align = align or "l" * len(headers)
    rule = ["---:" if a == "r" else "---" for a in align]
    cell = lambda v: str(v).replace("|", "\\|").replace("\n", " ")  # noqa: E731
    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join(rule) + " |"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def pct(value: float | None, digits: int = 1) -> str:
    return "—" if value is None else f"{100 * value:.{digits}f}"


def fmt_hours(h: float | None) -> str:
    if h is None:
        return NOT_RECORDED
    return f"{h:.3g}" if h >= 0.01 else f"{h:.2e}"


def notes_block(data: RunData, part: str) -> str:
    return "\n".join(f"> {n}" for n in data.notes.get(part, []))


# -- scores ------------------------------------------------------------------------------


def scores_section(data: RunData) -> str:
    """Summary (benchmark x model) and details (one row per model and benchmark) of the measured headline scores."""
    rows = data.primary_scores
    out = ["## Scores measured in this run", ""]
    if not rows:
        return "\n".join(out + [notes_block(data, "scores") or "> no scores yet (run `dante eval`)", ""])
    flags = flag_rows(rows, data.decontaminated)
    models = list(dict.fromkeys(r["model"] for r in rows))
    benches = list(dict.fromkeys(r["benchmark"] for r in rows))
    footnotes: list[str] = []
    cell: dict[tuple[str, str], str] = {}
    for row, found in zip(rows, flags):
        mark = ""
        if found:
            footnotes.append(f"{row['model']} / {row['benchmark']}: " + "; ".join(found))
            mark = f" [{len(footnotes)}]"
        cell[(row["benchmark"], row["model"])] = f"{pct(row['value'])}{mark}"
    summary = [[b] + [cell.get((b, m), "—") for m in models] for b in benches]
    out += _before_after(data, models, benches, cell)
    out += [
        "Headline metric of each benchmark, in percent. A bracketed number marks a score whose settings differ "
        "from the other measured scores of its benchmark (or a partial run); read its note before comparing.",
        "",
        md_table(["benchmark"] + models, summary, "l" + "r" * len(models)),
        "",
    ]
    out += [f"[{i}] {text}" + "  " for i, text in enumerate(footnotes, start=1)]
    out += ["", "### Details", "", _details_table(rows), ""]
    if data.not_scored:
        out += (
            ["Not scored:", ""]
            + [f"- {p['model']} / {p['task']}: {p['status']} — {p.get('reason', '')}" for p in data.not_scored]
            + [""]
        )
    note = notes_block(data, "scores")
    return "\n".join(out + ([note, ""] if note else []))


BEFORE_AFTER = (("teacher", "teacher"), ("base", "student before"), ("student", "student after"))


def _before_after(data: RunData, models: list[str], benches: list[str], cell: dict[tuple[str, str], str]) -> list[str]:
    """The run's answer first: teacher, student before and student after, one row each (when
    both the base and the trained student were scored), with 95% intervals, and the paired exact
    McNemar test of after against before on the same items. Cells' [n] marks as below."""
    if not {"base", "student"} <= set(models):
        return []
    by_key = {(r["benchmark"], r["model"]): r for r in data.primary_scores}

    def with_ci(bench: str, model: str) -> str:
        row, text = by_key.get((bench, model)), cell.get((bench, model), "—")
        if row and row.get("ci95"):
            text += f" ({pct(row['ci95'][0])}–{pct(row['ci95'][1])})"
        return text

    body = [[label] + [with_ci(b, m) for b in benches] for m, label in BEFORE_AFTER if m in models]
    gaps = {b: _gap(by_key, b) for b in benches}
    tokens = teacher_tokens(data.student_manifest)
    if any(g is not None for g in gaps.values()):
        body.append(["gap recovered (GR)"] + [pct(gaps[b], 0) if gaps[b] is not None else "—" for b in benches])
        if tokens:
            body.append(
                ["GR per million teacher tokens"]
                + [f"{gaps[b] / (tokens['total'] / 1e6):.2f}" if gaps[b] is not None else "—" for b in benches]
            )
    body.append(
        ["after vs before"] + [_paired(data, by_key.get((b, "base")), by_key.get((b, "student"))) for b in benches]
    )
    return [
        "### Before and after distillation",
        "",
        "Headline metric in percent with its 95% interval; a bracketed number refers to the notes below the next "
        "table. *After vs before*: the change in points, then on the items both were scored on, how many the "
        "student gets right only after (won) and only before (lost), and the exact McNemar p-value of that split. "
        "*GR*: the share of the teacher-student gap the student closed, (after − before) / (teacher − before).",
        "",
        md_table(["model"] + benches, body, "l" + "r" * len(benches)),
        "",
        *([_teacher_tokens_line(tokens), ""] if tokens else []),
        "### All models",
        "",
    ]


def _gap(by_key: dict[tuple[str, str], dict[str, Any]], bench: str) -> float | None:
    rows = [by_key.get((bench, m)) for m in ("teacher", "base", "student")]
    if not all(rows):
        return None
    return gap_recovered(rows[2]["value"], rows[1]["value"], rows[0]["value"])


def teacher_tokens(manifest: dict[str, Any] | None) -> dict[str, Any] | None:
    """What the student cost the teacher, from the training manifest: tokens it generated for the
    cache, tokens it scored on-policy, their total and the scoring seconds."""
    compute = (manifest or {}).get("teacher_compute")
    if not compute:
        return None
    generated, scored = compute.get("tokens_generated") or 0, compute.get("tokens_scored") or 0
    return {
        "generated": generated,
        "scored": scored,
        "total": generated + scored,
        "seconds_scoring": compute.get("seconds_scoring") or 0.0,
    }


def _teacher_tokens_line(tokens: dict[str, Any]) -> str:
    line = f"Teacher tokens behind this student: {tokens['generated']:,} generated for the cache"
    if tokens["scored"]:
        line += f", {tokens['scored']:,} scored on the student's own samples ({tokens['seconds_scoring']:.0f} s)"
    return line + f"; {tokens['total']:,} in all."


def _paired(data: RunData, before: dict[str, Any] | None, after: dict[str, Any] | None) -> str:
    """'+27.0 points; 60 won / 6 lost, p = 2e-12' from the two models' logged samples."""
    if not before or not after or data.eval_dir is None:
        return "—"
    change = f"{100 * (after['value'] - before['value']):+.1f} points"
    a = correct_by_doc(data.eval_dir / "base", before["task"], before["metric"], before["filter"])
    b = correct_by_doc(data.eval_dir / "student", after["task"], after["metric"], after["filter"])
    if not a or not b or before["task"] != after["task"]:
        return change + " (no per-item samples for a paired test)"
    t = mcnemar_exact(a, b)
    return f"{change}; {t['b_only']} won / {t['a_only']} lost of {t['rows']}, McNemar p = {t['p_value']:.2g}"


def _details_table(rows: list[dict[str, Any]]) -> str:
    body = []
    for r in rows:
        ci = f"{pct(r['ci95'][0])}–{pct(r['ci95'][1])}" if r.get("ci95") else "—"
        n = f"{r.get('n_samples')}" + (f" of {r['n_total']}" if r.get("n_total") else "")
        body.append(
            [
                r["model"],
                r["benchmark"],
                r["task"],
                r.get("shots"),
                f"{r['metric']} ({r['filter']})",
                pct(r["value"], 2),
                ci,
                n,
                f"lm-eval {r.get('lm_eval_version')}",
                r.get("max_gen_toks") or "task default",
                r.get("date") or "",
            ]
        )
    headers = [
        "model",
        "benchmark",
        "task",
        "shots",
        "metric (filter)",
        "score %",
        "95% CI",
        "n",
        "harness",
        "max_gen_toks",
        "date",
    ]
    return md_table(headers, body, "lllrlrrrlll")


# -- published reference -----------------------------------------------------------------


def reference_section(data: RunData, refs: list[Published]) -> str:
    """The card's numbers as reference rows: published figures, not measured here, with sources and every difference."""
    out = [
        "## Published reference figures (not measured here)",
        "",
        "Copied from the DANTE-Mosaic-3.5B model card; **not** produced by this run. Sources are numbered below the "
        "table; the second table lists every setting in which a published number differs from this run's measured "
        "scores of the same benchmark, so no comparison is silent.",
        "",
    ]
    sources = list(dict.fromkeys(r.source for r in refs))
    models = list(dict.fromkeys(r.model for r in refs))
    benches = list(dict.fromkeys(r.benchmark for r in refs))
    value = {(r.benchmark, r.model): f"{r.value:.1f}" for r in refs}
    source_of = {m: sources.index(next(r.source for r in refs if r.model == m)) + 1 for m in models}
    headers = ["benchmark"] + [f"{m.removesuffix(' (published)')} [{source_of[m]}]" for m in models]
    out += [
        md_table(headers, [[b] + [value.get((b, m), "—") for m in models] for b in benches], "l" + "r" * len(models)),
        "",
    ]
    out += [f"[{i}] {s}  " for i, s in enumerate(sources, start=1)] + [""]
    out += ["### Published settings and differences from this run", "", _reference_differences(data, refs), ""]
    return "\n".join(out)


def _reference_differences(data: RunData, refs: list[Published]) -> str:
    """One row per distinct (benchmark, published settings): the models it covers and what
    differs from the measured rows."""
    flags = flag_published(refs, data.primary_scores)
    groups: dict[tuple[str, str, str], list[str]] = {}
    for ref, found in zip(refs, flags):
        settings = describe(
            {
                "task": ref.task,
                "shots": ref.shots,
                "metric": ref.metric,
                "filter": ref.filter,
                "harness": ref.harness,
                "harness_version": ref.harness_version,
                "n_samples": ref.n_samples,
            }
        )
        note = "; ".join(x for x in [ref.note] + found if x) or "same settings"
        groups.setdefault((ref.benchmark, settings, note), []).append(ref.model.removesuffix(" (published)"))
    body = [[bench, ", ".join(models), settings, note] for (bench, settings, note), models in groups.items()]
    return md_table(["benchmark", "published models", "published settings", "differences from this run / notes"], body)


# -- compute -----------------------------------------------------------------------------


def student_compute(data: RunData) -> dict[str, Any] | None:
    m = data.student_manifest
    if not m:
        return None
    hours = m.get("device_hours")
    if hours is None and m.get("wall_time_s") is not None and m.get("device_count"):
        hours = m["wall_time_s"] * m["device_count"] / 3600
    return {
        "hours": hours,
        "device_type": m.get("device_type"),
        "device_count": m.get("device_count"),
        "device_name": m.get("device_name"),
        "wall_time_s": m.get("wall_time_s"),
        "tokens": m.get("tokens_seen"),
        "steps": m.get("steps"),
    }


def _teacher_devices(recipe: dict[str, Any]) -> tuple[int | None, str | None]:
    """Devices the teacher used, from the recipe: vLLM's parallel degrees, one local device
    for hf, unknown for a server."""
    try:  # the resolved recipe's teacher section (flat backend keys of older runs are read too)
        cfg = TeacherConfig.model_validate(recipe.get("teacher") or {})
    except ValueError:
        return None, None
    return engine_devices(cfg)


def _manifest_span_s(m: dict[str, Any]) -> float | None:
    try:
        return (datetime.fromisoformat(m["updated"]) - datetime.fromisoformat(m["created"])).total_seconds()
    except (KeyError, TypeError, ValueError):
        return None


def cache_compute(data: RunData) -> dict[str, Any] | None:
    """Teacher cache compute: recorded device-hours, else wall time × devices, else an estimate from the manifest's
    created/updated times and the recipe's teacher devices (marked as such), else not recorded."""
    m = data.cache_manifest
    if m is None and data.cache_stats is None:
        return None
    m = m or {}
    stats = data.cache_stats or {}
    out = {
        "hours": m.get("device_hours"),
        "device_type": m.get("device_type"),
        "device_count": m.get("device_count"),
        "device_name": m.get("device_name"),
        "wall_time_s": m.get("wall_time_s", m.get("seconds")),
        "tokens": stats.get("completion_tokens"),
        "records": m.get("records", stats.get("records")),
        "source": "measured (manifest)",
    }
    if out["hours"] is None and out["wall_time_s"] is not None and out["device_count"]:
        out["hours"] = out["wall_time_s"] * out["device_count"] / 3600
    if out["hours"] is None and out["wall_time_s"] is None and (span := _manifest_span_s(m)) is not None:
        count, kind = _teacher_devices(data.recipe)
        out.update(
            wall_time_s=span,
            device_count=count,
            device_type=kind,
            device_name=kind,
            hours=span * count / 3600 if count else None,
            source="estimate: manifest created→updated span (includes pauses) × teacher devices from the recipe",
        )
    return out


def eval_compute(data: RunData) -> dict[str, Any] | None:
    per_task = {(r["model"], r["task"]): r for r in data.scores if r.get("wall_time_s") is not None}
    if not per_task:
        return None
    wall = sum(r["wall_time_s"] for r in per_task.values())
    devices = sorted({str(r.get("device")) for r in per_task.values()})
    return {
        "hours": wall / 3600,
        "device_type": ", ".join(devices),
        "device_count": 1,
        "wall_time_s": wall,
        "tokens": None,
    }


def compute_section(data: RunData, published: list[PublishedCompute]) -> str:
    out = [
        "## Compute",
        "",
        "Device-hours = wall time × devices, from the stage manifests; "
        f"'{NOT_RECORDED}' where a stage did not write it.",
        "",
    ]
    body = []
    for stage, c in (
        ("teacher cache", cache_compute(data)),
        ("student training", student_compute(data)),
        ("evaluation", eval_compute(data)),
    ):
        if c is None:
            body.append([stage, "stage has not run", "", "", "", ""])
            continue
        device = (
            f"{c.get('device_count') or '?'}× {c.get('device_name') or c.get('device_type') or '?'}"
            if c.get("device_type")
            else NOT_RECORDED
        )
        wall = f"{c['wall_time_s']:.0f}" if c.get("wall_time_s") is not None else NOT_RECORDED
        tokens = f"{c['tokens']:,}" if c.get("tokens") is not None else "—"
        body.append([stage, device, wall, fmt_hours(c["hours"]), tokens, c.get("source", "measured (manifest)")])
    out += [md_table(["stage", "devices", "wall time (s)", "device-hours", "tokens", "source"], body, "llrrrl"), ""]
    if published:
        out += [
            f"Published compute (not measured here; A100-GPU-hour equivalents, the card's own figures and estimates; "
            f"source: {published[0].source}):",
            "",
        ]
        out += [
            md_table(
                ["job", "A100-hours", "note"], [[p.job, f"{p.a100_hours:,.0f}", p.note] for p in published], "lrl"
            ),
            "",
        ]
    return "\n".join(out)


# -- training and cache -------------------------------------------------------------------


def training_section(data: RunData) -> str:
    out = ["## Training", ""]
    m = data.student_manifest
    if m:
        rows = [
            ["steps", m.get("steps")],
            ["tokens seen", f"{m.get('tokens_seen', 0):,}"],
            ["records seen", m.get("records_seen", "—")],
            ["final loss", _num(m.get("final_loss"))],
            ["held-out loss (start → end)", f"{_num(m.get('initial_eval_loss'))} → {_num(m.get('eval_loss'))}"],
            ["records kept by train.filter", _filter_line((m.get("data") or {}).get("filter"))],
            ["mixed precision", m.get("mixed_precision", "—")],
            ["student init", m.get("student", "—")],
        ]
        out += [md_table(["", ""], rows), ""]
    note = notes_block(data, "training")
    return "\n".join(out + ([note, ""] if note else []))


def _filter_line(counts: dict[str, Any] | None) -> str:
    """'380 of 400 (dropped: truncated 15, no_answer 5)' from the manifest's filter counts."""
    if not counts:
        return "—"
    dropped = ", ".join(f"{k} {v}" for k, v in counts.get("dropped", {}).items() if v)
    return f"{counts.get('kept')} of {counts.get('read')}" + (f" (dropped: {dropped})" if dropped else "")


def _num(x: Any) -> str:
    return f"{x:.4f}" if isinstance(x, (int, float)) else "—"


def cache_section(data: RunData) -> str:
    out = ["## Teacher cache", ""]
    s = data.cache_stats
    if s:
        teacher = (data.cache_manifest or {}).get("teacher", {})
        ent = s.get("output_entropy") or {}
        rows = [
            ["teacher", teacher.get("name") or teacher.get("model") or ", ".join(s.get("teachers", {}))],
            ["records", s["records"]],
            ["completion tokens", f"{s.get('completion_tokens', 0):,}"],
            [
                "output_entropy mean / median / p90 (nats)",
                " / ".join(_num(ent.get(k)) for k in ("mean", "median", "p90")),
            ],
            ["records without entropy", f"{100 * s['null_share']['output_entropy']:.1f}%"],
        ]
        out += [md_table(["", ""], rows), ""]
    note = notes_block(data, "cache")
    return "\n".join(out + ([note, ""] if note else []))


def _responses(path: Path) -> list[tuple[str, bool | None]]:
    """The raw responses of a ``generations_<task>.jsonl`` (each as the model wrote it, thinking
    included: dante eval writes it when eval.think_end_token is set, with whether its thinking
    never ended) or a ``samples_<task>.jsonl``; (text, never ended or None when not recorded)."""
    out: list[tuple[str, bool | None]] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if "text" in row:
            out.append((row["text"], row.get("thinking_unclosed")))
            continue
        resps = row.get("resps") or []
        text = resps[0][0] if resps and isinstance(resps[0], list) and resps[0] else None
        if isinstance(text, str):
            out.append((text, None))
    return out


def thinking_lengths(path: Path, close: str = "</think>") -> dict[str, Any] | None:
    """How much a model thought in one task's responses (``_responses``): responses, those with a
    thinking block, those whose block ended (``close``), those whose thinking never ended (scored
    as no answer: dante.eval.run.thinking_hflm), and the mean characters of the thinking and of
    what follows it."""
    n = thought = closed = unclosed = 0
    think_chars = answer_chars = 0
    for text, never_ended in _responses(path):
        n += 1
        split = split_inline(text, close, opened=bool(never_ended))  # marked: its template opened the block
        answer_chars += len(split.answer.strip())
        unclosed += bool(never_ended if never_ended is not None else split.reasoning is not None and not split.closed)
        if split.reasoning is None:
            continue
        thought += 1
        closed += split.closed
        think_chars += len(split.reasoning.strip())
    if not n:
        return None
    return {
        "responses": n,
        "with_thinking": thought,
        "closed": closed,
        "unclosed": unclosed,
        "thinking_chars": think_chars / thought if thought else 0.0,
        "answer_chars": answer_chars / n,
    }


def reasoning_section(data: RunData) -> str:
    """Reasoning length before and after distillation: the teacher's (its cache) and each evaluated
    model's on each task; left out when nobody thought."""
    close = ((data.recipe.get("eval") or {}).get("think_end_token")) or "</think>"
    rows = []
    teacher = (data.cache_stats or {}).get("reasoning") or {}
    if teacher.get("records"):
        chars = teacher.get("reasoning_chars") or {}
        rows.append(
            [
                "teacher (cache)",
                "distillation prompts",
                teacher["records"],
                teacher["records"],
                (teacher.get("status") or {}).get("complete", "n/a"),
                (teacher.get("status") or {}).get("cut", 0),
                f"{chars['mean']:.0f}" if isinstance(chars.get("mean"), (int, float)) else "n/a",
                "",
            ]
        )
    files = sorted(data.eval_dir.glob("*/samples_*.jsonl")) if data.eval_dir else []
    for path in files:
        raw = path.with_name(path.name.replace("samples_", "generations_", 1))
        got = thinking_lengths(raw if raw.is_file() else path, close)  # lm-eval's samples lack the thinking
        if got is None:
            continue
        task = path.stem.removeprefix("samples_")
        rows.append(
            [
                path.parent.name,
                task,
                got["responses"],
                got["with_thinking"],
                got["closed"],
                got["unclosed"],
                f"{got['thinking_chars']:.0f}" if got["with_thinking"] else "",
                f"{got['answer_chars']:.0f}",
            ]
        )
    if not teacher.get("records") and not any(r[3] for r in rows):
        return ""
    header = [
        "model",
        "on",
        "responses",
        "with thinking",
        "thinking ended",
        "never ended",
        "thinking chars (mean)",
        "answer chars",
    ]
    return "\n".join(
        [
            "## Reasoning",
            "",
            "How long each model thinks: the teacher in the cache, each evaluated model in its raw responses "
            f"(generations_<task>.jsonl; thinking between <think> and {close}; the answer is what follows it, "
            "scored after lm-eval strips the thinking). A thinking block that never ended (opened by the model or "
            "its template's prompt, no end marker: at the length limit, say) is scored as no answer; for the "
            "teacher, 'never ended' counts its cut records.",
            "",
            md_table(header, rows),
            "",
        ]
    )


def settings_summary(rows: list[dict[str, Any]]) -> list[str]:
    """One line per distinct (benchmark, settings) among measured rows, for the consistency section."""
    seen = dict.fromkeys(f"{r['benchmark']}: {describe(settings_of(r))}" for r in rows)
    return list(seen)
