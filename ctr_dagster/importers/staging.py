"""Parse each impressions file once, into per-day shards, so partitions never re-read files.

Real logs have stragglers: a file written for one day holds a few rows of its neighbours (late
events, clock skew). Importing partition by partition would re-parse every such file for every
day it touches. Instead, the first partition that needs a file stages it: one pass
(`generic.iter_file_days`) writes ``<root>/<file key>/dt=YYYY-MM-DD/{data,quarantine}.arrow``
for every day the file covers, then a `_SUCCESS` marker; the folder appears atomically (built
beside its target and renamed), so a crash or a malformed file leaves nothing half-staged. The
key combines the file's path with its size and modification time, so a changed file is staged
again and its previous shards are removed.

Shards are uncompressed Arrow IPC files, not Parquet: they are a private cache read back once per
partition, memory-mapped with no copy and no decode, and a straggler shard of a few rows costs
~0.1 ms to write and open in IPC against several ms in Parquet. Each row's provenance (its 1-based
row in the source file) is a column of the data shard; the file name is in the `_SUCCESS` marker.
The warehouse record (`raw_impressions`) stays Parquet.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc

from ctr_dagster import schemas
from ctr_dagster.importers.generic import ImportBatch, iter_file_days
from ctr_dagster.importers.mapping import ImportMapping
from ctr_dagster.locks import exclusive

DONE = "_SUCCESS"
#: Uncompressed: lz4 made staging + reading ~1/3 more CPU on the `large` benchmark (compressing
#: on write, decompressing on every read), while an uncompressed shard is read by memory-mapping it
#: with no copy. The price is disk: a staged file takes about its in-memory Arrow size (~0.8x a CSV).
_OPTIONS = ipc.IpcWriteOptions(compression=None)
_SOURCE_ROW = "source_row"
#: A data shard: the day's RAW_IMPRESSIONS rows and, beside them, their 1-based source row.
_SHARD = schemas.RAW_IMPRESSIONS.append(pa.field(_SOURCE_ROW, pa.int64()))
#: Bumped when the shard layout changes, so shards of an older layout are staged again.
_LAYOUT = 2


def _path_key(file: Path) -> str:
    return hashlib.sha1(str(file.resolve()).encode()).hexdigest()[:16]


def staged_dir(file: Path, root: Path) -> Path:
    stat = file.stat()
    version = hashlib.sha1(f"{stat.st_size}:{stat.st_mtime_ns}:{_LAYOUT}".encode()).hexdigest()[:8]
    return root / f"{_path_key(file)}-{version}"


def stage(mapping: ImportMapping, file: Path, root: Path) -> Path:
    """The staged shards of `file` (staging it now if it is new or changed)."""
    target = staged_dir(file, root)
    if (target / DONE).exists():
        return target
    root.mkdir(parents=True, exist_ok=True)
    with exclusive(root / f"{_path_key(file)}.lock"):  # parallel partition runs: one stages, others reuse
        if not (target / DONE).exists():
            _stage(mapping, file, root, target)
    return target


def _stage(mapping: ImportMapping, file: Path, root: Path, target: Path) -> None:
    tmp = root / f".tmp-{uuid.uuid4().hex}"
    writers: dict[str, ipc.RecordBatchFileWriter] = {}
    quarantine: dict[str, list[pa.Table]] = {}
    try:
        for day, batch in iter_file_days(mapping, file):
            if day not in writers:
                (tmp / f"dt={day}").mkdir(parents=True)
                writers[day] = ipc.new_file(tmp / f"dt={day}" / "data.arrow", _SHARD, options=_OPTIONS)
                quarantine[day] = []
            if batch.batch.num_rows:
                writers[day].write_batch(_shard_batch(batch))
            if batch.quarantine.num_rows:
                quarantine[day].append(batch.quarantine)
        for day, writer in writers.items():
            writer.close()
            if quarantine[day]:  # most days have none: no file, read_day returns an empty table
                _write(pa.concat_tables(quarantine[day]), tmp / f"dt={day}" / "quarantine.arrow")
        (tmp / DONE).write_text(json.dumps({"file": str(file), "days": sorted(writers)}))
        for old in root.glob(f"{_path_key(file)}-*"):  # shards of earlier versions of this file
            if old != target and old.is_dir():
                shutil.rmtree(old, ignore_errors=True)
        os.replace(tmp, target)
    except BaseException:
        for writer in writers.values():
            writer.close()
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _shard_batch(part: ImportBatch) -> pa.RecordBatch:
    """RAW_IMPRESSIONS columns + the 1-based source row of each (the provenance, stored inline)."""
    data = part.batch
    if not data.schema.equals(schemas.RAW_IMPRESSIONS):  # a cast per column costs ~0.1 ms even when a no-op
        data = data.cast(schemas.RAW_IMPRESSIONS)
    return pa.RecordBatch.from_arrays([*data.columns, part.source_rows], schema=_SHARD)


def staged_days(staged: Path) -> list[str]:
    return json.loads((staged / DONE).read_text())["days"]


def files_for_day(mapping: ImportMapping, partition: str, root: Path) -> list[tuple[Path, Path]]:
    """(file, staged folder) of every impressions file holding rows of `partition`.

    Staging every file on first use is the cheapest way to know its days for CSV (a scan would read
    the whole file anyway); later partitions and re-runs only read shards.
    """
    found = []
    for file in mapping.files("impressions"):
        staged = stage(mapping, file, root)
        if partition in staged_days(staged):
            found.append((file, staged))
    return found


def read_day(staged: Path, day: str) -> tuple[pa.Table, pa.Table, pa.Table]:
    """(RAW_IMPRESSIONS rows, QUARANTINE rows, provenance) of `day` in a staged file (empty if it has
    none); provenance holds the source_file and 1-based source_row of each data row."""
    folder = staged / f"dt={day}"
    if not folder.exists():
        return (
            schemas.empty(schemas.RAW_IMPRESSIONS),
            schemas.empty(schemas.QUARANTINE),
            schemas.empty(schemas.PROVENANCE),
        )
    rejected = folder / "quarantine.arrow"
    shard = _read(folder / "data.arrow")
    rows = shard.column(_SOURCE_ROW)
    names = pa.DictionaryArray.from_arrays(
        pa.array(np.zeros(len(rows), np.int32)), pa.array([_source_file(staged)])
    )
    provenance = pa.table({"source_file": names, "source_row": rows}, schema=schemas.PROVENANCE)
    return (
        shard.drop_columns([_SOURCE_ROW]),
        _read(rejected) if rejected.exists() else schemas.empty(schemas.QUARANTINE),
        provenance,
    )


def _source_file(staged: Path) -> str:
    return json.loads((staged / DONE).read_text())["file"]


def _write(table: pa.Table, path: Path) -> None:
    with ipc.new_file(path, table.schema, options=_OPTIONS) as writer:
        writer.write_table(table)


def _read(path: Path) -> pa.Table:
    with pa.memory_map(str(path)) as source:
        return ipc.open_file(source).read_all()
