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


def test_wilson_and_the_exact_mcnemar_agree_with_scipy_and_the_formulas_by_hand():
    """The Wilson interval equals scipy's at the same z to 1e-9 (ours stays: it takes a mean, scipy
    a count); the exact McNemar p is scipy's binomial test, equal to the sign-test sum it replaced."""
    import math

    from scipy.stats import binomtest, norm

    from dante.eval.scores import mcnemar_exact, wilson_ci

    z = 1.96
    level = 2 * norm.cdf(z) - 1
    for n in (1, 5, 37, 300):
        for k in range(0, n + 1, max(1, n // 7)):
            ci = binomtest(k, n).proportion_ci(confidence_level=level, method="wilson")
            ours = wilson_ci(k / n, n, z)
            assert ours == pytest.approx((ci.low, ci.high), abs=1e-9)
    for a_only in range(0, 25):
        for b_only in range(0, 25):
            n = a_only + b_only
            by_hand = min(1.0, 2 * sum(math.comb(n, k) for k in range(min(a_only, b_only) + 1)) / 2**n) if n else 1.0
            a = {i: i < a_only for i in range(n)}
            b = {i: i >= a_only for i in range(n)}
            assert mcnemar_exact(a, b)["p_value"] == pytest.approx(by_hand, abs=1e-9)


def test_sign_flip_p_by_hand():
    from dante.eval.scores import sign_flip_p

    # 3 replicates, all positive: of the 8 sign assignments only the observed one has mean >= it
    assert sign_flip_p([0.05, 0.03, 0.04], "greater") == 1 / 8
    assert sign_flip_p([0.05, 0.03, 0.04]) == 2 / 8  # and its mirror, two-sided
    assert sign_flip_p([0.05, 0.03, 0.04], "less") == 1.0
    # 5 replicates, one small negative: means >= observed: the observed and the one flipping -0.01
    # (+0.01 instead), out of 32
    d = [0.10, 0.08, 0.12, 0.09, -0.01]
    assert sign_flip_p(d, "greater") == 2 / 32
    # ties count as extreme: all zero -> p = 1
    assert sign_flip_p([0.0, 0.0, 0.0, 0.0, 0.0]) == 1.0
    # more than 16 replicates: random assignments, the observed counted
    p = sign_flip_p([0.01] * 20, "greater", draws=20_000)
    assert 0 < p < 0.001
    with pytest.raises(ValueError):
        sign_flip_p([0.1], "bigger")


def test_replication_verdict_can_fail():
    from dante.eval.scores import replication_verdict

    # the products CWCE result: +2.3 on 3 of 3 replicates, interval excluding 0 -> not established
    v = replication_verdict([0.023, 0.02, 0.026], (0.008, 0.040), direction=1)
    assert not v["holds"] and v["p"] == 0.125 and any("3 replicates" in r for r in v["why_not"])
    # 5 of 5 the same sign in the direction validation showed, interval clear of 0 -> holds
    v = replication_verdict([0.05, 0.04, 0.06, 0.03, 0.05], (0.02, 0.07), direction=1)
    assert v["holds"] and v["p"] == 1 / 32 and v["alternative"] == "greater"
    # the same numbers against the direction validation showed -> does not hold
    assert not replication_verdict([0.05, 0.04, 0.06, 0.03, 0.05], (0.02, 0.07), direction=-1)["holds"]
    # two-sided with 5: the smallest p is 2/32 > 0.05 -> does not hold
    v = replication_verdict([0.05, 0.04, 0.06, 0.03, 0.05], (0.02, 0.07))
    assert not v["holds"] and v["p"] == 2 / 32


def test_t_interval_by_hand_and_its_part_in_the_verdict():
    import math

    from dante.eval.scores import replication_verdict, t_interval

    # diffs 1, 2, 3: mean 2, s = 1, t(0.975, 2) = 4.3027: 2 ± 4.3027 / √3
    lo, hi = t_interval([1.0, 2.0, 3.0])
    assert (lo, hi) == (
        pytest.approx(2 - 4.302653 / math.sqrt(3), rel=1e-5),
        pytest.approx(2 + 4.302653 / math.sqrt(3), rel=1e-5),
    )
    assert t_interval([0.5]) == (-math.inf, math.inf)
    # five positive replicates whose bootstrap interval clears 0 but whose t-interval does not:
    # the verdict needs both, so it does not hold
    diffs = [0.001, 0.002, 0.001, 0.002, 0.2]
    v = replication_verdict(diffs, (0.0005, 0.12), direction=1)
    assert v["p"] == 1 / 32 and v["t_ci95"][0] < 0 and not v["holds"]
    assert v["why_not"] == ["the t-interval includes 0"]
