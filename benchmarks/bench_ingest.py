"""Ingest throughput: the importer (CSV and Parquet, one day, 2M rows) and the quality split (1M rows).

The data is synthetic but shaped like a real log (string ids, epoch seconds, small ints, 0.1% bad
cells in the dirty variant). Reports best and median of N runs: rows/s = rows / seconds.
"""

import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from common import write_result

DAY0 = 1_704_067_200  # 2024-01-01T00:00:00Z
COLUMNS = {
    "impression_id": "event_id",
    "request_id": "req",
    "ts": "event_time",
    "user_id": "uid",
    "item_id": "sku",
    "position": "slot",
    "click": "clicked",
    "treatment": "treat",
    "device": "device",
}


def make_log(n: int, n_users: int = 100_000, n_items: int = 40_000, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    users = rng.integers(0, n_users, n)
    return pa.table(
        {
            "event_id": pa.array(np.char.add("e", np.arange(n).astype(str))),
            "req": pa.array(np.char.add("r", (np.arange(n) // 10).astype(str))),
            "event_time": np.sort(rng.integers(DAY0, DAY0 + 86_400, n)),
            "uid": pa.array(np.char.add("u", users.astype(str))),
            "sku": pa.array(np.char.add("i", rng.integers(0, n_items, n).astype(str))),
            "slot": rng.integers(1, 11, n).astype(np.int16),
            "clicked": (rng.random(n) < 0.1).astype(np.int8),
            "treat": (rng.random(n) < 0.5).astype(np.int8),
            "device": pa.array(rng.choice(["app", "mobile", "desktop"], n)),
        }
    )


def timed(fn, repeats: int) -> tuple[float, float, object]:
    times, out = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - started)
    return min(times), statistics.median(times), out


def bench_import(folder: Path, rows: int, repeats: int) -> dict[str, dict[str, float]]:
    from ctr_dagster.importers import iter_impressions, parse_mapping

    log = make_log(rows)
    pacsv.write_csv(log, folder / "day.csv")
    pq.write_table(log, folder / "day.parquet")
    results = {}
    for name in ("day.csv", "day.parquet"):
        mapping = parse_mapping(
            {
                "start_date": "2024-01-01",
                "tables": {
                    "impressions": {
                        "files": name,
                        "columns": COLUMNS,
                        "ts": {"unit": "s"},
                        "defaults": {"conversion": 0},
                    }
                },
            },
            base=folder,
        )

        def run(mapping=mapping) -> int:
            return sum(b.batch.num_rows for b in iter_impressions(mapping, "2024-01-01"))

        best, median, n = timed(run, repeats)
        results[name] = {
            "rows": n,
            "best_s": best,
            "median_s": median,
            "rows_per_s_best": n / best,
            "rows_per_s_median": n / median,
            "file_mb": (folder / name).stat().st_size / 1e6,
        }
    return results


def bench_quality(rows: int, repeats: int) -> dict[str, float]:
    import datetime as dt

    from ctr_dagster import schemas
    from ctr_dagster.quality import split_clean_impressions

    log = make_log(rows, seed=1)
    raw = pa.table(
        {
            "impression_id": log["event_id"],
            "request_id": log["req"],
            "ts": pa.array(log["event_time"].to_numpy() * 1000, pa.timestamp("ms", tz="UTC")),
            "user_id": log["uid"],
            "item_id": log["sku"],
            "position": log["slot"],
            "device": log["device"],
            "treatment": log["treat"],
            "click": log["clicked"],
            "conversion": pa.array(np.zeros(rows, np.int8)),
        }
    )
    raw = schemas.conform(raw, schemas.RAW_IMPRESSIONS)
    n_items, n_users = 40_000, 100_000
    items = schemas.conform(
        pa.table(
            {
                "item_id": pa.array(np.char.add("i", np.arange(n_items).astype(str))),
                "category": pa.array(["c"] * n_items),
                "title": pa.array(["t"] * n_items),
                "price": pa.array(np.ones(n_items, np.float32)),
                "first_seen": pa.array([dt.date(2023, 1, 1)] * n_items),
                "image_png": pa.nulls(n_items, pa.binary()),
            }
        ),
        schemas.ITEMS,
    )
    users = schemas.conform(
        pa.table(
            {
                "user_id": pa.array(np.char.add("u", np.arange(n_users).astype(str))),
                "signup_date": pa.array([dt.date(2023, 1, 1)] * n_users),
                "region": pa.array(["r"] * n_users),
                "age_group": pa.array(np.ones(n_users, np.int8)),
            }
        ),
        schemas.USERS,
    )
    split_clean_impressions(
        raw.slice(0, 1000), partition="2024-01-01", items=items, users=users
    )  # warm-up: GE import
    best, median, out = timed(
        lambda: split_clean_impressions(raw, partition="2024-01-01", items=items, users=users), repeats
    )
    return {
        "rows": rows,
        "best_s": best,
        "median_s": median,
        "rows_per_s_best": rows / best,
        "rows_per_s_median": rows / median,
        "quarantined": out[1].num_rows,
    }


def bench_import_profile(folder: Path, profile_name: str, repeats: int = 3) -> dict[str, dict[str, float]]:
    """The synthetic profile's raw impressions written as one file per day (CSV and Parquet), then
    imported partition by partition the way `raw_impressions` does (each file staged once into
    per-day shards, then every partition reads its shards); median of `repeats` runs, each from an
    empty staging folder. Also runnable alone on cached files: `benchmarks/ingest_daily.py`."""
    from ingest_daily import measure, write_files

    days = write_files(folder, profile_name)
    return {fmt: measure(folder, days, fmt, repeats) for fmt in ("csv", "parquet")}


def main() -> None:
    rows = int(sys.argv[1]) if len(sys.argv) > 1 else 2_000_000
    profile_name = sys.argv[2] if len(sys.argv) > 2 else "large"
    repeats = 5
    with tempfile.TemporaryDirectory() as tmp:
        importer = bench_import(Path(tmp), rows, repeats)
    with tempfile.TemporaryDirectory() as tmp:
        per_profile = bench_import_profile(Path(tmp), profile_name)
    write_result(
        "ingest",
        {
            "importer_one_day_file": importer,
            f"importer_{profile_name}_daily_files": per_profile,
            "quality_split": bench_quality(rows // 2, repeats),
            "goal_rows_per_s": 1_000_000,
        },
    )


if __name__ == "__main__":
    main()
