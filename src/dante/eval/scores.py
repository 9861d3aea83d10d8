"""Flat scores from raw lm-eval results (stage 6 -> report): one row per task, metric and filter,
each carrying the settings needed to compare it (task, shots, metric, filter, lm-eval version, n).

Layout of one model's folder under ``<eval_dir>/<model_label>/``::

    results_<task>.json   lm-eval's result dict, unchanged (per-sample outputs left out)
    samples_<task>.jsonl  lm-eval's per-sample records (eval.log_samples)
    dante_<task>.json     what dante knows about the run (model, settings, wall time, device)
    scores.json           derived from the files above by ``write_scores``
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from dante.errors import DataError
from dante.io import atomic_write_json
from dante.layout import SCORES

FORMAT = "dante-scores/1"
# Metrics that are a mean of 0/1 outcomes: a Wilson interval is right even for a handful of rows.
BINARY_METRICS = {"acc", "acc_norm", "exact_match", "pass@1", "pass_at_1", "pass@k"}
SKIP_KEYS = {"alias", "name", "sample_len", "samples"}


def wilson_ci(p: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a proportion p observed over n trials.

    Written here rather than taken from scipy (``binomtest(k, n).proportion_ci(method="wilson")``,
    which it equals to 1e-9 at the same z: tests/eval/test_scores.py) because lm-eval reports a
    task's score as a mean, not a count, and scipy wants the integer k."""
    if n <= 0:
        return 0.0, 1.0
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def mcnemar_exact(a: dict[Any, bool], b: dict[Any, bool]) -> dict[str, float]:
    """Exact two-sided McNemar test of b against a on the items both answered.

    With b_only = items b got right and a wrong, a_only the reverse, n = b_only + a_only:
    p = min(1, 2 · Σ_{k ≤ min(a_only, b_only)} C(n, k) / 2^n) (a binomial sign test on the
    discordant items); no discordant item gives p = 1.
    """
    from scipy.stats import binomtest

    rows = sorted(set(a) & set(b))
    b_only = sum(b[r] and not a[r] for r in rows)
    a_only = sum(a[r] and not b[r] for r in rows)
    n = a_only + b_only
    p_value = float(binomtest(b_only, n, 0.5).pvalue) if n else 1.0  # scipy's exact two-sided binomial test
    return {"rows": len(rows), "b_only": b_only, "a_only": a_only, "p_value": min(1.0, p_value)}


def gap_recovered(after: float, before: float, teacher: float) -> float | None:
    """GR = (after − before) / (teacher − before): the share of the teacher-student gap the
    student closed (None when the teacher is not ahead)."""
    if teacher <= before:
        return None
    return (after - before) / (teacher - before)


def replicate_bootstrap(
    pairs: list[tuple[dict[Any, bool], dict[Any, bool]]], draws: int = 4000, seed: int = 0
) -> dict[str, Any]:
    """The mean over replicates of accuracy(b) − accuracy(a), with a 95% percentile interval from
    a two-level bootstrap: each draw resamples the replicates with replacement, then, inside each
    drawn replicate, its questions with replacement (a and b paired on the same question). The
    interval covers both what varies between training runs and the choice of questions; with one
    replicate it is the paired bootstrap over questions alone.

    ``pairs``: per replicate, (a, b) correct-by-question maps over the same questions."""
    if not pairs:
        raise ValueError("no replicate to compare")
    diffs = []
    for a, b in pairs:
        rows = sorted(set(a) & set(b))
        diffs.append(np.array([float(b[r]) - float(a[r]) for r in rows]))
    observed = float(np.mean([d.mean() for d in diffs]))
    rng = np.random.default_rng(seed)
    k = len(diffs)
    picks = rng.integers(0, k, size=(draws, k))
    means = np.zeros((draws, k))
    for j, d in enumerate(diffs):
        slots = picks == j
        if not slots.any():
            continue
        sampled = d[rng.integers(0, len(d), size=(int(slots.sum()), len(d)))].mean(axis=1)
        means[slots] = sampled
    stat = means.mean(axis=1)
    lo, hi = np.quantile(stat, [0.025, 0.975])
    return {"mean": observed, "ci95": (float(lo), float(hi)), "draws": draws, "replicates": k}


# The replication standard (docs/eval.md, "Replicated claims"): a difference between two settings
# *holds* when it was measured on at least MIN_REPLICATES replicates (independent re-runs: prompt
# draw, teacher dtype, seed), the exact sign-flip test over their paired differences rejects "no
# difference" at ALPHA (one-sided in a direction registered before the test read, else
# two-sided), and both 95% intervals exclude 0: the two-level bootstrap's and the t-interval over
# the replicates' differences (the wider at 3-5 replicates).
MIN_REPLICATES = 5
ALPHA = 0.05


