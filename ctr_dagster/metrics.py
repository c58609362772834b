"""Evaluation metrics. Built on scikit-learn (imported lazily); hand-written only where none exists."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


def auc(labels: np.ndarray, scores: np.ndarray) -> float | None:
    """ROC AUC, or None when only one class is present (undefined, not 0.5)."""
    from sklearn.metrics import roc_auc_score

    labels = np.asarray(labels)
    if labels.size == 0 or labels.min() == labels.max():
        return None
    return float(roc_auc_score(labels, scores))


def oracle_auc(dataset: pa.Table, oracle: pa.Table, split: str = "test") -> float | None:
    """AUC of the true click probability on one split: the ceiling every model is judged against."""
    rows = dataset.filter(pc.equal(dataset.column("split"), split))
    positions = pc.index_in(rows.column("impression_id"), value_set=oracle.column("impression_id"))
    p_true = pc.take(oracle.column("p_click"), positions)
    known = pc.is_valid(p_true)
    if not pc.all(known).as_py():
        missing = int(pc.sum(pc.invert(known).cast(pa.int64())).as_py())
        raise ValueError(f"oracle has no row for {missing} {split} impressions")
    return auc(rows.column("label").to_numpy(), p_true.to_numpy(zero_copy_only=False))
