"""Scores measured under different settings are flagged, never silently compared."""

from fake_run import make_run, write_eval

from dante.eval.scores import wilson_ci
from dante.report.build import build_report
from dante.report.consistency import flag_published, flag_rows
from dante.report.reference import DANTE_MOSAIC


def row(model, **kw):
    base = {
        "model": model,
        "benchmark": "GSM8K",
        "task": "gsm8k_local",
        "shots": 8,
        "metric": "exact_match",
        "filter": "strict-match",
        "harness": "lm-eval",
        "lm_eval_version": "0.4.13",
        "n_samples": 1319,
        "n_total": 1319,
        "max_gen_toks": None,
        "apply_chat_template": False,
        "value": 0.3,
        "primary": True,
    }
    return {**base, **kw}


def test_same_settings_are_not_flagged():
    assert flag_rows([row("student"), row("base", value=0.2)]) == [[], []]


def test_different_shots_version_and_metric_are_flagged():
    rows = [row("student"), row("base"), row("teacher", shots=5, lm_eval_version="0.4.5", metric="acc")]
    flags = flag_rows(rows)
    assert flags[0] == [] and flags[1] == []
    assert flags[2] == ["shots 5 vs 8", "metric acc vs exact_match", "version 0.4.5 vs 0.4.13"]


def test_partial_runs_and_contamination_are_flagged():
    flags = flag_rows([row("student", n_samples=50, contamination="600 evaluated rows are prompts")])
    assert flags == [["partial: 50 of 1319 rows", "contamination: 600 evaluated rows are prompts"]]


def test_published_rows_list_every_difference():
    gsm8k = [p for p in DANTE_MOSAIC if p.benchmark == "GSM8K"]
    (flags,) = flag_published(gsm8k, [row("student")])
    assert flags == ["task gsm8k vs gsm8k_local", "version 0.4.5 vs 0.4.13"]
    (same,) = flag_published(gsm8k, [row("student", task="gsm8k", lm_eval_version="0.4.5")])
    assert same == []
    (absent,) = flag_published([p for p in DANTE_MOSAIC if p.benchmark == "MMLU"], [row("student")])
    assert absent == ["benchmark not measured in this run"]


def test_report_marks_a_mismatched_row(tmp_path):
    run = make_run(tmp_path / "run")
    write_eval(run / "eval", "teacher", "gsm8k_local_heldout", 0.5, shots=5)
    text = build_report(run).read_text()
    gsm = next(line for line in text.splitlines() if line.startswith("| GSM8K |"))
    assert "[" in gsm.split("|")[-2]  # the teacher's cell carries a footnote mark
    assert "teacher / GSM8K: shots 5 vs 8" in text
    assert "GSM8K: gsm8k_local_heldout, 5-shot" in text and "GSM8K: gsm8k_local_heldout, 8-shot" in text


def test_wilson_interval():
    lo, hi = wilson_ci(0.0, 5)
    assert lo == 0.0 and 0.43 < hi < 0.44
    lo, hi = wilson_ci(0.5, 100)
    assert 0.40 < lo < 0.41 and 0.59 < hi < 0.60
