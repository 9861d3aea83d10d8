"""The running state of a training run (stage 4) that a checkpoint stores besides accelerate's
files (``checkpoint.save_checkpoint`` writes it as ``dante_state.json``): where the loop stands,
and each batch source's own state under its name (``BatchSource.state_dict``), so a resumed run
continues exactly where the interrupted one was.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any


@dataclass
class RunState:
    step: int = 0  # optimizer steps done
    tokens: int = 0  # tokens trained on (every source, every rank)
    records: int = 0  # records trained on (every source's: cached records, the student's samples' prompts)
    wall_time_s: float = 0.0  # training wall time of the earlier segments of the run
    sources: dict[str, dict[str, Any]] = field(default_factory=dict)  # each source's own state, by its name
    # a checkpoint of an older version: its keys this state does not know (a source takes back its
    # own, ``BatchSource.older_keys``); not written again
    older: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("older")
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunState:
        """A state as a checkpoint stored it; keys it does not know (an older or later version's)
        are kept apart in ``older``."""
        known = {f.name for f in fields(cls)} - {"sources", "older"}
        sources = {k: dict(v) for k, v in (data.get("sources") or {}).items()}
        older = {k: v for k, v in data.items() if k not in known and k != "sources"}
        return cls(**{k: v for k, v in data.items() if k in known}, sources=sources, older=older)

    def source_state(self, name: str, older_keys: dict[str, str]) -> dict[str, Any]:
        """What a source stored under its ``name``; from a checkpoint of before the sources kept
        their own state, its keys there (``older_keys``: old key -> the source's key)."""
        if name in self.sources:
            return self.sources[name]
        return {key: self.older[old] for old, key in older_keys.items() if self.older.get(old) is not None}
