"""`dante cache RECIPE`: prompts -> teacher -> metadata -> sharded cache, resumable.

Re-running skips ids already written; a cache made with other teacher/prompt settings is
refused (the manifest holds them), so one folder never mixes two teachers.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from dante.cache.manifest import check_manifest, new_manifest
from dante.cache.metadata import difficulty_score, self_consistency
from dante.cache.payload import encode
from dante.cache.records import CacheRecord
from dante.cache.writer import CacheWriter, disk_error
from dante.config import Recipe, TeacherConfig, save_resolved
from dante.errors import DanteError
from dante.layout import RESOLVED_RECIPE
from dante.progress import stage_progress
from dante.prompts import Prompt, prompt_set
from dante.teacher import Completion, Teacher, batch
from dante.teacher.base import Generation, sampling_settings
from dante.teacher.dispatch import make_engine
from dante.teacher.reasoning import Split, status


@dataclass
class CacheSummary:
    """What `dante cache` did."""

    cache_dir: Path
    prompts: int
    records: int
    written: int
    skipped: int
    shards: int
    completion_tokens: int = 0
    seconds: float = 0.0
    teacher: str | None = None
    mean_entropy: float | None = None
    finish_reasons: dict[str, int] = field(default_factory=dict)
    failed: list[str] = field(default_factory=list)  # prompt ids skipped after failing (ray, batch)
    open_batches: int = 0  # teacher.dispatch: batch: batches still running at the provider
    requests: int | None = None  # --write-requests: request lines written

    @property
    def records_per_s(self) -> float:
        return self.written / self.seconds if self.seconds > 0 else 0.0

    @property
    def tokens_per_s(self) -> float:
        return self.completion_tokens / self.seconds if self.seconds > 0 else 0.0

    def __str__(self) -> str:
        ent = f", mean entropy {self.mean_entropy:.3f} nats" if self.mean_entropy is not None else ""
        return (
            f"cache {self.cache_dir}: {self.records}/{self.prompts} prompts done ({self.written} new, "
            f"{self.skipped} already there) "
            f"in {self.shards} shard(s); {self.completion_tokens} generated tokens in {self.seconds:.1f}s "
            f"({self.records_per_s:.2f} records/s, {self.tokens_per_s:.1f} tokens/s){ent}"
            + (f"; {len(self.failed)} prompts failed and were skipped: {self.failed[:5]}" if self.failed else "")
            + (f"; {self.open_batches} batches still running: re-run to ingest them" if self.open_batches else "")
            + (f"; {self.requests} requests written" if self.requests is not None else "")
        )

    def __rich__(self) -> Table:
        t = Table(title=f"teacher cache: {self.cache_dir}", show_header=False, title_justify="left")
        rows = [
            ("teacher", self.teacher or "-"),
            ("records", f"{self.records} / {self.prompts} prompts"),
            ("new / skipped", f"{self.written} / {self.skipped}"),
            ("shards", str(self.shards)),
            ("generated tokens", f"{self.completion_tokens} (greedy + consistency samples)"),
            ("time", f"{self.seconds:.1f} s"),
            ("rate", f"{self.records_per_s:.2f} records/s, {self.tokens_per_s:.1f} tokens/s"),
            ("mean entropy", "-" if self.mean_entropy is None else f"{self.mean_entropy:.4f} nats"),
            ("finish reasons", ", ".join(f"{k}: {v}" for k, v in sorted(self.finish_reasons.items())) or "-"),
        ]
        if self.failed:
            rows.append(("failed prompts", f"{len(self.failed)} skipped: {', '.join(self.failed[:5])}"))
        if self.open_batches:
            rows.append(("open batches", f"{self.open_batches} still running at the provider: re-run to ingest"))
        if self.requests is not None:
            rows.append(("requests written", str(self.requests)))
        for k, v in rows:
            t.add_row(k, v)
        return t


def make_record(
    c: Completion,
    teacher_name: str,
    sampling: dict[str, Any],
    consistency_k: int,
    entropy_scale: float,
    store_logprobs: int = 0,
) -> CacheRecord:
    """A Completion + its metadata -> the cache record (docs/teachers.md, "The cache folder")."""
    entropy = c.main.output_entropy
    consistency = self_consistency([s.text for s in c.samples]) if consistency_k else None
    p: Prompt = c.prompt
    return CacheRecord(
        id=p.id,
        prompt=p.prompt,
        system=p.system,
        messages=p.messages,
        source=p.source,
        teacher_text=c.main.text,
        output_entropy=entropy,
        self_consistency=consistency,
        difficulty_score=difficulty_score(entropy, consistency, entropy_scale),
        teacher=teacher_name,
        sampling=sampling,
        prompt_tokens=c.main.prompt_tokens,
        completion_tokens=c.main.completion_tokens,
        finish_reason=c.main.finish_reason,
        consistency_samples=consistency_k,
        token_logprobs=encode(c.main.token_logprobs, store_logprobs)
        if store_logprobs and c.main.token_logprobs is not None
        else None,
        teacher_reasoning=c.main.reasoning,
        reasoning_tokens=c.main.reasoning_tokens if c.main.reasoning is not None else None,
        reasoning_status=reasoning_status(c.main),
        answer_entropy=c.main.answer_entropy,
    )


def reasoning_status(gen) -> str | None:
    """complete / cut / no_answer of a thinking teacher's output (``dante.teacher.reasoning.status``)."""
    if gen.reasoning is None:
        return None
    split = Split(gen.reasoning, gen.text, closed=gen.reasoning_closed, source=gen.reasoning_source)
    return status(split, gen.finish_reason)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def run_cache(
    recipe: Recipe,
    *,
    teacher: Teacher | None = None,
    console: Console | None = None,
    teacher_factory: Callable[[TeacherConfig], Teacher] | None = None,
    write_requests: str | Path | None = None,
    ingest: list[str | Path] | None = None,
    batch_client: batch.BatchClient | None = None,
) -> CacheSummary:
    """Generate (or finish) the cache of ``recipe``; returns what was done.

    ``teacher`` replaces the engine made from ``recipe.teacher`` (tests, notebooks). With
    ``teacher.dispatch: ray`` the engine is a pool of replicas (``dante.teacher.ray_pool``), each built
    by ``teacher_factory`` (default ``make_teacher``); with ``teacher.dispatch: batch`` the prompts go
    to the provider's Batch API (``dante.teacher.batch``, ``batch_client`` replaces its client).
    File mode, for vLLM's ``run_batch`` or any tool of the OpenAI batch format:
    ``write_requests`` writes the pending prompts' requests to that file; ``ingest`` reads result
    files into the cache.
    """
    if write_requests is not None or ingest is not None or recipe.teacher.dispatch == "batch":
        batch.check_backend(recipe)
    t0 = time.perf_counter()
    directory = recipe.cache_dir
    old = check_manifest(directory, recipe) or {}
    prompts = prompt_set(recipe, console=console)  # the curated set, when the recipe has one
    manifest = new_manifest(recipe, len(prompts), old, _now())
    writer = CacheWriter(
        directory, shard_size=recipe.cache.shard_size, flush_every=recipe.cache.flush_every, manifest=manifest
    )
    done = writer.open()
    try:
        save_resolved(recipe, directory)
    except OSError as exc:
        writer.close()
        raise disk_error(exc, directory / RESOLVED_RECIPE, "write the resolved recipe") from None
    pending = [p for p in prompts if p.id not in done]
    summary = CacheSummary(directory, len(prompts), 0, 0, len(prompts) - len(pending), 0, teacher=None)
    complete = False
    devices: dict[str, Any] = {k: old[k] for k in ("device_type", "device_count", "device_name") if k in old}
    try:
        writer.write_manifest()
        if write_requests is not None:
            summary.requests = batch.write_requests(recipe, pending, Path(write_requests))
        elif ingest is not None:
            sink = RecordSink(recipe, recipe.teacher.model, writer, summary, console or Console(stderr=True))
            batch.ingest_files(recipe, pending, [Path(f) for f in ingest], writer, sink)
        elif pending and recipe.teacher.dispatch == "batch" and teacher is None:
            sink = RecordSink(recipe, recipe.teacher.model, writer, summary, console or Console(stderr=True))
            batch.run_batches(recipe, pending, writer, sink, console or Console(stderr=True), client=batch_client)
        elif pending:
            engine = teacher or make_engine(recipe.teacher, teacher_factory)
            try:
                devices = engine.device_info()
                writer.manifest_base["teacher"]["name"] = engine.name
                generate_records(recipe, engine, pending, writer, summary, console or Console(stderr=True))
            finally:
                pool_stats(engine, writer, summary)
                if teacher is None:
                    engine.close()
        complete = True
    finally:
        # Finished records are always made durable; only a complete run seals the last shard.
        # Compute adds up over resumed runs (a killed run's time is not counted: an under-estimate).
        wall = float(old.get("wall_time_s") or 0.0) + time.perf_counter() - t0
        count = devices.get("device_count")
        complete = complete and write_requests is None and not summary.open_batches
        writer.close(
            seal=complete,
            complete=complete and not summary.failed,  # skipped prompts are retried by the next run
            updated=_now(),
            wall_time_s=wall,
            **devices,
            device_hours=wall * count / 3600.0 if count else None,
        )
    summary.records = writer.records
    summary.shards = len(writer.sealed_shards)
    summary.seconds = time.perf_counter() - t0
    return summary