def sign_flip_p(diffs: list[float], alternative: str = "two-sided", draws: int = 100_000, seed: int = 0) -> float:
    """Exact sign-flip permutation test of "the paired differences are symmetric about 0" (each
    replicate's b − a as likely to have come out −(b − a)): the share of the 2^n sign assignments
    whose mean is at least as extreme as the observed one (``alternative``: two-sided, greater,
    less). All 2^n are enumerated for n ≤ 16, else ``draws`` random ones (with the observed counted).

    The smallest p it can give is 1/2^n one-sided and 2/2^n two-sided (0.125 and 0.25 with 3
    replicates, 0.031 and 0.0625 with 5): with few replicates no difference can reach 0.05, which
    is the point. Replicates are the unit; each replicate's difference already averages its
    questions."""
    if alternative not in ("two-sided", "greater", "less"):
        raise ValueError(f"alternative must be two-sided, greater or less, not {alternative!r}")
    d = np.asarray(diffs, dtype=float)
    n = len(d)
    if n == 0:
        raise ValueError("no replicate to test")
    if n <= 16:
        signs = ((np.arange(2**n)[:, None] >> np.arange(n)) & 1) * 2 - 1
    else:
        rng = np.random.default_rng(seed)
        signs = np.vstack([np.ones(n), rng.choice([-1, 1], size=(draws, n))])
    means = (signs * d).mean(axis=1)
    obs = d.mean()
    eps = 1e-12 * max(1.0, float(np.abs(d).max()))
    if alternative == "greater":
        hits = means >= obs - eps
    elif alternative == "less":
        hits = means <= obs + eps
    else:
        hits = np.abs(means) >= abs(obs) - eps
    return float(hits.mean())


def t_interval(diffs: list[float], level: float = 0.95) -> tuple[float, float]:
    """mean ± t_{(1+level)/2, k−1} · s / √k over the k replicates' differences: the interval that
    treats only the replicates as the sample (their spread, at k − 1 degrees of freedom). At 3-5
    replicates it is wider than the two-level bootstrap's, which resamples k replicates as if they
    were the population's spread; (−inf, inf) for fewer than 2 replicates."""
    from scipy.stats import t as student_t

    d = np.asarray(diffs, dtype=float)
    k = len(d)
    if k < 2:
        return (-math.inf, math.inf)
    half = float(student_t.ppf((1 + level) / 2, k - 1)) * float(d.std(ddof=1)) / math.sqrt(k)
    return (float(d.mean()) - half, float(d.mean()) + half)


def replication_verdict(
    diffs: list[float], ci95: tuple[float, float], direction: int = 0, alpha: float = ALPHA
) -> dict[str, Any]:
    """Whether a difference holds under the replication standard, with the p-value and the reason.
    ``direction``: +1 / −1, a sign registered before the test read (a one-sided test that way), 0
    for none (two-sided). ``ci95``: the two-level bootstrap's interval; the t-interval over the
    replicates' differences (``t_interval``) is computed here, and both must exclude 0."""
    alternative = {1: "greater", -1: "less"}.get(direction, "two-sided")
    p = sign_flip_p(diffs, alternative)
    t_ci = t_interval(diffs)
    reasons = []
    if len(diffs) < MIN_REPLICATES:
        reasons.append(f"{len(diffs)} replicates (< {MIN_REPLICATES})")
    if p > alpha:
        reasons.append(f"sign-flip p = {p:.3g} > {alpha:g}")
    if not (ci95[0] > 0 or ci95[1] < 0):
        reasons.append("the bootstrap interval includes 0")
    if not (t_ci[0] > 0 or t_ci[1] < 0):
        reasons.append("the t-interval includes 0")
    return {
        "holds": not reasons,
        "p": p,
        "alternative": alternative,
        "replicates": len(diffs),
        "t_ci95": t_ci,
        "why_not": reasons,
    }


def correct_by_doc(model_dir: Path, task: str, metric: str, filt: str) -> dict[int, bool] | None:
    """Per evaluated doc (lm-eval's doc_id): was the headline metric 1, from ``samples_<task>.jsonl``
    (None when the samples were not logged)."""
    path = Path(model_dir) / f"samples_{task}.jsonl"
    if not path.is_file():
        return None
    out: dict[int, bool] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            sample = json.loads(line)
        except json.JSONDecodeError:
            continue
        if sample.get("filter", "none") == filt and metric in sample:
            out[int(sample["doc_id"])] = float(sample[metric]) >= 1.0
    return out


def _number(x: Any) -> float | None:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) else None


def _n_samples(raw: dict, task: str) -> tuple[int | None, int | None]:
    """(evaluated, total) rows of a task, summed over its subtasks for a group (mmlu)."""
    counts = raw.get("n-samples", {})
    leaves = [task] if task in counts else raw.get("group_subtasks", {}).get(task, [])
    stack, effective, original = list(leaves), 0, 0
    seen = False
    while stack:
        name = stack.pop()
        if name in counts:
            effective += int(counts[name].get("effective", 0))
            original += int(counts[name].get("original", 0))
            seen = True
        else:
            stack += raw.get("group_subtasks", {}).get(name, [])
    return (effective, original) if seen else (None, None)


