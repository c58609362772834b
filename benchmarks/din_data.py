"""Data for the DIN benchmark: the TRAINING table of a profile (cached), its slices and the peer export.

Why a cache: building the `large` training table (generation of 9M impressions + sequences) takes
minutes on 2 cores; it is deterministic (seeded profile), so it is built once into
`benchmarks/.data/<profile>/training.parquet` and reused.

The world is generated with `corruption_rate=0`: corruption only touches the raw logs (the quality
stage would quarantine those rows) and draws from its own random stream, so the clean impressions
are exactly those the data graph would keep, without running Dagster.

The peer library gets the very same rows as NumPy arrays (`export_npz`): ids as they are, the
history lists left-padded with 0 (the padding index of every vocabulary) to `max_seq_len`, and the
float columns as quantile buckets, because torch-rechub's DIN only takes sparse (id) features.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

HERE = Path(__file__).resolve().parent
DATA = HERE / ".data"

#: Id columns given to both models as categorical fields (besides the target item/category).
ID_COLUMNS = (
    "user_idx",
    "device_idx",
    "region_idx",
    "age_group_idx",
    "position",
    "hour",
    "day_of_week",
    "treatment",
)
#: Float/count columns, bucketed for the peer (it has no dense input in DIN).
BUCKETED = ("price", "item_age_days", "user_click_count")
N_BUCKETS = 16


def build_training(profile_name: str, cache: Path = DATA, log=print) -> tuple[Path, dict]:
    """Path of the cached TRAINING table of `profile_name` (built on first use) and its build info."""
    folder = cache / profile_name
    path, meta_path = folder / "training.parquet", folder / "meta.json"
    if path.exists() and meta_path.exists():
        meta = json.loads(meta_path.read_text())
        meta["reused"] = True
        return path, meta
    from ctr_dagster.datagen import build_world, profile
    from ctr_dagster.dataset import DatasetConfig, build_training_table, plan_days
    from ctr_dagster.schemas import IMPRESSIONS, conform

    folder.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    world = build_world(profile(profile_name, corruption_rate=0.0))
    config = DatasetConfig(window_days=14, valid_days=1, test_days=1)  # fixed: comparable across runs
    plan = plan_days(world.dates(), config)
    days = []
    for day in plan.all:
        days.append(conform(world.day(day).impressions, IMPRESSIONS, source=f"{profile_name} {day}"))
        log(f"generated {day}: {days[-1].num_rows} impressions")
    impressions = pa.concat_tables(days)
    generated_s = time.perf_counter() - started
    built = build_training_table(impressions, world.items(), world.users(), plan, config)
    del impressions, days
    tmp = path.with_suffix(".tmp")
    pq.write_table(built.table, tmp, row_group_size=256_000)
    tmp.replace(path)
    meta = {
        "profile": profile_name,
        "generation_s": round(generated_s, 1),
        "build_s": round(time.perf_counter() - started - generated_s, 1),
        "rows": built.table.num_rows,
        "stats": built.stats,
        "cardinalities": {f"{name}_idx": int(update.size) for name, update in built.vocabs.items()},
        "max_seq_len": config.max_seq_len,
        "plan": {"train": plan.train, "valid": plan.valid, "test": plan.test},
    }
    meta_path.write_text(json.dumps(meta, indent=2))
    meta["reused"] = False
    return path, meta


def _split(table: pa.Table, name: str) -> pa.Table:
    return table.filter(pc.equal(table.column("split"), name))


def _evenly(table: pa.Table, n: int | None) -> pa.Table:
    """At most `n` rows spread evenly over the (time-ordered) table, so every hour stays represented."""
    if n is None or table.num_rows <= n:
        return table
    return table.take(np.linspace(0, table.num_rows - 1, n).astype(np.int64))


def load_splits(
    path: Path, max_train_rows: int | None, max_eval_rows: int | None
) -> tuple[pa.Table, pa.Table, pa.Table]:
    """Train = the most recent `max_train_rows` train rows (one contiguous slice right before the
    validation day: closest to the test traffic); valid/test = evenly spaced rows of their day."""
    table = pq.read_table(path)
    train, valid, test = (_split(table, s) for s in ("train", "valid", "test"))
    if max_train_rows is not None and train.num_rows > max_train_rows:
        train = train.slice(train.num_rows - max_train_rows)
    return train.combine_chunks(), _evenly(valid, max_eval_rows), _evenly(test, max_eval_rows)


def cardinalities(meta: dict, tables: list[pa.Table]) -> dict[str, int]:
    """Embedding sizes: the vocabularies' (pad + OOV + keys) and, for plain int columns, max + 1."""
    out = dict(meta["cardinalities"])
    out["position"] = max(int(pc.max(t.column("position")).as_py() or 0) for t in tables) + 1
    out["treatment"] = max(int(pc.max(t.column("treatment")).as_py() or 0) for t in tables) + 1  # arms
    out.update(hour=24, day_of_week=7)
    return out


def padded(column: pa.ChunkedArray | pa.Array, max_len: int) -> np.ndarray:
    """List column -> int64[n, max_len], left-padded with 0 (most recent behaviour in the last slot)."""
    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    lengths = pc.list_value_length(arr).to_numpy(zero_copy_only=False).astype(np.int64)
    values = pc.list_flatten(arr).to_numpy(zero_copy_only=False).astype(np.int64)
    lengths = np.minimum(lengths, max_len)
    out = np.zeros((len(arr), max_len), dtype=np.int64)
    offsets = arr.offsets.to_numpy()[1:].astype(np.int64) - arr.offsets.to_numpy()[0]
    row = np.repeat(np.arange(len(arr)), lengths)
    slot = np.arange(len(row)) - np.repeat(np.cumsum(lengths) - lengths, lengths)  # 0..len-1 per row
    col = max_len - np.repeat(lengths, lengths) + slot
    src = np.repeat(offsets, lengths) - np.repeat(lengths, lengths) + slot  # last `len` values of the list
    out[row, col] = values[src]
    return out


def bucket_edges(train: pa.Table) -> dict[str, np.ndarray]:
    """Quantile edges of the float columns, from the train split only (no look at valid/test)."""
    qs = np.linspace(0, 1, N_BUCKETS + 1)[1:-1]
    return {
        name: np.unique(np.quantile(train.column(name).to_numpy().astype(np.float64), qs))
        for name in BUCKETED
    }


def export_npz(table: pa.Table, target: Path, max_len: int, edges: dict[str, np.ndarray]) -> Path:
    """The rows of `table` as the arrays the peer script reads (all int64 except `label`)."""
    arrays: dict[str, np.ndarray] = {
        "label": table.column("label").to_numpy().astype(np.float32),
        "item_idx": table.column("item_idx").to_numpy().astype(np.int64),
        "category_idx": table.column("category_idx").to_numpy().astype(np.int64),
        "hist_item_idx": padded(table.column("hist_item_idx"), max_len),
        "hist_category_idx": padded(table.column("hist_category_idx"), max_len),
    }
    for name in ID_COLUMNS:
        arrays[name] = table.column(name).to_numpy().astype(np.int64)
    for name, cuts in edges.items():
        arrays[f"{name}_bucket"] = np.searchsorted(cuts, table.column(name).to_numpy(), side="right").astype(
            np.int64
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    np.savez(target, **arrays)
    return target
