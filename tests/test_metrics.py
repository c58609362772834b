"""Evaluation metrics: hand-checked fixtures, GAUC against a brute-force loop, slices, None cases."""

import math
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pytest
from sklearn.metrics import roc_auc_score

from ctr_dagster import metrics
from ctr_dagster.testing import make_training_table


def _gauc_brute_force(users: np.ndarray, labels: np.ndarray, scores: np.ndarray) -> tuple[float | None, int]:
    total, weight, counted = 0.0, 0, 0
    for u in np.unique(users):
        m = users == u
        if labels[m].min() == labels[m].max():
            continue
        total += m.sum() * roc_auc_score(labels[m], scores[m])
        weight += int(m.sum())
        counted += 1
    return (total / weight if counted else None), counted


# --- AUC -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auc_equals_sklearn_with_many_ties(seed: int):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 3000)
    s = np.round(rng.random(3000) + 0.4 * y, 1)  # ~14 distinct scores: ties everywhere
    assert metrics.auc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert metrics.auc(y.astype(bool), s) == metrics.auc(y.astype(np.float32), s)  # label dtypes
    assert metrics.auc(y, np.zeros(3000)) == 0.5  # one big tie


def test_auc_by_hand_and_undefined_cases():
    # pos {0.5, 0.9} vs neg {0.1, 0.5}: 0.5>0.1, 0.5=0.5 (1/2), 0.9>both -> 3.5 / 4
    assert metrics.auc(np.array([0, 0, 1, 1]), np.array([0.1, 0.5, 0.5, 0.9])) == 0.875
    assert metrics.auc(np.array([1, 1]), np.array([0.2, 0.3])) is None  # one class: undefined
    assert metrics.auc(np.array([0, 0]), np.array([0.2, 0.3])) is None
    assert metrics.auc(np.array([]), np.array([])) is None
    with pytest.raises(ValueError, match="NaN"):
        metrics.auc(np.array([0, 1]), np.array([0.2, np.nan]))
    with pytest.raises(ValueError, match="shape"):
        metrics.auc(np.array([0, 1]), np.array([0.2]))
    with pytest.raises(ValueError, match="0/1"):
        metrics.auc(np.array([0, 2]), np.array([0.2, 0.3]))


def test_there_is_one_auc():
    """The trainer and the conformance kit use the metrics module's AUC, not their own."""
    from ctr_dagster import testing
    from ctr_dagster.training import trainer

    assert testing.auc is metrics.auc and trainer.auc is metrics.auc


# --- GAUC ------------------------------------------------------------------------------------------


def test_gauc_hand_checked_two_users_and_skipped_single_class():
    # user a: pos 0.9 vs negs {0.5, 0.95}: beats 0.5, loses to 0.95 -> AUC 1/2, 3 impressions
    # user b: pos {0.8, 0.4} vs negs {0.3, 0.6}: 0.8>0.3, 0.8>0.6, 0.4>0.3, 0.4<0.6 -> 3/4, 4 impressions
    # user c: negatives only -> skipped (no AUC), its 2 impressions do not weigh
    # GAUC = (3 * 0.5 + 4 * 0.75) / 7 = 4.5 / 7
    users = np.array(["a", "a", "a", "b", "b", "b", "b", "c", "c"])
    labels = np.array([1, 0, 0, 1, 1, 0, 0, 0, 0])
    scores = np.array([0.9, 0.5, 0.95, 0.8, 0.4, 0.3, 0.6, 0.1, 0.7])
    value, n_users = metrics.gauc(users, labels, scores)
    assert n_users == 2
    assert value == pytest.approx(4.5 / 7)


def test_gauc_ties_count_half():
    # user 7: pos 0.5 vs neg 0.5 (tie -> 1/2) and vs neg 0.2 (win -> 1) -> AUC 3/4, 3 impressions
    # user 9: pos 0.1 vs neg 0.3 -> 0, 2 impressions.  GAUC = (3 * 0.75 + 2 * 0) / 5 = 0.45
    users = np.array([7, 7, 7, 9, 9])
    labels = np.array([1, 0, 0, 1, 0])
    scores = np.array([0.5, 0.5, 0.2, 0.1, 0.3])
    value, n_users = metrics.gauc(users, labels, scores)
    assert (value, n_users) == (pytest.approx(0.45), 2)


