"""What ``dante prompts build`` / ``check`` print: the curated set's counts per source and per
step, what decontamination checked, and the first removed prompts with the reason."""

from __future__ import annotations

from typing import Any

from rich.console import Group
from rich.table import Table

SOURCE_COLUMNS = ("source", "weight", "read", "exact dup", "near dup", "contaminated", "not sampled", "kept")


def source_rows(manifest: dict[str, Any]) -> list[list[str]]:
    """One row per source of a prompt-set manifest, in ``SOURCE_COLUMNS`` order (the CLI's and the report's table)."""
    return [
        [
            s["source"],
            "all" if s["weight"] is None else f"{s['weight']:g}",
            *(str(s[k]) for k in ("read", "exact_dedup", "near_dedup", "decontaminate", "not_sampled", "selected")),
        ]
        for s in manifest["sources"]
    ]


def render_manifest(manifest: dict[str, Any], *, written_to: str | None = None, show_removed: int = 10):
    """A rich renderable of a prompt-set manifest."""
    parts: list[Any] = []
    sources = Table(title="sources", title_justify="left")
    for col in ("#", *SOURCE_COLUMNS):
        sources.add_column(col, justify="left" if col == "source" else "right")
    for s, row in zip(manifest["sources"], source_rows(manifest), strict=True):
        sources.add_row(str(s["index"]), *row)
    parts.append(sources)
    steps = Table(title="steps", title_justify="left")
    for col in ("step", "in", "removed", "out"):
        steps.add_column(col, justify="left" if col == "step" else "right")
    for s in manifest["steps"]:
        steps.add_row(s["step"], str(s.get("in", "")), str(s.get("removed", "")), str(s["out"]))
    parts.append(steps)
    dc = manifest.get("decontamination")
    if dc:
        checked = Table(title=f"decontamination ({dc['ngram']}-grams)", title_justify="left")
        for col in ("task or file", "documents", "keys", "too short", "removed"):
            checked.add_column(col, justify="left" if col == "task or file" else "right")
        for name, c in dc["checked"].items():
            checked.add_row(name, str(c["documents"]), str(c["keys"]), str(c["too_short"]), str(c["removed"]))
        parts.append(checked)
    removed = manifest.get("removed") or []
    if removed:
        lines = [f"removed ({len(removed)}; all in the manifest):"]
        for r in removed[:show_removed]:
            if r["step"] == "decontaminate":
                why = f"{r['task']} doc {r['doc_id']} ({r['field']}): '{r['ngram']}'"
            else:
                why = f"{r['step']} of {r['duplicate_of']}" + (f" (J={r['similarity']})" if "similarity" in r else "")
            lines.append(f"  {r['location'] or r['source']}  {why}")
        parts.append("\n".join(lines))
    total = f"{manifest['prompts']} prompts of {manifest['read']} read"
    parts.append(f"{total}; written to {written_to}" if written_to else f"{total} (check: nothing written)")
    return Group(*parts)
