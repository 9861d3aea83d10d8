"""The prompts' section of the recipe (stage 0, ``dante.prompts``): sources, curation, splits."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from dante.config.base import Section


class SourceFields(Section):
    """One prompt source and which fields mean what (``prompts`` itself, or one of ``prompts.sources``)."""

    source: str = Field(
        "",
        description="A .jsonl/.json/.parquet/.csv file, a folder of them, a datasets name, or a procedural task "
        "'reasoning_gym:TASK' (dante.procedural).",
    )
    format: Literal["auto", "jsonl", "json", "parquet", "csv", "datasets", "reasoning_gym"] = Field(
        "auto", description="How to read source (auto: from the file suffix or the 'reasoning_gym:' prefix)."
    )
    task_settings: dict[str, Any] = Field(
        default_factory=dict, description="reasoning_gym sources: the task's settings (e.g. {max_terms: 2})."
    )
    seed: int = Field(
        0,
        description="reasoning_gym sources: seed of the item stream (splits never meet, whatever the seed); "
        "a mixture's sampling seed.",
    )
    subset: str | None = Field(None, description="datasets config name (load_dataset(source, subset)).")
    split: str = Field(
        "train", description="datasets split; for reasoning_gym sources train, validation or test (distill on train)."
    )
    prompt_field: str = Field("prompt", description="Column holding the prompt text.")
    messages_field: str | None = Field(None, description="Column holding a chat message list (overrides prompt_field).")
    system_field: str | None = Field(None, description="Column holding a per-row system prompt.")
    system_prompt: str | None = Field(None, description="One system prompt for every row.")
    id_field: str | None = Field(None, description="Column with a stable id; default: hash of prompt and source.")
    template: str | None = Field(
        None, description="Python format string applied to the prompt text, e.g. 'Question: {prompt}\\nAnswer:'."
    )
    rows: str | None = Field(None, description="Declared row range 'start:stop' (e.g. '0:600'); the rest is held out.")
    limit: int | None = Field(None, ge=1, description="Use only the first N prompts (after rows).")
    max_prompt_chars: int = Field(200_000, ge=1, description="Longer prompts are an error naming the row.")


class SourceConfig(SourceFields):
    """One source of a prompt mixture (``prompts.sources``)."""

    weight: float | None = Field(
        None,
        ge=0.0,
        description="Share of the final set (weights are normalised); null on every source: all of each source.",
    )
    license: str | None = Field(None, description="The source's licence, as you declare it (dataset cards).")


class DedupConfig(Section):
    """Duplicate prompts, inside and across sources (dante.prompts.dedup); the first one is kept."""

    exact: bool = Field(False, description="Drop prompts whose normalised text (NFKC, case, spaces) was seen before.")
    near: bool = Field(False, description="Drop near duplicates: MinHash LSH (datasketch) on word shingles.")
    shingle: int = Field(5, ge=1, description="Words per shingle for near duplicates.")
    threshold: float = Field(
        0.8, gt=0.0, le=1.0, description="Jaccard similarity of shingle sets from which a prompt is a near duplicate."
    )
    num_perm: int = Field(128, ge=16, le=1024, description="MinHash permutations (accuracy of the LSH).")


class DecontaminateConfig(Section):
    """Benchmark decontamination (dante.prompts.decontaminate): a prompt sharing a word n-gram with an
    evaluated task's question or reference answer is removed, and the manifest names the match."""

    tasks: list[str] = Field(
        default_factory=list,
        description="lm-eval tasks whose documents are available offline (dante's local and procedural tasks, ...); "
        "'eval' adds every task the recipe's eval stage runs.",
    )
    files: list[str] = Field(
        default_factory=list, description="Files (.jsonl/.json/.parquet/.csv): every string field of a row is checked."
    )
    ngram: int = Field(13, ge=1, description="Words per n-gram (13: the GPT-3 paper's and lm-eval's choice).")
    min_words: int = Field(
        8,
        ge=1,
        description="A document field shorter than ngram words is matched whole when it has at least this many "
        "words (GPT-3's floor of 8); shorter ones cannot be checked and are counted.",
    )

    @model_validator(mode="before")
    @classmethod
    def _from_list(cls, data: Any) -> Any:
        """``decontaminate: [gsm8k_local, bench.jsonl]``: names that look like files are files."""
        if isinstance(data, list | tuple):
            files = [x for x in data if isinstance(x, str) and _looks_like_file(x)]
            return {"tasks": [x for x in data if x not in files], "files": files}
        return data

    @property
    def enabled(self) -> bool:
        return bool(self.tasks or self.files)


def _looks_like_file(name: str) -> bool:
    return name.lower().endswith((".jsonl", ".ndjson", ".json", ".parquet", ".csv")) or "/" in name


class PromptsConfig(SourceFields):
    """Where prompts come from: one source (the fields above) or a mixture (``sources``), optionally
    de-duplicated and decontaminated into a curated set (``dante prompts build``)."""

    sources: list[SourceConfig] = Field(
        default_factory=list, description="A mixture of sources, each with its own fields, limit and weight."
    )
    size: int | None = Field(
        None, ge=1, description="Prompts in a weighted mixture (default: the most that keep the weights)."
    )
    dedup: DedupConfig = Field(default_factory=DedupConfig, description="Exact and near-duplicate removal.")
    decontaminate: DecontaminateConfig = Field(
        default_factory=DecontaminateConfig, description="Benchmark decontamination (word n-gram overlap)."
    )
    dir: Path | None = Field(None, description="Folder of the curated set (default: <output_dir>/prompts).")

    @model_validator(mode="after")
    def _one_form(self) -> PromptsConfig:
        if self.sources and self.source:
            raise ValueError("set prompts.source (one source) or prompts.sources (a mixture), not both")
        weights = [s.weight for s in self.sources]
        if any(w is not None for w in weights):
            if any(w is None for w in weights):
                missing = [i for i, w in enumerate(weights) if w is None]
                raise ValueError(f"give every source a weight or none (prompts.sources{missing} has none)")
            if sum(weights) <= 0:
                raise ValueError("the weights of prompts.sources are all zero")
        elif self.size is not None and self.sources:
            raise ValueError("prompts.size needs weights on prompts.sources")
        return self

    @property
    def curated(self) -> bool:
        """True when prompts go through ``dante prompts build`` (a mixture, dedup or decontamination)."""
        return bool(self.sources) or self.dedup.exact or self.dedup.near or self.decontaminate.enabled

    def source_list(self) -> list[SourceConfig]:
        """The sources of the set: ``sources``, or the one source the top-level fields describe."""
        if self.sources:
            return list(self.sources)
        fields = {k: getattr(self, k) for k in SourceFields.model_fields}
        return [SourceConfig(**fields)]
