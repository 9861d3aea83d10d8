"""The student's Hugging Face model card (last stage): README.md with ``model-index`` YAML front
matter holding the scores measured in this run, like the seed card's, plus how it was made.

Only measured numbers of the student go into ``model-index``; each result's dataset name
spells out its settings (shots, metric, harness version, rows evaluated).
"""

from __future__ import annotations

from typing import Any

import yaml

from dante.config import LossConfig
from dante.report.consistency import describe, settings_of
from dante.report.data import RunData
from dante.report.tables import md_table, pct


def _is_hub_id(ref: str | None) -> bool:
    return (
        bool(ref) and not ref.startswith((".", "/", "~", "pypi:")) and ref.count("/") == 1 and not ref.endswith(".gguf")
    )


def result_name(row: dict[str, Any]) -> str:
    """'GSM8K (8-shot, exact_match strict-match, lm-eval 0.4.13, n=5 of 1319)'."""
    filt = "" if row.get("filter") in (None, "none") else f" {row['filter']}"
    n = f"n={row.get('n_samples')}" + (
        f" of {row['n_total']}" if row.get("n_total") and row["n_total"] != row.get("n_samples") else ""
    )
    shots = f"{row['shots']}-shot" if row.get("shots") is not None else "default shots"
    version = row.get("lm_eval_version")
    return f"{row['benchmark']} ({shots}, {row['metric']}{filt}, lm-eval {version}, task {row['task']}, {n})"


