"""Realistic bad rows injected into the RAW impressions only (the oracle keeps the generated truth).

So the quality rules have something real to catch; `DayData.corruption` lists every injected row
(raw row index, impression id, kind), which lets the quality stage measure its own recall.
Kinds are assigned round-robin in shuffled order, so even a tiny day gets each kind once it has
at least len(KINDS) bad rows.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ctr_dagster import schemas
from ctr_dagster.datagen.tables import format_ids

KINDS: tuple[str, ...] = (
    "null_user_id",
    "unknown_item_id",
    "bad_position",
    "ts_outside_day",
    "conversion_without_click",
    "invalid_click",
    "duplicate_impression_id",
)
MS_PER_DAY = 86_400_000

CORRUPTION = pa.schema(
    [
        pa.field("row", pa.int64(), nullable=False),
        pa.field("impression_id", pa.string(), nullable=False),
        pa.field("kind", pa.string(), nullable=False),
    ]
)


def corrupt(
    columns: dict[str, pa.Array], rate: float, n_items: int, rng: np.random.Generator
) -> tuple[pa.Table, pa.Table]:
    """(raw impressions in RAW_IMPRESSIONS, corruption log) from the generated columns."""
    n = len(columns["impression_id"])
    count = int(rng.binomial(n, rate)) if rate > 0 and n else 0
    rows = np.sort(rng.choice(n, size=count, replace=False))
    kinds = rng.permutation((rng.integers(len(KINDS)) + np.arange(count)) % len(KINDS))
    cols = dict(columns)

    def pick(kind: str) -> np.ndarray:
        return rows[kinds == KINDS.index(kind)]

    def mask(selected: np.ndarray) -> pa.Array:
        m = np.zeros(n, dtype=bool)
        m[selected] = True
        return pa.array(m)

    bad = pick("null_user_id")
    cols["user_id"] = pc.if_else(mask(bad), pa.scalar(None, pa.string()), cols["user_id"])
    bad = pick("unknown_item_id")
    unknown = format_ids("i", n_items + rng.integers(0, 10_000, size=len(bad)), 6)
    cols["item_id"] = pc.replace_with_mask(cols["item_id"], mask(bad), unknown)

    position = cols["position"].to_numpy(zero_copy_only=False).copy()
    position[pick("bad_position")] = rng.choice(
        np.array([0, -1], dtype=np.int16), size=len(pick("bad_position"))
    )
    cols["position"] = pa.array(position)
    ts = cols["ts"].cast(pa.int64()).to_numpy(zero_copy_only=False).copy()
    bad = pick("ts_outside_day")
    ts[bad] += rng.choice([-1, 1], size=len(bad)) * rng.integers(1, 4, size=len(bad)) * MS_PER_DAY
    cols["ts"] = pa.array(ts).cast(schemas.TS)
    click = cols["click"].to_numpy(zero_copy_only=False).copy()
    conversion = cols["conversion"].to_numpy(zero_copy_only=False).copy()
    bad = pick("conversion_without_click")
    click[bad], conversion[bad] = 0, 1
    click[pick("invalid_click")] = 2
    cols["click"], cols["conversion"] = pa.array(click), pa.array(conversion)

    table = pa.table(cols)
    dup = pick("duplicate_impression_id")
    if len(dup):
        table = pa.concat_tables([table, table.take(pa.array(dup))])
    dup_kind = KINDS.index("duplicate_impression_id")
    log_rows = np.concatenate([rows[kinds != dup_kind], n + np.arange(len(dup))])
    log_kinds = np.concatenate([kinds[kinds != dup_kind], np.full(len(dup), dup_kind)])
    order = np.argsort(log_rows)
    log = pa.table(
        {
            "row": pa.array(log_rows[order], type=pa.int64()),
            "impression_id": table.column("impression_id").take(pa.array(log_rows[order])),
            "kind": pa.array(KINDS).take(pa.array(log_kinds[order])),
        },
        schema=CORRUPTION,
    )
    return schemas.conform(table, schemas.RAW_IMPRESSIONS, source="datagen raw impressions"), log
