"""Count and click-rate statistics of ids, learned on the train split and stored with the model.

Per item, per user and per (user, category) the train split gives impressions ("shows") and clicks;
the model sees them as smoothed click rates and log counts. At predict time (valid, test, serving)
the full train statistics are used: everything that happened before the scored rows.

On the training rows themselves the statistics come from the PAST only (time-ordered, expanding
folds): the rows are cut by `ts` into `folds` contiguous blocks of about equal size (rows sharing a
timestamp stay together) and a row of block k gets the counts of blocks 0..k-1, so a row's features
never depend on its own label or on any later row (block 0 gets the smoothing priors only, as a new
id at serving). Random folds would let a train row see labels from later days while valid and test
rows only see the past: that leak inflates the training fit and breaks the train / serving match.
The one quantity taken from the whole split is the smoothing prior (the global click rate), so an id
without evidence gets the same value in training and at serving. The tables are plain lists, so
they serialize to JSON.
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


def time_blocks(ts: np.ndarray, blocks: int) -> np.ndarray:
    """Block (0..blocks-1) of each row: contiguous time ranges of about equal row counts.

    Cut at row quantiles of `ts`; rows sharing a timestamp share a block, so a row in a lower block
    is strictly earlier than every row in a higher one (some blocks may be empty when ties are long).
    """
    ts = np.asarray(ts, dtype=np.int64)
    if len(ts) == 0:
        return np.zeros(0, dtype=np.int64)
    cuts = np.sort(ts)[(np.arange(1, blocks) * len(ts)) // blocks]
    return np.searchsorted(cuts, ts, side="right").astype(np.int64)


def past_sums(key: np.ndarray, block: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Per row: the sums of `weights` (float[n] or float[n, m]) over the rows with its key in a
    strictly earlier block; rows with key < 0 get 0.

    One sort by (key, block) and prefix sums (no loop over keys or blocks). Integer weights give exact
    integer sums (float64 holds them exactly), so unrelated rows never move by a rounding error.
    """
    weights = np.asarray(weights, dtype=np.float64)
    out = np.zeros(weights.shape)
    ok = np.flatnonzero(key >= 0)
    if len(ok) == 0:
        return out
    run = key[ok] * (int(block.max(initial=0)) + 1) + block[ok]  # (key, block) as one sortable integer
    sort = np.argsort(run, kind="stable")
    order, r = ok[sort], run[sort]
    k, w = key[order], weights[order]
    before = np.cumsum(w, axis=0) - w  # exclusive prefix sums in (key, block) order
    index = np.arange(len(order))
    key_start = np.maximum.accumulate(np.where(np.r_[True, k[1:] != k[:-1]], index, 0))
    run_start = np.maximum.accumulate(np.where(np.r_[True, r[1:] != r[:-1]], index, 0))
    out[order] = before[run_start] - before[key_start]
    return out


def _table(key: np.ndarray, label: np.ndarray) -> dict[str, list[int]]:
    """The stored sparse table of one kind: sorted keys with their train shows and clicks."""
    ok = key >= 0
    stored, inverse, shows = np.unique(key[ok], return_inverse=True, return_counts=True)
    clicks = np.bincount(inverse, weights=label[ok], minlength=len(stored))
    return {  # integer counts: compact, exact JSON
        "keys": stored.tolist(),
        "shows": shows.astype(np.int64).tolist(),
        "clicks": np.rint(clicks).astype(np.int64).tolist(),
    }


def fit(
    train: pa.Table, *, folds: int, smoothing: float, user_cat_smoothing: float
) -> tuple[dict[str, Any], np.ndarray]:
    """(JSON-serializable state, past-only features of the train rows: float64[n, len(FEATURES)]).

    `folds` is the number of contiguous time blocks of the expanding folds (see the module doc).
    """
    if folds < 2:
        # One block would leave every train row with the priors only; leave-one-out would leak the
        # future (and, within an id, give clicked rows a visibly lower rate).
        raise ValueError(f"stats_folds must be >= 2, got {folds}")
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
    block = time_blocks(train.column("ts").cast(pa.int64()).to_numpy(), folds)
    shows_clicks = np.column_stack([np.ones(n), label])
    counts: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for kind in KINDS:
        state["tables"][kind] = _table(keys[kind], label)
        past = past_sums(keys[kind], block, shows_clicks)
        counts[kind] = (past[:, 0], past[:, 1])
    return state, _features(counts, _zprice(train, state), state)


def transform(table: pa.Table, state: dict[str, Any], compiled: dict | None = None) -> np.ndarray:
    """The statistics features of any rows (float64[n, len(FEATURES)]) from the stored train tables.

    `compiled` is `compile_tables(state)`, passed in by callers that score many batches.
    """
    compiled = compiled if compiled is not None else compile_tables(state)
    keys = _keys(table, state["stride"])
    counts = {kind: _lookup(keys[kind], compiled[kind]) for kind in KINDS}
    return _features(counts, _zprice(table, state), state)
