"""Feature builder of the `lightgbm` model (numpy/pyarrow live here, imported only when used).

`build(table, ...)` turns a TRAINING-schema table into a float64 matrix, one column per name in
`FeatureSpec.names()`. Everything is vectorized over the flattened behaviour-sequence lists (no
per-row Python loop), so the same code scores a 1-row batch and a 300k-row table identically.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

if TYPE_CHECKING:
    from ctr_lightgbm.embeddings import ItemVectors

#: Indexed columns given to LightGBM as categorical features (0 = padding, 1 = OOV, real ids from 2).
CATEGORICAL = ("category_idx", "device_idx", "region_idx", "age_group_idx")
#: Optional high-cardinality id categoricals (off by default: both overfit on `small`, see the
#: README). Items and users enter the model through their statistics (`ctr_lightgbm.stats`) instead.
ITEM, USER = "item_idx", "user_idx"
#: Plain numeric columns of the TRAINING table.
DENSE = (
    "position",
    "hour",
    "day_of_week",
    "price",
    "item_age_days",
    "user_click_count",
    "is_new_user",
    "is_new_item",
)
#: The randomized coupon arm: known when the slate is served, and it moves the click probability.
TREATMENT = "treatment"
#: Features derived from the behaviour sequence (hist_item_idx, hist_category_idx, hist_age_s).
SEQUENCE = (
    "hist_len",  # number of remembered clicks
    "hist_cat_count",  # clicks in the target's category
    "hist_cat_share",  # hist_cat_count / hist_len (0 for an empty sequence)
    "hist_cat_recent_count",  # clicks in the target's category among the `recent` most recent
    "hist_cat_decayed",  # same-category clicks weighted by exp(-(age/1 day + rank/5)), rank 0 = newest
    "hist_cat_decayed_share",  # hist_cat_decayed / the same weights summed over all clicks
    "hist_last_cat_match",  # 1 if the most recent click is in the target's category
    "hist_item_count",  # times the target item itself was clicked before (known items only)
    "hist_cat_last_age_s",  # seconds since the most recent click in the target's category (or NO_CLICK_S)
    "hist_last_age_s",  # seconds since the most recent click of any category (or NO_CLICK_S)
    "hist_distinct_cats",  # distinct categories in the sequence
)
#: "No such click" for the age features: far beyond any real gap (about 31 years).
NO_CLICK_S = 1e9
DAY_S = 86_400.0
RANK_SCALE = 5.0


@dataclass(frozen=True)
class FeatureSpec:
    """Which optional inputs the matrix has (stored with the model so predict rebuilds the same one)."""

    use_item_idx: bool = False
    use_user_idx: bool = False
    use_treatment: bool = True
    use_stats: bool = True
    recent: int = 5
    #: Item-embedding features (`ctr_lightgbm.embeddings`): 0 = off, else the PCA components kept.
    embedding_components: int = 0
    use_embeddings: bool = False

    def categorical(self) -> list[str]:
        """Names LightGBM treats as categorical (they lead the matrix)."""
        ids = [ITEM] * self.use_item_idx + [USER] * self.use_user_idx
        return ids + list(CATEGORICAL)

    def table_columns(self) -> list[str]:
        """The leading names: plain columns of the TRAINING table."""
        return self.categorical() + list(DENSE) + [TREATMENT] * self.use_treatment

    def names(self) -> list[str]:
        from ctr_lightgbm import embeddings
        from ctr_lightgbm.stats import FEATURES as STATS

        extra = embeddings.names(self.embedding_components) if self.use_embeddings else []
        return self.table_columns() + list(SEQUENCE) + list(STATS) * self.use_stats + extra


def _numeric(table: pa.Table, name: str) -> np.ndarray:
    column = table.column(name)
    if pa.types.is_boolean(column.type):
        column = pc.cast(column, pa.int8())
    return column.to_numpy().astype(np.float64)


def _list(table: pa.Table, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(flattened values, row index of each value) of a list column; slices and chunks are handled."""
    column = table.column(name)
    array = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    values = pc.list_flatten(array).to_numpy(zero_copy_only=False)
    parents = pc.list_parent_indices(array).to_numpy(zero_copy_only=False).astype(np.int64)
    return values, parents


def sequence_features(table: pa.Table, recent: int = 5) -> np.ndarray:
    """float64[n, len(SEQUENCE)] from the behaviour sequence (most recent click last in each list)."""
    n = table.num_rows
    cats, parents = _list(table, "hist_category_idx")
    items, item_parents = _list(table, "hist_item_idx")
    ages, age_parents = _list(table, "hist_age_s")
    if not (np.array_equal(parents, item_parents) and np.array_equal(parents, age_parents)):
        raise ValueError("hist_category_idx, hist_item_idx and hist_age_s must have equal list lengths")
    ages = ages.astype(np.float64)
    lengths = np.bincount(parents, minlength=n).astype(np.int64)
    starts = np.cumsum(lengths) - lengths
    rank = (lengths[parents] - 1) - (np.arange(len(parents)) - starts[parents])  # 0 = most recent

    target_cat = table.column("category_idx").to_numpy().astype(np.int64)
    target_item = table.column("item_idx").to_numpy().astype(np.int64)
    same = cats == target_cat[parents]
    # OOV (1) and padding (0) are not an identity: an unknown target never "matches" an unknown click.
    same_item = (items == target_item[parents]) & (target_item[parents] > 1)
    weight = np.exp(-(np.maximum(ages, 0.0) / DAY_S + rank / RANK_SCALE))

    def per_row(values: np.ndarray) -> np.ndarray:
        return np.bincount(parents, weights=values.astype(np.float64), minlength=n)

    hist_len = lengths.astype(np.float64)
    cat_count = per_row(same)
    decayed = per_row(weight * same)
    decayed_all = per_row(weight)

    nonempty = lengths > 0
    last = starts[nonempty] + lengths[nonempty] - 1  # flat index of each row's most recent click
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


def build(
    table: pa.Table, spec: FeatureSpec, stats: np.ndarray | None = None, vectors: ItemVectors | None = None
) -> np.ndarray:
    """The model matrix (float64[n, len(spec.names())]), columns in the order of `spec.names()`.

    `stats` holds the id statistics columns (`ctr_lightgbm.stats`) when `spec.use_stats`; `vectors`
    the item vectors (`ctr_lightgbm.embeddings`) when `spec.use_embeddings`.
    """
    blocks = [np.column_stack([_numeric(table, name) for name in spec.table_columns()])]
    blocks.append(sequence_features(table, spec.recent))
    if spec.use_stats:
        if stats is None or stats.shape[0] != table.num_rows:
            raise ValueError("spec.use_stats needs the statistics columns of every row")
        blocks.append(stats)
    if spec.use_embeddings:
        if vectors is None:
            raise ValueError("spec.use_embeddings needs the item vectors (fit with item_embeddings)")
        blocks.append(vectors.features(table))
    return np.ascontiguousarray(np.column_stack(blocks), dtype=np.float64)
