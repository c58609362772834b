"""The `lightgbm` feature matrix in numpy alone: the program a serving bundle runs (as ``features.py``).

Standalone on purpose: the bundle's runtime loads this file from the bundle, with no ctr_lightgbm,
ctr_dagster or pyarrow installed. It computes, on the runtime's rows (`rows.scalar(name)`,
`rows.values(name)`, `rows.parents(name)`), exactly what `ctr_lightgbm.features.build` computes on a
pyarrow table, with the statistics of `ctr_lightgbm.stats.transform` and the item-vector features of
`ctr_lightgbm.embeddings.ItemVectors.features` -- same operations in the same order, so the matrix is
bitwise the same (the export checks the scores on its probe rows to 1e-5).

    features(rows, state, arrays) -> float64[n, len(state["names"])]

``state``: ``spec`` (the model's FeatureSpec fields), ``table_columns``, ``names``, ``stats`` (the
stored id statistics, or None); ``arrays``: ``unit``, ``scores``, ``residual`` (item vectors) when
the model uses item embeddings.
"""

from __future__ import annotations

from typing import Any

import numpy as np

NO_CLICK_S = 1e9
DAY_S = 86_400.0
RANK_SCALE = 5.0
KINDS = ("item", "user", "user_cat")
_PAIRS_PER_CHUNK = 200_000


def _list(rows: Any, name: str) -> tuple[np.ndarray, np.ndarray]:
    return rows.values(name), rows.parents(name)


