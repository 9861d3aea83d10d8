"""``teacher.dispatch: batch`` (stage 2): the teacher through the OpenAI batch file format, for the
Batch APIs of hosted providers (about half the price per token, answered within a window) and
for vLLM's offline ``run_batch``, which reads and writes the same files.

A request line is ``{"custom_id", "method": "POST", "url", "body"}`` with the body exactly as
the synchronous request (``dante.teacher.openai.request_body``): the main completion has the
record id as custom_id, the self-consistency samples ``<id>#samples``. A result line is
``{"custom_id", "response": {"status_code", "body"}, "error"}``.

Hosted mode keeps every batch in the cache manifest (``batches``: its requests file, input file
id, batch id, status, output and error file ids), written before and after each call, so a
driver killed at any moment resumes without submitting a batch twice: a batch created but not
yet recorded is found again by its name in the provider's list (``metadata.dante_batch``).
Results are downloaded into ``<cache>/batches/`` and go through the exactly-once
``CacheWriter``; requests the provider failed or expired are listed (``failed_prompts``, with
their error) and sent again, in a new smaller batch, by the next run; never written empty.
File mode (``--write-requests`` / ``--ingest``) does the same without a provider.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console

from dante.config import Recipe, redact_url
from dante.errors import DanteError, DataError
from dante.io import atomic_write_bytes
from dante.progress import stage_progress
from dante.prompts import Prompt
from dante.teacher.base import Completion, Generation, TeacherRequest
from dante.teacher.openai import (
    RETRY_STATUS,
    backoff_delay,
    parse_response,
    parse_retry_after,
    render_request,
    request_body,
)
from dante.teacher.reasoning import prompt_opens_thinking

log = logging.getLogger(__name__)
SAMPLES = "#samples"  # custom_id suffix of a prompt's self-consistency request
URLS = {"chat": "/v1/chat/completions", "completions": "/v1/completions"}
FOLDER = "batches"
DONE = {"completed", "failed", "expired", "cancelled"}  # the provider's final batch states


# -- requests --------------------------------------------------------------------------------


def request_lines(recipe: Recipe, prompts: Iterable[Prompt]) -> Iterator[dict[str, Any]]:
    """The batch request lines of ``prompts``: each prompt's main completion, then its samples."""
    cfg = recipe.teacher
    request = TeacherRequest.from_config(cfg)
    url = URLS[cfg.openai.api]
    for p in prompts:
        yield {"custom_id": p.id, "method": "POST", "url": url, "body": request_body(cfg, p, request.main)}
        if request.consistency is not None:
            body = request_body(cfg, p, request.consistency)
            yield {"custom_id": p.id + SAMPLES, "method": "POST", "url": url, "body": body}


