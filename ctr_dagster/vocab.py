"""Stable, versioned id vocabularies: raw ids -> dense indices that never get renumbered.

Nightly retrains see new users and items every day. If indices were recomputed per run, yesterday's
embedding row 17 would mean a different item today and warm starts would be silently wrong. So a
vocabulary is append-only: existing keys keep their index, new keys get new rows (in sorted order,
so two runs on the same data agree), and the vocabulary version goes up by one whenever it grows.

Index 0 is reserved for padding (sequence slots) and 1 for out-of-vocabulary keys (ids not seen in
any training split so far, e.g. items that appeared after the training window).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ctr_dagster.locks import exclusive
from ctr_dagster.schemas import VOCAB
from ctr_dagster.warehouse import Warehouse

PAD = 0
OOV = 1
FIRST_INDEX = 2


@dataclass(frozen=True)
class VocabUpdate:
    name: str
    table: pa.Table  # VOCAB schema: key, index, version
    added: int
    version: int

    @property
    def size(self) -> int:
        """Number of rows an embedding table needs (max index + 1, incl. pad and OOV)."""
        return FIRST_INDEX + self.table.num_rows

    def encode(self, keys: pa.Array | pa.ChunkedArray) -> np.ndarray:
        """Map raw keys to indices; unknown or null keys map to OOV."""
        positions = pc.index_in(keys, value_set=self.table.column("key"))
        indices = pc.take(self.table.column("index"), positions)
        return pc.fill_null(indices, OOV).to_numpy(zero_copy_only=False).astype(np.int32)


def table_name(name: str) -> str:
    return f"vocab_{name}"


def load(warehouse: Warehouse, name: str) -> pa.Table:
    if not warehouse.exists(table_name(name)):
        return VOCAB.empty_table()
    return warehouse.read(table_name(name))


def extend(current: pa.Table, name: str, keys: pa.Array | pa.ChunkedArray) -> VocabUpdate:
    """Append the keys not yet in `current`; pure (no I/O) so it is easy to test."""
    seen = pc.unique(pc.drop_null(keys.cast(pa.string())))
    new_mask = pc.invert(pc.is_in(seen, value_set=current.column("key")))
    new_keys = pc.sort_indices(pc.filter(seen, new_mask))
    new_keys = pc.take(pc.filter(seen, new_mask), new_keys)
    version = int(pc.max(current.column("version")).as_py() or 0) if current.num_rows else 0
    if len(new_keys) == 0:
        return VocabUpdate(name, current, 0, version)
    version += 1
    start = FIRST_INDEX + current.num_rows
    added = pa.table(
        {
            "key": new_keys,
            "index": pa.array(np.arange(start, start + len(new_keys), dtype=np.int32)),
            "version": pa.array(np.full(len(new_keys), version, dtype=np.int32)),
        },
        schema=VOCAB,
    )
    return VocabUpdate(name, pa.concat_tables([current, added]), len(new_keys), version)


def update(warehouse: Warehouse, name: str, keys: pa.Array | pa.ChunkedArray) -> VocabUpdate:
    """Load, extend with `keys` and (only if it grew) atomically persist the vocabulary `name`.

    Under a lock: two runs extending the same vocabulary at once would otherwise both append from
    the same base and hand the same index to different keys.
    """
    with exclusive(warehouse.lock_path(table_name(name))):
        result = extend(load(warehouse, name), name, keys)
        if result.added:
            warehouse.write(table_name(name), result.table)
    return result