def pool_stats(engine: Teacher, writer: CacheWriter, summary: CacheSummary) -> None:
    """A Ray pool's restarts and failed prompts, into the manifest (``ray``, ``failed_prompts``)
    and the summary; failed prompts of earlier runs that are now written drop off the list."""
    stats = getattr(engine, "stats", None)
    if stats is None:
        return

    info = asdict(stats)
    failed = info.pop("failed_prompts")
    writer.manifest_base["ray"] = {**info, "replicas": len(getattr(engine, "handles", []))}
    writer.manifest_base["failed_prompts"] = failed
    summary.failed = [f["id"] for f in failed]


class LogprobCheck:
    """Notices a teacher that returns no logprobs although they were asked for (some servers,
    e.g. ``transformers serve``, ignore ``logprobs`` silently): says so at the first such
    completion, records what the server returned in the manifest (``logprobs_returned``), and
    stops when the recipe needs the payload (``teacher.missing_logprobs``)."""

    def __init__(self, cfg: TeacherConfig, writer: CacheWriter, console: Console) -> None:
        self.cfg, self.writer, self.console = cfg, writer, console
        self.counts = {"asked": 0, "entropy": 0, "payload": 0}
        self.warned = False

    def __call__(self, main: Generation) -> None:
        cfg = self.cfg
        if not (cfg.top_logprobs or cfg.store_logprobs):
            return
        c = self.counts
        c["asked"] += 1
        c["entropy"] += main.token_entropies is not None
        c["payload"] += main.token_logprobs is not None
        self.writer.manifest_base["logprobs_returned"] = dict(c)
        missing_entropy = cfg.top_logprobs > 0 and main.token_entropies is None
        # a payload left out because it did not spell a thinking output is counted by ReasoningCheck, not missing
        missing_payload = cfg.store_logprobs > 0 and main.token_logprobs is None and not main.payload_dropped
        if not (missing_entropy or missing_payload) or self.warned:
            return
        self.warned = True
        what = "logprobs" + (f" (store_logprobs={cfg.store_logprobs})" if missing_payload else "")
        stop = cfg.missing_logprobs == "error" or (cfg.missing_logprobs == "auto" and missing_payload)
        if stop:
            raise DanteError(
                f"the teacher returned no {what} although they were asked for",
                field="teacher.store_logprobs" if missing_payload else "teacher.top_logprobs",
                hint="use a server that returns logprobs (vLLM serve, SGLang, llama.cpp), or set "
                "teacher.store_logprobs=0 and teacher.missing_logprobs=warn to cache text only",
            )
        self.console.print(
            f"[yellow]warning[/]: the teacher returned no {what} although they were asked for: records get "
            "output_entropy null (CWCE weights 1.0); the manifest's logprobs_returned counts them",
            highlight=False,
        )