@pytest.mark.parametrize("user_kind", ["int", "str"])
def test_gauc_matches_per_user_sklearn_loop_with_ties(user_kind: str):
    rng = np.random.default_rng(3)
    n = 4000
    users = rng.integers(0, 300, n)
    if user_kind == "str":
        users = np.array([f"user-{u}" for u in users])
    labels = (rng.random(n) < 0.3).astype(np.int8)
    scores = np.round(rng.random(n) * 0.5 + 0.3 * labels, 1)  # coarse rounding: many ties per user
    value, n_users = metrics.gauc(users, labels, scores)
    expected, expected_users = _gauc_brute_force(users, labels, scores)
    assert n_users == expected_users
    assert 0 < n_users < 300  # some users single-class, skipped
    assert value == pytest.approx(expected, abs=1e-12)


def test_gauc_unsorted_input_and_shuffle_invariant():
    rng = np.random.default_rng(0)
    users, labels, scores = rng.integers(0, 20, 500), rng.integers(0, 2, 500), rng.random(500)
    perm = rng.permutation(500)
    assert metrics.gauc(users, labels, scores) == pytest.approx(
        metrics.gauc(users[perm], labels[perm], scores[perm])
    )


def test_gauc_none_cases():
    assert metrics.gauc(np.array([], dtype=np.int64), np.array([]), np.array([])) == (None, 0)
    # every user single-class (though the whole set has both classes)
    assert metrics.gauc(np.array([1, 1, 2, 2]), np.array([0, 0, 1, 1]), np.array([0.1, 0.2, 0.3, 0.4])) == (
        None,
        0,
    )


def test_gauc_rejects_bad_input():
    with pytest.raises(ValueError, match="0/1"):
        metrics.gauc(np.array([1, 1]), np.array([0, 2]), np.array([0.1, 0.2]))
    with pytest.raises(ValueError, match="NaN"):
        metrics.gauc(np.array([1, 1]), np.array([0, 1]), np.array([0.1, np.nan]))
    with pytest.raises(ValueError, match="shape"):
        metrics.gauc(np.array([1]), np.array([0, 1]), np.array([0.1, 0.2]))


# --- logloss ---------------------------------------------------------------------------------------


def test_logloss_two_rows_by_hand():
    # -(ln 0.8 + ln(1 - 0.4)) / 2 = (0.2231436 + 0.5108256) / 2 = 0.3669846
    assert metrics.logloss(np.array([1, 0]), np.array([0.8, 0.4])) == pytest.approx(0.3669846, abs=1e-6)


def test_logloss_clips_confident_misses_and_handles_one_class():
    # label 1 scored 0 -> clipped to 1e-7: -ln(1e-7) = 16.118096; label 0 scored 0 -> -ln(1 - 1e-7) ~ 1e-7
    value = metrics.logloss(np.array([1, 0]), np.array([0.0, 0.0]))
    assert value == pytest.approx((16.118096 + 1e-7) / 2, abs=1e-5)
    # one class only is still defined (labels=[0, 1]): -ln(0.5)
    assert metrics.logloss(np.array([1]), np.array([0.5])) == pytest.approx(math.log(2))
    assert metrics.logloss(np.array([]), np.array([])) is None


# --- calibration -----------------------------------------------------------------------------------


def test_calibration_two_bins_by_hand():
    # bin [0, .5): scores .2 .2 .4 .4, labels 0 0 1 0 -> mean .3, rate .25, |diff| .05, weight 4/6
    # bin [.5, 1]: scores .5 1.0, labels 1 1 -> mean .75, rate 1.0, |diff| .25, weight 2/6
    # (0.5 sits on the edge -> upper bin; 1.0 -> last bin)
    # ECE = 4/6 * .05 + 2/6 * .25 = 0.0333... + 0.0833... = 0.11666...
    labels = np.array([0, 0, 1, 0, 1, 1])
    scores = np.array([0.2, 0.2, 0.4, 0.4, 0.5, 1.0])
    cal = metrics.calibration(labels, scores, bins=2)
    assert cal.ece == pytest.approx(0.7 / 6)
    low, high = cal.bins
    assert (low.lower, low.upper, low.count) == (0.0, 0.5, 4)
    assert (low.mean_score, low.positive_rate) == (pytest.approx(0.3), pytest.approx(0.25))
    assert (high.lower, high.upper, high.count) == (0.5, 1.0, 2)
    assert (high.mean_score, high.positive_rate) == (pytest.approx(0.75), pytest.approx(1.0))


