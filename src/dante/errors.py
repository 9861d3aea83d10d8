"""Errors a user can act on: every one names where the problem is (file, line, field).

Stages raise these instead of letting a library traceback reach the terminal; the CLI
prints them on one line and exits non-zero.
"""

from __future__ import annotations

from pathlib import Path


class DanteError(Exception):
    """A problem in the user's input or environment, with its location.

    Rendered as ``file:line: field: problem`` (parts that are unknown are left out).
    """

    def __init__(
        self,
        message: str,
        *,
        file: str | Path | None = None,
        line: int | None = None,
        field: str | None = None,
        hint: str | None = None,
    ) -> None:
        self.message = message
        self.file = str(file) if file is not None else None
        self.line = line
        self.field = field
        self.hint = hint
        super().__init__(self.render())

    def render(self) -> str:
        where = ""
        if self.file is not None:
            where = self.file + (f":{self.line}" if self.line is not None else "") + ": "
        elif self.line is not None:
            where = f"line {self.line}: "
        field = f"{self.field}: " if self.field else ""
        hint = f" ({self.hint})" if self.hint else ""
        return f"{where}{field}{self.message}{hint}"


class ConfigError(DanteError):
    """A recipe that does not parse or validate."""


class DataError(DanteError):
    """A prompt file or cache file with a bad line."""
