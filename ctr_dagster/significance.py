"""How sure a leaderboard can be: DeLong intervals for one AUC and paired tests between two models.

DeLong, DeLong & Clarke-Pearson (Biometrics 1988) estimate the variance of the Mann-Whitney AUC
from each positive's and each negative's "placement" (the share of the other class it outranks);
Sun & Xu (IEEE SPL 2014) compute the placements with three rank transforms instead of an m x n
comparison, O(n log n). Two models scored on the same rows have correlated AUCs, and the same
placements give their covariance, so the paired difference gets its own (much narrower) interval:
that is the test a champion gate needs, not two overlapping intervals.

Only numpy and scipy (rankdata, the normal distribution), imported inside the functions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Two-sided 95 % interval by default; the gate passes its own confidence.
DEFAULT_CONFIDENCE = 0.95


@dataclass(frozen=True)
class AucInterval:
    auc: float
    low: float
    high: float
    se: float

    def as_list(self) -> list[float]:
        return [self.low, self.high]


@dataclass(frozen=True)
class PairedComparison:
    """AUC(a) - AUC(b) on the same rows, its interval, and the one-sided test that a beats b."""

    auc_a: float
    auc_b: float
    delta: float
    low: float
    high: float
    se: float
    z: float
    p_value: float  # one-sided: H1 = a's AUC is larger
    rows: int
    test: str = "DeLong paired (one-sided)"

    def as_dict(self) -> dict[str, object]:
        return {
            "test": self.test,
            "statistic": "z",
            "z": self.z,
            "p_value": self.p_value,
            "delta": self.delta,
            "ci": [self.low, self.high],
            "auc_a": self.auc_a,
            "auc_b": self.auc_b,
            "rows": self.rows,
        }


def _placements(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(AUC per model, positives' placements k x m, negatives' placements k x n) for k score rows."""
    from scipy.stats import rankdata

    positive = labels == 1
    m, n = int(positive.sum()), int((~positive).sum())
    ordered = np.concatenate([scores[:, positive], scores[:, ~positive]], axis=1)
    all_ranks = rankdata(ordered, axis=1)  # midranks for ties
    pos_ranks = rankdata(ordered[:, :m], axis=1)
    neg_ranks = rankdata(ordered[:, m:], axis=1)
    aucs = (all_ranks[:, :m].sum(axis=1) - m * (m + 1) / 2) / (m * n)
    v_pos = (all_ranks[:, :m] - pos_ranks) / n
    v_neg = 1.0 - (all_ranks[:, m:] - neg_ranks) / m
    return aucs, v_pos, v_neg


def _covariance(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    labels = np.asarray(labels).astype(np.int64)
    if len(labels) == 0 or labels.min() == labels.max():
        raise ValueError("AUC needs both classes on these rows")
    aucs, v_pos, v_neg = _placements(labels, np.atleast_2d(np.asarray(scores, dtype=np.float64)))
    m, n = v_pos.shape[1], v_neg.shape[1]
    cov = np.atleast_2d(np.cov(v_pos)) / m + np.atleast_2d(np.cov(v_neg)) / n
    return aucs, cov


def _z(confidence: float) -> float:
    from scipy.stats import norm

    return float(norm.ppf(0.5 + confidence / 2))


def auc_interval(
    labels: np.ndarray, scores: np.ndarray, confidence: float = DEFAULT_CONFIDENCE
) -> AucInterval | None:
    """The AUC with its DeLong interval (clipped to [0, 1]); None when the rows hold one class."""
    try:
        aucs, cov = _covariance(labels, scores)
    except ValueError:
        return None
    se = float(np.sqrt(max(cov[0, 0], 0.0)))
    half = _z(confidence) * se
    value = float(aucs[0])
    return AucInterval(value, max(0.0, value - half), min(1.0, value + half), se)


def paired_comparison(
    labels: np.ndarray,
    scores_a: np.ndarray,
    scores_b: np.ndarray,
    confidence: float = DEFAULT_CONFIDENCE,
) -> PairedComparison | None:
    """DeLong's paired test of AUC(a) > AUC(b) on the same rows; None when they hold one class.

    The interval is two-sided at `confidence`; `p_value` is one-sided (a better than b), so a gate
    at confidence c promotes when p < 1 - c.
    """
    from scipy.stats import norm

    try:
        aucs, cov = _covariance(labels, np.vstack([scores_a, scores_b]))
    except ValueError:
        return None
    variance = cov[0, 0] + cov[1, 1] - 2 * cov[0, 1]
    se = float(np.sqrt(max(variance, 0.0)))
    delta = float(aucs[0] - aucs[1])
    if se == 0.0:  # identical rankings: no evidence either way
        z, p = 0.0, 0.5 if delta == 0 else (0.0 if delta > 0 else 1.0)
    else:
        z = delta / se
        p = float(norm.sf(z))
    half = _z(confidence) * se
    return PairedComparison(
        auc_a=float(aucs[0]),
        auc_b=float(aucs[1]),
        delta=delta,
        low=delta - half,
        high=delta + half,
        se=se,
        z=float(z),
        p_value=p,
        rows=len(labels),
    )
