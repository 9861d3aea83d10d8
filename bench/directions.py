"""Test directions written down before the test is read (docs/eval.md, "The replication standard").

    .venv/bin/python bench/directions.py                 # every comparison, its direction and whether it counts
    .venv/bin/python bench/directions.py --register reasoning:sft-op:think-keep-long --direction greater \\
        --source "validation, replicates 1-2 (BENCHMARKS 17): +4.5 and +2.0 points"

A comparison is ``TASK:SETTING:REFERENCE`` (a task and two settings of bench/capability_transfer.py).
Its entry in bench/results/directions.json holds the direction (``greater``, ``less`` or
``two-sided``), the validation result it came from, and when and at which commit it was written;
the first summary that reads the test split for it adds when that read happened
(``first_test_read``). A one-sided test is used only for an entry written before that first test
read; a comparison with no entry, or whose direction was written after its test read (``late``),
is tested two-sided, and the summary says so. Registering a direction for a comparison whose test
has been read is refused: it could not have been chosen blind. Commit the file after registering,
and again after the test read records itself.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

DATA = common.REPO / "bench" / "results" / "directions.json"
SIGNS = {"greater": 1, "less": -1, "two-sided": 0}


def load(path: Path = DATA) -> dict[str, Any]:
    if not path.is_file():
        return {"about": __doc__.split("\n\n")[2].replace("\n", " "), "comparisons": {}}
    return json.loads(path.read_text())


def save(data: dict[str, Any], path: Path = DATA) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def key(task: str, setting: str, reference: str) -> str:
    return f"{task}:{setting}:{reference}"


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def _commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=common.REPO, capture_output=True, text=True)
    except OSError:
        return None
    return out.stdout.strip() or None


def register(
    data: dict[str, Any], comparison: str, direction: str, source: str, *, now: str | None = None, commit=None
) -> dict[str, Any]:
    """Write ``comparison``'s direction before its test read; a ValueError when the test has been
    read (or the direction is not one of SIGNS)."""
    if direction not in SIGNS:
        raise ValueError(f"direction {direction!r}: one of {', '.join(SIGNS)}")
    if comparison.count(":") != 2:
        raise ValueError(f"comparison {comparison!r}: TASK:SETTING:REFERENCE")
    old = data["comparisons"].get(comparison)
    if old is not None and old.get("first_test_read"):
        raise ValueError(
            f"{comparison}: its test split was read on {old['first_test_read']}; a direction written now is not "
            "blind (it stays two-sided)"
        )
    entry = {
        "direction": direction,
        "from": source,
        "registered": now or _now(),
        "registered_commit": commit if commit is not None else _commit(),
        "first_test_read": None,
    }
    data["comparisons"][comparison] = entry
    return entry


def test_direction(
    data: dict[str, Any], comparison: str, *, record: bool = True, now: str | None = None
) -> tuple[int, str]:
    """(the sign a test of ``comparison`` uses, why): the registered direction when it was written
    before the first test read, else 0 (two-sided). ``record``: this is a test read; the entry's
    first one is stamped (the caller saves ``data``)."""
    entry = data["comparisons"].get(comparison)
    if entry is None:
        return 0, "two-sided: no direction was registered before the test read (bench/directions.py)"
    if entry.get("first_test_read") is None and record:
        entry["first_test_read"] = now or _now()
        entry["first_test_read_commit"] = _commit()
    first = entry.get("first_test_read")
    sign = SIGNS[entry["direction"]]
    if sign == 0:
        return 0, f"two-sided, as registered: {entry['from']}"
    if entry.get("late") or (first is not None and entry["registered"] >= first):
        why = entry.get("note") or "it was written at or after the first test read"
        return 0, f"two-sided: the direction ({entry['direction']}) was not fixed before the test read ({why})"
    return (
        sign,
        f"one-sided, {entry['direction']}, registered {entry['registered'][:10]} before the test read: {entry['from']}",
    )


def table(data: dict[str, Any]) -> str:
    lines = ["| comparison | direction | registered | first test read | the test uses |", "|---|---|---|---|---|"]
    for name, e in data["comparisons"].items():
        sign, why = test_direction(data, name, record=False)
        used = why.split(":")[0]
        lines.append(
            f"| {name} | {e['direction']} | {e['registered'][:10]} ({e.get('registered_commit') or '?'}) | "
            f"{(e.get('first_test_read') or 'not yet')[:10]} | {used} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--register", metavar="TASK:SETTING:REFERENCE", help="write a direction before the test read")
    ap.add_argument("--direction", choices=list(SIGNS), help="with --register")
    ap.add_argument("--source", help="with --register: the validation result the direction comes from")
    args = ap.parse_args(argv)
    data = load(args.data)
    if args.register:
        if not args.direction or not args.source:
            raise SystemExit("--register needs --direction and --source")
        try:
            register(data, args.register, args.direction, args.source)
        except ValueError as exc:
            raise SystemExit(str(exc)) from None
        save(data, args.data)
        print(f"{args.register}: {args.direction} registered in {args.data}; commit it before the test read")
    print(table(data))


if __name__ == "__main__":
    main()
