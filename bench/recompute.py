"""Every figure of the README's headline and of BENCHMARKS.md's replicated tables, recomputed from
the committed data and checked against the text (issue 50 item 3).

    .venv/bin/python bench/recompute.py            # one line per figure: printed, recomputed, from what
    .venv/bin/python bench/recompute.py --json out.json

The data: ``bench/results/replicates.json`` (per replicate of each replicated comparison, the four
counts a paired test reads: n, the reference's and the setting's correct answers, and the questions
only one of them got right; ``models``: the single-model scores, teacher and student before) and
``bench/results/per_question/`` (which question each model got right, kept since issue 50; a
replicate that names such a file has its counts checked against it). Replicates 1-3 of most
comparisons ran before per-question data was kept: their counts are the ones BENCHMARKS printed,
and this script says so beside every figure that rests on them ("counts only").

A figure is a line of text as the document prints it, with its numbers recomputed: the line's
words must appear as written (Markdown emphasis, the minus sign and en dash normalised) and each
number must equal the recomputed one, or lie within the stated tolerance where the printed
interval came from per-question data that is gone (a bootstrap over counts differs from one over
the original questions by its Monte Carlo noise, about 0.1 point). Exit status 1 when any figure
differs or is not found: tests/bench/test_recompute.py runs this on the repository.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
import directions as registry  # noqa: E402
import per_question  # noqa: E402
import replicates  # noqa: E402

DOCS = {"README": common.REPO / "README.md", "BENCHMARKS": common.REPO / "BENCHMARKS.md"}
NUM = re.compile(r"[+-]?\d+(?:\.\d+)?(?:e[+-]?\d+)?")


@dataclass(frozen=True)
class Figure:
    doc: str  # README or BENCHMARKS
    what: str
    text: str  # as printed, numbers recomputed
    basis: str  # what the numbers were recomputed from
    tolerance: float = 0.0  # on each number, where the printed one came from data that is gone


def normalise(text: str) -> str:
    text = text.replace("**", "").replace("−", "-").replace("–", "-")
    return re.sub(r"\s+", " ", text)


def find(figure: Figure, docs: dict[str, str]) -> dict[str, Any]:
    """Where the figure's words appear in its document, and whether its numbers match there: 'ok',
    'differs' (with the printed numbers) or 'not found'."""
    want = normalise(figure.text)
    parts = NUM.split(want)
    numbers = NUM.findall(want)
    pattern = "(" + NUM.pattern + ")"
    regex = re.compile(pattern.join(re.escape(p) for p in parts))
    best = None
    for m in regex.finditer(docs[figure.doc]):
        printed = list(m.groups())
        wrong = [
            (p, w)
            for p, w in zip(printed, numbers, strict=True)
            if p != w and not (figure.tolerance and abs(float(p) - float(w)) <= figure.tolerance + 1e-9)
        ]
        if not wrong:
            return {"status": "ok", "printed": normalise(m.group(0))}
        if best is None or len(wrong) < len(best[1]):
            best = (m, wrong)
    if best is None:
        return {"status": "not found"}
    return {
        "status": "differs",
        "printed": normalise(best[0].group(0)),
        "numbers": [f"printed {p}, recomputed {w}" for p, w in best[1]],
    }


# -- the recomputation --------------------------------------------------------------------------


def pct(x: float) -> str:
    return f"{100 * x:.1f}"


def signed(x: float) -> str:
    return f"{100 * x:+.1f}"


class Data:
    """The committed data, and each comparison's per-replicate figures from it."""

    def __init__(self, data: dict[str, Any], directions: dict[str, Any], root: Path = common.REPO) -> None:
        self.data, self.directions, self.root = data, directions, root

    def comparison(self, key: str) -> dict[str, Any]:
        return self.data["comparisons"][key]

    def reps(self, key: str) -> list[dict[str, Any]]:
        """The comparison's replicates in replicate order."""
        return sorted(self.comparison(key)["replicates"], key=lambda r: r["replicate"])

    def accuracies(self, key: str, side: str) -> list[float]:
        return [r[side] / r["n"] for r in self.reps(key)]

    def mean(self, key: str, side: str) -> float:
        acc = self.accuracies(key, side)
        return sum(acc) / len(acc)

    def verdict(self, key: str) -> dict[str, Any]:
        return replicates.verdict(self.comparison(key), self.directions)

    def model(self, key: str) -> float:
        m = self.data["models"][key]
        return m["correct"] / m["n"]

    def wilson(self, key: str) -> str:
        from dante.eval.scores import wilson_ci

        m = self.data["models"][key]
        lo, hi = wilson_ci(m["correct"] / m["n"], m["n"])
        return f"{pct(lo)}-{pct(hi)}"

    def gr(self, after: float, task: str) -> float:
        from dante.eval.scores import gap_recovered

        return gap_recovered(after, self.model(f"{task}-base"), self.model(f"{task}-teacher"))

    def mcnemar(self, key: str) -> list[float]:
        from dante.eval.scores import mcnemar_exact

        out = []
        for r in self.reps(key):
            a, b = replicates.pairs_from_counts(r["n"], r["reference"], r["setting"], r["won"], r["lost"])
            out.append(mcnemar_exact(a, b)["p_value"])
        return out

    def basis(self, *keys: str) -> str:
        """'per-question' when every replicate of these comparisons is checked against a kept
        file, else 'counts only' naming where the counts came from."""
        sources = set()
        for key in keys:
            if key in self.data.get("models", {}):
                m = self.data["models"][key]
                sources.add("per-question" if m.get("per_question") else "counts only")
                continue
            for r in self.comparison(key)["replicates"]:
                sources.add("per-question" if r.get("per_question") else "counts only")
        return "per-question" if sources == {"per-question"} else "counts only (per-question data not kept)"

    def check_per_question(self) -> list[str]:
        """Every replicate or model that names a kept per-question file: its counts recomputed
        from the file. Returns the mismatches."""
        from dante.eval.scores import mcnemar_exact

        problems = []
        for key, comp in self.data["comparisons"].items():
            for r in comp["replicates"]:
                pq = r.get("per_question")
                if not pq:
                    continue
                path = self.root / pq["file"]
                a, b = per_question.correct(path, pq["reference"]), per_question.correct(path, pq["setting"])
                both = set(a) & set(b)
                t = mcnemar_exact(a, b)  # the paired questions and their discordant counts
                got = {
                    "n": t["rows"],
                    "reference": sum(a[q] for q in both),
                    "setting": sum(b[q] for q in both),
                    "won": t["b_only"],
                    "lost": t["a_only"],
                }
                wrong = {k: (r[k], v) for k, v in got.items() if r[k] != v}
                if wrong:
                    problems.append(f"{key} r{r['replicate']}: counts differ from {pq['file']}: {wrong}")
        for key, m in self.data.get("models", {}).items():
            pq = m.get("per_question")
            if pq:
                got = per_question.correct(self.root / pq["file"], pq["model"])
                if (sum(got.values()), len(got)) != (m["correct"], m["n"]):
                    problems.append(f"models.{key}: {m['correct']}/{m['n']} against {pq['file']}")
        return problems


