"""Evaluation metrics. scikit-learn (imported lazily) where it fits; AUC and GAUC are vectorized numpy
(no scikit-learn import in the training process; tests check them against scikit-learn)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


def _binary_labels(labels: np.ndarray) -> np.ndarray:
    """Labels as a 1-D float array of 0/1; anything else is a caller bug, so it fails here, not in a mean."""
    y = np.asarray(labels)
    if y.ndim != 1:
        raise ValueError(f"labels must be 1-D, got shape {y.shape}")
    y = y.astype(np.float64)
    if y.size and not np.all((y == 0) | (y == 1)):
        raise ValueError("labels must be 0/1")
    return y


def _probabilities(scores: np.ndarray, n: int) -> np.ndarray:
    """Scores as 1-D float64 of length `n`; NaN/inf would silently corrupt ranks and bin means."""
    s = np.asarray(scores, dtype=np.float64)
    if s.shape != (n,):
        raise ValueError(f"scores must have shape ({n},), got {s.shape}")
    if not np.all(np.isfinite(s)):
        raise ValueError("scores contain NaN or inf")
    return s


def auc(labels: np.ndarray, scores: np.ndarray) -> float | None:
    """ROC AUC, or None when the labels hold one class only (undefined, not 0.5) or nothing.

    The one AUC of the project (evaluation, the trainer's validation, the conformance kit): the
    Mann-Whitney U statistic with tied scores given their average rank, U / (n_pos * n_neg), which
    equals scikit-learn's `roc_auc_score` (trapezoidal ROC) without importing it, so the training
    process stays light. Vectorized numpy: one `np.unique` over the scores. Labels must be 0/1 (or
    bool); scores must be finite, one per label (ValueError otherwise, as scikit-learn raises).
    """
    y = _binary_labels(labels) > 0.5
    s = _probabilities(scores, y.size)
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    _, inverse, counts = np.unique(s, return_inverse=True, return_counts=True)
    upper = np.cumsum(counts)
    average_rank = upper - (counts - 1) / 2.0  # 1-based average rank of each distinct score
    rank_sum = float(average_rank[inverse.reshape(-1)][y].sum())
    return (rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)


def scores_for(rows: pa.Table, ids: pa.Array, values: pa.Array) -> tuple[np.ndarray, int]:
    """(`values` reordered to `rows` by impression_id as float64, count of rows with no value)."""
    picked = pc.take(values, pc.index_in(rows.column("impression_id"), value_set=ids))
    return picked.to_numpy(zero_copy_only=False).astype(np.float64), picked.null_count


def oracle_auc(dataset: pa.Table, oracle: pa.Table, split: str = "test") -> float | None:
    """AUC of the true click probability on one split: the ceiling every model is judged against."""
    rows = dataset.filter(pc.equal(dataset.column("split"), split))
    p_true, missing = scores_for(rows, oracle.column("impression_id"), oracle.column("p_click"))
    if missing:
        raise ValueError(f"oracle has no row for {missing} {split} impressions")
    return auc(rows.column("label").to_numpy(), p_true)


def gauc(users: np.ndarray, labels: np.ndarray, scores: np.ndarray) -> tuple[float | None, int]:
    """Group AUC: per-user AUC averaged with weight = the user's impressions; returns (gauc, users counted).

    Global AUC mostly rewards separating heavy from light clickers; ranking happens per user, so GAUC
    is closer to what a recommender serves. Users with one class only have no AUC and are skipped;
    the result is None when no user has both classes. Vectorized (no per-user loop): scores are
    ranked within each user (ties get average ranks) and each AUC is the Mann-Whitney U / (n_pos·n_neg).
    """
    y = _binary_labels(labels)
    s = _probabilities(scores, y.size)
    u = np.asarray(users)
    if u.shape != y.shape:
        raise ValueError(f"users must have shape {y.shape}, got {u.shape}")
    if y.size == 0:
        return None, 0
    _, codes = np.unique(u, return_inverse=True)  # dense 0..k-1 for int or string ids alike
    codes = codes.reshape(-1)
    order = np.lexsort((s, codes))  # by user, then score
    c, s, y = codes[order], s[order], y[order]
    n = c.size
    new_group = np.ones(n, dtype=bool)
    new_group[1:] = c[1:] != c[:-1]
    new_run = new_group.copy()  # a run = equal scores of one user (a tie group)
    new_run[1:] |= s[1:] != s[:-1]
    idx = np.arange(n)
    group_start = np.maximum.accumulate(np.where(new_group, idx, 0))
    run_first = idx[new_run]
    run_last = np.append(run_first[1:], n) - 1
    run_rank = (run_first + run_last) / 2.0 - group_start[run_first] + 1.0  # average 1-based rank
    rank = run_rank[np.cumsum(new_run) - 1]

    k = int(c[-1]) + 1
    count = np.bincount(c, minlength=k).astype(np.float64)
    n_pos = np.bincount(c, weights=y, minlength=k)
    rank_sum_pos = np.bincount(c, weights=rank * y, minlength=k)
    n_neg = count - n_pos
    both = (n_pos > 0) & (n_neg > 0)
    if not both.any():
        return None, 0
    p = n_pos[both]
    per_user = (rank_sum_pos[both] - p * (p + 1) / 2.0) / (p * n_neg[both])
    return float(np.average(per_user, weights=count[both])), int(both.sum())


def logloss(labels: np.ndarray, scores: np.ndarray, eps: float = 1e-7) -> float | None:
    """Mean binary cross-entropy; scores clipped to [eps, 1-eps] so one confident miss is finite, not inf.

    None for empty input (undefined). `labels=[0, 1]` keeps it defined when only one class is present.
    """
    from sklearn.metrics import log_loss

    y = _binary_labels(labels)
    if y.size == 0:
        return None
    s = np.clip(_probabilities(scores, y.size), eps, 1.0 - eps)
    return float(log_loss(y, s, labels=[0, 1]))


@dataclass(frozen=True)
class CalibrationBin:
    """One equal-width score bin: [lower, upper) (the last bin also holds 1.0)."""

    lower: float
    upper: float
    count: int
    mean_score: float  # NaN when count == 0
    positive_rate: float  # NaN when count == 0


@dataclass(frozen=True)
class Calibration:
    """Reliability of the scores as probabilities: what ad pricing and bid shading rely on, AUC ignores."""

    ece: float
    bins: list[CalibrationBin]

    def as_rows(self) -> list[dict[str, float | int]]:
        """The bins as plain dicts (for markdown tables and JSON metadata)."""
        return [asdict(b) for b in self.bins]


def calibration(labels: np.ndarray, scores: np.ndarray, bins: int = 10) -> Calibration:
    """Equal-width reliability bins on [0, 1] and the expected calibration error.

    ECE = Σ over non-empty bins of (count / N) · |positive_rate − mean_score|. Bins are [lower, upper)
    like `np.histogram`, the last one closed so a score of 1.0 counts. Empty bins are *kept* (count 0,
    NaN means) so every result has exactly `bins` rows. Empty input gives ece = NaN. Scores outside
    [0, 1] raise: they are not probabilities and a bin for them would be made up.
    """
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    y = _binary_labels(labels)
    s = _probabilities(scores, y.size)
    if s.size and (s.min() < 0.0 or s.max() > 1.0):
        raise ValueError("scores must lie in [0, 1] for calibration")
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.searchsorted(edges[1:-1], s, side="right")  # [lo, hi); 1.0 lands in the last bin
    count = np.bincount(which, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_score = np.bincount(which, weights=s, minlength=bins) / count
        positive_rate = np.bincount(which, weights=y, minlength=bins) / count
    filled = count > 0
    ece = (
        float(np.sum(count[filled] / s.size * np.abs(positive_rate[filled] - mean_score[filled])))
        if s.size
        else float("nan")
    )
    return Calibration(
        ece=ece,
        bins=[
            CalibrationBin(
                lower=float(edges[i]),
                upper=float(edges[i + 1]),
                count=int(count[i]),
                mean_score=float(mean_score[i]),
                positive_rate=float(positive_rate[i]),
            )
            for i in range(bins)
        ],
    )


#: User activity buckets on `user_click_count` (clicks before the impression): (slice name, lo, hi),
#: lo inclusive, hi exclusive, None = unbounded. Cold users are where models differ the most.
ACTIVITY_BUCKETS: tuple[tuple[str, int, int | None], ...] = (
    ("activity:0", 0, 1),
    ("activity:1-4", 1, 5),
    ("activity:5-19", 5, 20),
    ("activity:20+", 20, None),
)


def slice_masks(table: pa.Table) -> dict[str, np.ndarray]:
    """Boolean row masks of the evaluation slices of a TRAINING-schema table.

    An overall metric hides cold start: the activity buckets, new users and new items show where a
    model wins or loses. Slices overlap (a new user is usually also "activity:0").
    """
    clicks = table.column("user_click_count").to_numpy()
    masks: dict[str, np.ndarray] = {}
    for name, lo, hi in ACTIVITY_BUCKETS:
        mask = clicks >= lo
        if hi is not None:
            mask &= clicks < hi
        masks[name] = mask
    masks["new_users"] = table.column("is_new_user").to_numpy().astype(bool)
    masks["new_items"] = table.column("is_new_item").to_numpy().astype(bool)
    return masks


def score_metrics(table: pa.Table, scores: np.ndarray) -> dict[str, Any]:
    """All evaluation numbers of one set of scores on a TRAINING-schema table (rows aligned with `scores`).

    Returns rows, positives, auc, gauc (impression-weighted mean of per-user AUC; users with one class
    only are skipped, `gauc_users` counts the rest), logloss, ece, per-slice rows and AUC
    (see `slice_masks`; AUC None where a slice has one class) and the full `Calibration`.
    """
    labels = _binary_labels(table.column("label").to_numpy())
    s = _probabilities(scores, table.num_rows)
    # Dictionary codes stand in for the string ids: the same grouping, without sorting Python strings.
    users = pc.dictionary_encode(table.column("user_id")).combine_chunks().indices.to_numpy()
    gauc_value, gauc_users = gauc(users, labels, s)
    cal = calibration(labels, s)
    return {
        "rows": int(table.num_rows),
        "positives": int(labels.sum()),
        "auc": auc(labels, s),
        "gauc": gauc_value,
        "gauc_users": gauc_users,
        "logloss": logloss(labels, s),
        "ece": cal.ece,
        "slices": {
            name: {"rows": int(mask.sum()), "auc": auc(labels[mask], s[mask])}
            for name, mask in slice_masks(table).items()
        },
        "calibration": cal,
    }
