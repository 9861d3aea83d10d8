"""The base of every recipe section, and the one-line notice an old key gets when it loads."""

from __future__ import annotations

import sys

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    """Base of every config section: unknown keys are errors, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())


def _notice(line: str) -> None:
    print(f"dante: {line}", file=sys.stderr)