def sequence_features(rows: Any, recent: int) -> np.ndarray:
    """`ctr_lightgbm.features.sequence_features`."""
    n = rows.n
    cats, parents = _list(rows, "hist_category_idx")
    items, item_parents = _list(rows, "hist_item_idx")
    ages, age_parents = _list(rows, "hist_age_s")
    if not (np.array_equal(parents, item_parents) and np.array_equal(parents, age_parents)):
        raise ValueError("hist_category_idx, hist_item_idx and hist_age_s must have equal list lengths")
    ages = ages.astype(np.float64)
    lengths = np.bincount(parents, minlength=n).astype(np.int64)
    starts = np.cumsum(lengths) - lengths
    rank = (lengths[parents] - 1) - (np.arange(len(parents)) - starts[parents])

    target_cat = rows.scalar("category_idx").astype(np.int64)
    target_item = rows.scalar("item_idx").astype(np.int64)
    same = cats == target_cat[parents]
    same_item = (items == target_item[parents]) & (target_item[parents] > 1)
    weight = np.exp(-(np.maximum(ages, 0.0) / DAY_S + rank / RANK_SCALE))

    def per_row(values: np.ndarray) -> np.ndarray:
        return np.bincount(parents, weights=values.astype(np.float64), minlength=n)

    hist_len = lengths.astype(np.float64)
    cat_count = per_row(same)
    decayed = per_row(weight * same)
    decayed_all = per_row(weight)

    nonempty = lengths > 0
    last = starts[nonempty] + lengths[nonempty] - 1
    last_cat_match = np.zeros(n)
    last_cat_match[nonempty] = same[last]
    last_age = np.full(n, NO_CLICK_S)
    last_age[nonempty] = ages[last]
    cat_last_age = np.full(n, NO_CLICK_S)
    if nonempty.any():
        masked = np.where(same, ages, NO_CLICK_S)
        cat_last_age[nonempty] = np.minimum.reduceat(masked, starts[nonempty])
    distinct = np.zeros(n)
    if len(parents):
        pairs = np.unique(parents * (int(cats.max()) + 1) + cats)
        distinct = np.bincount(pairs // (int(cats.max()) + 1), minlength=n).astype(np.float64)

    return np.column_stack(
        [
            hist_len,
            cat_count,
            cat_count / np.maximum(hist_len, 1.0),
            per_row(same & (rank < recent)),
            decayed,
            np.divide(decayed, decayed_all, out=np.zeros(n), where=decayed_all > 0),
            last_cat_match,
            per_row(same_item),
            cat_last_age,
            last_age,
            distinct,
        ]
    )


def _ints(rows: Any, name: str) -> np.ndarray:
    return rows.scalar(name).astype(np.int64)


def _lookup(
    keys: np.ndarray, table: tuple[np.ndarray, np.ndarray, np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    stored, shows, clicks = table
    out_s, out_c = np.zeros(len(keys)), np.zeros(len(keys))
    if len(stored) == 0:
        return out_s, out_c
    pos = np.minimum(np.searchsorted(stored, keys), len(stored) - 1)
    hit = (stored[pos] == keys) & (keys >= 0)
    out_s[hit], out_c[hit] = shows[pos[hit]], clicks[pos[hit]]
    return out_s, out_c


def _compiled(state: dict[str, Any]) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    cache = state.get("_compiled")
    if cache is None:
        cache = {
            kind: (
                np.asarray(table["keys"], dtype=np.int64),
                np.asarray(table["shows"], dtype=np.float64),
                np.asarray(table["clicks"], dtype=np.float64),
            )
            for kind, table in state["tables"].items()
        }
        state["_compiled"] = cache  # the runtime hands the same state to every call
    return cache


def stats_features(rows: Any, state: dict[str, Any]) -> np.ndarray:
    """`ctr_lightgbm.stats.transform`."""
    compiled = _compiled(state)
    user, cat = _ints(rows, "user_idx"), _ints(rows, "category_idx")
    stride = state["stride"]
    keys = {
        "item": _ints(rows, "item_idx"),
        "user": user,
        "user_cat": np.where((cat >= 0) & (cat < stride), user * stride + cat, -1),
    }
    counts = {kind: _lookup(keys[kind], compiled[kind]) for kind in KINDS}
    mean = np.asarray(state["price_mean"], dtype=np.float64)
    std = np.asarray(state["price_std"], dtype=np.float64)
    log_price = np.log1p(rows.scalar("price").astype(np.float64))
    known = (cat >= 0) & (cat < len(mean))
    zprice = np.zeros(len(cat))
    zprice[known] = (log_price[known] - mean[cat[known]]) / std[cat[known]]

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


def vector_features(rows: Any, arrays: dict[str, np.ndarray]) -> np.ndarray:
    """`ctr_lightgbm.embeddings.ItemVectors.features`."""
    unit, scores, residual = arrays["unit"], arrays["scores"], arrays["residual"]

    def table_rows(idx: np.ndarray) -> np.ndarray:
        idx = np.asarray(idx, dtype=np.int64)
        return np.where((idx >= 0) & (idx < len(unit)), idx, 0)

    n = rows.n
    target = table_rows(rows.scalar("item_idx"))
    items, parents = _list(rows, "hist_item_idx")
    ages, _ = _list(rows, "hist_age_s")
    items = table_rows(items)
    lengths = np.bincount(parents, minlength=n).astype(np.int64)
    starts = np.cumsum(lengths) - lengths
    rank = (lengths[parents] - 1) - (np.arange(len(parents)) - starts[parents])
    weight = np.exp(-(np.maximum(ages.astype(np.float64), 0.0) / DAY_S + rank / RANK_SCALE))

    nonempty = lengths > 0
    count = np.maximum(lengths, 1).astype(np.float64)
    total = np.bincount(parents, weights=weight, minlength=n)

    def similarity(table: np.ndarray) -> tuple[np.ndarray, ...]:
        cos = np.empty(len(parents))
        for s in range(0, len(parents), _PAIRS_PER_CHUNK):
            e = s + _PAIRS_PER_CHUNK
            cos[s:e] = np.einsum("ij,ij->i", table[target[parents[s:e]]], table[items[s:e]], dtype=np.float64)
        mean = np.bincount(parents, weights=cos, minlength=n) / count
        top, last = np.zeros(n), np.zeros(n)
        if nonempty.any():
            top[nonempty] = np.maximum.reduceat(cos, starts[nonempty])
            last[nonempty] = cos[starts[nonempty] + lengths[nonempty] - 1]
        weighted = np.bincount(parents, weights=weight * cos, minlength=n)
        return mean, top, last, np.divide(weighted, total, out=np.zeros(n), where=total > 0)

    mean_cos, max_cos, last_cos, decayed = similarity(unit)
    mean_r, max_r, _, decayed_r = similarity(residual)
    known = (np.abs(unit[target]).sum(axis=1) > 0).astype(np.float64)
    return np.column_stack(
        [
            scores[target].astype(np.float64),
            mean_cos,
            max_cos,
            last_cos,
            decayed,
            mean_r,
            max_r,
            decayed_r,
            known,
        ]
    )


def features(rows: Any, state: dict[str, Any], arrays: dict[str, np.ndarray]) -> np.ndarray:
    """The model matrix, columns in the order of ``state["names"]`` (`ctr_lightgbm.features.build`)."""
    spec = state["spec"]
    blocks = [np.column_stack([rows.scalar(name).astype(np.float64) for name in state["table_columns"]])]
    blocks.append(sequence_features(rows, int(spec["recent"])))
    if spec["use_stats"]:
        blocks.append(stats_features(rows, state["stats"]))
    if spec["use_embeddings"]:
        blocks.append(vector_features(rows, arrays))
    return np.ascontiguousarray(np.column_stack(blocks), dtype=np.float64)
