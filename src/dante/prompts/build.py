"""The curated prompt set (stage 1, ``dante prompts build``): read every source, drop exact and
near duplicates, drop prompts that overlap an evaluated benchmark, sample the mixture by weight,
and write ``prompts.parquet`` (every prompt with its source and row) plus ``prompts_manifest.json``
(counts in and out at each step, every removed prompt and why).

``prompt_set(recipe)`` is what the cache reads: the recipe's prompts as they are (one plain
source) or the curated set, built first when it is missing or was built with other settings.
The manifest is written after the Parquet file and names its sha256, so a crash between the two
leaves a set that is rebuilt, never one that is half read.
"""

from __future__ import annotations

import hashlib
import io
import json
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console

from dante.benchmarks import resolve_tasks
from dante.config import Recipe, resolved_dict, save_resolved, stable_hash
from dante.errors import DanteError, DataError
from dante.io import atomic_write_bytes, atomic_write_json
from dante.layout import PROMPT_SET, PROMPTS_MANIFEST
from dante.progress import stage_progress
from dante.prompts.decontaminate import NgramIndex, TaskCounts, file_documents, task_documents
from dante.prompts.dedup import exact_duplicates, near_duplicates, repeats
from dante.prompts.mixture import allocate, pick
from dante.prompts.sources import FILE_FORMATS, Prompt, load_prompts, resolve_source, source_label

FORMAT = "dante-prompts/1"


@dataclass
class PromptSet:
    """The prompts a cache is built from, with the manifest of how they were chosen."""

    prompts: list[Prompt]
    manifest: dict[str, Any]
    directory: Path | None = None


def prompt_text(p: Prompt) -> str:
    """What the teacher reads of a prompt (system and every turn), for de-duplication and decontamination."""
    return "\n".join(str(m["content"]) for m in p.chat())


def decontamination_tasks(recipe: Recipe) -> list[str]:
    """``prompts.decontaminate.tasks`` with 'eval' replaced by the tasks the recipe's eval stage runs."""
    names: list[str] = []
    for name in recipe.prompts.decontaminate.tasks:
        if name.strip().lower() == "eval":
            names += [s.task for s in resolve_tasks(recipe.eval)]
        else:
            names.append(name.strip())
    return list(dict.fromkeys(n for n in names if n))


def settings_key(recipe: Recipe) -> str:
    """The prompt settings a curated set was built with (the folder setting aside)."""
    prompts = {k: v for k, v in resolved_dict(recipe)["prompts"].items() if k != "dir"}
    return stable_hash({"prompts": prompts, "decontaminate_tasks": decontamination_tasks(recipe)})


def input_files(recipe: Recipe) -> dict[str, list[int]]:
    """Size and modification time of every local file the set is built from (sources and
    decontamination files): a set built from files that changed since is rebuilt."""
    found: dict[str, list[int]] = {}
    names = [s.source for s in recipe.prompts.source_list()] + list(recipe.prompts.decontaminate.files)
    for name in names:
        try:
            path = resolve_source(name, _base_dir(recipe))
        except DanteError:
            continue
        if path is None or not path.exists():
            continue
        files = [path] if path.is_file() else sorted(f for f in path.rglob("*") if f.suffix.lower() in FILE_FORMATS)
        for f in files:
            st = f.stat()
            found[str(f)] = [st.st_size, st.st_mtime_ns]
    return found


def is_current(recipe: Recipe, manifest: dict[str, Any]) -> bool:
    """Whether a built set's manifest matches the recipe's settings and input files."""
    return manifest.get("settings_key") == settings_key(recipe) and manifest.get("inputs") == input_files(recipe)


def _base_dir(recipe: Recipe) -> Path | None:
    return Path(recipe.source_file).parent if recipe.source_file else None


