"""AUUC / Qini (`ctr_dagster.uplift.metrics`): a hand-computed fixture, ties, the bootstrap's fast path
against scikit-uplift, intervals on a zero-effect arm."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ctr_dagster.uplift import metrics

# The fixture: 8 rows (score, treated, outcome); rows 3 and 4 tie at 0.7.
SCORE = np.array([0.9, 0.8, 0.7, 0.7, 0.5, 0.4, 0.2, 0.1])
TREATED = np.array([1, 0, 1, 0, 1, 0, 1, 0])
OUTCOME = np.array([1, 0, 1, 1, 0, 0, 0, 0])

# By hand, block by block (n = rows targeted, N_T/Y_T treated rows/responders, N_C/Y_C control):
#   n=1 (r1):    N_T=1 Y_T=1 N_C=0 Y_C=0   V = (1 - 0) * 1       = 1     Q = 1
#   n=2 (r2):    N_T=1 Y_T=1 N_C=1 Y_C=0   V = (1 - 0) * 2       = 2     Q = 1 - 0       = 1
#   n=4 (r3,r4): N_T=2 Y_T=2 N_C=2 Y_C=1   V = (1 - 1/2) * 4     = 2     Q = 2 - 1 * 2/2 = 1
#   n=5 (r5):    N_T=3 Y_T=2 N_C=2 Y_C=1   V = (2/3 - 1/2) * 5   = 5/6   Q = 2 - 1 * 3/2 = 1/2
#   n=6 (r6):    N_T=3 Y_T=2 N_C=3 Y_C=1   V = (2/3 - 1/3) * 6   = 2     Q = 2 - 1 * 3/3 = 1
#   n=7 (r7):    N_T=4 Y_T=2 N_C=3 Y_C=1   V = (1/2 - 1/3) * 7   = 7/6   Q = 2 - 1 * 4/3 = 2/3
#   n=8 (r8):    N_T=4 Y_T=2 N_C=4 Y_C=1   V = (1/2 - 1/4) * 8   = 2     Q = 2 - 1 * 4/4 = 1
CURVE_X = [0, 1, 2, 4, 5, 6, 7, 8]
UPLIFT_V = [0, 1, 2, 2, 5 / 6, 2, 7 / 6, 2]
QINI_Q = [0, 1, 1, 1, 1 / 2, 1, 2 / 3, 1]
# Trapezoids: uplift 0.5 + 1.5 + 4 + 17/12 + 17/12 + 19/12 + 19/12 = 12; random line to (8, 2): 8.
# Perfect uplift (2 treated responders, 3 control non-responders, then -- control responders (1) not
# more than treated non-responders (2) -- the 2 treated non-responders, then the control responder):
#   points (0,0) (2,2) (5,5) (7,3.5) (8,2): area 2 + 10.5 + 8.5 + 2.75 = 23.75.
AUUC = (12 - 8) / (23.75 - 8)  # = 16/63
# Qini: 0.5 + 1 + 2 + 0.75 + 0.75 + 5/6 + 5/6 = 20/3; random line to (8, 1): 4.
# Perfect Qini (negative effects): treated responders, every non-responder, control responders:
#   points (0,0) (2,2) (7,2) (8,1): area 2 + 10 + 1.5 = 13.5.
QINI = (20 / 3 - 4) / (13.5 - 4)  # = 16/57


def test_hand_computed_curves_and_areas():
    x, v = metrics.uplift_curve(OUTCOME, SCORE, TREATED)
    np.testing.assert_allclose(x, CURVE_X)
    np.testing.assert_allclose(v, UPLIFT_V)
    x, q = metrics.qini_curve(OUTCOME, SCORE, TREATED)
    np.testing.assert_allclose(x, CURVE_X)
    np.testing.assert_allclose(q, QINI_Q)
    assert metrics.auuc(OUTCOME, SCORE, TREATED) == pytest.approx(AUUC, abs=1e-12)
    assert metrics.qini_coefficient(OUTCOME, SCORE, TREATED) == pytest.approx(QINI, abs=1e-12)
    assert pytest.approx((16 / 63, 16 / 57)) == (AUUC, QINI)
    # the fast path of the bootstrap gives the same numbers
    assert metrics.block_scores(OUTCOME, SCORE, TREATED) == pytest.approx((AUUC, QINI), abs=1e-12)


def test_ties_enter_together_whatever_the_row_order():
    swapped = [0, 1, 3, 2, 4, 5, 6, 7]  # the tied rows 3 and 4 in the other order
    for order in (swapped, list(range(7, -1, -1))):
        o, s, t = OUTCOME[order], SCORE[order], TREATED[order]
        assert metrics.auuc(o, s, t) == pytest.approx(16 / 63, abs=1e-12)
        assert metrics.qini_coefficient(o, s, t) == pytest.approx(16 / 57, abs=1e-12)
    # a constant score is one block: exactly the random line
    flat = np.zeros(8)
    assert metrics.auuc(OUTCOME, flat, TREATED) == pytest.approx(0.0, abs=1e-12)
    assert metrics.qini_coefficient(OUTCOME, flat, TREATED) == pytest.approx(0.0, abs=1e-12)


def test_perfect_ranking_scores_one():
    # scikit-uplift's perfect uplift score for this data (summand = treatment, see the fixture)
    perfect = 2 * (OUTCOME == TREATED) + TREATED
    assert metrics.auuc(OUTCOME, perfect, TREATED) == pytest.approx(1.0)


def test_block_counts_equal_scikit_uplift_on_resampled_rows():
    """The bootstrap scores a resample as integer weights on the rows; that must equal scikit-uplift
    on the rows repeated by their weights (ties included)."""
    rng = np.random.default_rng(3)
    for trial in range(60):
        n = int(rng.integers(6, 200))
        y, t = rng.integers(0, 2, n), rng.integers(0, 2, n)
        s = rng.integers(0, 6, n).astype(float) if trial % 2 else rng.normal(size=n)
        w = rng.integers(0, 3, n)
        rows = np.repeat(np.arange(n), w)
        expected = (
            metrics.auuc(y[rows], s[rows], t[rows]),
            metrics.qini_coefficient(y[rows], s[rows], t[rows]),
        )
        got = metrics.block_scores(y, s, t, w)
        for e, g in zip(expected, got, strict=True):
            if e is None:
                assert math.isnan(g)
            else:
                assert g == pytest.approx(e, abs=1e-12)


def test_undefined_cases_give_none():
    y, t, s = np.zeros(6, int), np.array([0, 1, 0, 1, 0, 1]), np.arange(6.0)
    assert metrics.auuc(y, s, t) is None and metrics.qini_coefficient(y, s, t) is None
    only_treated = metrics.score_uplift(np.array([0, 1, 1]), np.ones(3), {"m": np.arange(3.0)})["m"]
    assert only_treated.auuc is None and only_treated.auuc_low is None and only_treated.n_control == 0
    with pytest.raises(ValueError, match="finite"):
        metrics.auuc(np.array([0, 1]), np.array([np.nan, 1.0]), np.array([0, 1]))
    with pytest.raises(ValueError, match="binary"):
        metrics.auuc(np.array([0, 2]), np.array([0.0, 1.0]), np.array([0, 1]))


def _null_data(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Outcomes that depend on x but not on the (randomized) treatment: a zero-effect arm."""
    x = rng.normal(size=n)
    t = rng.integers(0, 2, n)
    y = (rng.random(n) < 1 / (1 + np.exp(1.0 - x))).astype(int)
    return x, t, y