def per_replicate(values: list[float], sep: str = " / ", suffix: str = "") -> str:
    return sep.join(f"{pct(v)}{suffix}" for v in values)


def diffs_with_counts(d: Data, key: str, first: str = "{won} won / {lost} lost") -> str:
    """'+2.0 (12 won / 6 lost), -2.3 (9/16), ...' as 6d and 6g print them."""
    out = []
    for i, r in enumerate(d.reps(key)):
        counts = first.format(**r) if i == 0 else f"{r['won']}/{r['lost']}"
        out.append(f"{signed((r['setting'] - r['reference']) / r['n'])} ({counts})")
    return ", ".join(out)


def mcnemar_cells(d: Data, key: str, fmt: str = "{won}/{lost} ({p:.2g})", first: int = 0) -> str:
    """Each replicate's won / lost and exact McNemar p, as the tables print them."""
    return ", ".join(fmt.format(p=p, **r) for r, p in list(zip(d.reps(key), d.mcnemar(key), strict=True))[first:])


def interval(v: dict[str, Any]) -> str:
    """'mean (low, high)' of the two-level bootstrap, in signed points."""
    return f"{signed(v['mean'])} ({signed(v['ci95'][0])}, {signed(v['ci95'][1])})"


def figures(d: Data) -> list[Figure]:
    demo, card, reasoning = "chain_sum-demo", "chain_sum-card", "reasoning"
    cwce, gold = "products-cwce", "chain_sum-gold"
    v_demo, v_card, v_reasoning = d.verdict(demo), d.verdict(card), d.verdict(reasoning)
    v_cwce, v_gold, v_pchunk = d.verdict(cwce), d.verdict(gold), d.verdict("products-chunk")
    after, sft = d.accuracies(demo, "setting"), d.accuracies(demo, "reference")
    mean_after, base, teacher = d.mean(demo, "setting"), d.model("chain_sum-base"), d.model("chain_sum-teacher")
    keep, drop = d.accuracies(reasoning, "setting"), d.accuracies(reasoning, "reference")
    on_demo = d.basis(demo, "chain_sum-teacher", "chain_sum-base")
    on_reasoning = d.basis(reasoning, "reasoning-teacher", "reasoning-base")
    out = [
        # README: the headline table and its three sentences
        Figure(
            "README",
            "headline: teacher",
            f"teacher (Qwen2.5-Coder-0.5B-Instruct) | {pct(teacher)}% ({d.wilson('chain_sum-teacher')}, 95% Wilson)",
            d.basis("chain_sum-teacher"),
        ),
        Figure(
            "README",
            "headline: student before",
            f"student before (SmolLM2-135M-Instruct) | {pct(base)}% ({d.wilson('chain_sum-base')})",
            d.basis("chain_sum-base"),
        ),
        Figure(
            "README",
            "headline: student after, 5 replicates",
            f"{pct(mean_after)}% mean, {pct(min(after))}-{pct(max(after))}% across replicates ({per_replicate(after)})",
            on_demo,
        ),
        Figure(
            "README",
            "headline sentence: gain and GR",
            f"from {pct(base)}% to {pct(mean_after)}% on average over {len(after)} replicates, "
            f"{100 * d.gr(mean_after, 'chain_sum'):.0f}% of the gap to its teacher",
            on_demo,
        ),
        Figure("README", "headline sentence: plain SFT", f"does as well ({pct(d.mean(demo, 'reference'))}%)", on_demo),
        Figure(
            "README",
            "headline sentence: the card's curriculum",
            f"entropy curriculum cost {abs(round(100 * v_card['mean']))} points",
            d.basis(card),
        ),
        Figure(
            "README",
            "headline sentence: reasoning",
            f"{pct(d.mean(reasoning, 'setting'))}% against {pct(d.mean(reasoning, 'reference'))}% from the answers "
            f"alone: the one gain established over {len(keep)} replicates ({signed(v_reasoning['mean'])} points, "
            f"p = {v_reasoning['p']:.2g})",
            on_reasoning,
        ),
        # BENCHMARKS 6d: the headline in detail and the 5-replicate table
        Figure(
            "BENCHMARKS",
            "6d: gain and GR",
            f"{signed(mean_after - base)} points on average, {100 * d.gr(mean_after, 'chain_sum'):.0f}% of the "
            f"teacher-student gap (GR of the mean); each replicate gains {pct(min(after) - base)}-"
            f"{pct(max(after) - base)} points over the student before. Plain SFT on the same caches: "
            f"{pct(d.mean(demo, 'reference'))}% ({pct(min(sft))}-{pct(max(sft))}); the recipe against it, "
            f"{signed(v_demo['mean'])} points ({signed(v_demo['ci95'][0])} to {signed(v_demo['ci95'][1])}, "
            f"two-sided sign-flip p = {v_demo['p']:.2g} over {len(after)} replicates)",
            on_demo,
        ),
        Figure(
            "BENCHMARKS",
            "6d: plain SFT, 5 replicates",
            f"| plain SFT | {per_replicate(sft)} | {pct(sum(sft) / len(sft))}% | {pct(min(sft))}-{pct(max(sft))} | "
            f"{100 * d.gr(sum(sft) / len(sft), 'chain_sum'):.0f}% |",
            on_demo,
        ),
        Figure(
            "BENCHMARKS",
            "6d: the demo's recipe, 5 replicates",
            f"| DANTE, shuffled (`make demo`'s recipe) | {per_replicate(after)} | {pct(mean_after)}% | "
            f"{pct(min(after))}-{pct(max(after))} | {100 * d.gr(mean_after, 'chain_sum'):.0f}% |",
            on_demo,
        ),
        Figure(
            "BENCHMARKS",
            "6d: the demo's recipe against SFT",
            f"{diffs_with_counts(d, demo)}; mean {signed(v_demo['mean'])} ({signed(v_demo['ci95'][0])}, "
            f"{signed(v_demo['ci95'][1])}), sign-flip p = {v_demo['p']:.2g} {v_demo['alternative']}",
            on_demo,
        ),
    ]
    card_acc, card_sft = d.accuracies(card, "setting"), d.accuracies(card, "reference")
    out.append(
        Figure(
            "BENCHMARKS",
            "6d: the card's loss, 3 replicates (interval from the questions, not kept: within 0.2)",
            f"| DANTE (the card) | {per_replicate(card_acc, suffix='%')} | {pct(sum(card_acc) / 3)}% | "
            f"{pct(min(card_acc))}%-{pct(max(card_acc))}% | {100 * d.gr(sum(card_acc) / 3, 'chain_sum'):.0f}% | "
            + mcnemar_cells(d, card)
            + f" | 0+ 3- | {interval(v_card)}; sign-flip p = {v_card['p']:.3g}",
            d.basis(card),
            tolerance=0.2,
        )
    )
    out.append(
        Figure(
            "BENCHMARKS",
            "6d: plain SFT, 3 replicates",
            f"| plain SFT | {per_replicate(card_sft, suffix='%')} | {pct(sum(card_sft) / 3)}% | "
            f"{pct(min(card_sft))}%-{pct(max(card_sft))}% | {100 * d.gr(sum(card_sft) / 3, 'chain_sum'):.0f}% |",
            d.basis(card),
        )
    )
    # 6g: CWCE on products
    p_sft, p_cwce = d.accuracies(cwce, "reference"), d.accuracies(cwce, "setting")
    on_products = d.basis(cwce, "products-teacher", "products-base")
    t_lo, t_hi = v_cwce["t_ci95"]
    out += [
        Figure(
            "BENCHMARKS",
            "6g: teacher and student before",
            f"Teacher Qwen2.5-Coder-1.5B-Instruct {pct(d.model('products-teacher'))}% "
            f"({d.wilson('products-teacher')}), student before {pct(d.model('products-base'))}% "
            f"({d.wilson('products-base')})",
            d.basis("products-teacher", "products-base"),
        ),
        Figure(
            "BENCHMARKS",
            "6g: plain SFT, 5 replicates",
            f"| plain SFT | {per_replicate(p_sft)} | {pct(sum(p_sft) / 5)}% | "
            f"{100 * d.gr(sum(p_sft) / 5, 'products'):.0f}% |",
            on_products,
        ),
        Figure(
            "BENCHMARKS",
            "6g: CWCE, 5 replicates",
            f"| SFT + CWCE weights | {per_replicate(p_cwce)} | {pct(sum(p_cwce) / 5)}% | "
            f"{100 * d.gr(sum(p_cwce) / 5, 'products'):.0f}% |",
            on_products,
        ),
        Figure(
            "BENCHMARKS",
            "6g: CWCE against SFT",
            f"{diffs_with_counts(d, cwce)}; mean {signed(v_cwce['mean'])} ({signed(v_cwce['ci95'][0])}, "
            f"{signed(v_cwce['ci95'][1])}; t-interval over the replicates {signed(t_lo)}, {signed(t_hi)}), "
            f"sign-flip p = {v_cwce['p']:.3g}, {v_cwce['alternative']}",
            d.basis(cwce),
        ),
    ]
    # 6i: reasoning
    grs = [d.gr(k, "reasoning") for k in keep]
    out += [
        Figure(
            "BENCHMARKS",
            "6i: teacher and student before (the teacher's from replicate 1's evaluation alone)",
            f"Teacher (told to reason) {pct(d.model('reasoning-teacher'))}% ({d.wilson('reasoning-teacher')}), "
            f"student before {pct(d.model('reasoning-base'))}% ({d.wilson('reasoning-base')})",
            d.basis("reasoning-teacher", "reasoning-base"),
        ),
        Figure(
            "BENCHMARKS",
            "6i: reasoning + answer, 5 replicates",
            f"| reasoning + answer (`keep`) | {per_replicate(keep)} | {pct(sum(keep) / 5)}% | "
            f"{100 * d.gr(sum(keep) / 5, 'reasoning'):.0f}% | "
            + mcnemar_cells(d, reasoning, "{won} / {lost} ({p:.0e})", first=3).replace("e-0", "e-")
            + " |",
            on_reasoning,
        ),
        Figure(
            "BENCHMARKS",
            "6i: answers alone, 5 replicates",
            f"| answers alone, same cache (`drop`) | {per_replicate(drop)} | {pct(sum(drop) / 5)}% | "
            f"{100 * d.gr(sum(drop) / 5, 'reasoning'):.0f}% |",
            on_reasoning,
        ),
        Figure(
            "BENCHMARKS",
            "6i: reasoning against the answers alone",
            ", ".join(signed(x) for x in v_reasoning["diffs"])
            + f"; mean {signed(v_reasoning['mean'])} ({signed(v_reasoning['ci95'][0])}, "
            f"{signed(v_reasoning['ci95'][1])}), one-sided sign-flip p = {v_reasoning['p']:.2g}",
            d.basis(reasoning),
        ),
        Figure(
            "BENCHMARKS",
            "6i: GR per replicate",
            f"{100 * d.gr(sum(keep) / 5, 'reasoning'):.0f}% of the mean ("
            + ", ".join(f"{100 * g:.0f}%" for g in grs)
            + " per replicate)",
            on_reasoning,
        ),
    ]
    # 15: TRL's GOLD at 5 replicates
    g_sft, g_gold = d.accuracies(gold, "reference"), d.accuracies(gold, "setting")
    out += [
        Figure(
            "BENCHMARKS",
            "15: plain SFT beside GOLD, 5 replicates",
            f"| plain SFT (lr 2e-4) | {per_replicate(g_sft, suffix='%')} | {pct(sum(g_sft) / 5)}% |",
            d.basis(gold),
        ),
        Figure(
            "BENCHMARKS",
            "15: GOLD against SFT, 5 replicates",
            f"| TRL GOLD (lr 2e-5) | {per_replicate(g_gold, suffix='%')} | {pct(sum(g_gold) / 5)}% | "
            + mcnemar_cells(d, gold)
            + f" | {interval(v_gold)}; p = {v_gold['p']:.2g} {v_gold['alternative']}",
            d.basis(gold),
        ),
    ]
    # 15: GOLD at its best validation learning rate, SFT retrained beside it, 5 replicates
    best = "chain_sum-gold-best"
    v_best, b_sft, b_gold = d.verdict(best), d.accuracies(best, "reference"), d.accuracies(best, "setting")
    out += [
        Figure(
            "BENCHMARKS",
            "15: plain SFT beside GOLD at lr 5e-5, 5 replicates",
            f"| plain SFT (lr 2e-4) | {per_replicate(b_sft, suffix='%')} | {pct(sum(b_sft) / 5)}% |",
            d.basis(best),
        ),
        Figure(
            "BENCHMARKS",
            "15: GOLD at lr 5e-5 against SFT, 5 replicates",
            f"| TRL GOLD (lr 5e-5) | {per_replicate(b_gold, suffix='%')} | {pct(sum(b_gold) / 5)}% | "
            + mcnemar_cells(d, best)
            + f" | {signed(v_best['mean'])} ({signed(v_best['ci95'][0])}, {signed(v_best['ci95'][1])}; "
            + f"t {signed(v_best['t_ci95'][0])}, {signed(v_best['t_ci95'][1])}); "
            + f"p = {v_best['p']:.2g} {v_best['alternative']}",
            d.basis(best),
        ),
        Figure(
            "README",
            "GOLD at its best learning rate",
            f"5e-5: {pct(sum(b_gold) / 5)}% against {pct(sum(b_sft) / 5)}% over 5 replicates "
            f"({signed(v_best['mean'])} points, {signed(v_best['ci95'][0])} to {signed(v_best['ci95'][1])}, "
            f"two-sided p = {v_best['p']:.2g})",
            d.basis(best),
        ),
    ]
    # 15: token-level KD and the chunk term on chain_sum, 3 replicates (intervals from questions not kept)
    for key, label in (
        ("chain_sum-kd", "SFT + token-level KD (λ_KD 0.3)"),
        ("chain_sum-chunk", "SFT + chunk term (λ_chunk 1)"),
    ):
        v, acc = d.verdict(key), d.accuracies(key, "setting")
        out.append(
            Figure(
                "BENCHMARKS",
                f"15: {key}, 3 replicates (interval from the questions, not kept: within 0.2)",
                f"| {label} | {per_replicate(acc, suffix='%')} | {pct(sum(acc) / 3)}% | "
                f"{100 * d.gr(sum(acc) / 3, 'chain_sum'):.0f}% | "
                + mcnemar_cells(d, key)
                + f" | {interval(v)}; p = {v['p']:.2g} {v['alternative']}",
                d.basis(key),
                tolerance=0.2,
            )
        )
    # the summary at the end of BENCHMARKS
    out += [
        Figure(
            "BENCHMARKS",
            "open: reasoning",
            f"established over {len(keep)} replicates ({signed(v_reasoning['mean'])}, p = {v_reasoning['p']:.2g}), "
            f"but GR {100 * d.gr(sum(keep) / 5, 'reasoning'):.0f}% of the mean",
            on_reasoning,
        ),
        Figure(
            "BENCHMARKS",
            "open: the chunk term on products",
            f"the chunk term on products: {signed(v_pchunk['mean'])} on {len(v_pchunk['diffs'])} test replicates "
            f"(two-sided p = {v_pchunk['p']:.2g})",
            d.basis("products-chunk"),
        ),
        Figure(
            "BENCHMARKS",
            "open: GOLD",
            f"no difference at lr 2e-5 ({signed(v_gold['mean'])}, {signed(v_gold['ci95'][0])} to "
            f"{signed(v_gold['ci95'][1])}, two-sided p = {v_gold['p']:.2g}) nor at its best validation learning "
            f"rate, 5e-5 ({signed(v_best['mean'])}, {signed(v_best['ci95'][0])} to {signed(v_best['ci95'][1])}, "
            f"two-sided p = {v_best['p']:.2g})",
            d.basis(gold, best),
        ),
        Figure(
            "BENCHMARKS",
            "open: CWCE on products and the demo's recipe",
            f"CWCE on products ({signed(v_cwce['mean'])}, not established, two-sided p = {v_cwce['p']:.3g}) and the "
            f"demo's recipe against SFT ({signed(v_demo['mean'])}, no difference)",
            d.basis(cwce, demo),
        ),
    ]
    return out


