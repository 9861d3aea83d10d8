"""Benchmark decontamination (stage 1, curation): a prompt that shares a word n-gram with an
evaluated task's question or reference answer is removed, and the match is named.

Texts are compared as ``dedup.words`` (NFKC, case-folded, punctuation ignored). Every n-word
window of a document field is a key; a field shorter than n words is one key (itself) when it
has at least ``min_words`` words (GPT-3's rule for short examples), and cannot be checked
otherwise (counted per task). Prompts are scanned in batches with numpy: words become ids of
the documents' vocabulary (0: a word no document has, in no key), every window gets a
64-bit polynomial hash, hashes are looked up with ``np.isin``, and each hit is confirmed on
the words themselves, so a hash collision never removes a prompt.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dante.benchmarks import KNOWN, spec_for, tasks_dir
from dante.errors import DataError
from dante.prompts.dedup import words
from dante.prompts.sources import FILE_FORMATS, READERS, resolve_source

_BASE = np.uint64(0x9E3779B97F4A7C15)  # odd multiplier of the rolling hash (mod 2^64)
_MASK = (1 << 64) - 1
BATCH_WORDS = 4_000_000  # words of prompts hashed at once (~100 MB of int64/uint64 arrays)


@dataclass(frozen=True)
class Document:
    """One text of an evaluation set: a task's question or reference answer, or a file's field."""

    task: str
    doc_id: str
    field: str  # "question" | "answer" | a file's column
    text: str


@dataclass(frozen=True)
class Match:
    """Why a prompt was removed: the n-gram it shares with a document."""

    task: str
    doc_id: str
    field: str
    ngram: str

    def as_dict(self) -> dict[str, str]:
        return {"task": self.task, "doc_id": self.doc_id, "field": self.field, "ngram": self.ngram}


@dataclass
class TaskCounts:
    """What was checked of one task (or file): documents, fields, keys, fields too short to check."""

    documents: int = 0
    fields: int = 0
    keys: int = 0
    too_short: int = 0
    removed: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


def _hash(ids: Sequence[int]) -> int:
    """The rolling hash of one key, as ``_window_hashes`` computes it for every window."""
    h = 0
    for x in ids:
        h = (h * int(_BASE) + x) & _MASK
    return h


def _window_hashes(flat: np.ndarray, length: int) -> np.ndarray:
    """Hash of every ``length``-word window of ``flat`` (uint64 arithmetic wraps mod 2^64)."""
    count = len(flat) - length + 1
    h = np.zeros(count, dtype=np.uint64)
    ids = flat.astype(np.uint64)
    with np.errstate(over="ignore"):
        for j in range(length):
            h = h * _BASE + ids[j : j + count]
    return h


@dataclass
class NgramIndex:
    """The keys of a set of documents, by length, each with the first document that has it."""

    n: int = 13
    min_words: int = 8
    vocab: dict[str, int] = field(default_factory=dict)
    keys: dict[int, dict[tuple[int, ...], Document]] = field(default_factory=dict)
    hashes: dict[int, np.ndarray] = field(default_factory=dict)  # sorted key hashes, by key length
    counts: dict[str, TaskCounts] = field(default_factory=dict)
    _words: list[str] = field(default_factory=list, repr=False)

    @classmethod
    def build(cls, documents: Iterable[Document], n: int = 13, min_words: int = 8) -> NgramIndex:
        index = cls(n=n, min_words=min_words)
        seen_docs: set[tuple[str, str]] = set()
        for doc in documents:
            counts = index.counts.setdefault(doc.task, TaskCounts())
            if (doc.task, doc.doc_id) not in seen_docs:
                seen_docs.add((doc.task, doc.doc_id))
                counts.documents += 1
            counts.fields += 1
            tokens = words(doc.text)
            if len(tokens) < min(n, min_words):
                counts.too_short += 1
                continue
            ids = tuple(index.vocab.setdefault(w, len(index.vocab) + 1) for w in tokens)
            length = min(n, len(ids))
            table = index.keys.setdefault(length, {})
            for i in range(len(ids) - length + 1):
                key = ids[i : i + length]
                if key not in table:
                    table[key] = doc
                    counts.keys += 1
        index.hashes = {
            length: np.unique(np.array([_hash(k) for k in table], dtype=np.uint64))
            for length, table in index.keys.items()
        }
        return index

    def ngram_text(self, ids: Iterable[int]) -> str:
        if len(self._words) != len(self.vocab) + 1:
            self._words = ["", *self.vocab]  # ids are 1, 2, ... in insertion order
        return " ".join(self._words[i] for i in ids)

    def _ids(self, text: str) -> list[int]:
        get = self.vocab.get
        return [get(w, 0) for w in words(text)]

    def find(self, texts: Sequence[str], advance: Callable[[int], None] | None = None) -> dict[int, Match]:
        """The first match (shortest key length first, then position) of every contaminated text."""
        found: dict[int, Match] = {}
        if not self.keys:
            if advance is not None:
                advance(len(texts))
            return found
        start = 0
        while start < len(texts):
            flat: list[int] = []
            stop = start
            while stop < len(texts) and len(flat) < BATCH_WORDS:
                flat += self._ids(texts[stop])
                flat.append(-1)  # a separator: no window spans two prompts
                stop += 1
            self._scan(np.array(flat, dtype=np.int64), start, found)
            if advance is not None:
                advance(stop - start)
            start = stop
        return found

    def _scan(self, flat: np.ndarray, first: int, found: dict[int, Match]) -> None:
        owner = first + np.concatenate(([0], np.cumsum(flat < 0)[:-1]))  # text index of every position
        # windows holding a separator (-1) or a word no document has (0) cannot match
        unknown = np.concatenate(([0], np.cumsum(flat <= 0)))
        for length in sorted(self.keys):
            if len(flat) < length:
                continue
            count = len(flat) - length + 1
            clean = (unknown[length : length + count] - unknown[:count]) == 0
            hits = np.flatnonzero(clean & np.isin(_window_hashes(flat, length), self.hashes[length]))
            table = self.keys[length]
            for pos in hits:
                text_index = int(owner[pos])
                if text_index in found:
                    continue
                key = tuple(int(x) for x in flat[pos : pos + length])
                doc = table.get(key)
                if doc is not None:  # None: a hash collision
                    found[text_index] = Match(doc.task, doc.doc_id, doc.field, self.ngram_text(key))


# -- documents ------------------------------------------------------------------------------


def _as_text(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return "\n".join(value)
    return None


def task_documents(names: Sequence[str]) -> list[Document]:
    """The questions and reference answers of lm-eval tasks (groups expand to their tasks),
    from their evaluation split; a task whose data cannot be read offline is a DataError."""
    if not names:
        return []
    from lm_eval.tasks import TaskManager

    manager = TaskManager(
        include_path=str(tasks_dir()), include_defaults=not all(KNOWN.get(n) and KNOWN[n].local for n in names)
    )
    for name in names:
        if name not in manager.all_tasks:
            close = difflib.get_close_matches(name, manager.all_tasks, n=3)
            raise DataError(
                f"unknown evaluation task {name!r}",
                field="prompts.decontaminate.tasks",
                hint=(f"did you mean {', '.join(close)}? " if close else "")
                + "use an lm-eval task name, 'eval', or a file in prompts.decontaminate.files",
            )
    documents: list[Document] = []
    for name in names:
        try:
            loaded = manager.load([name])["tasks"]
        except Exception as exc:  # noqa: BLE001 - lm-eval/datasets raise many types (offline hub access, ...)
            raise DataError(
                f"cannot read the documents of task {name!r} ({type(exc).__name__}: {exc})"[:400],
                field="prompts.decontaminate.tasks",
                hint="its data is not available offline; give its questions as a file in prompts.decontaminate.files",
            ) from None
        for task_name, task in loaded.items():
            documents += _documents_of(str(task_name), task, spec_for(str(task_name)).answer_field)
    return documents


ID_FIELDS = ("task_id", "id", "doc_id", "row")  # a document's own id when it has one (HumanEval/0, GSM8K's row)


def _doc_id(doc: Any, index: int) -> str:
    if isinstance(doc, dict):
        for key in ID_FIELDS:
            if doc.get(key) is not None and not isinstance(doc[key], list | dict):
                return str(doc[key])
    return str(index)


def _documents_of(name: str, task: Any, answer_field: str | None) -> list[Document]:
    documents = []
    for i, doc in enumerate(task.eval_docs):
        doc_id = _doc_id(doc, i)
        question = task.doc_to_text(doc)
        if isinstance(question, str):
            documents.append(Document(name, doc_id, "question", question))
        if answer_field and isinstance(doc, dict) and isinstance(doc.get(answer_field), str):
            answer = doc[answer_field]
        else:
            answer = task.doc_to_target(doc)
            if isinstance(answer, int) and task.config.doc_to_choice is not None:
                choices = task.doc_to_choice(doc)
                answer = choices[answer] if 0 <= answer < len(choices) else None
        answer = _as_text(answer)
        if answer:
            documents.append(Document(name, doc_id, "answer", answer))
    return documents


def file_documents(path: str, base_dir: str | Path | None = None) -> list[Document]:
    """Every string field (and chat message content) of every row of a .jsonl/.json/.parquet/.csv file."""
    resolved = resolve_source(path, base_dir)
    if resolved is None or not resolved.is_file():
        raise DataError("decontamination file does not exist", file=path, field="prompts.decontaminate.files")
    fmt = FILE_FORMATS.get(resolved.suffix.lower())
    if fmt is None:
        raise DataError(
            f"unknown file type {resolved.suffix!r} (use .jsonl, .json, .parquet or .csv)",
            file=path,
            field="prompts.decontaminate.files",
        )
    documents = []
    for location, row in READERS[fmt](resolved):
        doc_id = location.removeprefix(f"{resolved}").lstrip(": ") or location
        for key, value in row.items():
            if isinstance(value, list) and all(isinstance(m, dict) for m in value):
                value = "\n".join(str(m.get("content", "")) for m in value)
            text = _as_text(value)
            if text:
                documents.append(Document(path, doc_id, str(key), text))
    return documents
