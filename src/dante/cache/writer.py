"""Sharded, crash-safe cache writer: every record lands exactly once, even under SIGKILL.

Layout of a cache folder:
    shard-00000.jsonl ...    sealed shards (``cache.shard_size`` records; the last may be shorter)
    .partial-NNNNN.jsonl     the shard being written: append-only, fsynced every ``flush_every``
    manifest.json            counts, hashes, teacher settings (atomic rewrite)
    .lock                    flock held by the one writer
    .manifest.json.tmp-PID   a manifest being written (a kill can leave it; open() removes it)
A partial shard is sealed by an atomic rename to ``shard-NNNNN.jsonl``. On open, a torn or
bad tail of the partial (a kill mid-write) is cut off; ids in shards + partial are "done".
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
from pathlib import Path
from typing import Any

from dante.cache.records import CacheRecord
from dante.errors import DanteError, DataError
from dante.io import atomic_write_json, fsync_dir
from dante.layout import CACHE_MANIFEST

SHARD_RE = re.compile(r"^shard-(\d{5,})\.jsonl$")
PARTIAL_RE = re.compile(r"^\.partial-(\d{5,})\.jsonl$")
TEMP_RE = re.compile(r"^\..+\.tmp-\d+$")  # dante.io atomic-write temp files (manifest, recipe)


def shard_name(index: int) -> str:
    return f"shard-{index:05d}.jsonl"


def partial_name(index: int) -> str:
    return f".partial-{index:05d}.jsonl"


def disk_error(exc: OSError, path: Path, doing: str) -> DanteError:
    reason = {
        errno.ENOSPC: "disk full",
        errno.EDQUOT: "disk quota exceeded",
        errno.EACCES: "permission denied",
        errno.EPERM: "permission denied",
        errno.EROFS: "read-only file system",
    }.get(exc.errno or 0, exc.strerror or str(exc))
    return DanteError(
        f"cannot {doing}: {reason}",
        file=path,
        field="cache.dir",
        hint="free space or fix permissions, then re-run the same command: records already written are kept",
    )


def _valid_prefix(path: Path) -> tuple[list[str], int]:
    """Ids of the complete, valid lines at the start of a partial shard and their byte length."""
    ids: list[str] = []
    good = 0
    with open(path, "rb") as fh:
        data = fh.read()
    pos = 0
    while pos < len(data):
        end = data.find(b"\n", pos)
        if end < 0:
            break  # torn last line: no newline yet
        try:
            rec = CacheRecord.model_validate_json(data[pos:end])
        except ValueError:
            break  # a damaged line: everything from here on is regenerated
        ids.append(rec.id or "")
        pos = good = end + 1
    return ids, good


class CacheWriter:
    """Appends records to the current partial shard and seals full shards.

    ``open()`` recovers the folder and returns the ids already written; ``add()`` buffers a
    record; every ``flush_every`` records the buffer is written and fsynced; ``close(seal=True)``
    seals the last partial shard. Disk errors become a DanteError naming the path.
    """

    def __init__(
        self,
        directory: str | Path,
        *,
        shard_size: int = 1000,
        flush_every: int = 16,
        manifest: dict[str, Any] | None = None,
    ) -> None:
        self.dir = Path(directory)
        self.shard_size = shard_size
        self.flush_every = flush_every
        self.manifest_base = dict(manifest or {})
        self.done: set[str] = set()
        self.sealed_shards: list[str] = []
        self.sealed_records = 0
        self.index = 0  # number of the partial shard being written
        self.partial_records = 0  # durable lines in the partial
        self.buffer: list[str] = []
        self._fh: Any = None
        self._lock_fd: int | None = None
        self.broken = False  # a disk error happened: close() only releases

    # --- open / recover ------------------------------------------------------------------

    def open(self) -> set[str]:
        try:
            return self._recover()
        except BaseException:
            self.broken = True  # write nothing more; only release the lock so a later open can retry
            self.close()
            raise

    def _recover(self) -> set[str]:
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            self._lock()
            for p in self.dir.iterdir():  # left by a run killed mid atomic write; we hold the lock
                if TEMP_RE.match(p.name):
                    p.unlink(missing_ok=True)
            shards = sorted((int(m.group(1)), p) for p in self.dir.iterdir() if (m := SHARD_RE.match(p.name)))
            partials = sorted((int(m.group(1)), p) for p in self.dir.iterdir() if (m := PARTIAL_RE.match(p.name)))
        except OSError as exc:
            raise disk_error(exc, self.dir, "open the cache folder") from None
        for _, path in shards:
            try:
                data = path.read_bytes()
            except OSError as exc:
                raise disk_error(exc, path, "read the shard") from None
            for lineno, raw in enumerate(data.splitlines(), start=1):
                if not raw.strip():
                    continue
                try:
                    rec = CacheRecord.model_validate_json(raw)
                except ValueError as exc:
                    raise DataError(
                        f"sealed shard has a bad line ({str(exc).splitlines()[0]})",
                        file=path,
                        line=lineno,
                        hint="run `dante cache validate`; remove the shard to regenerate its records",
                    ) from None
                if rec.id in self.done:
                    raise DataError(f"duplicate id {rec.id!r} in sealed shards", file=path, line=lineno, field="id")
                self.done.add(rec.id or "")
                self.sealed_records += 1
            self.sealed_shards.append(path.name)
        self.index = shards[-1][0] + 1 if shards else 0
        # Normally at most one partial exists, numbered after the last shard. Older ones
        # (from an interrupted seal) are sealed first so their records are not lost.
        for i, (number, path) in enumerate(partials):
            try:
                ids, good = _valid_prefix(path)
            except OSError as exc:
                raise disk_error(exc, path, "read the partial shard") from None
            if any(x in self.done for x in ids):
                raise DataError(
                    "partial shard repeats ids of sealed shards", file=path, hint="delete this .partial file"
                )
            self._truncate(path, good)
            self.done.update(ids)
            if i < len(partials) - 1:  # never left by this writer; sealed so no record is lost
                self._seal(path, self.index, len(ids))
                self.index += 1 if ids else 0
                continue
            self.index, self.partial_records = max(number, self.index), len(ids)
            if number != self.index:
                self._rename(path, self.dir / partial_name(self.index))
                path = self.dir / partial_name(self.index)
            if self.partial_records >= self.shard_size:  # killed after its last write, before the seal
                self._seal(path, self.index, self.partial_records)
                self.index, self.partial_records = self.index + 1, 0
        self._open_partial()
        return set(self.done)

    def _rename(self, src: Path, dst: Path) -> None:
        try:
            os.replace(src, dst)
            fsync_dir(self.dir)
        except OSError as exc:
            raise disk_error(exc, dst, "rename the partial shard") from None

    def _lock(self) -> None:
        import fcntl

        self._lock_fd = os.open(self.dir / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            self._lock_fd = None
            raise DanteError(
                "another `dante cache` is writing this cache",
                file=self.dir,
                hint="wait for it or use another cache.dir",
            ) from None

    def _truncate(self, path: Path, size: int) -> None:
        try:
            if path.stat().st_size != size:
                with open(path, "r+b") as fh:
                    fh.truncate(size)
                    fh.flush()
                    os.fsync(fh.fileno())
        except OSError as exc:
            raise disk_error(exc, path, "repair the partial shard") from None

    def _open_partial(self) -> None:
        path = self.dir / partial_name(self.index)
        try:
            self._fh = open(path, "ab")  # noqa: SIM115 (held open across add() calls; closed by seal/close)
            fsync_dir(self.dir)
        except OSError as exc:
            raise disk_error(exc, path, "create the partial shard") from None

    # --- writing -------------------------------------------------------------------------

    @property
    def records(self) -> int:
        """Records written or buffered so far (sealed + partial + buffer)."""
        return self.sealed_records + self.partial_records + len(self.buffer)

    def add(self, record: CacheRecord) -> None:
        if record.id in self.done:
            return  # exactly once: an id already written is never written again
        self.done.add(record.id or "")
        self.buffer.append(record.to_json())
        if len(self.buffer) >= self.flush_every or self.partial_records + len(self.buffer) >= self.shard_size:
            self.flush()

    def flush(self) -> None:
        """Make buffered records durable (one write + fsync); seal the shard if it is full."""
        if self._fh is None:
            return
        path = self.dir / partial_name(self.index)
        while self.buffer:
            room = self.shard_size - self.partial_records
            lines, self.buffer = self.buffer[:room], self.buffer[room:]
            start = self._fh.tell()
            try:
                self._fh.write(("\n".join(lines) + "\n").encode("utf-8"))
                self._fh.flush()
                os.fsync(self._fh.fileno())
            except OSError as exc:
                self.buffer = lines + self.buffer
                with contextlib.suppress(OSError):  # best effort: leave no torn line behind (open() cuts one anyway)
                    self._fh.truncate(start)
                self.broken = True
                raise disk_error(exc, path, "write the cache") from None
            self.partial_records += len(lines)
            if self.partial_records >= self.shard_size:
                self._fh.close()
                self._fh = None
                self._seal(path, self.index, self.partial_records)
                self.index += 1
                self.partial_records = 0
                self._open_partial()

    def _seal(self, partial: Path, index: int, count: int) -> None:
        target = self.dir / shard_name(index)
        try:
            if count == 0:
                partial.unlink(missing_ok=True)
            else:
                os.replace(partial, target)
                self.sealed_shards.append(target.name)
                self.sealed_records += count
            fsync_dir(self.dir)
        except OSError as exc:
            self.broken = True
            raise disk_error(exc, target, "seal the shard") from None
        self.write_manifest()

    def write_manifest(self, **extra: Any) -> None:
        path = self.dir / CACHE_MANIFEST
        data = {
            **self.manifest_base,
            "records": self.sealed_records + self.partial_records,
            "sealed_records": self.sealed_records,
            "partial_records": self.partial_records,
            "shards": list(self.sealed_shards),
            "shard_size": self.shard_size,
            **extra,
        }
        self.manifest_base.update(extra)
        try:
            atomic_write_json(path, data)
        except OSError as exc:
            self.broken = True
            raise disk_error(exc, path, "write the manifest") from None

    def close(self, *, seal: bool = False, **manifest_extra: Any) -> None:
        """Flush; with ``seal`` turn the partial shard into a final shard. Always releases the lock."""
        try:
            if self._fh is not None and not self.broken:
                self.flush()
                self._fh.close()
                self._fh = None
                path = self.dir / partial_name(self.index)
                if seal:
                    self._seal(path, self.index, self.partial_records)
                    self.partial_records = 0
                    self.index += 1
                self.write_manifest(**manifest_extra)
        finally:
            if self._fh is not None:
                with contextlib.suppress(OSError):
                    self._fh.close()
                self._fh = None
            if self._lock_fd is not None:
                os.close(self._lock_fd)
                self._lock_fd = None