def model_index(name: str, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The ``model-index`` entry of the HF model card spec; values in percent as in the seed card."""
    results = [
        {
            "task": {"type": "text-generation", "name": "Text Generation"},
            "dataset": {"type": r["task"], "name": result_name(r)},
            "metrics": [
                {"type": r["metric"], "value": round(100 * r["value"], 2), "name": f"{r['metric']} ({r['filter']})"}
            ],
            "source": {
                "name": "dante eval (lm-evaluation-harness)",
                "url": "https://github.com/EleutherAI/lm-evaluation-harness",
            },
        }
        for r in rows
    ]
    return [{"name": name, "results": results}] if results else []


def front_matter(name: str, data: RunData, rows: list[dict[str, Any]], *, adapter: bool = False) -> dict[str, Any]:
    """The card's YAML header; ``adapter``: for the LoRA adapter folder (library peft, a lora tag)."""
    recipe = data.recipe
    base = (recipe.get("student") or {}).get("model") or (data.student_manifest or {}).get("student")
    meta: dict[str, Any] = {
        "library_name": "peft" if adapter else "transformers",
        "pipeline_tag": "text-generation",
        "tags": ["distillation", "knowledge-distillation", "dante", "cross-tokenizer"] + (["lora"] if adapter else []),
    }
    if _is_hub_id(base):
        meta["base_model"] = base
    index = model_index(name, rows)
    if index:
        meta["model-index"] = index
    return meta


def _objective(loss: dict[str, Any] | None) -> list[str]:
    """The loss settings in words; missing keys take the config defaults (the card's values)."""
    if loss is None:
        return ["- objective settings not recorded"]
    try:
        settings = LossConfig.model_validate(loss)
    except ValueError:
        return ["- objective settings not readable"]
    cwce, tea = settings.cwce, settings.tea
    lines = [
        f"- CWCE weights w(H) = {cwce.floor} + {cwce.span} / (1 + exp({cwce.slope}·(H − {cwce.center})))"
        if cwce.weighted
        else "- plain masked CE (CWCE off)"
    ]
    lines.append(f"- TEA anchor λ_TEA {tea.start} → {tea.end}" if tea.enabled else "- no TEA anchor")
    lines.append(
        f"- λ_CE {cwce.start} → {cwce.end} (steps {cwce.warmup_steps}–{cwce.ramp_end})"
        if cwce.schedule
        else "- λ_CE = 1 throughout"
    )
    lines.append(f"- CE averaged per `{cwce.normalise}`")
    return lines


def model_card(name: str, data: RunData, student_rows: list[dict[str, Any]], *, adapter: bool = False) -> str:
    """README.md text: YAML front matter, then results, training and compute in plain words;
    ``adapter``: the card of a LoRA adapter folder."""
    recipe = data.recipe
    config = (data.student_manifest or {}).get("config") or recipe
    train = config.get("train") or recipe.get("train") or {}
    teacher = (recipe.get("teacher") or {}).get("model") or "the teacher"
    base = (
        (recipe.get("student") or {}).get("model") or (data.student_manifest or {}).get("student") or "the base model"
    )
    head = (
        "---\n"
        + yaml.safe_dump(front_matter(name, data, student_rows, adapter=adapter), sort_keys=False, allow_unicode=True)
        + "---\n"
    )
    body = [
        f"# {name}",
        "",
        f"Distilled with dante (DANTE loss family, generative cross-tokenizer distillation) from "
        f"**{teacher}** into **{base}**: the student was trained only on the teacher's text completions and "
        "their entropy metadata.",
        "",
    ]
    body += ["## Results (measured in this run)", ""]
    if student_rows:
        table = [
            [
                r["benchmark"],
                describe(settings_of(r)),
                pct(r["value"], 2),
                f"{pct(r['ci95'][0])}–{pct(r['ci95'][1])}" if r.get("ci95") else "—",
            ]
            for r in student_rows
        ]
        body += [md_table(["benchmark", "settings", "score %", "95% CI"], table, "llrr"), ""]
        partial = [r for r in student_rows if r.get("n_total") and r.get("n_samples") and r["n_samples"] < r["n_total"]]
        if partial:
            body += [
                "**Partial evaluation**: "
                + ", ".join(f"{r['benchmark']} on {r['n_samples']} of {r['n_total']} rows" for r in partial)
                + ". These numbers are not comparable with full-set results.",
                "",
            ]
    else:
        body += ["Not evaluated yet (run `dante eval`).", ""]
    m = data.student_manifest or {}
    body += [
        "## Training",
        "",
        f"- steps: {m.get('steps', train.get('steps', '—'))}, tokens seen: {m.get('tokens_seen', '—')}",
        f"- learning rate {train.get('lr', '—')} ({train.get('lr_scheduler', '—')}), curriculum: "
        f"{train.get('curriculum', '—')}",
        *_objective((train.get("loss") or {}) if train else None),
        *_lora_lines(m, config.get("student") or recipe.get("student") or {}, adapter),
        "",
    ]
    hours = m.get("device_hours")
    body += [
        "## Compute",
        "",
        f"- student training: {f'{hours:.3g}' if hours is not None else 'not recorded'} device-hours "
        f"on {m.get('device_count', '?')}× {m.get('device_name') or m.get('device_type') or '?'}",
        "",
    ]
    body += [
        "## Limitations",
        "",
        "- No alignment step (no DPO/RLHF); the model inherits the teacher's behaviour on the distillation prompts.",
        "- Scores above are from this run only; see the run's report.md for published reference figures "
        "and their differences in settings.",
        "",
    ]
    return head + "\n" + "\n".join(body)


def _lora_lines(manifest: dict[str, Any], student: dict[str, Any], adapter: bool) -> list[str]:
    """How a LoRA student was trained and how to load this folder."""
    peft = student.get("peft")
    if not peft:
        return []
    trained = manifest.get("trainable_parameters")
    total = manifest.get("total_parameters")
    share = f": {trained:,} of {total:,} parameters trained" if trained and total else ""
    lines = [
        f"- LoRA through peft (r={peft.get('r')}, alpha={peft.get('alpha')}, dropout={peft.get('dropout')}, "
        f"target modules {peft.get('target_modules')}, modules to save {peft.get('modules_to_save') or 'none'})" + share
    ]
    if adapter:
        lines.append(
            "- this folder is the adapter: `peft.AutoPeftModelForCausalLM.from_pretrained(...)`, or "
            "`PeftModel.from_pretrained(base, ...)` on the base model"
        )
    else:
        lines.append("- this folder holds the base with the adapter merged in: a plain transformers model")
    return lines
