"""Replicated comparisons across sessions: the replication standard over every replicate a
comparison has, including those whose per-question data was not kept (BENCHMARKS.md 6d, 6g, 6i).

    .venv/bin/python bench/replicates.py                       # the verdicts of bench/results/replicates.json
    .venv/bin/python bench/replicates.py --add runs/capability-reasoning/capability-test.json \\
        --comparison reasoning:think-keep-long:think-drop-long --machine "AMD EPYC (AVX512-BF16)"

A paired comparison of two students on the same n test questions is, for every statistic the
standard uses, fully described by four counts per replicate: the reference's correct answers, the
setting's, the questions only the setting got right (won) and those only the reference got right
(lost). The two-level bootstrap resamples questions inside a replicate, and a question's paired
difference is +1, −1 or 0, so the multiset of differences (what the counts give) is all it reads:
rebuilding correct-by-question maps from the counts gives the bootstrap the same distribution as
the original per-question data (the interval differs only by its Monte Carlo noise, about 0.1
point at 4,000 draws, since the draws land on differently ordered questions). So replicates run
in different sessions (whose eval folders are gone) are combined exactly, from the counts
BENCHMARKS printed and the summaries `capability_transfer.py` writes
(`<out>/capability-<split>.json`).

Each comparison names its entry in bench/results/directions.json (``comparison``), which holds its
test direction: one-sided only where the direction was written before the first test read,
otherwise two-sided (bench/directions.py), as docs/eval.md requires; the verdict is
`dante.eval.scores.replication_verdict`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
import per_question  # noqa: E402

DATA = common.REPO / "bench" / "results" / "replicates.json"


def pairs_from_counts(n: int, reference: int, setting: int, won: int, lost: int) -> tuple[dict, dict]:
    """Correct-by-question maps (reference, setting) over n questions with these counts: ``won``
    questions right for the setting only, ``lost`` for the reference only. Raises ValueError when
    the counts cannot come from one paired evaluation."""
    both = setting - won
    if min(n, reference, setting, won, lost, both) < 0 or reference != both + lost or both + won + lost > n:
        raise ValueError(
            f"inconsistent counts: n={n}, reference={reference}, setting={setting}, won={won}, lost={lost} "
            "(need setting - won == reference - lost >= 0 and both + won + lost <= n)"
        )
    a, b = {}, {}
    for q in range(n):
        kind = "both" if q < both else "won" if q < both + won else "lost" if q < both + won + lost else "none"
        a[q] = kind in ("both", "lost")
        b[q] = kind in ("both", "won")
    return a, b


def verdict(comparison: dict[str, Any], directions: dict[str, Any] | None = None) -> dict[str, Any]:
    """The replication standard over a comparison's replicates: per-replicate differences, the
    two-level bootstrap's mean and interval, the sign-flip p and whether the difference holds; the
    direction is the registered one (``directions``, bench/results/directions.json) when it was
    written before the test read, else two-sided."""
    import directions as registry
    from dante.eval.scores import replicate_bootstrap, replication_verdict

    directions = registry.load() if directions is None else directions
    sign, why = registry.test_direction(directions, comparison["comparison"], record=False)

    reps = sorted(comparison["replicates"], key=lambda r: r["replicate"])
    pairs = [pairs_from_counts(r["n"], r["reference"], r["setting"], r["won"], r["lost"]) for r in reps]
    diffs = [(r["setting"] - r["reference"]) / r["n"] for r in reps]
    boot = replicate_bootstrap(pairs)
    out = replication_verdict(diffs, boot["ci95"], sign)
    return {**out, "diffs": diffs, "mean": boot["mean"], "ci95": boot["ci95"], "reps": reps, "direction_why": why}


def from_summary(path: Path, setting: str, reference: str, machine: str) -> list[dict[str, Any]]:
    """The replicates of ``setting`` against ``reference`` in a capability_transfer summary."""
    summary = json.loads(path.read_text())
    settings = summary["settings"]
    for name in (setting, reference):
        if name not in settings:
            raise SystemExit(f"{path}: no setting {name!r} (has {', '.join(settings)})")
    tests = settings[setting].get("vs_sft") or {}
    if not tests:
        raise SystemExit(f"{path}: {setting} was not compared with a reference (run with --reference {reference})")
    if summary["args"].get("reference") != reference:
        raise SystemExit(f"{path}: compared with {summary['args'].get('reference')!r}, not {reference!r}")
    kept = kept_file(summary)
    kept_models = per_question.load(common.REPO / kept).get("models", {}) if kept else {}
    out = []
    for r, t in tests.items():
        n = t["rows"]
        rep = {
            "replicate": int(r),
            "n": n,
            "reference": round(settings[reference]["per_replicate"][r] * n),
            "setting": round(settings[setting]["per_replicate"][r] * n),
            "won": t["b_only"],
            "lost": t["a_only"],
            "machine": machine or summary.get("machine", ""),
            "source": str(path),
        }
        models = {"setting": f"r{r}/student-{setting}", "reference": f"r{r}/student-{reference}"}
        if kept and all(m in kept_models for m in models.values()):
            rep["per_question"] = {"file": kept, **models}  # bench/recompute.py checks the counts against it
        out.append(rep)
    return out


def kept_file(summary: dict[str, Any]) -> str | None:
    """The per-question file a capability_transfer summary merged its models into, relative to the
    repository (None for a summary written before they were kept, or one kept outside it)."""
    args = summary.get("args", {})
    if not args.get("per_question"):
        return None
    path = per_question.path_for(args["task"], args["split"], Path(args["per_question"])).resolve()
    try:
        return str(path.relative_to(common.REPO))
    except ValueError:
        return None


def table(data: dict[str, Any], directions: dict[str, Any] | None = None) -> str:
    lines = [
        "| task | setting vs reference | replicates | per replicate (won / lost) | mean diff. (95% CI: "
        "2-level bootstrap; t over replicates) | sign-flip p | verdict |",
        "|---|---|---:|---|---|---|---|",
    ]
    for comp in data["comparisons"].values():
        v = verdict(comp, directions)
        per = ", ".join(
            f"r{r['replicate']} {100 * d:+.1f} ({r['won']}/{r['lost']})" for r, d in zip(v["reps"], v["diffs"])
        )
        t_lo, t_hi = v["t_ci95"]
        ci = (
            f"{100 * v['mean']:+.1f} ({100 * v['ci95'][0]:+.1f}, {100 * v['ci95'][1]:+.1f}; "
            f"t {100 * t_lo:+.1f}, {100 * t_hi:+.1f})"
        )
        word = "**holds**" if v["holds"] else "not established: " + "; ".join(v["why_not"])
        lines.append(
            f"| {comp['task']} | {comp['setting']} vs {comp['reference']} | {len(v['reps'])} | {per} | {ci} | "
            f"{v['p']:.3g} ({v['alternative']}) | {word} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument(
        "--add", type=Path, help="a capability_transfer summary (capability-<split>.json) to take replicates from"
    )
    ap.add_argument("--comparison", help="KEY:SETTING:REFERENCE, KEY one of the data file's comparisons")
    ap.add_argument("--machine", default="", help="the CPU the added replicates ran on")
    ap.add_argument("--directions", type=Path, default=None, help="default: bench/results/directions.json")
    args = ap.parse_args(argv)
    data = json.loads(args.data.read_text())
    if args.add:
        if not args.comparison or args.comparison.count(":") != 2:
            raise SystemExit("--add needs --comparison KEY:SETTING:REFERENCE")
        key, setting, reference = args.comparison.split(":")
        comp = data["comparisons"].get(key)
        if comp is None:
            raise SystemExit(f"{args.data}: no comparison {key!r} (has {', '.join(data['comparisons'])})")
        if (comp["setting"], comp["reference"]) != (setting, reference):
            raise SystemExit(
                f"{key} compares {comp['setting']} with {comp['reference']}, not {setting} with {reference}"
            )
        new = from_summary(args.add, setting, reference, args.machine)
        for rep in new:
            pairs_from_counts(rep["n"], rep["reference"], rep["setting"], rep["won"], rep["lost"])
        kept = [r for r in comp["replicates"] if r["replicate"] not in {n["replicate"] for n in new}]
        comp["replicates"] = sorted(kept + new, key=lambda r: r["replicate"])
        args.data.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
        print(f"{key}: replicates {[r['replicate'] for r in new]} added from {args.add}")
    import directions as registry

    print(table(data, registry.load(args.directions) if args.directions else None))


if __name__ == "__main__":
    main()
