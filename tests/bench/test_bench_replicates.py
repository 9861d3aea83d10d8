"""bench/replicates.py: per-replicate counts rebuilt as paired questions, and replicates added
from a capability_transfer summary."""

import importlib.util
import json
import random
import sys
from pathlib import Path

import pytest

from dante.eval.scores import mcnemar_exact, replicate_bootstrap

_SPEC = importlib.util.spec_from_file_location("replicates", Path(__file__).parents[2] / "bench" / "replicates.py")
replicates = importlib.util.module_from_spec(_SPEC)
sys.modules["replicates"] = replicates
_SPEC.loader.exec_module(replicates)


def test_counts_rebuild_the_paired_questions():
    a, b = replicates.pairs_from_counts(10, reference=4, setting=6, won=3, lost=1)
    assert sum(a.values()) == 4 and sum(b.values()) == 6
    assert mcnemar_exact(a, b) == {"rows": 10, "b_only": 3, "a_only": 1, "p_value": pytest.approx(0.625)}
    with pytest.raises(ValueError, match="inconsistent counts"):
        replicates.pairs_from_counts(10, reference=4, setting=6, won=1, lost=1)  # 6 - 1 != 4 - 1
    with pytest.raises(ValueError, match="inconsistent counts"):
        replicates.pairs_from_counts(5, reference=5, setting=5, won=1, lost=1)  # 4 both + 1 + 1 > 5 questions
    assert sum(replicates.pairs_from_counts(5, reference=4, setting=4, won=1, lost=1)[0].values()) == 4  # 3 + 1 + 1


def test_the_bootstrap_from_counts_matches_the_original_questions():
    rng = random.Random(0)
    originals, rebuilt = [], []
    for _ in range(4):
        a = {q: rng.random() < 0.4 for q in range(300)}
        b = {q: rng.random() < (0.7 if a[q] else 0.2) for q in range(300)}
        t = mcnemar_exact(a, b)
        originals.append((a, b))
        rebuilt.append(replicates.pairs_from_counts(300, sum(a.values()), sum(b.values()), t["b_only"], t["a_only"]))
    x, y = replicate_bootstrap(originals, draws=20_000), replicate_bootstrap(rebuilt, draws=20_000)
    assert x["mean"] == pytest.approx(y["mean"], abs=1e-12)
    assert x["ci95"] == pytest.approx(y["ci95"], abs=0.006)  # the same distribution, Monte Carlo apart


def test_replicates_added_from_a_summary_join_the_verdict(tmp_path, capsys):
    data = {
        "comparisons": {
            "k": {
                "task": "t",
                "setting": "new",
                "reference": "old",
                "comparison": "t:new:old",
                "replicates": [
                    {"replicate": r, "n": 100, "reference": 10, "setting": 30, "won": 22, "lost": 2} for r in (1, 2, 3)
                ],
            }
        }
    }
    path = tmp_path / "replicates.json"
    path.write_text(json.dumps(data))
    summary = {
        "args": {"reference": "old"},
        "machine": "cpu",
        "settings": {
            "old": {"per_replicate": {"4": 0.1, "5": 0.12}},
            "new": {
                "per_replicate": {"4": 0.31, "5": 0.2},
                "vs_sft": {
                    "4": {"rows": 100, "b_only": 23, "a_only": 2},
                    "5": {"rows": 100, "b_only": 10, "a_only": 2},
                },
            },
        },
    }
    (tmp_path / "s.json").write_text(json.dumps(summary))
    registry = {"comparisons": {"t:new:old": {"direction": "greater", "from": "validation", "registered": "2026-01-01",
                                              "first_test_read": "2026-01-02"}}}  # fmt: skip
    (tmp_path / "directions.json").write_text(json.dumps(registry))
    argv = ["--data", str(path), "--add", str(tmp_path / "s.json"), "--comparison", "k:new:old"]
    argv += ["--directions", str(tmp_path / "directions.json")]
    replicates.main(argv)
    out = capsys.readouterr().out
    stored = json.loads(path.read_text())["comparisons"]["k"]["replicates"]
    assert [r["replicate"] for r in stored] == [1, 2, 3, 4, 5] and stored[3]["setting"] == 31
    assert "0.0312 (greater) | **holds**" in out  # 5 positive replicates: p = 1/32
    replicates.main(argv)  # adding the same summary again replaces, never duplicates
    assert len(json.loads(path.read_text())["comparisons"]["k"]["replicates"]) == 5
    with pytest.raises(SystemExit, match="compares new with old"):
        replicates.main(["--data", str(path), "--add", str(tmp_path / "s.json"), "--comparison", "k:old:new"])