def build_prompt_set(recipe: Recipe, *, write: bool = True, console: Console | None = None) -> PromptSet:
    """Curate the recipe's prompts; write them and their manifest to ``recipe.prompts_dir`` unless
    ``write`` is False (``dante prompts check``). Bad input raises before anything is written."""
    cfg = recipe.prompts
    console = console or Console(stderr=True)
    started = time.perf_counter()
    seconds: dict[str, float] = {}
    sources = cfg.source_list()

    t0 = time.perf_counter()
    pool: list[Prompt] = []
    origin: list[int] = []
    for i, src in enumerate(sources):  # a repeated identical row is read, then removed below
        got = load_prompts(src, _base_dir(recipe), duplicates="keep")
        pool += got
        origin += [i] * len(got)
    texts = [prompt_text(p) for p in pool]
    seconds["read"] = time.perf_counter() - t0
    removed: dict[int, dict[str, Any]] = {}

    t0 = time.perf_counter()
    # identical prompts (one id) are exact duplicates with or without dedup.exact, which also
    # catches those that differ only in case, spaces or Unicode form
    identical = repeats([(p.id, p.prompt, p.system, json.dumps(p.messages, sort_keys=True)) for p in pool])
    for d in identical + (exact_duplicates(texts) if cfg.dedup.exact else []):
        removed.setdefault(d.index, {"step": "exact_dedup", "duplicate_of": pool[d.of].id})
    if cfg.dedup.exact:
        seconds["exact_dedup"] = time.perf_counter() - t0

    if cfg.dedup.near:
        t0 = time.perf_counter()
        with stage_progress("near duplicates", console=console) as bar:
            task = bar.add_task("", total=len(pool) - len(removed), info="MinHash LSH")
            found = near_duplicates(
                texts,
                shingle=cfg.dedup.shingle,
                threshold=cfg.dedup.threshold,
                num_perm=cfg.dedup.num_perm,
                skip=set(removed),
                advance=lambda n: bar.advance(task, n),
            )
        for d in found:
            removed[d.index] = {"step": "near_dedup", "duplicate_of": pool[d.of].id, "similarity": d.similarity}
        seconds["near_dedup"] = time.perf_counter() - t0

    decontamination = None
    if cfg.decontaminate.enabled:
        t0 = time.perf_counter()
        decontamination = _decontaminate(recipe, pool, texts, removed, console)
        seconds["decontaminate"] = time.perf_counter() - t0

    available: list[list[int]] = [[] for _ in sources]
    for i in range(len(pool)):
        if i not in removed:
            available[origin[i]].append(i)
    weights = [s.weight for s in sources]
    if all(w is None for w in weights):
        counts = [len(a) for a in available]
        chosen = [i for i in range(len(pool)) if i not in removed]
    else:
        counts = allocate([float(w or 0.0) for w in weights], [len(a) for a in available], cfg.size)
        chosen = sorted(
            available[s][j] for s in range(len(sources)) for j in pick(len(available[s]), counts[s], cfg.seed, s)
        )
    selected = [pool[i] for i in chosen]
    if not selected:
        raise DataError(
            f"no prompts left of {len(pool)} read after de-duplication and decontamination",
            field="prompts",
            hint="run `dante prompts check` to see what each step removed",
        )
    _check_unique_ids(selected)

    manifest = _manifest(recipe, sources, pool, origin, removed, counts, decontamination, seconds)
    manifest["seconds"]["total"] = round(time.perf_counter() - started, 3)
    directory = recipe.prompts_dir if write else None
    if directory is not None:
        _write(directory, selected, [origin[i] for i in chosen], manifest)
        save_resolved(recipe, directory)
    return PromptSet(selected, manifest, directory)


def _decontaminate(
    recipe: Recipe, pool: list[Prompt], texts: list[str], removed: dict[int, dict[str, Any]], console: Console
) -> dict[str, Any]:
    dc = recipe.prompts.decontaminate
    tasks = decontamination_tasks(recipe)
    documents = task_documents(tasks)
    for f in dc.files:
        documents += file_documents(f, _base_dir(recipe))
    index = NgramIndex.build(documents, n=dc.ngram, min_words=dc.min_words)
    todo = [i for i in range(len(pool)) if i not in removed]
    with stage_progress("decontaminate", console=console) as bar:
        task = bar.add_task("", total=len(todo), info=f"{dc.ngram}-grams of {len(documents)} texts")
        found = index.find([texts[i] for i in todo], advance=lambda n: bar.advance(task, n))
    per_task: Counter[str] = Counter()
    for k, match in sorted(found.items()):
        removed[todo[k]] = {"step": "decontaminate", **match.as_dict()}
        per_task[match.task] += 1
    for name, counts in index.counts.items():
        counts.removed = per_task[name]
    checked = [*tasks, *dc.files]
    return {
        "ngram": dc.ngram,
        "min_words": dc.min_words,
        "tasks": tasks,
        "files": list(dc.files),
        "checked": {
            name: {"kind": "task" if name in tasks else "file", **index.counts.get(name, TaskCounts()).as_dict()}
            for name in checked
        },
        "removed": sum(per_task.values()),
    }


def _check_unique_ids(prompts: list[Prompt]) -> None:
    seen: dict[str, Prompt] = {}
    for p in prompts:
        if p.id in seen:
            raise DataError(
                f"prompt id {p.id!r} is used twice (first at {seen[p.id].location or seen[p.id].source})",
                file=p.location or p.source,
                field="id",
                hint="ids must be unique across sources: check the sources' id_field, or turn on prompts.dedup.exact",
            )
        seen[p.id] = p