def encode_line(line: dict[str, Any]) -> bytes:
    return (json.dumps(line, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8")


def split_requests(recipe: Recipe, prompts: list[Prompt], max_requests: int, max_bytes: int) -> list[list[bytes]]:
    """The request lines of ``prompts`` cut into batch files of at most ``max_requests`` lines and
    ``max_bytes`` bytes; a prompt's requests stay in one file."""
    files: list[list[bytes]] = []
    current: list[bytes] = []
    size = 0
    for p in prompts:
        lines = [encode_line(x) for x in request_lines(recipe, [p])]
        extra = sum(map(len, lines))
        if extra > max_bytes:
            raise DataError(
                f"the requests of prompt {p.id} take {extra} bytes, more than teacher.batch_api.max_bytes={max_bytes}",
                file=p.location or p.source,
                field="teacher.batch_api.max_bytes",
            )
        if current and (len(current) + len(lines) > max_requests or size + extra > max_bytes):
            files.append(current)
            current, size = [], 0
        current += lines
        size += extra
    if current:
        files.append(current)
    return files


def write_requests(recipe: Recipe, prompts: list[Prompt], path: Path) -> int:
    """File mode: the requests of ``prompts`` in one file (atomically); returns the line count."""
    lines = [encode_line(x) for x in request_lines(recipe, prompts)]
    try:
        atomic_write_bytes(path, b"".join(lines))
    except OSError as exc:
        raise DanteError(f"cannot write the requests file ({exc.strerror or exc})", file=path) from None
    return len(lines)


# -- results ---------------------------------------------------------------------------------


@dataclass
class Results:
    """What result files said: each request's response body or its error; lines that are not
    results (located problems: the prompt stays pending)."""

    bodies: dict[str, dict[str, Any]] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def read(self, path: Path, known: set[str]) -> Results:
        """Add the lines of a result (output or error) file; ``known`` are the custom_ids asked for."""
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise DanteError(f"cannot read the results file ({exc.strerror or exc})", file=path) from None
        lines = data.split(b"\n")
        for lineno, raw in enumerate(lines, start=1):
            if not raw.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                obj = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError):
                last = lineno == len(lines) and not data.endswith(b"\n")
                self.problems.append(f"{where}: " + ("truncated line (the file ends mid-line)" if last else "not JSON"))
                continue
            cid = obj.get("custom_id") if isinstance(obj, dict) else None
            if not isinstance(cid, str):
                self.problems.append(f"{where}: custom_id: missing (not a batch result line)")
                continue
            if cid not in known:
                self.problems.append(f"{where}: custom_id: {cid!r} is not a request of this cache's prompts")
                continue
            if cid in self.bodies:
                continue  # answered already (a line repeated, or a second results file)
            error, response = obj.get("error"), obj.get("response")
            status = response.get("status_code") if isinstance(response, dict) else None
            body = response.get("body") if isinstance(response, dict) else None
            if error or status != 200 or not isinstance(body, dict):
                self.errors[cid] = _error_text(error, status, body)
                continue
            self.bodies[cid] = body
            self.errors.pop(cid, None)
        return self


def _error_text(error: Any, status: Any, body: Any) -> str:
    if isinstance(error, dict):
        return f"{error.get('code') or 'error'}: {error.get('message') or ''}".strip()
    if error:
        return str(error)[:300]
    message = (
        body.get("error", {}).get("message") if isinstance(body, dict) and isinstance(body.get("error"), dict) else None
    )
    return f"HTTP {status}" + (f": {message}" if message else "") if status is not None else "no response body"


def completions(recipe: Recipe, prompts: list[Prompt], results: Results) -> tuple[list[Completion], dict[str, str]]:
    """The prompts whose requests all succeeded as Completions; the failed ones as id -> error
    (a body that is not a completion is a located problem of ``results``)."""
    cfg = recipe.teacher
    request = TeacherRequest.from_config(cfg)
    api = cfg.openai.api
    done, failed = [], {}
    for p in prompts:
        ids = [p.id] + ([p.id + SAMPLES] if request.consistency is not None else [])
        errors = [f"{cid}: {results.errors[cid]}" for cid in ids if cid in results.errors]
        if errors:
            failed[p.id] = "; ".join(errors)
            continue
        if not all(cid in results.bodies for cid in ids):
            continue  # not answered (yet)
        try:
            thinking = recipe.teacher.thinking
            opened = api == "completions" and prompt_opens_thinking(render_request(cfg, p))
            main = parse_response(
                results.bodies[p.id], api, request.main.top_logprobs, 1, request.main.store_logprobs, thinking, opened
            )
            samples: list[Generation] = []
            if request.consistency is not None:
                n = request.consistency.n
                samples = parse_response(results.bodies[p.id + SAMPLES], api, 0, n, thinking=thinking)
                if len(samples) < n:
                    raise ValueError(f"{len(samples)} of the {n} consistency samples")
        except ValueError as exc:
            results.problems.append(f"custom_id {p.id!r}: response.body: not a completion ({exc})")
            continue
        done.append(Completion(p, main[0], samples))
    return done, failed


# -- the provider's files and batches endpoints -----------------------------------------------


class BatchClient:
    """``/files`` and ``/batches`` of an OpenAI-compatible provider at ``teacher.openai.base_url``,
    with the teacher's key, timeout and retries (429 / 5xx / dropped connections, back-off)."""

    def __init__(self, recipe: Recipe, sleep: Callable[[float], None] = time.sleep) -> None:
        server = recipe.teacher.openai
        base_url = server.base_url or os.environ.get("OPENAI_BASE_URL")
        if not base_url:
            raise DanteError(
                "teacher.dispatch: batch needs the provider's URL",
                field="teacher.openai.base_url",
                hint="set teacher.openai.base_url (e.g. https://api.openai.com/v1), or write the requests with "
                "--write-requests and run them with vLLM's run_batch",
            )
        key = server.api_key.get_secret_value() if server.api_key is not None else os.environ.get(server.api_key_env)
        self._secret = key or None
        self.where = redact_url(base_url.rstrip("/"))
        self.retries, self.base, self.cap, self.sleep = (
            server.max_retries,
            server.backoff_base_s,
            server.backoff_max_s,
            sleep,
        )
        self._rng = random.Random()
        self._http = httpx.Client(
            base_url=base_url.rstrip("/"),
            headers={"Authorization": f"Bearer {key}"} if key else {},
            timeout=httpx.Timeout(server.request_timeout_s),
        )

    def close(self) -> None:
        self._http.close()

    def _call(self, method: str, path: str, what: str, **kw) -> httpx.Response:
        last = "no attempt made"
        for attempt in range(self.retries + 1):
            retry_after = None
            try:
                resp = self._http.request(method, path, **kw)
                if resp.status_code < 300:
                    return resp
                text = resp.text.replace(self._secret, "***") if self._secret else resp.text
                last = f"HTTP {resp.status_code}: {text[:300].strip()}"
                if resp.status_code not in RETRY_STATUS and resp.status_code < 500:
                    break
                retry_after = parse_retry_after(resp.headers.get("retry-after"))
            except httpx.TimeoutException:
                last = "timed out"
            except httpx.TransportError as exc:
                last = f"connection failed ({type(exc).__name__})"
            if attempt < self.retries:
                self.sleep(backoff_delay(attempt, self.base, self.cap, retry_after, self._rng))
        raise DanteError(
            f"{what} failed: {last}",
            file=f"{self.where}{path}",
            field="teacher.dispatch",
            hint="check the provider and teacher.openai.api_key_env; the batches so far are in the cache manifest, "
            "re-run to go on",
        )

    def upload(self, path: Path, purpose: str = "batch") -> str:
        with open(path, "rb") as fh:
            resp = self._call(
                "POST", "/files", f"uploading {path.name}", files={"file": (path.name, fh)}, data={"purpose": purpose}
            )
        return str(resp.json()["id"])

    def create(self, file_id: str, url: str, window: str, name: str) -> dict[str, Any]:
        body = {
            "input_file_id": file_id,
            "endpoint": url,
            "completion_window": window,
            "metadata": {"dante_batch": name},
        }
        return self._call("POST", "/batches", f"creating batch {name}", json=body).json()

    def find(self, name: str) -> dict[str, Any] | None:
        """The provider's batch created under ``name`` (a driver killed before it recorded the id)."""
        after = None
        for _ in range(100):  # pages of 100: the newest 10,000 batches
            params = {"limit": 100, **({"after": after} if after else {})}
            page = self._call("GET", "/batches", "listing batches", params=params).json()
            for b in page.get("data", []):
                if (b.get("metadata") or {}).get("dante_batch") == name:
                    return b
            if not page.get("has_more") or not page.get("data"):
                return None
            after = page["data"][-1]["id"]
        return None

    def get(self, batch_id: str) -> dict[str, Any]:
        return self._call("GET", f"/batches/{batch_id}", f"checking batch {batch_id}").json()

    def download(self, file_id: str, path: Path) -> None:
        resp = self._call("GET", f"/files/{file_id}/content", f"downloading {file_id}")
        atomic_write_bytes(path, resp.content)


# -- hosted mode -----------------------------------------------------------------------------


def batch_name(cache_key: str, number: int, lines: list[bytes]) -> str:
    """A batch's name: its cache, its number in the cache and a digest of its requests. Recorded
    before the provider hears of it, so a restarted driver looks for the same name."""
    digest = hashlib.sha256(b"".join(lines)).hexdigest()[:12]
    return f"dante-{cache_key[:8]}-{number:04d}-{digest}"


class BatchRun:
    """One `dante cache` run with ``teacher.dispatch: batch``: submit the pending prompts not yet in
    a batch, wait for the batches, ingest them. Every step is recorded in the manifest first."""

    def __init__(self, recipe: Recipe, writer, console: Console, client: BatchClient, sleep=time.sleep) -> None:
        self.recipe, self.writer, self.console, self.client, self.sleep = recipe, writer, console, client, sleep
        self.cfg = recipe.teacher.batch_api
        self.folder = recipe.cache_dir / FOLDER
        self.batches: list[dict[str, Any]] = writer.manifest_base.setdefault("batches", [])

    def save(self) -> None:
        self.writer.write_manifest()  # the manifest is written atomically: a kill leaves the old or the new one

    def active(self) -> list[dict[str, Any]]:
        return [b for b in self.batches if b["status"] != "ingested"]

    def submit(self, pending: list[Prompt]) -> None:
        """New batches for the pending prompts that no active batch holds; then every batch
        written but not yet created at the provider (a run killed before) is started."""
        held = {cid for b in self.active() for cid in b["custom_ids"]}
        todo = [p for p in pending if p.id not in held]
        self.folder.mkdir(parents=True, exist_ok=True)
        key = self.writer.manifest_base.get("cache_key", "")
        for lines in split_requests(self.recipe, todo, self.cfg.max_requests, self.cfg.max_bytes) if todo else []:
            name = batch_name(key, len(self.batches), lines)
            path = self.folder / f"{name}.requests.jsonl"
            atomic_write_bytes(path, b"".join(lines))
            ids = [json.loads(x)["custom_id"] for x in lines]
            self.batches.append(
                {
                    "name": name,
                    "requests_file": path.name,
                    "requests": len(lines),
                    "bytes": sum(map(len, lines)),
                    "custom_ids": ids,
                    "status": "written",
                }  # fmt: skip
            )
            self.save()
        for b in self.active():
            self.start(b)

    def start(self, b: dict[str, Any]) -> None:
        """Upload and create a written batch; a batch the provider already has is not created twice."""
        if b.get("batch_id"):
            return
        found = self.client.find(b["name"])
        if found is None:
            if not b.get("input_file_id"):
                b["input_file_id"] = self.client.upload(self.folder / b["requests_file"], self.cfg.file_purpose)
                self.save()
            url = URLS[self.recipe.teacher.openai.api]
            found = self.client.create(b["input_file_id"], url, self.cfg.completion_window, b["name"])
        b.update(batch_id=found["id"], status=found.get("status", "validating"))
        self.save()
        self.console.print(f"batch {b['name']}: {b['requests']} requests submitted as {b['batch_id']}")

    def wait(self) -> list[dict[str, Any]]:
        """Poll the active batches with back-off until each is done or ``wait_hours`` pass;
        returns the finished ones (their result files downloaded)."""
        deadline = time.monotonic() + self.cfg.wait_hours * 3600
        delay = self.cfg.poll_interval_s
        finished = []
        waiting = [b for b in self.active() if b.get("batch_id") and b["status"] != "downloaded"]
        with stage_progress("teacher batches", console=self.console) as bar:
            task = bar.add_task("batches", total=len(waiting), info="")
            while waiting:
                for b in list(waiting):
                    info = self.client.get(b["batch_id"])
                    counts = info.get("request_counts") or {}
                    b["status"], b["request_counts"] = info.get("status", b["status"]), counts
                    if b["status"] in DONE:
                        self.fetch(b, info)
                        waiting.remove(b)
                        finished.append(b)
                        bar.advance(task)
                    self.save()
                done = sum(int((b.get("request_counts") or {}).get("completed", 0)) for b in waiting)
                bar.update(task, info=f"{done} requests answered in the open batches")
                if not waiting or time.monotonic() + delay > deadline:
                    break
                self.sleep(delay)
                delay = min(self.cfg.poll_max_s, delay * 2)
        return finished

    def fetch(self, b: dict[str, Any], info: dict[str, Any]) -> None:
        for kind in ("output", "error"):
            file_id = info.get(f"{kind}_file_id")
            if file_id:
                name = f"{b['name']}.{kind}.jsonl"
                self.client.download(file_id, self.folder / name)
                b[f"{kind}_file"] = name
        if info.get("errors"):
            b["errors"] = info["errors"]
        b["final_status"] = info.get("status")
        b["status"] = "downloaded"


def check_backend(recipe: Recipe) -> None:
    """The batch file format is the OpenAI-compatible API's: the teacher must be that backend."""
    if recipe.teacher.backend != "openai":
        raise DanteError(
            f"the OpenAI batch format needs teacher.backend: openai (the recipe has {recipe.teacher.backend!r})",
            field="teacher.dispatch",
            hint="set teacher.backend=openai and teacher.model to the provider's (or vLLM's) model name",
        )


def prompt_ids(custom_ids: Iterable[str]) -> set[str]:
    return {cid.removesuffix(SAMPLES) for cid in custom_ids}


def ingest(
    recipe: Recipe, prompts: list[Prompt], files: list[Path], sink, all_ids: Iterable[str] = ()
) -> tuple[dict[str, str], list[str]]:
    """Every prompt of ``prompts`` (the pending ones) answered in the result ``files`` becomes a
    record through ``sink``; a line of another of the cache's prompts (``all_ids``: written
    already) is passed over; returns (failed prompt id -> error, located problems)."""
    known = {cid for i in [*(p.id for p in prompts), *all_ids] for cid in (i, i + SAMPLES)}
    results = Results()
    for path in files:
        results.read(path, known)
    done, failed = completions(recipe, prompts, results)
    for c in done:
        sink(c)
    return failed, results.problems


def record_failures(writer, summary, failed: dict[str, str]) -> None:
    """Failed prompts into the manifest (``failed_prompts``, with their errors) and the summary:
    the cache is not complete, and the next run sends them again."""
    writer.manifest_base["failed_prompts"] = [{"id": k, "error": v} for k, v in sorted(failed.items())]
    summary.failed = sorted(failed)


def raise_problems(problems: list[str], written: int) -> None:
    if problems:
        raise DataError(
            f"{len(problems)} result lines could not be used ({written} records written and kept): "
            + "; ".join(problems[:5])
            + (" ..." if len(problems) > 5 else ""),
            field="cache",
            hint="their prompts stay pending: the next run sends them again",
        )


def ingest_files(recipe: Recipe, pending: list[Prompt], files: list[Path], writer, sink) -> None:
    """File mode (``dante cache --ingest``): result files of vLLM's run_batch or a provider."""
    failed, problems = ingest(recipe, pending, files, sink, writer.done)
    record_failures(writer, sink.summary, failed)
    raise_problems(problems, sink.summary.written)


def run_batches(
    recipe: Recipe, pending: list[Prompt], writer, sink, console: Console, *, client: BatchClient | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> None:  # fmt: skip
    """Hosted mode: submit what no batch holds, wait, and ingest every finished batch."""
    own = client is None
    client = client or BatchClient(recipe, sleep)
    try:
        run = BatchRun(recipe, writer, console, client, sleep)
        run.submit(pending)
        if recipe.teacher.batch_api.wait_hours > 0:
            run.wait()
        failed: dict[str, str] = {}
        problems: list[str] = []
        by_id = {p.id: p for p in pending}
        for b in [b for b in run.batches if b["status"] == "downloaded"]:
            mine = [by_id[i] for i in sorted(prompt_ids(b["custom_ids"])) if i in by_id]
            files = [run.folder / b[k] for k in ("output_file", "error_file") if b.get(k)]
            lost, found = ingest(recipe, mine, files, sink, writer.done)
            for p in mine:  # no result line at all: an expired, cancelled or failed batch
                if p.id not in writer.done and p.id not in lost:
                    lost[p.id] = f"no result in batch {b['batch_id']} ({b.get('final_status', 'done')})"
            failed.update(lost)
            problems += found
            b.update(status="ingested", failed=len(lost))
            run.save()
        record_failures(writer, sink.summary, failed)
        sink.summary.open_batches = len(run.active())
        raise_problems(problems, sink.summary.written)
    finally:
        if own:
            client.close()
