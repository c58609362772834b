"""Parse each impressions file once, into per-day shards, so partitions never re-read files.

Real logs have stragglers: a file written for one day holds a few rows of its neighbours (late
events, clock skew). Importing partition by partition would re-parse every such file for every
day it touches. Instead, the first call that needs a file stages it: one pass
(`generic.iter_file_days`) writes ``<root>/<file key>/dt=YYYY-MM-DD/{data,quarantine}.arrow``
for every UTC day its rows fall on, ``undated/`` for the rows that cannot be dated, then a
`_SUCCESS` marker holding the per-day counts of good and quarantined rows; the folder appears
atomically (built beside its target and renamed), so a crash leaves nothing half-staged. The key
combines the file's path with its size, modification time and the parts of the mapping that shape
its rows, so a changed file (or mapping) is staged again and its previous shards are removed.

A bad file (empty, header only, undecodable, a mapped column missing, mostly unparseable) is
staged as its problem: a marker with no shards. `plan_import` reports it and the other files
import; only when every file is bad does the import fail, naming each file's problem.

The days come from the data, so staging never needs the partition window: `plan_import` reads the
markers (no data) and decides it (`generic.import_window`): the days in range, the rows out of
range per day, and the first partition, which also receives every file's undated rows.

Shards are uncompressed Arrow IPC files, not Parquet: they are a private cache read back once per
partition, memory-mapped with no copy and no decode, and a straggler shard of a few rows costs
~0.1 ms to write and open in IPC against several ms in Parquet. Each row's provenance (its 1-based
row in the source file) is a column of the data shard; the file name is in the `_SUCCESS` marker.
The warehouse record (`raw_impressions`) stays Parquet.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import shutil
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc

from ctr_dagster import atomic, schemas
from ctr_dagster.errors import MalformedInputError
from ctr_dagster.importers.generic import (
    ImportBatch,
    all_bad,
    file_problem,
    import_window,
    iter_file_days,
    table_files,
)
from ctr_dagster.importers.mapping import ImportMapping
from ctr_dagster.locks import exclusive

DONE = "_SUCCESS"
#: The partition window `plan_import` decided last (read by `read_day` to find the first partition).
WINDOW = "_window.json"
UNDATED = "undated"
#: Uncompressed: lz4 made staging + reading ~1/3 more CPU on the `large` benchmark (compressing
#: on write, decompressing on every read), while an uncompressed shard is read by memory-mapping it
#: with no copy. The price is disk: a staged file takes about its in-memory Arrow size (~0.8x a CSV).
_OPTIONS = ipc.IpcWriteOptions(compression=None)
_SOURCE_ROW = "source_row"
#: A data shard: the day's RAW_IMPRESSIONS rows and, beside them, their 1-based source row.
_SHARD = schemas.RAW_IMPRESSIONS.append(pa.field(_SOURCE_ROW, pa.int64()))
#: Bumped when the shard layout changes, so shards of an older layout are staged again.
_LAYOUT = 3


@dataclass(frozen=True)
class ImportPlan:
    """What the impressions files hold, from the staging markers (no data read once staged)."""

    days: list[str]  # sorted days inside [first, last] holding >= 1 row (good or quarantined)
    first: str | None  # the partition window, inclusive (None when there is no data at all)
    last: str | None
    out_of_range: dict[str, int]  # day -> rows dated outside the window (counted, not imported)
    skipped: list[tuple[str, str]]  # (file, problem) of every bad file, left out
    rows_read: int  # data rows of the imported files (= in the window + out of range)
    files: list[str]  # every file the globs match (skipped ones too)
    undated: int = 0  # rows without a usable ts (or unsplittable): in the first partition


def mapping_key(mapping: ImportMapping) -> str:
    """Digest of what in the mapping shapes a file's staged rows (the impressions table, the bad-row
    fraction, the root that stable ids are relative to): a mapping edit restages, an unrelated one
    (dates, catalogue) does not. Stable across processes: written with sorted keys (a dict's order
    may differ run to run)."""
    plain = {
        "impressions": _plain(mapping.table("impressions")),
        "max_bad": mapping.max_bad_fraction,
        "root": str(mapping.root),
    }
    return hashlib.sha1(json.dumps(plain, sort_keys=True).encode()).hexdigest()[:8]


def _plain(value: Any) -> Any:
    """JSON-able, order-stable form of a mapping part (dataclasses, mappings, sequences, scalars)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return re.sub(r" at 0x[0-9a-fA-F]+", "", repr(value))  # Arrow scalars: type and value


def _path_key(file: Path) -> str:
    return hashlib.sha1(str(file.resolve()).encode()).hexdigest()[:16]