def _manifest(
    recipe: Recipe,
    sources: list,
    pool: list[Prompt],
    origin: list[int],
    removed: dict[int, dict[str, Any]],
    counts: list[int],
    decontamination: dict[str, Any] | None,
    seconds: dict[str, float],
) -> dict[str, Any]:
    steps = ("exact_dedup", "near_dedup", "decontaminate")
    read = Counter(origin)
    by_source = Counter((origin[i], why["step"]) for i, why in removed.items())
    per_source = []
    for s, src in enumerate(sources):
        left = read[s] - sum(by_source[s, step] for step in steps)
        per_source.append(
            {
                "index": s,
                "source": source_label(src),
                "weight": src.weight,
                "license": src.license,
                "read": read[s],
                **{step: by_source[s, step] for step in steps},
                "available": left,
                "not_sampled": left - counts[s],
                "selected": counts[s],
            }
        )
    flow = []
    count = len(pool)
    flow.append({"step": "read", "out": count})
    for step in (*steps, "mixture"):
        out = count - (
            sum(p["not_sampled"] for p in per_source)
            if step == "mixture"
            else sum(1 for r in removed.values() if r["step"] == step)
        )
        flow.append({"step": step, "in": count, "out": out, "removed": count - out})
        count = out
    total_weight = sum(src.weight or 0.0 for src in sources)
    return {
        "format": FORMAT,
        "settings_key": settings_key(recipe),
        "inputs": input_files(recipe),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "prompts": count,
        "read": len(pool),
        "sources": per_source,
        "target_shares": [round((s.weight or 0.0) / total_weight, 6) for s in sources] if total_weight else None,
        "steps": flow,
        "dedup": recipe.prompts.dedup.model_dump(),
        "decontamination": decontamination,
        "removed": [
            {"id": pool[i].id, "source": pool[i].source, "row": pool[i].row, "location": pool[i].location, **why}
            for i, why in sorted(removed.items())
        ],
        "seconds": {k: round(v, 3) for k, v in seconds.items()},
    }


def _write(directory: Path, prompts: list[Prompt], origins: list[int], manifest: dict[str, Any]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [
        {
            "id": p.id,
            "prompt": p.prompt,
            "system": p.system,
            "messages": None if p.messages is None else json.dumps(p.messages, ensure_ascii=False),
            "source": p.source,
            "row": p.row,
            "location": p.location,
            "source_index": origin,
        }
        for p, origin in zip(prompts, origins, strict=True)
    ]
    string = pa.string()
    schema = pa.schema(
        [(name, string) for name in ("id", "prompt", "system", "messages", "source")]
        + [("row", pa.int64()), ("location", string), ("source_index", pa.int32())]
    )
    table = pa.Table.from_pylist(rows, schema=schema)
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    data = buffer.getvalue()
    try:
        directory.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(directory / PROMPT_SET, data)
        atomic_write_json(directory / PROMPTS_MANIFEST, {**manifest, "sha256": hashlib.sha256(data).hexdigest()})
    except OSError as exc:
        raise DanteError(
            f"cannot write the prompt set: {exc.strerror or exc}", file=directory, field="prompts.dir"
        ) from None


def read_prompt_set(directory: Path) -> PromptSet | None:
    """The curated set in ``directory``; None when there is none or it is incomplete (a crash
    between its two files, or a Parquet file that is not the one its manifest names)."""
    import pyarrow.parquet as pq

    manifest_path, data_path = directory / PROMPTS_MANIFEST, directory / PROMPT_SET
    if not manifest_path.is_file() or not data_path.is_file():
        return None
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    data = data_path.read_bytes()
    if manifest.get("format") != FORMAT or manifest.get("sha256") != hashlib.sha256(data).hexdigest():
        return None
    rows = pq.read_table(io.BytesIO(data)).to_pylist()
    prompts = [
        Prompt(
            id=r["id"],
            prompt=r["prompt"],
            system=r["system"],
            messages=None if r["messages"] is None else json.loads(r["messages"]),
            source=r["source"],
            row=r["row"],
            location=r["location"],
        )
        for r in rows
    ]
    return PromptSet(prompts, manifest, directory)


def built_prompt_set(recipe: Recipe) -> PromptSet | None:
    """The recipe's curated set as built, when it is whole and built with these settings from
    these files; else None."""
    built = read_prompt_set(recipe.prompts_dir)
    return built if built is not None and is_current(recipe, built.manifest) else None


def current_prompt_set(recipe: Recipe, *, console: Console | None = None) -> PromptSet:
    """The recipe's curated set as built, or built now when missing, built with other settings,
    or built from files that changed since."""
    built = built_prompt_set(recipe)
    if built is not None:
        return built
    console = console or Console(stderr=True)
    console.print(f"building the curated prompt set in {recipe.prompts_dir} (dante prompts build)")
    return build_prompt_set(recipe, console=console)


def prompt_set(recipe: Recipe, *, console: Console | None = None) -> list[Prompt]:
    """The prompts of a recipe, as the cache reads them: the plain source's prompts, or the
    curated set (``current_prompt_set``)."""
    if not recipe.prompts.curated:
        return load_prompts(recipe.prompts, base_dir=_base_dir(recipe))
    return current_prompt_set(recipe, console=console).prompts