def run(data_path: Path = replicates.DATA, directions_path: Path | None = None, docs: dict | None = None):
    """(figures with their status, per-question problems)."""
    data = json.loads(Path(data_path).read_text())
    d = Data(data, registry.load(directions_path) if directions_path else registry.load())
    texts = {name: normalise(Path(p).read_text(encoding="utf-8")) for name, p in (docs or DOCS).items()}
    rows = [{**vars(f), **find(f, texts)} for f in figures(d)]
    return rows, d.check_per_question()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=replicates.DATA)
    ap.add_argument("--directions", type=Path, default=None)
    ap.add_argument("--json", type=Path, help="write every figure and its status here")
    args = ap.parse_args(argv)
    rows, problems = run(args.data, args.directions)
    bad = [r for r in rows if r["status"] != "ok"]
    for r in rows:
        mark = {"ok": "ok", "differs": "DIFFERS", "not found": "NOT FOUND"}[r["status"]]
        print(f"[{mark}] {r['doc']}: {r['what']}  ({r['basis']})")
        if r["status"] != "ok":
            print(f"    recomputed: {normalise(r['text'])}")
            if r.get("printed"):
                print(f"    printed:    {r['printed']}")
            for line in r.get("numbers", []):
                print(f"    {line}")
    for p in problems:
        print(f"[PER-QUESTION] {p}")
    counts_only = sum(r["basis"] != "per-question" for r in rows)
    print(
        f"\n{len(rows) - len(bad)} of {len(rows)} figures recompute as printed; {counts_only} rest on counts "
        f"alone (their per-question data was not kept); {len(problems)} per-question mismatches"
    )
    if args.json:
        args.json.write_text(json.dumps({"figures": rows, "per_question_problems": problems}, indent=2))
    return 1 if bad or problems else 0


if __name__ == "__main__":
    sys.path.insert(0, str(common.REPO / "src"))
    sys.exit(main())
