"""Per-question results kept in the repository: which test (or validation) questions each evaluated
model got right, so that every figure a summary prints can be recomputed without the eval folders
(which are gigabytes of logged samples and do not survive a machine).

One gzip'd JSON file per task and split, ``bench/results/per_question/<task>-<split>.json.gz``:

    {"task": "reasoning", "split": "test", "eval_task": "rg_chain_sum_3x2",
     "questions": [0, 1, ...],                      # lm-eval doc ids, ascending
     "models": {"teacher": "0110...",               # one character per question: 1 right, 0 wrong,
                "r4/student-think-keep-long": ...},  # '.' not evaluated
     "machines": {"r4/student-think-keep-long": "AMD EPYC, ..."}}

300 questions × 20 models is about 2 kB compressed. ``capability_transfer.py`` merges every model it
summarises into the file (a model already there is replaced: the latest evaluation of a folder
wins, as in the eval folder itself); ``replicates.py --add`` names the file as a replicate's
source and ``recompute.py`` checks the replicate's counts against it.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

FOLDER = Path(__file__).resolve().parent / "results" / "per_question"


def path_for(task: str, split: str, folder: Path = FOLDER) -> Path:
    return Path(folder) / f"{task}-{split}.json.gz"


def encode(got: dict[int, bool], questions: list[int]) -> str:
    return "".join("." if q not in got else "1" if got[q] else "0" for q in questions)


def decode(bits: str, questions: list[int]) -> dict[int, bool]:
    if len(bits) != len(questions):
        raise ValueError(f"{len(bits)} results for {len(questions)} questions")
    bad = set(bits) - set("01.")
    if bad:
        raise ValueError(f"results may only hold 0, 1 and '.', found {sorted(bad)}")
    return {q: b == "1" for q, b in zip(questions, bits, strict=True) if b != "."}


def load(path: Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        return {}
    with gzip.open(path, "rt", encoding="utf-8") as f:
        data = json.load(f)
    for name, bits in data.get("models", {}).items():
        try:
            decode(bits, data["questions"])
        except ValueError as exc:
            raise ValueError(f"{path}: models.{name}: {exc}") from None
    return data


def save(data: dict[str, Any], path: Path) -> None:
    """Written whole to a temporary file and renamed, with a fixed gzip timestamp (mtime 0) so an
    unchanged table gives identical bytes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = json.dumps(data, indent=0, sort_keys=True).encode()
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(gzip.compress(raw, mtime=0))
    tmp.replace(path)


def merge(
    path: Path, task: str, split: str, eval_task: str, results: dict[str, dict[int, bool]], machine: str = ""
) -> dict[str, Any]:
    """Add (or replace) models' correct-by-question maps in the task's file. The question set is
    the union of what every model was evaluated on."""
    data = load(path) or {"task": task, "split": split, "eval_task": eval_task, "questions": [], "models": {}}
    if (data["task"], data["split"], data["eval_task"]) != (task, split, eval_task):
        raise ValueError(f"{path} holds {data['task']}/{data['split']}/{data['eval_task']}, not {task}/{split}")
    old = {name: decode(bits, data["questions"]) for name, bits in data["models"].items()}
    old.update(results)
    questions = sorted({q for got in old.values() for q in got})
    data["questions"] = questions
    data["models"] = {name: encode(got, questions) for name, got in sorted(old.items())}
    machines = data.setdefault("machines", {})
    for name in results:
        machines[name] = machine
    save(data, path)
    return data


def correct(path: Path, model: str) -> dict[int, bool]:
    """A model's correct-by-question map from the task's file (KeyError naming what it has)."""
    data = load(path)
    if model not in data.get("models", {}):
        raise KeyError(f"{path}: no model {model!r} (has {', '.join(data.get('models', {})) or 'none'})")
    return decode(data["models"][model], data["questions"])
