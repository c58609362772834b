"""Count and click-rate statistics of ids, learned on the train split and stored with the model.

Per item, per user and per (user, category) the train split gives impressions ("shows") and clicks;
the model sees them as smoothed click rates and log counts. On the training rows themselves the
statistics are out-of-fold (each row's come from the other folds, scaled back to the full split),
so a row's own label never feeds its features (no target leakage); at predict time the full train
statistics are used. The tables are plain lists, so they serialize to JSON.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

KINDS = ("item", "user", "user_cat")
FEATURES = (
    "item_ctr",  # smoothed item click rate (towards the global rate)
    "item_log_shows",  # log(1 + impressions of the item)
    "user_ctr",  # smoothed user click rate (towards the global rate)
    "user_log_shows",  # log(1 + impressions of the user): activity, heavy vs long-tail users
    "user_cat_ctr",  # smoothed user click rate in the target's category (towards user_ctr)
    "user_cat_share",  # share of the user's impressions in the target's category
    "user_cat_log_clicks",  # log(1 + the user's clicks in the target's category)
    "zprice",  # log price standardized within the category (moments over the train impressions)
)


def _ints(table: pa.Table, name: str) -> np.ndarray:
    return table.column(name).to_numpy().astype(np.int64)


def _keys(table: pa.Table, stride: int) -> dict[str, np.ndarray]:
    """Row keys of each statistic; -1 = no key (falls back to the prior)."""
    user, cat = _ints(table, "user_idx"), _ints(table, "category_idx")
    user_cat = np.where((cat >= 0) & (cat < stride), user * stride + cat, -1)
    return {"item": _ints(table, "item_idx"), "user": user, "user_cat": user_cat}


def compile_tables(state: dict[str, Any]) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """The stored tables as numpy arrays (sorted keys, shows, clicks), ready for `transform`."""
    return {
        kind: (
            np.asarray(table["keys"], dtype=np.int64),
            np.asarray(table["shows"], dtype=np.float64),
            np.asarray(table["clicks"], dtype=np.float64),
        )
        for kind, table in state["tables"].items()
    }


def _lookup(
    keys: np.ndarray, table: tuple[np.ndarray, np.ndarray, np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """(shows, clicks) of each key in a sparse table (sorted keys); unknown keys get zeros."""
    stored, shows, clicks = table
    out_s, out_c = np.zeros(len(keys)), np.zeros(len(keys))
    if len(stored) == 0:
        return out_s, out_c
    pos = np.minimum(np.searchsorted(stored, keys), len(stored) - 1)
    hit = (stored[pos] == keys) & (keys >= 0)
    out_s[hit], out_c[hit] = shows[pos[hit]], clicks[pos[hit]]
    return out_s, out_c


def _features(
    counts: dict[str, tuple[np.ndarray, np.ndarray]], zprice: np.ndarray, state: dict
) -> np.ndarray:
    prior, m = state["prior"], state["smoothing"]
    item_s, item_c = counts["item"]
    user_s, user_c = counts["user"]
    uc_s, uc_c = counts["user_cat"]
    user_ctr = (user_c + m * prior) / (user_s + m)
    return np.column_stack(
        [
            (item_c + m * prior) / (item_s + m),
            np.log1p(item_s),
            user_ctr,
            np.log1p(user_s),
            (uc_c + state["user_cat_smoothing"] * user_ctr) / (uc_s + state["user_cat_smoothing"]),
            uc_s / np.maximum(user_s, 1.0),
            np.log1p(uc_c),
            zprice,
        ]
    )


def _zprice(table: pa.Table, state: dict) -> np.ndarray:
    cat = _ints(table, "category_idx")
    mean = np.asarray(state["price_mean"], dtype=np.float64)
    std = np.asarray(state["price_std"], dtype=np.float64)
    log_price = np.log1p(table.column("price").to_numpy().astype(np.float64))
    known = (cat >= 0) & (cat < len(mean))
    out = np.zeros(len(cat))
    out[known] = (log_price[known] - mean[cat[known]]) / std[cat[known]]
    return out


def fit(
    train: pa.Table, *, seed: int, folds: int, smoothing: float, user_cat_smoothing: float
) -> tuple[dict[str, Any], np.ndarray]:
    """(JSON-serializable state, out-of-fold features of the train rows: float64[n, len(FEATURES)])."""
    n = train.num_rows
    label = train.column("label").to_numpy().astype(np.float64)
    cat = _ints(train, "category_idx")
    stride = int(cat.max(initial=0)) + 1
    log_price = np.log1p(train.column("price").to_numpy().astype(np.float64))
    shows_c = np.bincount(cat, minlength=stride)
    mean = np.bincount(cat, weights=log_price, minlength=stride) / np.maximum(shows_c, 1)
    var = np.bincount(cat, weights=log_price**2, minlength=stride) / np.maximum(shows_c, 1) - mean**2
    state: dict[str, Any] = {
        "prior": float(label.mean()) if n else 0.0,
        "smoothing": float(smoothing),
        "user_cat_smoothing": float(user_cat_smoothing),
        "stride": stride,
        "price_mean": mean.tolist(),
        "price_std": np.sqrt(np.maximum(var, 1e-6)).tolist(),
        "tables": {},
    }
    keys = _keys(train, stride)
    if folds < 2:
        # (Leave-one-out would leak: within an id, clicked rows would get a visibly lower rate.)
        raise ValueError(f"stats_folds must be >= 2, got {folds}")
    fold = np.random.default_rng(seed).integers(0, folds, n)
    scale = folds / (folds - 1)
    counts: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for kind in KINDS:
        key = keys[kind]
        ok = key >= 0
        size = int(key.max(initial=0)) + 1
        shows = np.bincount(key[ok], minlength=size).astype(np.float64)
        clicks = np.bincount(key[ok], weights=label[ok], minlength=size)
        stored = np.flatnonzero(shows)
        state["tables"][kind] = {  # integer counts: compact, exact JSON
            "keys": stored.tolist(),
            "shows": shows[stored].astype(np.int64).tolist(),
            "clicks": np.rint(clicks[stored]).astype(np.int64).tolist(),
        }
        # Out-of-fold counts, scaled by folds/(folds-1) to the size of the whole train split.
        row_s, row_c = np.zeros(n), np.zeros(n)
        for f in range(folds):
            rows = ok & (fold == f)
            in_s = np.bincount(key[rows], minlength=size).astype(np.float64)
            in_c = np.bincount(key[rows], weights=label[rows], minlength=size)
            row_s[rows] = (shows - in_s)[key[rows]] * scale
            row_c[rows] = (clicks - in_c)[key[rows]] * scale
        counts[kind] = (row_s, row_c)
    return state, _features(counts, _zprice(train, state), state)


def transform(table: pa.Table, state: dict[str, Any], compiled: dict | None = None) -> np.ndarray:
    """The statistics features of any rows (float64[n, len(FEATURES)]) from the stored train tables.

    `compiled` is `compile_tables(state)`, passed in by callers that score many batches.
    """
    compiled = compiled if compiled is not None else compile_tables(state)
    keys = _keys(table, state["stride"])
    counts = {kind: _lookup(keys[kind], compiled[kind]) for kind in KINDS}
    return _features(counts, _zprice(table, state), state)
