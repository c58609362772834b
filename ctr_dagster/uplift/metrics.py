"""AUUC and Qini of an uplift ranking, with bootstrap intervals.

One fixed implementation: scikit-uplift's (`sklift.metrics`, pinned in constraints.txt). Rows are
sorted by predicted uplift, highest first; after the top n rows (n_T treated, n_C control, with
Y_T / Y_C responders among them):

* uplift curve   V(n) = (Y_T / n_T - Y_C / n_C) * (n_T + n_C)   (a term is 0 while its group is empty)
* Qini curve     Q(n) = Y_T - Y_C * n_T / n_C                    (0 while n_C = 0)

Both start at (0, 0). The areas are trapezoids over n. Normalised score = (area of the model's curve
- area of the random line) / (area of the perfect curve - area of the random line), where the random
line joins (0, 0) to the curve's end (N, V(N)) and the perfect curve is scikit-uplift's (it ranks
treated responders first and control responders last, using the observed outcomes; the Qini's
perfect curve keeps negative effects). So 0 = random targeting, 1 = perfect, < 0 = worse than random.

Ties: rows with equal scores form one block that enters the curve together; the curve has a point
only at the end of each block (linear in between). The result does not depend on the row order
(a constant score gives exactly the random line, 0).

Intervals: percentile bootstrap over `n_resamples` resamples of the rows with replacement,
stratified by treatment (the treated and the control rows are resampled separately, so each
resample keeps n_T and n_C), seeded. With `groups` (a cluster id per row, e.g. the user) whole
clusters are resampled instead: rows of one user (or one request, which shares its arm) are
correlated, and resampling them one by one gives intervals that are too narrow (on `small`, the
placebo arm's AUUC excluded 0 for two models with row resampling; resampling users restores the
coverage). All scorers of one call are scored on the same resamples
(paired). The resamples are computed by `_areas` from block counts (a resample = integer weights
on the rows: the sort order does not change), which equals scikit-uplift's functions on the
resampled rows (tests/test_uplift_metrics.py checks it); the point estimates are scikit-uplift's.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

DEFAULT_RESAMPLES = 200
DEFAULT_CONFIDENCE = 0.95

# row types, the columns of a block-count matrix: treated responder, treated non-responder,
# control responder, control non-responder
_TR, _TN, _CR, _CN = 0, 1, 2, 3


@dataclass(frozen=True)
class UpliftScore:
    """Normalised AUUC and Qini coefficient of one scorer on one (arm vs control, outcome), with intervals.

    None where undefined: no treated or no control row, one outcome class only, or a perfect curve
    no better than random (all intervals also None when fewer than half the resamples are defined).
    """

    auuc: float | None
    auuc_low: float | None
    auuc_high: float | None
    qini: float | None
    qini_low: float | None
    qini_high: float | None
    n_treated: int
    n_control: int
    resamples: int  # resamples in which both metrics were defined

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# -- scikit-uplift (the definitions) ------------------------------------------------------------------
def _sklift(function: str) -> Callable[..., Any]:
    import sklift.metrics

    return getattr(sklift.metrics, function)


def _quiet(call: Callable[[], Any]) -> Any:
    """Run a scikit-uplift call without its warnings: it uses scikit-learn's `stable_cumsum`, deprecated
    (not changed) in the pinned scikit-learn, and divides by zero on degenerate inputs (handled here)."""
    with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", RuntimeWarning)
        return call()


def _checked(outcome: Any, score: Any, treated: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    y = np.asarray(outcome)
    s = np.asarray(score, dtype=np.float64)
    t = np.asarray(treated)
    if not (y.shape == s.shape == t.shape and y.ndim == 1):
        raise ValueError(
            f"outcome, score and treated must be 1-d of one length, got {y.shape}, {s.shape}, {t.shape}"
        )
    if not np.all(np.isfinite(s)):
        raise ValueError(f"scores must be finite ({int((~np.isfinite(s)).sum())} are not)")
    for name, values in (("outcome", y), ("treated", t)):
        if len(values) and not np.isin(values, (0, 1)).all():
            raise ValueError(f"{name} must be binary (0/1), got values {np.unique(values)[:5].tolist()}")
    return y.astype(np.int64), s, t.astype(np.int64)


def _defined(y: np.ndarray, t: np.ndarray) -> bool:
    """scikit-uplift needs both outcome classes and both groups."""
    return len(y) > 0 and 0 < y.sum() < len(y) and 0 < t.sum() < len(t)


def _finite(value: Any) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def auuc(outcome: Any, score: Any, treated: Any) -> float | None:
    """Normalised area under the uplift curve (`sklift.metrics.uplift_auc_score`); None if undefined."""
    y, s, t = _checked(outcome, score, treated)
    if not _defined(y, t):
        return None
    return _finite(_quiet(lambda: _sklift("uplift_auc_score")(y, s, t)))


def qini_coefficient(outcome: Any, score: Any, treated: Any) -> float | None:
    """Normalised area under the Qini curve (`sklift.metrics.qini_auc_score`, negative effects kept)."""
    y, s, t = _checked(outcome, score, treated)
    if not _defined(y, t):
        return None
    return _finite(_quiet(lambda: _sklift("qini_auc_score")(y, s, t, negative_effect=True)))


def uplift_curve(outcome: Any, score: Any, treated: Any) -> tuple[np.ndarray, np.ndarray]:
    """(rows targeted n, V(n)) at the end of each tie block, from (0, 0) (`sklift.metrics.uplift_curve`)."""
    y, s, t = _checked(outcome, score, treated)
    if not _defined(y, t):
        return np.zeros(1), np.zeros(1)
    x, v = _quiet(lambda: _sklift("uplift_curve")(y, s, t))
    return np.asarray(x, dtype=np.float64), np.asarray(v, dtype=np.float64)


def qini_curve(outcome: Any, score: Any, treated: Any) -> tuple[np.ndarray, np.ndarray]:
    """(rows targeted n, Q(n)) at the end of each tie block, from (0, 0) (`sklift.metrics.qini_curve`)."""
    y, s, t = _checked(outcome, score, treated)
    if not _defined(y, t):
        return np.zeros(1), np.zeros(1)
    x, q = _quiet(lambda: _sklift("qini_curve")(y, s, t))
    return np.asarray(x, dtype=np.float64), np.asarray(q, dtype=np.float64)


# -- the same numbers from block counts (fast, for the bootstrap) ---------------------------------------
def _row_types(y: np.ndarray, t: np.ndarray) -> np.ndarray:
    return np.where(t == 1, np.where(y == 1, _TR, _TN), np.where(y == 1, _CR, _CN)).astype(np.int64)


def _blocks(score: np.ndarray) -> tuple[np.ndarray, int]:
    """Block (tie group) of each row, numbered by descending score, and the number of blocks."""
    if not len(score):
        return np.zeros(0, dtype=np.int64), 0
    values, inverse = np.unique(-score, return_inverse=True)  # ascending -score = descending score
    return inverse.astype(np.int64).ravel(), len(values)


def _safe_div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.divide(a, b, out=np.zeros(np.broadcast(a, b).shape), where=b != 0)


def _curve_areas(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(uplift area, Qini area, random uplift area, random Qini area) of blocks taken in order.

    `counts`: float[..., G, 4]: per block (in targeting order) the treated responders, treated
    non-responders, control responders and control non-responders; leading axes are resamples.
    """
    c = np.cumsum(counts, axis=-2)
    yt, yc = c[..., _TR], c[..., _CR]
    nt, nc = yt + c[..., _TN], yc + c[..., _CN]
    start = np.zeros((*c.shape[:-2], 1))
    n = np.concatenate([start, nt + nc], axis=-1)
    v = np.concatenate([start, (_safe_div(yt, nt) - _safe_div(yc, nc)) * (nt + nc)], axis=-1)
    q = np.concatenate([start, yt - yc * _safe_div(nt, nc)], axis=-1)
    dx = np.diff(n, axis=-1)
    return (
        (dx * (v[..., 1:] + v[..., :-1])).sum(axis=-1) / 2.0,
        (dx * (q[..., 1:] + q[..., :-1])).sum(axis=-1) / 2.0,
        n[..., -1] * v[..., -1] / 2.0,
        n[..., -1] * q[..., -1] / 2.0,
    )