def test_calibration_keeps_empty_bins_and_perfect_is_zero():
    # all scores in [0.2, 0.3) with rate == mean -> ECE 0; the 9 other bins are kept, empty, NaN means
    cal = metrics.calibration(np.array([1, 0, 0, 0]), np.array([0.25, 0.25, 0.25, 0.25]))
    assert cal.ece == pytest.approx(0.0)
    assert len(cal.bins) == 10 and [b.count for b in cal.bins] == [0, 0, 4, 0, 0, 0, 0, 0, 0, 0]
    assert math.isnan(cal.bins[0].mean_score) and math.isnan(cal.bins[0].positive_rate)
    assert cal.as_rows()[2]["count"] == 4


def test_calibration_edges_and_errors():
    empty = metrics.calibration(np.array([]), np.array([]))
    assert math.isnan(empty.ece) and sum(b.count for b in empty.bins) == 0
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        metrics.calibration(np.array([1]), np.array([1.5]))


# --- slices and score_metrics ----------------------------------------------------------------------


def _slice_table() -> pa.Table:
    return pa.table(
        {
            "user_click_count": pa.array([0, 1, 4, 5, 19, 20, 100], pa.int32()),
            "is_new_user": [True, False, False, False, False, False, True],
            "is_new_item": [False, True, False, False, False, True, False],
        }
    )


def test_slice_masks_by_hand():
    masks = metrics.slice_masks(_slice_table())
    expected = {
        "activity:0": [1, 0, 0, 0, 0, 0, 0],
        "activity:1-4": [0, 1, 1, 0, 0, 0, 0],
        "activity:5-19": [0, 0, 0, 1, 1, 0, 0],
        "activity:20+": [0, 0, 0, 0, 0, 1, 1],
        "new_users": [1, 0, 0, 0, 0, 0, 1],
        "new_items": [0, 1, 0, 0, 0, 1, 0],
    }
    assert list(masks) == list(expected)
    for name, want in expected.items():
        assert masks[name].dtype == bool
        assert masks[name].tolist() == [bool(w) for w in want], name
    assert [name for name, _, _ in metrics.ACTIVITY_BUCKETS] == list(expected)[:4]


def test_score_metrics_on_training_table():
    table = make_training_table(n_rows=600, seed=1)
    rng = np.random.default_rng(0)
    labels = table.column("label").to_numpy()
    scores = np.clip(0.2 + 0.3 * labels + rng.normal(0, 0.2, table.num_rows), 0, 1)
    out = metrics.score_metrics(table, scores)

    assert set(out) == {
        "rows",
        "positives",
        "auc",
        "gauc",
        "gauc_users",
        "logloss",
        "ece",
        "slices",
        "calibration",
    }
    assert out["rows"] == 600 and out["positives"] == int(labels.sum())
    assert out["auc"] == pytest.approx(roc_auc_score(labels, scores))
    users = table.column("user_id").to_numpy(zero_copy_only=False)
    expected_gauc, expected_users = _gauc_brute_force(users, labels, scores)
    assert (out["gauc"], out["gauc_users"]) == (pytest.approx(expected_gauc), expected_users)
    assert out["logloss"] == pytest.approx(metrics.logloss(labels, scores))
    assert out["ece"] == out["calibration"].ece
    assert sum(out["slices"][name]["rows"] for name, _, _ in metrics.ACTIVITY_BUCKETS) == 600
    assert set(out["slices"]) == {"activity:0", "activity:1-4", "activity:5-19", "activity:20+"} | {
        "new_users",
        "new_items",
    }
    assert out["slices"]["new_users"]["rows"] == int(table.column("is_new_user").to_numpy().sum())


def test_score_metrics_single_class_slice_is_none():
    table = pa.table(
        {
            "label": pa.array([1, 0, 0, 1], pa.int8()),
            "user_id": ["a", "a", "b", "b"],
            "user_click_count": pa.array([0, 0, 3, 3], pa.int32()),
            "is_new_user": [False, False, False, False],
            "is_new_item": [False, False, False, True],
        }
    )
    out = metrics.score_metrics(table, np.array([0.9, 0.1, 0.2, 0.8]))
    assert out["auc"] == 1.0 and out["gauc"] == 1.0 and out["gauc_users"] == 2
    assert out["slices"]["new_users"] == {"rows": 0, "auc": None}
    assert out["slices"]["new_items"] == {"rows": 1, "auc": None}
    assert out["slices"]["activity:0"] == {"rows": 2, "auc": 1.0}
    with pytest.raises(ValueError, match="shape"):
        metrics.score_metrics(table, np.array([0.5]))


def test_importing_metrics_and_reports_stays_light():
    code = (
        "import sys, ctr_dagster.metrics, ctr_dagster.reports;"
        "print(sorted(m for m in ('sklearn', 'matplotlib') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
