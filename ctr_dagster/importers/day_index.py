"""Which impression files hold rows of which day, remembered across runs (the new-data sensor's view).

Without it every daily partition would re-parse every impressions file: a year of daily CSV logs
means 365 full reads per partition. `scan_file` reads only the `ts` column (and Parquet
statistics), and its answer (the file's UTC days, whether it has undated rows) is kept per file,
keyed by (size, mtime, mapping), in a small JSON file: a file is scanned again only when it or the
mapping changes. Days are then assigned exactly as the staging assigns them: the window
(`generic.import_window`) comes from every file's days, days outside it hold no partition's rows,
and undated rows count for the first partition. A file that cannot be scanned (bad as a whole) is
remembered with its problem and covers no day, as the staging skips it. The index only narrows
which days a run is requested for; a missing or stale entry costs a rescan, never a lost row.
"""

from __future__ import annotations

import json
from pathlib import Path

from ctr_dagster import atomic
from ctr_dagster.errors import MalformedInputError
from ctr_dagster.importers.generic import file_problem, import_window, scan_file
from ctr_dagster.importers.mapping import ImportMapping
from ctr_dagster.importers.staging import mapping_key


def _signature(path: Path, mapping: ImportMapping) -> list:
    stat = path.stat()
    return [stat.st_size, stat.st_mtime_ns, mapping_key(mapping)]


def _load(index_path: Path) -> dict[str, dict]:
    try:
        return json.loads(index_path.read_text())
    except (OSError, ValueError):
        return {}


def _save(index_path: Path, index: dict[str, dict]) -> None:
    atomic.write_json(index_path, index)


def _scan(mapping: ImportMapping, file: Path, signature: list) -> dict:
    try:
        days, undated = scan_file(mapping, file)
    except MalformedInputError as exc:
        return {"signature": signature, "days": [], "undated": False, "problem": file_problem(exc)}
    return {"signature": signature, "days": sorted(days), "undated": undated, "problem": None}


def days_by_file(mapping: ImportMapping, index_path: Path) -> dict[Path, set[str]]:
    """Days of the import window each current impressions file holds rows of (the first partition
    for its undated rows), scanning only new or changed files. An empty folder is no error here: a
    watcher waits for files."""
    index = _load(index_path)
    entries: dict[Path, dict] = {}
    changed = False
    for file in mapping.files("impressions"):
        key, signature = str(file), _signature(file, mapping)
        entry = index.get(key)
        if entry is None or entry.get("signature") != signature:
            entry = index[key] = _scan(mapping, file, signature)
            changed = True
        entries[file] = entry
    if changed:
        _save(index_path, index)
    every_day = {d for e in entries.values() for d in e["days"]}
    first, last = import_window(mapping, every_day, any(e["undated"] for e in entries.values()))
    if first is None or last is None:
        return {file: set() for file in entries}
    return {
        file: {d for d in e["days"] if first <= d <= last} | ({first} if e["undated"] else set())
        for file, e in entries.items()
    }


def files_for_day(mapping: ImportMapping, partition: str, index_path: Path) -> list[Path]:
    """The impressions files that hold at least one row of `partition`."""
    return sorted(f for f, days in days_by_file(mapping, index_path).items() if partition in days)