def staged_dir(mapping: ImportMapping, file: Path, root: Path) -> Path:
    """Where `file` is staged: a new folder whenever the file, its readability or the mapping change."""
    stat = file.stat()
    readable = os.access(file, os.R_OK)  # a chmod does not touch mtime: a fixed file is retried
    signature = f"{stat.st_size}:{stat.st_mtime_ns}:{readable}:{mapping_key(mapping)}:{_LAYOUT}"
    return root / f"{_path_key(file)}-{hashlib.sha1(signature.encode()).hexdigest()[:8]}"


def stage(mapping: ImportMapping, file: Path, root: Path) -> Path:
    """The staged shards of `file` (staging it now if it is new or changed). A bad file is staged as
    its problem (see `marker`), never raised: the caller decides."""
    target = staged_dir(mapping, file, root)
    if (target / DONE).exists():
        return target
    root.mkdir(parents=True, exist_ok=True)
    with exclusive(root / f"{_path_key(file)}.lock"):  # parallel partition runs: one stages, others reuse
        if not (target / DONE).exists():
            _stage(mapping, file, root, target)
    return target


class _Shards:
    """The open shard writers of one staging pass, and each folder's (good, quarantined) counts."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.writers: dict[str, ipc.RecordBatchFileWriter] = {}
        self.quarantine: dict[str, list[pa.Table]] = {}
        self.counts: dict[str, list[int]] = {}

    def add(self, folder: str, part: ImportBatch) -> None:
        if folder not in self.writers:
            (self.tmp / folder).mkdir()
            self.writers[folder] = ipc.new_file(self.tmp / folder / "data.arrow", _SHARD, options=_OPTIONS)
            self.quarantine[folder], self.counts[folder] = [], [0, 0]
        if part.batch.num_rows:
            self.writers[folder].write_batch(_shard_batch(part))
            self.counts[folder][0] += part.batch.num_rows
        if part.quarantine.num_rows:
            self.quarantine[folder].append(part.quarantine)
            self.counts[folder][1] += part.quarantine.num_rows

    def close(self) -> None:
        writers, self.writers = self.writers, {}
        for writer in writers.values():
            writer.close()

    def finish(self) -> None:
        self.close()
        for folder, tables in self.quarantine.items():
            if tables:  # most days have none: no file, read_day returns an empty table
                _write(pa.concat_tables(tables), self.tmp / folder / "quarantine.arrow")


def _stage(mapping: ImportMapping, file: Path, root: Path, target: Path) -> None:
    tmp = root / f".tmp-{uuid.uuid4().hex}"
    tmp.mkdir(parents=True)
    shards = _Shards(tmp)
    try:
        try:
            for day, part in iter_file_days(mapping, file):
                shards.add(UNDATED if day is None else f"dt={day}", part)
            shards.finish()
            counts = shards.counts
            marker: dict[str, Any] = {
                "file": str(file),
                "days": {k.removeprefix("dt="): v for k, v in sorted(counts.items()) if k != UNDATED},
                "undated": counts.get(UNDATED, [0, 0]),
                "skipped": None,
            }
        except MalformedInputError as exc:  # a bad file: its problem is the staged result
            shards.close()
            shutil.rmtree(tmp)
            tmp.mkdir()
            marker = {
                "file": str(file),
                "days": {},
                "undated": [0, 0],
                "skipped": file_problem(exc),
                "error": [exc.row, exc.column, exc.message],
            }
        (tmp / DONE).write_text(json.dumps(marker))
        for old in root.glob(f"{_path_key(file)}-*"):  # shards of earlier versions of this file
            if old != target and old.is_dir():
                shutil.rmtree(old, ignore_errors=True)
        os.replace(tmp, target)
    except BaseException:
        shards.close()
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _shard_batch(part: ImportBatch) -> pa.RecordBatch:
    """RAW_IMPRESSIONS columns + the 1-based source row of each (the provenance, stored inline)."""
    data = part.batch
    if not data.schema.equals(schemas.RAW_IMPRESSIONS):  # a cast per column costs ~0.1 ms even when a no-op
        data = data.cast(schemas.RAW_IMPRESSIONS)
    return pa.RecordBatch.from_arrays([*data.columns, part.source_rows], schema=_SHARD)


def marker(staged: Path) -> dict[str, Any]:
    """A staged file's record: `file`, `days` (day -> [good, quarantined] rows), `undated`
    ([good, quarantined] rows without a day) and `skipped` (the problem of a bad file, else None)."""
    return json.loads((staged / DONE).read_text())


def staged_days(staged: Path) -> list[str]:
    """The UTC days a staged file holds rows of (in range or not)."""
    return sorted(marker(staged)["days"])


# -- the import as a whole -----------------------------------------------------------------------
def plan_import(mapping: ImportMapping, staging_root: Path) -> ImportPlan:
    """Stage every impressions file (once: later calls only read the markers) and decide the import:
    the partition window, its days with data, the rows out of range, the skipped files.

    Raises `MappingError` when a glob matches no file and `MalformedInputError` when every file is
    bad (a lone file's own error, else one listing each file's problem).
    """
    return _plan(mapping, staging_root)[0]


def _plan(mapping: ImportMapping, root: Path) -> tuple[ImportPlan, list[tuple[Path, Path, dict]]]:
    files = table_files(mapping, "impressions")
    used: list[tuple[Path, Path, dict]] = []
    skipped: list[tuple[str, str]] = []
    errors: list[MalformedInputError] = []
    for file in files:
        staged = stage(mapping, file, root)
        record = marker(staged)
        if record["skipped"]:
            skipped.append((str(file), record["skipped"]))
            errors.append(MalformedInputError(file, *record["error"]))
        else:
            used.append((file, staged, record))
    if errors and len(errors) == len(files):
        raise all_bad("impressions", skipped, errors)
    rows: dict[str, int] = {}
    undated = 0
    for _file, _staged, record in used:
        for day, (good, bad) in record["days"].items():
            rows[day] = rows.get(day, 0) + good + bad
        undated += sum(record["undated"])
    first, last = import_window(mapping, rows, undated > 0)
    inside = {d for d in rows if first is not None and last is not None and first <= d <= last}
    plan = ImportPlan(
        days=sorted(inside | ({first} if undated and first is not None else set())),
        first=first,
        last=last,
        out_of_range={d: n for d, n in sorted(rows.items()) if d not in inside},
        skipped=skipped,
        rows_read=sum(rows.values()) + undated,
        files=[str(f) for f in files],
        undated=undated,
    )
    _record_window(root, first, last)
    return plan, used


def _record_window(root: Path, first: str | None, last: str | None) -> None:
    """Keep the window beside the shards (written only when it changes: partition runs read it)."""
    path = root / WINDOW
    value = {"first": first, "last": last}
    try:
        if json.loads(path.read_text()) == value:
            return
    except (OSError, ValueError):
        pass
    root.mkdir(parents=True, exist_ok=True)
    atomic.write_json(path, value)


def _recorded_first(root: Path) -> str | None:
    try:
        return json.loads((root / WINDOW).read_text())["first"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def files_for_day(mapping: ImportMapping, partition: str, root: Path) -> list[tuple[Path, Path]]:
    """(file, staged folder) of every usable impressions file holding rows of `partition`; none when
    the day is outside the window. The first partition also takes every file with undated rows.

    Staging every file on first use is the cheapest way to know its days for CSV (a scan would read
    the whole file anyway); later partitions and re-runs only read the markers and their shards.
    """
    plan, used = _plan(mapping, root)
    if plan.first is None or plan.last is None or not plan.first <= partition <= plan.last:
        return []
    return [
        (file, staged)
        for file, staged, record in used
        if partition in record["days"] or (partition == plan.first and sum(record["undated"]))
    ]


def read_day(staged: Path, day: str, *, undated: bool | None = None) -> tuple[pa.Table, pa.Table, pa.Table]:
    """(RAW_IMPRESSIONS rows, QUARANTINE rows, provenance) of `day` in a staged file (empty if it has
    none); provenance holds the source_file and 1-based source_row of each data row.

    `undated`: also the file's rows that have no day (they belong to the first partition); by
    default when `day` is the first partition of the window `plan_import` last decided.
    """
    if undated is None:
        undated = _recorded_first(staged.parent) == day
    folders = [staged / f"dt={day}"] + ([staged / UNDATED] if undated else [])
    shards, rejected = [], []
    for folder in folders:
        if not folder.exists():
            continue
        shards.append(_read(folder / "data.arrow"))
        if (folder / "quarantine.arrow").exists():
            table = _read(folder / "quarantine.arrow")
            if folder.name == UNDATED:  # staged without a partition: they are this day's now
                index = table.schema.get_field_index("partition")
                table = table.set_column(index, table.schema.field(index), pa.array([day] * table.num_rows))
            rejected.append(table)
    if not shards:
        return (
            schemas.empty(schemas.RAW_IMPRESSIONS),
            schemas.empty(schemas.QUARANTINE),
            schemas.empty(schemas.PROVENANCE),
        )
    shard = pa.concat_tables(shards)
    rows = shard.column(_SOURCE_ROW)
    names = pa.DictionaryArray.from_arrays(
        pa.array(np.zeros(len(rows), np.int32)), pa.array([marker(staged)["file"]])
    )
    provenance = pa.table({"source_file": names, "source_row": rows}, schema=schemas.PROVENANCE)
    quarantine = pa.concat_tables(rejected) if rejected else schemas.empty(schemas.QUARANTINE)
    return shard.drop_columns([_SOURCE_ROW]), quarantine, provenance


def _write(table: pa.Table, path: Path) -> None:
    with ipc.new_file(path, table.schema, options=_OPTIONS) as writer:
        writer.write_table(table)


def _read(path: Path) -> pa.Table:
    with pa.memory_map(str(path)) as source:
        return ipc.open_file(source).read_all()
