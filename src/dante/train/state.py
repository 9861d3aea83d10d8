"""The running state of a training run (stage 4) that a checkpoint stores besides accelerate's
files (``checkpoint.save_checkpoint`` writes it as ``dante_state.json``): where the loop and each
batch source stand, so a resumed run continues exactly where the interrupted one was.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any


@dataclass
class RunState:
    step: int = 0  # optimizer steps done
    tokens: int = 0  # tokens trained on (every source, every rank)
    records: int = 0  # cached records trained on
    wall_time_s: float = 0.0  # training wall time of the earlier segments of the run
    cursor: int = 0  # the records source: its position in the curriculum's stream
    on_policy_cursor: int = 0  # the on-policy source: its position in the seeded prompt order
    on_policy_stats: dict[str, Any] | None = None  # the on-policy source's totals (OnPolicyStats)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunState:
        """A state as a checkpoint stored it (keys it does not know, from a later version, are left out)."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})