def test_bootstrap_is_seeded_paired_and_brackets_the_estimate():
    rng = np.random.default_rng(0)
    x, t, y = _null_data(rng, 500)
    scores = {"a": x, "b": rng.normal(size=500)}
    first = metrics.score_uplift(y, t, scores, n_resamples=100, seed=7)
    again = metrics.score_uplift(y, t, scores, n_resamples=100, seed=7)
    other = metrics.score_uplift(y, t, scores, n_resamples=100, seed=8)
    assert first == again and first != other
    for score in first.values():
        assert score.resamples == 100 and score.n_treated + score.n_control == 500
        assert score.auuc_low < score.auuc < score.auuc_high
        assert score.qini_low < score.qini < score.qini_high


def test_zero_effect_arm_interval_contains_zero_for_random_and_informed_rankings():
    """On a zero-effect arm the normalised metrics are 0 in expectation for any ranking made without
    the test outcomes; the 95 % interval must cover 0 about 95 % of the time."""
    rng = np.random.default_rng(1)
    covered = {"random": 0, "by_x": 0}
    runs = 40
    for run in range(runs):
        x, t, y = _null_data(rng, 400)
        scored = metrics.score_uplift(
            y, t, {"random": rng.normal(size=400), "by_x": x + rng.normal(0, 0.3, 400)}, seed=run
        )
        for name, s in scored.items():
            covered[name] += s.auuc_low <= 0.0 <= s.auuc_high
    assert all(c >= 0.85 * runs for c in covered.values()), covered


