"""Which impression files hold rows of which day, remembered across runs.

Without it every daily partition would re-parse every impressions file: a year of daily CSV logs
means 365 full reads per partition. `scan_days` reads only the `ts` column (and Parquet
statistics), and its answer is kept per file, keyed by (size, mtime), in a small JSON file: a file
is scanned again only when it changes. The index only narrows which files a partition reads; a
missing or stale entry costs a rescan, never a lost row.
"""

from __future__ import annotations

import json
from pathlib import Path

from ctr_dagster import atomic
from ctr_dagster.importers.generic import scan_days
from ctr_dagster.importers.mapping import ImportMapping


def _signature(path: Path) -> list[float]:
    stat = path.stat()
    return [stat.st_size, stat.st_mtime_ns]


def _load(index_path: Path) -> dict[str, dict]:
    try:
        return json.loads(index_path.read_text())
    except (OSError, ValueError):
        return {}


def _save(index_path: Path, index: dict[str, dict]) -> None:
    atomic.write_json(index_path, index)


def days_by_file(mapping: ImportMapping, index_path: Path) -> dict[Path, set[str]]:
    """Days covered by each current impressions file, scanning only new or changed files."""
    index = _load(index_path)
    result: dict[Path, set[str]] = {}
    changed = False
    for file in mapping.files("impressions"):
        key, signature = str(file), _signature(file)
        entry = index.get(key)
        if entry is None or entry.get("signature") != signature:
            entry = {"signature": signature, "days": sorted(scan_days(mapping, file))}
            index[key] = entry
            changed = True
        result[file] = set(entry["days"])
    if changed:
        _save(index_path, index)
    return result


def files_for_day(mapping: ImportMapping, partition: str, index_path: Path) -> list[Path]:
    """The impressions files that hold at least one row of `partition`."""
    return sorted(f for f, days in days_by_file(mapping, index_path).items() if partition in days)
