"""The per-item correctness the paired tests read from lm-eval's logged samples, the gap
recovered, and the two-level bootstrap over replicates and questions."""

import json

import pytest

from dante.eval.scores import correct_by_doc, gap_recovered, replicate_bootstrap


def test_correct_by_doc_reads_one_filters_copy_by_doc_id(tmp_path):
    rows = [{"doc_id": i, "filter": "strict-match", "exact_match": float(i % 2)} for i in range(4)]
    rows += [{"doc_id": i, "filter": "flexible-extract", "exact_match": 1.0} for i in range(4)]  # other filter's copy
    rows.append({"doc_id": 9, "filter": "strict-match", "score": 1.0})  # a row without the metric is not counted
    text = "".join(json.dumps(r) + "\n" for r in rows) + '{"doc_id": 7, "filter"'  # a torn last line is skipped
    (tmp_path / "samples_t.jsonl").write_text(text)
    assert correct_by_doc(tmp_path, "t", "exact_match", "strict-match") == {0: False, 1: True, 2: False, 3: True}
    assert correct_by_doc(tmp_path, "t", "exact_match", "flexible-extract") == dict.fromkeys(range(4), True)
    assert correct_by_doc(tmp_path, "other_task", "exact_match", "strict-match") is None  # samples not logged


def test_gap_recovered_by_hand():
    assert gap_recovered(0.397, 0.07, 0.81) == pytest.approx(0.327 / 0.74)  # section 6a's SFT: 44%
    assert gap_recovered(0.81, 0.07, 0.81) == 1.0 and gap_recovered(0.07, 0.07, 0.81) == 0.0
    assert gap_recovered(0.5, 0.6, 0.6) is None  # no gap to recover


def test_replicate_bootstrap_covers_runs_and_questions():
    same = {i: i % 2 == 0 for i in range(100)}
    assert replicate_bootstrap([(same, same)] * 3) == {"mean": 0.0, "ci95": (0.0, 0.0), "draws": 4000, "replicates": 3}
    wrong, right = dict.fromkeys(range(50), False), dict.fromkeys(range(50), True)
    assert replicate_bootstrap([(wrong, right)] * 2)["ci95"] == (1.0, 1.0)
    # one replicate, b right on half the questions a missed: the paired bootstrap over questions
    half = {i: i < 150 for i in range(300)}
    got = replicate_bootstrap([(dict.fromkeys(range(300), False), half)], draws=4000)
    assert got["mean"] == 0.5 and got["ci95"][0] == pytest.approx(0.5 - 1.96 * (0.25 / 300) ** 0.5, abs=0.01)
    # runs that disagree widen the interval: +0.2 in one replicate, −0.2 in another, 0 within each
    up = (dict.fromkeys(range(100), False), {i: i < 20 for i in range(100)})
    down = ({i: i < 20 for i in range(100)}, dict.fromkeys(range(100), False))
    mixed = replicate_bootstrap([up, down])
    assert mixed["mean"] == 0.0 and mixed["ci95"][0] < -0.15 and mixed["ci95"][1] > 0.15
    assert replicate_bootstrap([up, up])["ci95"][0] > 0.1  # the same gain twice holds