def _perfect_areas(total: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Areas of scikit-uplift's perfect uplift and Qini curves for the totals (float[..., 4]) of the
    four row types."""
    tr, tn, cr, cn = (total[..., i] for i in range(4))
    # perfect uplift: treated responders, control non-responders, then the control responders and the
    # treated non-responders, the control responders first when there are more of them
    # (`sklift.metrics.perfect_uplift_curve`)
    first = cr > tn
    blocks = np.zeros((*total.shape[:-1], 4, 4))
    blocks[..., 0, _TR] = tr
    blocks[..., 1, _CN] = cn
    blocks[..., 2, _CR] = np.where(first, cr, 0.0)
    blocks[..., 2, _TN] = np.where(first, 0.0, tn)
    blocks[..., 3, _TN] = np.where(first, tn, 0.0)
    blocks[..., 3, _CR] = np.where(first, 0.0, cr)
    # perfect Qini with negative effects: treated responders, every non-responder (one tie), control
    # responders (`sklift.metrics.perfect_qini_curve(negative_effect=True)`)
    qini = np.zeros((*total.shape[:-1], 3, 4))
    qini[..., 0, _TR] = tr
    qini[..., 1, _TN] = tn
    qini[..., 1, _CN] = cn
    qini[..., 2, _CR] = cr
    return _curve_areas(blocks)[0], _curve_areas(qini)[1]


def _normalised(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(normalised AUUC, Qini coefficient) from block counts float[..., G, 4]; nan where undefined
    (no treated or no control row, one outcome class, a perfect curve no better than random)."""
    total = counts.sum(axis=-2)
    tr, tn, cr, cn = (total[..., i] for i in range(4))
    defined = (tr + cr > 0) & (tn + cn > 0) & (tr + tn > 0) & (cr + cn > 0)
    area_v, area_q, random_v, random_q = _curve_areas(counts)
    perfect_v, perfect_q = _perfect_areas(total)
    with np.errstate(divide="ignore", invalid="ignore"):
        a = np.where(defined & (perfect_v != random_v), (area_v - random_v) / (perfect_v - random_v), np.nan)
        b = np.where(defined & (perfect_q != random_q), (area_q - random_q) / (perfect_q - random_q), np.nan)
    return a, b


def block_scores(outcome: Any, score: Any, treated: Any, weights: Any = None) -> tuple[float, float]:
    """(normalised AUUC, Qini coefficient) computed from block counts, rows weighted by `weights`
    (integer resample counts; None = 1 each). Equals scikit-uplift's on the rows repeated by their
    weights; nan where undefined."""
    y, s, t = _checked(outcome, score, treated)
    blocks, n_blocks = _blocks(s)
    w = np.ones(len(y)) if weights is None else np.asarray(weights, dtype=np.float64)
    counts = np.bincount(blocks * 4 + _row_types(y, t), weights=w, minlength=4 * n_blocks)
    a, b = _normalised(counts.reshape(n_blocks, 4))
    return float(a), float(b)


def _interval(values: np.ndarray, confidence: float) -> tuple[float | None, float | None]:
    finite = values[np.isfinite(values)]
    if len(finite) < max(1, len(values) // 2):
        return None, None
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(finite, [alpha, 1.0 - alpha])
    return float(low), float(high)


#: Resamples scored at once are bounded so that one batch's block counts stay near this many numbers.
_BATCH_CELLS = 1_000_000


def score_uplift(
    outcome: Any,
    treated: Any,
    scores: Mapping[str, Any],
    *,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: Any = 0,
    confidence: float = DEFAULT_CONFIDENCE,
    groups: Any = None,
) -> dict[str, UpliftScore]:
    """AUUC and Qini of every named scorer (higher = more uplift) on one (arm vs control, outcome).

    `outcome`, `treated`: 0/1 per row (treated = the arm, 0 = control); `scores`: name -> float[n].
    Every scorer is scored on the same resamples (seeded by `seed`, an int or a sequence of ints), so
    the intervals of two scorers are paired: stratified row resamples, or with `groups` (a cluster
    id per row) cluster resamples (see the module docstring).
    """
    y = np.asarray(outcome).astype(np.int64)
    t = np.asarray(treated).astype(np.int64)
    checked = {name: _checked(y, s, t)[1] for name, s in scores.items()}
    types = _row_types(y, t)
    blocks = {name: _blocks(s) for name, s in checked.items()}
    treated_rows, control_rows = np.flatnonzero(t == 1), np.flatnonzero(t == 0)
    rng = np.random.default_rng(seed)
    draws = {name: np.full((n_resamples, 2), np.nan) for name in checked}
    if groups is not None:
        codes = np.unique(np.asarray(groups), return_inverse=True)[1].reshape(-1)
        if len(codes) != len(y):
            raise ValueError(f"groups has {len(codes)} values for {len(y)} rows")
    if _defined(y, t):
        step = max(1, min(n_resamples, _BATCH_CELLS // (5 * len(y))))
        for first in range(0, n_resamples, step):
            size = min(step, n_resamples - first)
            offset = np.arange(size)[:, None]
            if groups is None:
                rows = np.concatenate(
                    [
                        treated_rows[rng.integers(0, len(treated_rows), (size, len(treated_rows)))],
                        control_rows[rng.integers(0, len(control_rows), (size, len(control_rows)))],
                    ],
                    axis=1,
                )
                weights = None
            else:  # every row once, weighted by how often its cluster was drawn
                rows = np.broadcast_to(np.arange(len(y)), (size, len(y)))
                weights = _cluster_counts(rng, codes, size)
            kinds = types[rows]
            for name, (block, n_blocks) in blocks.items():
                cells = ((offset * n_blocks + block[rows]) * 4 + kinds).ravel()
                counts = np.bincount(
                    cells, weights=None if weights is None else weights.ravel(), minlength=size * n_blocks * 4
                ).astype(np.float64)
                a, b = _normalised(counts.reshape(size, n_blocks, 4))
                draws[name][first : first + size, 0] = a
                draws[name][first : first + size, 1] = b
    out = {}
    for name, s in checked.items():
        both = np.isfinite(draws[name]).all(axis=1)
        auuc_low, auuc_high = _interval(draws[name][:, 0], confidence)
        qini_low, qini_high = _interval(draws[name][:, 1], confidence)
        out[name] = UpliftScore(
            auuc=auuc(y, s, t),
            auuc_low=auuc_low,
            auuc_high=auuc_high,
            qini=qini_coefficient(y, s, t),
            qini_low=qini_low,
            qini_high=qini_high,
            n_treated=int(len(treated_rows)),
            n_control=int(len(control_rows)),
            resamples=int(both.sum()),
        )
    return out


def _cluster_counts(rng: np.random.Generator, codes: np.ndarray, size: int) -> np.ndarray:
    """(size, rows) weights: in each of `size` resamples, G clusters drawn with replacement from the
    G clusters of `codes` (0..G-1 per row); a row's weight = how often its cluster was drawn."""
    n_groups = int(codes.max()) + 1
    drawn = rng.integers(0, n_groups, (size, n_groups)) + np.arange(size)[:, None] * n_groups
    counts = np.bincount(drawn.ravel(), minlength=size * n_groups).reshape(size, n_groups)
    return counts[:, codes].astype(np.float64)


def mean_difference(
    outcome: Any, treated: Any, confidence: float = DEFAULT_CONFIDENCE, groups: Any = None
) -> dict[str, Any]:
    """Observed average effect (treated rate - control rate) with a normal-approximation interval.

    The check of an arm on data without an oracle: an arm whose interval contains 0 shows no effect.
    With `groups` (a cluster id per row, e.g. the user) each rate's variance is the cluster-robust one
    (sum over clusters of the squared residual sums / n^2): correlated rows are not n independent draws.
    """
    from statistics import NormalDist

    y = np.asarray(outcome, dtype=np.float64)
    t = np.asarray(treated).astype(bool)
    n1, n0 = int(t.sum()), int((~t).sum())
    if n1 == 0 or n0 == 0:
        return {"ate": None, "low": None, "high": None, "n_treated": n1, "n_control": n0}
    p1, p0 = float(y[t].mean()), float(y[~t].mean())
    z = NormalDist().inv_cdf(0.5 + confidence / 2.0)
    if groups is None:
        variance = p1 * (1 - p1) / n1 + p0 * (1 - p0) / n0
    else:
        codes = np.unique(np.asarray(groups), return_inverse=True)[1].reshape(-1)
        variance = sum(
            float(np.sum(np.bincount(codes[rows], weights=y[rows] - rate) ** 2)) / len(y[rows]) ** 2
            for rows, rate in ((t, p1), (~t, p0))
        )
    half = z * math.sqrt(variance)
    ate = p1 - p0
    return {"ate": ate, "low": ate - half, "high": ate + half, "n_treated": n1, "n_control": n0}
