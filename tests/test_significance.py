"""DeLong intervals and paired tests agree with the AUC and with a bootstrap of the same rows."""

import numpy as np
import pytest

from ctr_dagster.metrics import auc
from ctr_dagster.significance import auc_interval, paired_comparison


def _sample(n: int = 3000, seed: int = 0):
    rng = np.random.default_rng(seed)
    signal = rng.normal(size=n)
    labels = (rng.random(n) < 1 / (1 + np.exp(-(signal - 1.5)))).astype(int)
    good = signal + rng.normal(0, 1.0, n)
    worse = signal + rng.normal(0, 2.5, n)
    return labels, good, worse


def _bootstrap(labels, *scores, reps=400, seed=1):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(reps):
        take = rng.integers(0, len(labels), len(labels))
        out.append([auc(labels[take], s[take]) for s in scores])
    return np.array(out)


def test_interval_is_centred_on_the_auc_and_as_wide_as_a_bootstrap():
    labels, good, _ = _sample()
    interval = auc_interval(labels, good)
    assert interval.auc == pytest.approx(auc(labels, good), abs=1e-12)
    boot = _bootstrap(labels, good)[:, 0]
    assert interval.se == pytest.approx(boot.std(), rel=0.15)
    assert interval.low < interval.auc < interval.high
    assert interval.high - interval.low == pytest.approx(2 * 1.959964 * interval.se, rel=1e-6)


def test_ties_use_midranks_like_the_auc():
    labels = np.array([0, 0, 1, 1, 0, 1])
    scores = np.array([0.1, 0.5, 0.5, 0.9, 0.5, 0.2])
    assert auc_interval(labels, scores).auc == pytest.approx(auc(labels, scores))


def test_paired_difference_matches_a_paired_bootstrap_and_detects_the_better_model():
    labels, good, worse = _sample()
    result = paired_comparison(labels, good, worse)
    assert result.delta == pytest.approx(auc(labels, good) - auc(labels, worse), abs=1e-12)
    boot = _bootstrap(labels, good, worse)
    assert result.se == pytest.approx((boot[:, 0] - boot[:, 1]).std(), rel=0.2)
    assert result.p_value < 1e-3 and result.low > 0
    # the paired interval is much narrower than the two AUCs' own intervals suggest
    assert result.se < auc_interval(labels, good).se + auc_interval(labels, worse).se


def test_no_evidence_between_a_model_and_itself_or_a_reversal():
    labels, good, worse = _sample()
    same = paired_comparison(labels, good, good)
    assert same.delta == 0 and same.p_value == 0.5
    reverse = paired_comparison(labels, worse, good)
    assert reverse.p_value > 0.999 and reverse.high < 0


def test_one_class_gives_no_interval():
    assert auc_interval(np.ones(5), np.arange(5.0)) is None
    assert paired_comparison(np.zeros(5), np.arange(5.0), np.arange(5.0)) is None


def test_equal_models_are_noise_in_about_the_stated_share_of_seeds():
    """Two models with the same skill: the one-sided test at 95 % should promote in ~5 % of seeds."""
    promoted = 0
    for seed in range(60):
        rng = np.random.default_rng(100 + seed)
        signal = rng.normal(size=800)
        labels = (rng.random(800) < 1 / (1 + np.exp(-signal))).astype(int)
        a, b = signal + rng.normal(0, 1, 800), signal + rng.normal(0, 1, 800)
        promoted += paired_comparison(labels, a, b).p_value < 0.05
    assert promoted <= 9  # binomial(60, 0.05): P(X >= 10) < 0.2 %
