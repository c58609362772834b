"""The long-tail evaluation slice (AW-MoE reports its gains on long-tail users): torch-free.

Definition used here: a row is *long-tail* when the user's history in that row (the TRAINING
table's ``hist_item_idx`` list: the clicks remembered strictly before the request, at most the
dataset's max_seq_len) holds at most `max_behaviours` behaviours, 3 by default. Rows with no
history at all are included (they are the extreme of the tail) and can be left out with
``min_behaviours=1``. It is a per-row definition (the same user leaves the tail as they click),
which is what the model sees when it scores the row.

The engine's `ctr_dagster.metrics.slice_masks` buckets rows by ``user_click_count`` (clicks in the
whole look-back, not the remembered sequence); this slice is about the sequence the gate reads.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from ctr_dagster.metrics import auc, gauc

#: At most this many remembered behaviours make a row long-tail (MODELS.md: "<= 3 behaviours").
LONG_TAIL_MAX_BEHAVIOURS = 3


def history_lengths(table: pa.Table, column: str = "hist_item_idx") -> np.ndarray:
    """Behaviours in each row's history (int64; a null list counts 0)."""
    lengths = pc.fill_null(pc.list_value_length(table.column(column)), 0)
    return lengths.to_numpy(zero_copy_only=False).astype(np.int64)


def long_tail_mask(
    table: pa.Table, max_behaviours: int = LONG_TAIL_MAX_BEHAVIOURS, min_behaviours: int = 0
) -> np.ndarray:
    """Rows whose history holds between `min_behaviours` and `max_behaviours` behaviours (inclusive)."""
    if max_behaviours < min_behaviours or min_behaviours < 0:
        bounds = f"{min_behaviours}, {max_behaviours}"
        raise ValueError(f"need 0 <= min_behaviours <= max_behaviours, got {bounds}")
    n = history_lengths(table)
    return (n >= min_behaviours) & (n <= max_behaviours)


def long_tail_metrics(
    table: pa.Table,
    scores: np.ndarray,
    max_behaviours: int = LONG_TAIL_MAX_BEHAVIOURS,
    min_behaviours: int = 0,
) -> dict[str, Any]:
    """AUC and GAUC (per-user AUC, impression-weighted, `ctr_dagster.metrics.gauc`) overall and on
    the long-tail rows of `table` (rows aligned with `scores`), plus the slice's row count."""
    scores = np.asarray(scores, dtype=np.float64)
    labels = table.column("label").to_numpy(zero_copy_only=False).astype(np.float64)
    users = pc.dictionary_encode(table.column("user_id")).combine_chunks().indices.to_numpy()
    mask = long_tail_mask(table, max_behaviours, min_behaviours)

    def measure(m: np.ndarray) -> tuple[float | None, float | None]:
        if not m.any():
            return None, None
        return auc(labels[m], scores[m]), gauc(users[m], labels[m], scores[m])[0]

    everything = np.ones(len(labels), dtype=bool)
    (overall_auc, overall_gauc), (tail_auc, tail_gauc) = measure(everything), measure(mask)
    return {
        "rows": int(len(labels)),
        "auc": overall_auc,
        "gauc": overall_gauc,
        "long_tail_rows": int(mask.sum()),
        "long_tail_auc": tail_auc,
        "long_tail_gauc": tail_gauc,
    }
