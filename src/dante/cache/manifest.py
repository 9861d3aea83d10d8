"""The cache folder's manifest (stage 2): which teacher and prompt settings wrote it, so a
resume never mixes two teachers, and what the run did (counts, compute). Read once per run.

``cache_key`` hashes the settings that decide a record's content; settings that only change
how fast or where the teacher runs (``OPERATIONAL``) may differ between runs of one cache.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from dante.cache.writer import disk_error
from dante.config import BACKEND_KEYS, DecontaminateConfig, DedupConfig, Recipe, recipe_hash, resolved_dict, stable_hash
from dante.errors import DanteError, DataError
from dante.layout import CACHE_MANIFEST, expand_folders
from dante.prompts.build import decontamination_tasks
from dante.teacher.base import sampling_settings

FORMAT = "dante-cache/1"
# Settings that change how fast or where the teacher runs, not what it writes: changing
# them (e.g. more retries after a failure, another server URL) must not block a resume.
OPERATIONAL = {
    "teacher": {
        "device",
        "schedule",  # the hf engine's decoding schedule: the same greedy tokens, in another order
        "batch_size",
        "concurrency",
        "max_retries",
        "request_timeout_s",
        "backoff_base_s",
        "backoff_max_s",
        "base_url",
        "api_key",
        "api_key_env",
        "gpu_memory_utilization",
        "tensor_parallel_size",
        "pipeline_parallel_size",
        "missing_logprobs",
        "dispatch",  # where the requests go (this process, a Ray pool, a Batch API): the same records
        "ray",
        "batch_api",
    },
    "prompts": {"limit", "size", "dir"},  # a larger limit (or mixture size) extends a cache
}
# Prompt settings added after caches were first written: left out of the key at their defaults,
# so a cache written before them keeps its key and resumes.
ADDED_LATER = {
    "teacher": {"store_logprobs": 0, "thinking": "auto", "reasoning_effort": None, "thinking_budget": None},
    "prompts": {
        "sources": [],
        "dedup": DedupConfig().model_dump(),
        "decontaminate": DecontaminateConfig().model_dump(),
    },
}


def content_settings(recipe: Recipe) -> dict[str, Any]:
    """The teacher and prompts settings that decide a cache's content (no secrets)."""
    data = resolved_dict(recipe)
    for section in BACKEND_KEYS:  # keyed flat, as before the backend sections: older caches keep their keys
        data["teacher"].update(data["teacher"].pop(section))
    served = data["teacher"].pop("llamacpp")  # added later: keyed only where it is the engine, so others keep theirs
    if data["teacher"]["backend"] == "llamacpp":  # the file served decides the content, not the slots or threads
        data["teacher"]["llamacpp_gguf"] = served["gguf"]
    content = {sec: {k: v for k, v in data[sec].items() if k not in OPERATIONAL[sec]} for sec in ("teacher", "prompts")}
    for section, added in ADDED_LATER.items():
        for key, default in added.items():
            if content[section].get(key) == default:
                content[section].pop(key, None)
    if "decontaminate" in content["prompts"]:  # 'eval' means the eval stage's tasks: key on what it resolves to
        content["prompts"]["decontaminate"] = {
            **content["prompts"]["decontaminate"],
            "tasks": decontamination_tasks(recipe),
        }
    return content


def cache_key(recipe: Recipe) -> str:
    """Hash of ``content_settings``: a cache is resumed only under the same key."""
    return stable_hash(content_settings(recipe))


def settings_diff(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """``section.key: old -> new`` for every content setting that differs."""
    keys = []
    for sec in ("teacher", "prompts"):
        a, b = old.get(sec, {}), new.get(sec, {})
        keys += [f"{sec}.{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
    return keys


def mixed_settings(folders: list[Path]) -> list[str]:
    """Lines saying how cache folders' teacher/prompt settings differ ([] when they share one
    key; folders without a readable dante manifest are left out)."""
    manifests = []
    for folder in expand_folders(folders):
        try:
            manifest = read_manifest(folder)
        except DataError:  # not a dante manifest: nothing to compare
            manifest = None
        if manifest is not None and manifest.get("cache_key") is not None:
            manifests.append((folder, manifest))
    if len({m["cache_key"] for _, m in manifests}) <= 1:
        return []
    (first, m0), lines = manifests[0], []
    for folder, m in manifests[1:]:
        if m["cache_key"] != m0["cache_key"]:
            diff = settings_diff(m0.get("settings") or {}, m.get("settings") or {})
            lines.append(f"{folder} vs {first}: " + ("; ".join(diff[:4]) or "other settings"))
    return lines


def check_manifest(directory: Path, recipe: Recipe) -> dict[str, Any] | None:
    """The folder's manifest (None for a new cache), read once; a cache written with other
    teacher/prompts settings is refused."""
    manifest = read_manifest(directory)
    if manifest is None:
        return None
    if manifest.get("cache_key") != cache_key(recipe):
        changes = settings_diff(manifest.get("settings", {}), content_settings(recipe))
        raise DanteError(
            "this cache was written with other teacher/prompts settings"
            + (f" ({'; '.join(changes[:6])})" if changes else ""),
            file=directory / CACHE_MANIFEST,
            field="cache.dir",
            hint="use another cache.dir, or delete the folder to regenerate; a cache never mixes two teachers",
        )
    return manifest


def read_manifest(directory: str | Path) -> dict[str, Any] | None:
    """The cache's manifest, or None for a new cache."""
    path = Path(directory) / CACHE_MANIFEST
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(
            f"manifest is not valid JSON ({exc})", file=path, hint="delete it to rebuild from the shards"
        ) from None
    except OSError as exc:
        raise disk_error(exc, path, "read the manifest") from None
    if not isinstance(data, dict):
        raise DataError(
            f"manifest must be a JSON object, got {type(data).__name__}",
            file=path,
            hint="delete it to rebuild from the shards",
        )
    return data


def new_manifest(recipe: Recipe, prompts_total: int, old: dict[str, Any] | None, now: str) -> dict[str, Any]:
    """The manifest of this run of the cache: its key, settings and counts; ``created`` kept from ``old``."""
    cfg = recipe.teacher
    return {
        "format": FORMAT,
        "cache_key": cache_key(recipe),
        "recipe_hash": recipe_hash(recipe, ("teacher", "prompts")),
        "created": (old or {}).get("created", now),
        "updated": now,
        "teacher": {"backend": cfg.backend, "model": cfg.model, "sampling": sampling_settings(cfg)},
        "settings": content_settings(recipe),
        "prompts_total": prompts_total,
        "complete": False,
        **({"batches": old["batches"]} if old and old.get("batches") else {}),  # teacher.dispatch: batch's record
    }
