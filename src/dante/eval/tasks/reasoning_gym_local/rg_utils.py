"""Data and scoring of the offline reasoning-gym tasks (stage 6, eval), through dante.procedural.

lm-eval imports this file by path (``!function rg_utils.load_split``). The task's YAML declares
the generator (``task``, ``settings``), the split and its size in ``dataset_kwargs``, so a task
name always means the same items. Each doc carries its gold answer for the scorer only.
"""

from __future__ import annotations

import json
from typing import Any


def load_split(task: str, split: str, size: int, seed: int = 0, settings: dict | None = None, **_metadata: Any):
    """lm-eval ``custom_dataset``: the first ``size`` questions of ``split`` as a one-split DatasetDict."""
    import datasets

    from dante.procedural import generate

    settings = dict(settings or {})
    items = generate(task, split, int(size), seed=int(seed), settings=settings)
    rows = [
        {
            "id": item.id,
            "index": item.index,
            "question": item.question,
            "answer": item.answer,
            "metadata": json.dumps(item.metadata, sort_keys=True),
            "task": task,
            "settings": json.dumps(settings, sort_keys=True),
        }
        for item in items
    ]
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(rows)})


def process_results(doc: dict[str, Any], results: list[str]) -> dict[str, float]:
    """``exact_match``: 1 when the generator's own check gives full credit to the completion's final
    answer (dante.answers.extract_answer), else 0; ``score``: that check's raw reward in [0, 1]."""
    from dante.procedural import score

    reward = score(doc["task"], results[0], doc["answer"], json.loads(doc["metadata"]), json.loads(doc["settings"]))
    return {"exact_match": float(reward >= 1.0), "score": reward}
