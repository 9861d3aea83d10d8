"""The report's "Prompt set" section: where the distillation prompts came from, what curation
removed, and for each evaluated task whether the prompts were checked against it."""

from __future__ import annotations

from dante.prompts.summary import SOURCE_COLUMNS, source_rows
from dante.report.data import RunData
from dante.report.tables import md_table

NOT_CHECKED = "**not checked**"


def prompts_section(data: RunData) -> str:
    m = data.prompts_manifest
    out = ["## Prompt set", ""]
    if m:
        out += [
            f"{m['prompts']} prompts kept of {m['read']} read (`dante prompts build`; every removed prompt and why "
            f"is in `{data.prompts_dir}/prompts_manifest.json`).",
            "",
            md_table(list(SOURCE_COLUMNS), source_rows(m), "lrrrrrrr"),
            "",
        ]
    else:
        source = (data.recipe.get("prompts") or {}).get("source") or "unknown"
        out += [f"One source (`{source}`), not curated: no de-duplication and no decontamination.", ""]
    tasks = list(dict.fromkeys(r["task"] for r in data.primary_scores))
    if tasks:
        dc = (m or {}).get("decontamination") or {}
        checked = dc.get("checked") or {}
        rows = []
        for task in tasks:
            if task in data.decontaminated:
                c = checked.get(task, {})
                rows.append([task, f"yes ({c.get('documents', '?')} documents)", c.get("removed", "?")])
            else:
                rows.append([task, NOT_CHECKED, "—"])
        ngram = f" by {dc['ngram']}-word overlap with its questions and reference answers" if dc else ""
        out += [
            f"Contamination check of each evaluated task{ngram}; a distilled model's score on a task marked "
            "not checked is flagged in the score tables.",
            "",
            md_table(["evaluated task", "prompts checked against it", "prompts removed"], rows, "llr"),
            "",
        ]
        others = [k for k, v in checked.items() if v.get("kind") == "task" and k not in tasks]
        if others:
            out += [
                "Also checked against tasks this run did not score: "
                + ", ".join(f"`{t}` ({checked[t].get('removed', 0)} removed)" for t in others)
                + ".",
                "",
            ]
        files = [k for k, v in checked.items() if v.get("kind") == "file"]
        if files:
            out += ["Also checked against the files " + ", ".join(f"`{f}`" for f in files) + ".", ""]
    return "\n".join(out)