def test_a_planted_effect_is_found():
    rng = np.random.default_rng(2)
    n = 2000
    x, t = rng.normal(size=n), rng.integers(0, 2, n)
    y = (rng.random(n) < 1 / (1 + np.exp(-(-1 + 1.5 * x * t)))).astype(int)
    s = metrics.score_uplift(y, t, {"true": x, "reversed": -x}, seed=0)
    assert s["true"].auuc_low > 0.1 and s["true"].qini_low > 0.1
    assert s["reversed"].auuc_high < 0


def test_mean_difference():
    d = metrics.mean_difference(np.array([1, 1, 0, 0, 1, 0]), np.array([1, 1, 1, 0, 0, 0]))
    assert d["ate"] == pytest.approx(2 / 3 - 1 / 3)
    assert d["low"] < d["ate"] < d["high"] and d["n_treated"] == 3 and d["n_control"] == 3
    assert metrics.mean_difference(np.array([1, 0]), np.array([1, 1]))["ate"] is None


def _clustered_null(rng: np.random.Generator, clusters: int, size: int, arm_per_cluster: bool = False):
    """Zero-effect data whose rows come in clusters (a user's impressions): within a cluster x and a
    cluster effect are shared; the arm is drawn per row, or per cluster (a request's slate shares it)."""
    u = rng.normal(size=clusters)
    x = np.repeat(u, size) + rng.normal(0, 0.2, clusters * size)
    t = (
        np.repeat(rng.integers(0, 2, clusters), size)
        if arm_per_cluster
        else rng.integers(0, 2, clusters * size)
    )
    y = (rng.random(clusters * size) < 1 / (1 + np.exp(1.0 - 2 * np.repeat(u, size)))).astype(int)
    return x, t, y, np.repeat(np.arange(clusters), size)


def test_cluster_bootstrap_is_wider_than_row_bootstrap_on_clustered_rows():
    rng = np.random.default_rng(3)
    x, t, y, groups = _clustered_null(rng, 120, 10, arm_per_cluster=True)
    rows = metrics.score_uplift(y, t, {"by_x": x}, seed=0)["by_x"]
    clustered = metrics.score_uplift(y, t, {"by_x": x}, seed=0, groups=groups)["by_x"]
    assert clustered.auuc == rows.auuc  # the estimate does not change, only its interval
    assert clustered.auuc_high - clustered.auuc_low > 1.5 * (rows.auuc_high - rows.auuc_low)
    with pytest.raises(ValueError, match="groups has 3 values"):
        metrics.score_uplift(y, t, {"by_x": x}, groups=[1, 2, 3])


def test_cluster_bootstrap_covers_zero_on_clustered_zero_effect_data():
    """With clustered rows a ranking that follows the clusters' x must still cover 0 about 95 % of
    the time once whole clusters are resampled."""
    rng = np.random.default_rng(4)
    runs, covered = 40, 0
    for run in range(runs):
        x, t, y, groups = _clustered_null(rng, 60, 8, arm_per_cluster=run % 2 == 0)
        s = metrics.score_uplift(y, t, {"by_x": x}, seed=run, groups=groups)["by_x"]
        covered += s.auuc_low <= 0.0 <= s.auuc_high
    assert covered >= 0.85 * runs, covered


def test_mean_difference_with_clusters_is_wider_and_equals_the_plain_one_for_singletons():
    rng = np.random.default_rng(5)
    x, t, y, groups = _clustered_null(rng, 100, 10, arm_per_cluster=True)
    plain = metrics.mean_difference(y, t)
    clustered = metrics.mean_difference(y, t, groups=groups)
    assert clustered["ate"] == plain["ate"]
    assert clustered["high"] - clustered["low"] > 1.5 * (plain["high"] - plain["low"])
    singletons = metrics.mean_difference(y, t, groups=np.arange(len(y)))
    # one row per cluster: the cluster-robust variance is p(1-p)/n, the plain one
    assert singletons["low"] == pytest.approx(plain["low"]) and singletons["high"] == pytest.approx(
        plain["high"]
    )
