"""The multi-file import figure of `bench_ingest.py`, runnable alone on cached files.

A synthetic profile's raw impressions are written as one file per day (CSV and Parquet), then
imported partition by partition the way `raw_impressions` does: each file staged once into per-day
shards, then every partition reads its shards (data, quarantine and provenance).

Building the `large` world takes ~35 s, so the files can be kept in a folder (`--data`) and reused
across runs; this is what one profiles and compares before/after a change:

    .venv/bin/python benchmarks/ingest_daily.py large --data benchmarks/.data/ingest-large --repeats 3
    .venv/bin/python benchmarks/ingest_daily.py large --data ... --format csv --cprofile /tmp/ingest.prof
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

COLUMNS = (
    "impression_id",
    "request_id",
    "ts",
    "user_id",
    "item_id",
    "position",
    "device",
    "treatment",
    "click",
    "conversion",
)


def write_files(folder: Path, profile_name: str) -> list[str]:
    """Write the profile's impressions as logs-<day>.{csv,parquet} (once: kept if already there)."""
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    marker = folder / f"days-{profile_name}.json"
    if marker.exists():
        return json.loads(marker.read_text())
    from ctr_dagster.datagen import build_world, profile

    folder.mkdir(parents=True, exist_ok=True)
    world = build_world(profile(profile_name))
    days = world.dates()
    for day in days:
        table = world.day(day).impressions
        table = table.drop_columns(
            [c for c in ("history_item_ids",) if c in table.column_names]
        )  # CSV: no lists
        pacsv.write_csv(table, folder / f"logs-{day}.csv")
        pq.write_table(table, folder / f"logs-{day}.parquet")
    marker.write_text(json.dumps(days))
    return days


def import_all(folder: Path, days: list[str], fmt: str, staging: Path) -> int:
    """Stage every file and read every partition's shards; returns the rows seen (data + quarantine)."""
    from ctr_dagster.importers import parse_mapping
    from ctr_dagster.importers.staging import files_for_day, plan_import, read_day

    mapping = parse_mapping(
        {
            "start_date": days[0],
            "tables": {"impressions": {"files": f"logs-*.{fmt}", "columns": {c: c for c in COLUMNS}}},
        },
        base=folder,
    )
    rows = 0
    for day in plan_import(mapping, staging).days:  # the days in the data (corrupt rows add a few)
        for _file, staged in files_for_day(mapping, day, staging):
            data, quarantine, provenance = read_day(staged, day)
            assert provenance.num_rows == data.num_rows
            rows += data.num_rows + quarantine.num_rows
    return rows


def measure(folder: Path, days: list[str], fmt: str, repeats: int = 1) -> dict[str, float]:
    """Time `import_all` from an empty staging folder `repeats` times (median and best)."""
    import ctr_dagster.importers.staging  # noqa: F401  (module import time is not ingest time)

    times, cpu, rows = [], [], 0
    for _ in range(repeats):
        staging = Path(tempfile.mkdtemp(prefix=f"staging-{fmt}-", dir=folder))
        try:
            started, started_cpu = time.perf_counter(), time.process_time()
            rows = import_all(folder, days, fmt, staging)
            times.append(time.perf_counter() - started)
            cpu.append(time.process_time() - started_cpu)  # all threads: less sensitive to other load
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    median = statistics.median(times)
    return {
        "rows": rows,
        "partitions": len(days),
        "seconds_incl_staging": median,
        "best_s": min(times),
        "runs_s": times,
        "cpu_s_median": statistics.median(cpu),
        "rows_per_s": rows / median,
        "rows_per_s_best": rows / min(times),
        "total_mb": sum(p.stat().st_size for p in folder.glob(f"logs-*.{fmt}")) / 1e6,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("profile", nargs="?", default="large")
    parser.add_argument("--data", type=Path, required=True, help="folder for the daily files (kept)")
    parser.add_argument("--format", choices=("csv", "parquet", "both"), default="both")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cprofile", type=Path, help="write a cProfile of one run here instead")
    args = parser.parse_args()
    days = write_files(args.data, args.profile)
    formats = ("csv", "parquet") if args.format == "both" else (args.format,)
    if args.cprofile:
        import cProfile

        cProfile.runctx(
            "measure(args.data, days, formats[0])", globals(), locals(), filename=str(args.cprofile)
        )
        return
    for fmt in formats:
        result = measure(args.data, days, fmt, args.repeats)
        load = Path("/proc/loadavg").read_text().split()[:3]
        print(json.dumps({"format": fmt, "loadavg_after": load, **result}))


if __name__ == "__main__":
    main()
