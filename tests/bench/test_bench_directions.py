"""bench/directions.py: a one-sided test only for a direction written before the first test read."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).parents[2] / "bench"
sys.path.insert(0, str(BENCH))
_SPEC = importlib.util.spec_from_file_location("directions", BENCH / "directions.py")
directions = importlib.util.module_from_spec(_SPEC)
sys.modules["directions"] = directions
_SPEC.loader.exec_module(directions)


def test_a_direction_registered_before_the_test_read_is_used_one_sided():
    data = {"comparisons": {}}
    directions.register(data, "t:new:old", "greater", "validation +3", now="2026-12-07T10:00:00+00:00", commit="abc")
    sign, why = directions.test_direction(data, "t:new:old", now="2026-12-07T11:00:00+00:00")
    assert sign == 1 and why.startswith("one-sided, greater")
    assert data["comparisons"]["t:new:old"]["first_test_read"] == "2026-12-07T11:00:00+00:00"  # stamped once
    assert directions.test_direction(data, "t:new:old", now="2026-12-08T00:00:00+00:00")[0] == 1
    assert data["comparisons"]["t:new:old"]["first_test_read"] == "2026-12-07T11:00:00+00:00"
    with pytest.raises(ValueError, match="not blind"):  # after the read nobody can choose it again
        directions.register(data, "t:new:old", "less", "a later look")


def test_no_entry_late_or_two_sided_entries_are_tested_two_sided():
    data = {"comparisons": {}}
    assert directions.test_direction(data, "t:a:b")[1].startswith("two-sided: no direction was registered")
    late = {"direction": "less", "from": "v", "registered": "2026-12-05", "first_test_read": "2026-12-03"}
    same = {"direction": "less", "from": "v", "registered": "2026-12-05", "first_test_read": "2026-12-05"}
    two = {"direction": "two-sided", "from": "none", "registered": "2026-12-01", "first_test_read": "2026-12-05"}
    data["comparisons"].update({"t:late:b": late, "t:same:b": same, "t:two:b": two})
    assert directions.test_direction(data, "t:late:b")[0] == 0  # written after the test was read
    assert directions.test_direction(data, "t:same:b")[0] == 0  # the order is not shown
    assert directions.test_direction(data, "t:two:b") == (0, "two-sided, as registered: none")
    with pytest.raises(ValueError, match="one of"):
        directions.register(data, "t:x:y", "up", "?")


def test_the_committed_registry_keeps_the_late_rows_two_sided_and_the_reasoning_row_one_sided():
    data = json.loads((BENCH / "results" / "directions.json").read_text())
    assert directions.test_direction(data, "reasoning:think-keep-long:think-drop-long", record=False)[0] == 1
    for late in ("chain_sum:sft-kd:sft", "chain_sum:no-curriculum:sft", "chain_sum:gold-lr2e-5:sft"):
        assert directions.test_direction(data, late, record=False)[0] == 0, late


def test_register_from_the_command_line(tmp_path, capsys):
    path = tmp_path / "d.json"
    directions.main(["--data", str(path), "--register", "t:a:b", "--direction", "less", "--source", "val -2"])
    assert json.loads(path.read_text())["comparisons"]["t:a:b"]["direction"] == "less"
    assert "t:a:b | less" in capsys.readouterr().out