class ReasoningCheck:
    """What a thinking teacher did, in the manifest (``reasoning``): records with reasoning by where
    it was found (a message field's name, or inline markers) and by status (complete, cut,
    no_answer), reasoning returned while ``teacher.thinking`` is off, and payloads left out because
    the logprobs did not spell the text. Says once when the teacher thinks although told not to, and
    when thinking hit the length limit; nothing is dropped."""

    def __init__(self, cfg: TeacherConfig, writer: CacheWriter, console: Console) -> None:
        self.cfg, self.writer, self.console = cfg, writer, console
        self.counts: dict[str, Any] = {"records": 0, "with_reasoning": 0, "source": {}, "status": {}}
        self.counts.update(while_off=0, payload_not_matching=0)
        self.said: set[str] = set()

    def __call__(self, main: Generation, status_: str | None) -> None:
        c = self.counts
        c["records"] += 1
        if main.reasoning is not None:
            c["with_reasoning"] += 1
            c["source"][main.reasoning_source] = c["source"].get(main.reasoning_source, 0) + 1
            c["status"][status_] = c["status"].get(status_, 0) + 1
            c["while_off"] += self.cfg.thinking == "off"
            c["payload_not_matching"] += main.payload_dropped
            if self.cfg.thinking == "off":
                self.say("off", "the teacher returned reasoning although teacher.thinking is off: kept, and counted")
            if status_ == "cut":
                self.say(
                    "cut", "a record's thinking hit the length limit (reasoning_status: cut; raise max_new_tokens)"
                )
        if c["with_reasoning"] or self.cfg.thinking != "auto":
            self.writer.manifest_base["reasoning"] = {**c, "thinking": self.cfg.thinking}

    def say(self, key: str, text: str) -> None:
        if key not in self.said:
            self.said.add(key)
            self.console.print(f"[yellow]note[/]: {text}; the manifest's reasoning counts them", highlight=False)


