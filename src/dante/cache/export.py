"""`dante cache export DIR --to FOLDER`: a teacher cache as a Hugging Face dataset folder, Parquet
shards under ``data/`` plus a dataset card (``README.md`` with the YAML header the Hub reads), so
`datasets.load_dataset(FOLDER)` and other tools read it; `dante train` reads the folder back as a
cache (``dante.cache.records`` reads Parquet rows as records).

The columns are ``dante.cache.table``'s.
"""

# pyarrow, datasets and yaml are imported where a cache is exported: the cache stage imports this
# module's names without them.

from __future__ import annotations

import io
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dante.cache.records import CacheRecord, read_cache
from dante.cache.table import schema, to_row
from dante.errors import DanteError
from dante.io import atomic_write_bytes, atomic_write_text
from dante.layout import CACHE_MANIFEST, PROMPTS_MANIFEST, RESOLVED_RECIPE, expand_folders


@dataclass
class ExportSummary:
    folder: Path
    records: int
    shards: int
    payload: int

    def __str__(self) -> str:
        extra = f", {self.payload} with token logprobs" if self.payload else ""
        return f"exported {self.records} records{extra} to {self.folder} ({self.shards} Parquet shard(s) + README.md)"


def export_cache(
    cache_dir: str | Path | list[str] | list[Path], folder: str | Path, *, shard_records: int = 50_000
) -> ExportSummary:
    """Write ``folder/data/train-NNNNN-of-MMMMM.parquet`` and ``folder/README.md`` from a cache
    (or the union of several folders; the card describes the first one's teacher and settings)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folders, folder = expand_folders(cache_dir), Path(folder)
    if any(folder.resolve() == f.resolve() for f in folders):
        raise DanteError("export into the cache folder itself", file=folder, hint="give another --to folder")
    records = read_cache(folders)
    cache_dir = folders[0]
    if not records:
        raise DanteError("the cache holds no records", file=cache_dir)
    shards = max(1, -(-len(records) // shard_records))
    sch = schema()
    size = 0
    for s in range(shards):
        part = records[s * shard_records : (s + 1) * shard_records]
        table = pa.Table.from_pylist([to_row(r) for r in part], schema=sch)
        buffer = io.BytesIO()
        pq.write_table(table, buffer)
        atomic_write_bytes(folder / "data" / f"train-{s:05d}-of-{shards:05d}.parquet", buffer.getvalue())
        size += len(buffer.getvalue())
    atomic_write_text(folder / "README.md", dataset_card(cache_dir, records, sch, size))
    return ExportSummary(folder, len(records), shards, sum(r.token_logprobs is not None for r in records))


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _recipe(cache_dir: Path) -> dict[str, Any]:
    import yaml

    try:
        return yaml.safe_load((cache_dir / RESOLVED_RECIPE).read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError):
        return {}


def dataset_card(cache_dir: Path, records: list[CacheRecord], sch, num_bytes: int) -> str:
    """The dataset card: the Hub's YAML header (configs, features, splits, licence) and what a
    reader needs to trust the data: teacher, sampling, counts, prompt sources and licences, and
    the decontamination summary when the prompts were curated."""
    import datasets
    import yaml

    manifest = _read_json(cache_dir / CACHE_MANIFEST)
    recipe = _recipe(cache_dir)
    prompts_cfg = recipe.get("prompts") or {}
    sources = prompts_cfg.get("sources") or ([prompts_cfg] if prompts_cfg.get("source") else [])
    prompts_dir = Path(prompts_cfg.get("dir") or Path(recipe.get("output_dir") or cache_dir.parent) / "prompts")
    prompts_manifest = _read_json(prompts_dir / PROMPTS_MANIFEST)
    licences = sorted({s.get("license") for s in sources if s.get("license")})
    info = datasets.DatasetInfo(features=datasets.Features.from_arrow_schema(sch))
    header: dict[str, Any] = {
        "configs": [{"config_name": "default", "data_files": [{"split": "train", "path": "data/train-*"}]}],
        "dataset_info": {
            **info._to_yaml_dict(),
            "splits": [{"name": "train", "num_bytes": num_bytes, "num_examples": len(records)}],
        },
        "license": licences[0] if len(licences) == 1 else "other",
        "tags": ["distillation", "dante", "teacher-cache"],
    }
    teacher = manifest.get("teacher") or {}
    lines = [
        "---",
        yaml.safe_dump(header, sort_keys=False, allow_unicode=True).rstrip(),
        "---",
        "",
        f"# Teacher cache: {recipe.get('name') or cache_dir.name}",
        "",
        "Completions written by a teacher model for distillation with "
        "[dante](https://github.com/) (`dante cache export`). One row per prompt.",
        "",
        "## Teacher and sampling",
        "",
        f"- teacher: `{teacher.get('name') or teacher.get('model') or '?'}` (backend `{teacher.get('backend', '?')}`)",
        f"- sampling: `{json.dumps(teacher.get('sampling') or {}, sort_keys=True)}`",
        f"- records: {len(records)}; completion tokens: {sum(r.completion_tokens or 0 for r in records)}; "
        f"with per-token logprobs: {sum(r.token_logprobs is not None for r in records)}",
        f"- finish reasons: {json.dumps(dict(Counter(r.finish_reason or 'unknown' for r in records)))}",
        "",
        "## Prompt sources",
        "",
    ]
    if sources:
        lines += [
            f"- `{s.get('source')}` (weight {s.get('weight', 'all')}, licence: {s.get('license') or 'not declared'})"
            for s in sources
        ]
    else:
        lines += ["- not recorded (no resolved recipe next to the cache)"]
    dc = (prompts_manifest or {}).get("decontamination")
    lines += ["", "## Decontamination", ""]
    if dc:
        lines += [
            f"Prompts sharing a {dc['ngram']}-word n-gram with a question or reference answer were removed "
            f"({dc['removed']} in all):",
            "",
        ]
        lines += [
            f"- `{name}`: {c['documents']} documents, {c['removed']} removed" for name, c in dc["checked"].items()
        ]
    else:
        lines += ["The prompts were not checked against any benchmark (no `prompts.decontaminate`)."]
    lines += [
        "",
        "## Columns",
        "",
        "The record fields of dante's cache (docs/teachers.md). `sampling` is JSON text; `token_logprobs` "
        "holds, per generated token, its bytes and logprob and the top-K alternatives (null when not stored).",
        "A thinking teacher's records also hold `teacher_reasoning` (its thinking; `teacher_text` is the answer "
        "alone), `reasoning_tokens` (how many of the output's tokens are the thinking's, first in `token_logprobs`), "
        "`reasoning_status` (complete, cut at the length limit, or no_answer) and `answer_entropy`; null otherwise.",
        "",
    ]
    return "\n".join(lines)