def _metric_pairs(result: dict) -> list[tuple[str, str, float, float | None]]:
    """[(metric, filter, value, stderr)] of one task's result block, in lm-eval's order."""
    pairs = []
    for key, value in result.items():
        if key in SKIP_KEYS or "," not in key or "_stderr," in key:
            continue
        metric, filt = key.split(",", 1)
        v = _number(value)
        if v is None:
            continue
        pairs.append((metric, filt, v, _number(result.get(f"{metric}_stderr,{filt}"))))
    return pairs


def _interval(metric: str, value: float, stderr: float | None, n: int | None) -> tuple[list[float] | None, str | None]:
    if metric in BINARY_METRICS and 0.0 <= value <= 1.0 and n:
        return list(wilson_ci(value, n)), "wilson"
    if stderr is not None:
        return [value - 1.96 * stderr, value + 1.96 * stderr], "normal (1.96 stderr)"
    return None, None


def score_rows(raw: dict, info: dict) -> list[dict[str, Any]]:
    """Flat score rows of one lm-eval run (``raw``) of one task described by ``info`` (dante_<task>.json)."""
    spec = info.get("spec", {})
    task = spec.get("task") or info.get("task")
    result = raw.get("results", {}).get(task)
    if result is None:
        raise DataError(f"lm-eval results hold no task {task!r}", field="results")
    n_eval, n_total = _n_samples(raw, task)
    pairs = _metric_pairs(result)
    headline = (spec.get("metric"), spec.get("filter", "none"))
    if headline[0] is None and pairs:
        headline = pairs[0][:2]
    rows = []
    for metric, filt, value, stderr in pairs:
        ci, ci_method = _interval(metric, value, stderr, n_eval)
        rows.append(
            {
                "model": info.get("model"),
                "model_ref": info.get("model_ref"),
                "model_path": info.get("model_path"),
                "benchmark": spec.get("benchmark", task),
                "task": task,
                "task_version": raw.get("versions", {}).get(task),
                "shots": raw.get("n-shot", {}).get(task, spec.get("shots")),
                "metric": metric,
                "filter": filt,
                "primary": (metric, filt) == tuple(headline),
                "value": value,
                "stderr": stderr,
                "ci95": ci,
                "ci_method": ci_method,
                "n_samples": n_eval,
                "n_total": n_total,
                "limit": info.get("limit"),
                "harness": "lm-eval",
                "lm_eval_version": raw.get("lm_eval_version") or info.get("lm_eval_version"),
                "max_gen_toks": info.get("max_gen_toks"),
                "system_instruction": info.get("system_instruction"),
                "apply_chat_template": info.get("apply_chat_template", False),
                "dtype": info.get("dtype"),
                "device": info.get("device"),
                "batch_size": info.get("batch_size"),
                "rows": spec.get("rows"),
                "date": info.get("date"),
                "wall_time_s": info.get("wall_time_s"),
                "note": spec.get("note", ""),
                "contamination": info.get("contamination"),
            }
        )
    return rows


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read JSON ({exc})", file=path) from None


def write_scores(model_dir: str | Path) -> Path:
    """Derive ``scores.json`` of a model folder from every results_<task>.json / dante_<task>.json in it."""
    model_dir = Path(model_dir)
    rows: list[dict[str, Any]] = []
    problems: list[dict[str, str]] = []
    for info_path in sorted(model_dir.glob("dante_*.json")):
        info = read_json(info_path)
        task = info.get("spec", {}).get("task", info_path.stem.removeprefix("dante_"))
        if info.get("status") != "ok":
            problems.append({"task": task, "status": info.get("status", "unknown"), "reason": info.get("reason", "")})
            continue
        raw_path = model_dir / f"results_{task}.json"
        if not raw_path.is_file():
            problems.append({"task": task, "status": "missing", "reason": f"{raw_path.name} not found"})
            continue
        rows += score_rows(read_json(raw_path), info)
    label = model_dir.name
    return atomic_write_json(
        model_dir / SCORES, {"format": FORMAT, "model": label, "scores": rows, "not_scored": problems}
    )


def read_scores(path: str | Path) -> dict[str, Any]:
    """A scores.json file; rows missing the settings needed for comparison are an error naming the file."""
    path = Path(path)
    data = read_json(path)
    for i, row in enumerate(data.get("scores", [])):
        missing = [k for k in ("task", "shots", "metric", "lm_eval_version", "value") if row.get(k) is None]
        if missing:
            raise DataError(
                f"score row {i} lacks {', '.join(missing)}",
                file=path,
                field="scores",
                hint="re-run `dante eval` to rebuild it",
            )
    return data
