"""Reliability suite (docs/reliability.md): crash, disk, bad-input, flaky-server, secrets and
property tests. At the end of the session it prints how many faults it injected and how many
records it checked, and the seed that replays its random choices."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from rel_support import SEED, TALLY  # noqa: E402


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    if not TALLY:
        return
    tr = terminalreporter
    tr.write_sep("=", "reliability: faults injected, records checked")
    faults = sum(v for k, v in TALLY.items() if k.startswith(("kill", "fault")))
    for key in sorted(TALLY):
        tr.write_line(f"  {key:<60} {TALLY[key]:>7}")
    total = "faults injected (kills + faults), total"
    tr.write_line(f"  {total:<60} {faults:>7}")
    tr.write_line(f"  seed {SEED}: replay with DANTE_RELIABILITY_SEED={SEED}")
