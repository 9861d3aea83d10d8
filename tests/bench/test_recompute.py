"""bench/recompute.py and bench/per_question.py: every headline figure recomputes from the committed
data, and a figure whose data or text moves is caught."""

import copy
import gzip
import importlib.util
import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).parents[2] / "bench"


def _load(name):
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


per_question = _load("per_question")
replicates = _load("replicates")
recompute = _load("recompute")


def test_every_figure_of_the_readme_and_benchmarks_recomputes():
    rows, problems = recompute.run()
    bad = [(r["what"], r["status"], r.get("numbers")) for r in rows if r["status"] != "ok"]
    assert bad == [] and problems == []
    assert {r["doc"] for r in rows} == {"README", "BENCHMARKS"}
    assert len(rows) >= 30


def test_a_moved_count_is_caught(tmp_path):
    data = json.loads(replicates.DATA.read_text())
    rep = data["comparisons"]["chain_sum-demo"]["replicates"][0]
    rep["setting"] += 3  # 138 -> 141 correct: the headline's r1 becomes 47.0%, its mean 39.9%
    rep["won"] += 3
    path = tmp_path / "replicates.json"
    path.write_text(json.dumps(data))
    rows, _ = recompute.run(path)
    moved = {r["what"]: r for r in rows if r["status"] != "ok"}
    assert "headline: student after, 5 replicates" in moved
    assert "printed 39.7, recomputed 39.9" in moved["headline: student after, 5 replicates"]["numbers"]
    assert "headline: teacher" not in moved  # the teacher's count did not move


def test_an_edited_sentence_is_caught(tmp_path):
    readme = (recompute.DOCS["README"]).read_text(encoding="utf-8")
    assert "(+40.2 points, p = 0.031)" in readme
    (tmp_path / "README.md").write_text(readme.replace("(+40.2 points, p = 0.031)", "(+41.2 points, p = 0.031)"))
    docs = {**recompute.DOCS, "README": tmp_path / "README.md"}
    rows, _ = recompute.run(docs=docs)
    bad = [r for r in rows if r["status"] != "ok"]
    assert [r["what"] for r in bad] == ["headline sentence: reasoning"]
    assert bad[0]["numbers"] == ["printed +41.2, recomputed +40.2"]


def test_find_matches_words_exactly_and_numbers_within_the_tolerance():
    docs = {"README": recompute.normalise("a **−1.8** (−4.4, +0.8) b\nand | x | 12.0 / 9.0 |")}
    fig = recompute.Figure("README", "w", "a -1.8 (-4.4, +0.9) b", "counts", tolerance=0.2)
    assert recompute.find(fig, docs)["status"] == "ok"
    exact = recompute.Figure("README", "w", "a -1.8 (-4.4, +0.9) b", "counts")
    assert recompute.find(exact, docs) == {
        "status": "differs",
        "printed": "a -1.8 (-4.4, +0.8) b",
        "numbers": ["printed +0.8, recomputed +0.9"],
    }
    assert recompute.find(recompute.Figure("README", "w", "| y | 12.0 / 9.0 |", "c"), docs)["status"] == "not found"
    assert recompute.find(recompute.Figure("README", "w", "| x | 12.0 / 9.0 |", "c"), docs)["status"] == "ok"


def test_per_question_files_merge_replace_and_are_byte_stable(tmp_path):
    path = per_question.path_for("t", "test", tmp_path)
    per_question.merge(path, "t", "test", "task_t", {"teacher": {0: True, 1: False, 2: True}}, "cpu")
    first = path.read_bytes()
    per_question.merge(path, "t", "test", "task_t", {"teacher": {0: True, 1: False, 2: True}}, "cpu")
    assert path.read_bytes() == first  # no timestamp in the gzip header
    per_question.merge(path, "t", "test", "task_t", {"r1/student-a": {1: True, 3: False}})
    data = per_question.load(path)
    assert data["questions"] == [0, 1, 2, 3]
    assert data["models"] == {"r1/student-a": ".1.0", "teacher": "101."}
    assert per_question.correct(path, "r1/student-a") == {1: True, 3: False}
    per_question.merge(path, "t", "test", "task_t", {"teacher": {0: False, 1: False, 2: True, 3: True}})
    assert per_question.correct(path, "teacher") == {0: False, 1: False, 2: True, 3: True}  # replaced
    with pytest.raises(KeyError, match="no model 'b'"):
        per_question.correct(path, "b")
    with pytest.raises(ValueError, match="holds t/test/task_t, not t/validation"):
        per_question.merge(path, "t", "validation", "task_t", {"x": {0: True}})
    raw = json.loads(gzip.decompress(path.read_bytes()))
    raw["models"]["teacher"] = "10x1"
    path.write_bytes(gzip.compress(json.dumps(raw).encode()))
    with pytest.raises(ValueError, match=r"models.teacher: results may only hold 0, 1 and '.'"):
        per_question.load(path)


def test_replicate_counts_are_checked_against_their_per_question_file(tmp_path):
    path = per_question.path_for("t", "test", tmp_path / "bench" / "results" / "per_question")
    ref = {q: q < 40 for q in range(100)}  # 40 right
    new = {q: 10 <= q < 60 for q in range(100)}  # 50 right: 20 won (40-59), 10 lost (0-9)
    per_question.merge(path, "t", "test", "task_t", {"r4/student-old": ref, "r4/student-new": new})
    pq = {"file": str(path.relative_to(tmp_path)), "setting": "r4/student-new", "reference": "r4/student-old"}
    rep = {"replicate": 4, "n": 100, "reference": 40, "setting": 50, "won": 20, "lost": 10, "per_question": pq}
    data = {"comparisons": {"k": {"replicates": [rep]}}, "models": {}}
    d = recompute.Data(data, {"comparisons": {}}, root=tmp_path)
    assert d.check_per_question() == [] and d.basis("k") == "per-question"
    wrong = copy.deepcopy(data)
    wrong["comparisons"]["k"]["replicates"][0].update(setting=51, won=21)
    problems = recompute.Data(wrong, {"comparisons": {}}, root=tmp_path).check_per_question()
    assert problems == [f"k r4: counts differ from {pq['file']}: {{'setting': (51, 50), 'won': (21, 20)}}"]


def test_a_summary_with_kept_questions_names_them_for_its_replicates(tmp_path, monkeypatch):
    monkeypatch.setattr(replicates.common, "REPO", tmp_path)
    folder = tmp_path / "bench" / "results" / "per_question"
    path = per_question.path_for("t", "test", folder)
    per_question.merge(
        path, "t", "test", "task_t", {"r4/student-old": {0: True, 1: False}, "r4/student-new": {0: True, 1: True}}
    )
    summary = {
        "args": {"reference": "old", "task": "t", "split": "test", "per_question": str(folder)},
        "settings": {
            "old": {"per_replicate": {"4": 0.5}},
            "new": {"per_replicate": {"4": 1.0}, "vs_sft": {"4": {"rows": 2, "b_only": 1, "a_only": 0}}},
        },
    }
    (tmp_path / "s.json").write_text(json.dumps(summary))
    (rep,) = replicates.from_summary(tmp_path / "s.json", "new", "old", "cpu")
    assert rep["per_question"] == {
        "file": "bench/results/per_question/t-test.json.gz",
        "setting": "r4/student-new",
        "reference": "r4/student-old",
    }
    d = recompute.Data({"comparisons": {"k": {"replicates": [rep]}}}, {"comparisons": {}}, root=tmp_path)
    assert d.check_per_question() == []
