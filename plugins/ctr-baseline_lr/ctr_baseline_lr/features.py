"""Numeric helpers of the `baseline_lr` model (numpy/pyarrow live here, imported only when used)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

FEATURES = (
    "item_ctr_logit",
    "position",
    "hist_category_match",
    "is_new_item",
    "log_price",
    "log_user_clicks",
)


def column(table: pa.Table, name: str) -> np.ndarray:
    return table.column(name).to_numpy().astype(np.float64)


def logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def hist_category_match(table: pa.Table) -> np.ndarray:
    """Share of the behaviour sequence in the target's category (0 for an empty sequence)."""
    hist = table.column("hist_category_idx").combine_chunks()
    parents = pc.list_parent_indices(hist).to_numpy()
    flat = pc.list_flatten(hist).to_numpy()
    target = table.column("category_idx").to_numpy()
    lengths = pc.list_value_length(hist).to_numpy(zero_copy_only=False)
    hits = np.bincount(parents, weights=(flat == target[parents]), minlength=table.num_rows)
    return hits / np.maximum(lengths, 1)


def smoothed_item_ctr(items: np.ndarray, labels: np.ndarray, smoothing: float, prior: float):
    """(per-item smoothed CTR indexed by item_idx, leave-one-out CTR of each training row).

    Leave-one-out keeps a row's own label out of its feature, so the model cannot learn the label
    through the item's CTR (target leakage).
    """
    size = int(items.max()) + 1 if len(items) else 1
    clicks = np.bincount(items, weights=labels, minlength=size)
    shows = np.bincount(items, minlength=size).astype(np.float64)
    table = (clicks + smoothing * prior) / (shows + smoothing)
    loo = (clicks[items] - labels + smoothing * prior) / (shows[items] - 1 + smoothing)
    return table, loo


def lookup_ctr(table: np.ndarray, items: np.ndarray, prior: float) -> np.ndarray:
    """Smoothed CTR of each item; items not seen in training (or beyond the table) get the prior."""
    out = np.full(len(items), prior, dtype=np.float64)
    known = items < len(table)
    out[known] = table[items[known]]
    return out


def raw_features(table: pa.Table, item_ctr: np.ndarray) -> np.ndarray:
    return np.column_stack(
        [
            logit(item_ctr),
            column(table, "position"),
            hist_category_match(table),
            column(table, "is_new_item"),
            np.log1p(column(table, "price")),
            np.log1p(column(table, "user_click_count")),
        ]
    )