class RecordSink:
    """Each finished completion becomes a record in ``writer`` (after the logprob check) and is
    counted in ``summary``: the one path from a teacher's answer to the cache, for every engine."""

    def __init__(
        self, recipe: Recipe, teacher_name: str, writer: CacheWriter, summary: CacheSummary, console: Console
    ) -> None:
        self.recipe, self.writer, self.summary, self.teacher_name = recipe, writer, summary, teacher_name
        self.sampling = sampling_settings(recipe.teacher)
        self.check = LogprobCheck(recipe.teacher, writer, console)
        self.reasoning = ReasoningCheck(recipe.teacher, writer, console)
        self.entropy_sum, self.entropy_count = 0.0, 0
        summary.teacher = teacher_name

    def __call__(self, c: Completion) -> CacheRecord:
        cfg, summary = self.recipe.teacher, self.summary
        self.check(c.main)
        rec = make_record(
            c,
            self.teacher_name,
            self.sampling,
            cfg.consistency_samples,
            self.recipe.cache.difficulty_entropy_scale,
            cfg.store_logprobs,
        )
        self.reasoning(c.main, rec.reasoning_status)
        self.writer.add(rec)
        summary.written += 1
        summary.completion_tokens += sum(g.completion_tokens or 0 for g in [c.main, *c.samples])
        reason = rec.finish_reason or "unknown"
        summary.finish_reasons[reason] = summary.finish_reasons.get(reason, 0) + 1
        if rec.output_entropy is not None:
            self.entropy_sum, self.entropy_count = self.entropy_sum + rec.output_entropy, self.entropy_count + 1
            summary.mean_entropy = self.entropy_sum / self.entropy_count
        return rec


def generate_records(
    recipe: Recipe, engine: Teacher, pending: list[Prompt], writer: CacheWriter, summary: CacheSummary, console: Console
) -> None:
    """The generation loop: each finished completion becomes a record in ``writer`` and a tick
    of the progress bar; ``summary`` counts what was written."""
    sink = RecordSink(recipe, engine.name, writer, summary, console)
    start = time.perf_counter()
    with stage_progress("teacher cache", console=console) as bar:
        task = bar.add_task("cache", total=len(pending), info="")
        for c in engine.iter_completions(pending):
            sink(c)
            dt = max(time.perf_counter() - start, 1e-9)
            bar.update(
                task, advance=1, info=f"{summary.written / dt:.2f} rec/s {summary.completion_tokens / dt:.0f} tok/s"
            )
