"""Streaming a source file as Arrow batches in bounded memory, with each row's place in the file.

CSV: `pyarrow.csv.open_csv`, every needed column read as raw bytes (types, UTF-8, NUL bytes and
nulls are decided later, per cell, by `convert`, wherever the cell sits in the file), one block of
`block_size` bytes at a time. Only the header line is judged up front (`csv_header`). Rows with the
wrong number of fields are set aside (not fatal) with their line number. Row numbers are 1-based
data rows (the header is not counted); they equal "line number - 1" unless quoted fields span lines.

Parquet: `ParquetFile.iter_batches` per row group (row groups outside the wanted time range can be
skipped by the caller using their statistics).

Anything that makes the file as a whole unusable raises `MalformedInputError`.
"""

from __future__ import annotations

import csv as pycsv
import io
import queue
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import numpy as np
import pyarrow as pa

from ctr_dagster.errors import MalformedInputError
from ctr_dagster.importers.mapping import CsvOptions

_HEADER_PROBE_BYTES = 1 << 20
T = TypeVar("T")


@dataclass
class RejectedRow:
    """A CSV line that could not even be split into the header's fields."""

    row: int | None
    text: str
    message: str


@dataclass
class SourceBatch:
    """Source columns (named as in the file) of consecutive rows, and their 1-based row numbers."""

    file: Path
    data: pa.RecordBatch
    rows: np.ndarray
    rejected: list[RejectedRow] = field(default_factory=list)


# -- CSV -----------------------------------------------------------------------------------------------
def csv_header(path: Path, options: CsvOptions) -> list[str]:
    """Column names from the first record (small read; handles compression and quoting).

    Only the header itself is judged: a NUL byte or bytes that are not `options.encoding` text in
    the *header* mean a binary or garbled file (rejected as a whole), while the same in a data cell
    further down, even within the first block, only quarantines that cell's row (see `convert`).
    """
    try:
        with pa.input_stream(str(path), compression="detect") as stream:
            head = stream.read(_HEADER_PROBE_BYTES)
    except (OSError, pa.ArrowException) as exc:
        raise MalformedInputError(path, None, None, f"cannot read the file: {exc}") from exc
    if not head.strip():
        raise MalformedInputError(path, None, None, "empty file: no header line")
    # surrogateescape: undecodable bytes survive as lone surrogates, found below if in the header
    text = head.decode(options.encoding, errors="surrogateescape").removeprefix("\ufeff")
    reader = pycsv.reader(io.StringIO(text), delimiter=options.delimiter, quotechar=options.quote_char)
    try:
        header = next(reader)
    except StopIteration:
        raise MalformedInputError(path, None, None, "empty file: no header line") from None
    except pycsv.Error as exc:
        raise MalformedInputError(path, None, None, f"unreadable header: {exc}") from exc
    joined = "".join(header)
    if "\x00" in joined:
        raise MalformedInputError(path, None, None, "NUL bytes in the header line: a binary file, not CSV")
    if any("\udc80" <= ch <= "\udcff" for ch in joined):
        raise MalformedInputError(
            path, None, None, f"the header line is not {options.encoding} text (garbled or binary file?)"
        )
    if not options.header:  # the first line is data: name its fields by position
        return [f"column{i}" for i in range(1, len(header) + 1)]
    if not any(h.strip() for h in header):
        raise MalformedInputError(path, None, None, "empty header line")
    return header


def iter_csv(path: Path, columns: Sequence[str], options: CsvOptions) -> Iterator[SourceBatch]:
    """Stream `columns` of a CSV file (names already checked against the header), parsing the next
    block in a background thread while the caller works on the current one (see `prefetched`)."""
    return prefetched(_iter_csv_serial(path, columns, options))


def _iter_csv_serial(path: Path, columns: Sequence[str], options: CsvOptions) -> Iterator[SourceBatch]:
    """`iter_csv` in the calling thread.

    Arrow's own threads (`use_threads=True`) are off on purpose: with them the parser does not
    count lines and `invalid_row_handler` gets no row number, so rejected lines could not be
    placed in the file.
    """
    from pyarrow import csv

    rejected: list[RejectedRow] = []
    reported = 0

    skipped_lines = 1 if options.header else 0  # line number -> data row (the header is line 1)

    def on_invalid_row(row) -> str:
        number = row.number - skipped_lines if row.number is not None else None
        message = f"expected {row.expected_columns} fields, found {row.actual_columns}"
        rejected.append(RejectedRow(number, row.text, message))
        return "skip"

    read_options = csv.ReadOptions(
        block_size=options.block_size,
        use_threads=False,
        encoding=options.encoding,
        column_names=None if options.header else csv_header(path, options),
    )
    parse_options = csv.ParseOptions(
        delimiter=options.delimiter, quote_char=options.quote_char, invalid_row_handler=on_invalid_row
    )
    convert_options = csv.ConvertOptions(
        include_columns=list(columns),
        column_types={c: pa.binary() for c in columns},
        null_values=list(options.null_values),
        strings_can_be_null=True,
        quoted_strings_can_be_null=True,
    )
    good_rows = 0  # rows delivered so far (rejected rows excluded)
    try:
        reader = csv.open_csv(
            str(path), read_options=read_options, parse_options=parse_options, convert_options=convert_options
        )
        while True:
            try:
                batch = reader.read_next_batch()
            except StopIteration:
                break
            rows = _row_numbers(good_rows, batch.num_rows, rejected)
            good_rows += batch.num_rows
            new = rejected[reported:]
            reported = len(rejected)
            yield SourceBatch(path, batch, rows, new)
    except (pa.ArrowInvalid, pa.ArrowKeyError, OSError, UnicodeDecodeError) as exc:
        row = good_rows + len(rejected) + 1
        raise MalformedInputError(
            path, row, None, f"CSV cannot be parsed from about data row {row}: {exc}"
        ) from exc
    if reported < len(rejected):
        yield SourceBatch(
            path,
            pa.record_batch({c: pa.array([], pa.binary()) for c in columns}),
            np.empty(0, dtype=np.int64),
            rejected[reported:],
        )


def prefetched(items: Iterator[T], depth: int = 2) -> Iterator[T]:
    """`items`, produced in a background thread up to `depth` items ahead of the consumer.

    Why: parsing a CSV block is ~half the import's CPU time and Arrow releases the GIL while it
    parses, so parsing block k+1 overlaps the caller's conversion and writing of block k (the
    parser itself stays serial, which row numbers need). Exceptions reach the consumer at the item
    where they happened; a consumer that stops early stops the producer (and closes `items`).
    """
    buffer: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                buffer.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put((_ITEM, item)):
                    break
            else:
                put((_END, None))
        except BaseException as exc:  # handed to the consumer, raised there
            put((_ERROR, exc))
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()

    worker = threading.Thread(target=produce, name="ctr-prefetch", daemon=True)
    worker.start()
    try:
        while True:
            kind, value = buffer.get()
            if kind is _END:
                return
            if kind is _ERROR:
                raise value
            yield value
    finally:
        stop.set()
        worker.join()


_ITEM, _END, _ERROR = object(), object(), object()


def _row_numbers(before: int, count: int, rejected: list[RejectedRow]) -> np.ndarray:
    """1-based data row numbers of `count` good rows after `before` good rows, skipping rejected rows.

    The good rows fill the integers not taken by rejected rows: with S the sorted rejected row
    numbers, the g-th good row is g + #{i : S[i] - i <= g}.
    """
    ordinal = np.arange(before + 1, before + count + 1, dtype=np.int64)
    taken = np.sort(np.array([r.row for r in rejected if r.row is not None], dtype=np.int64))
    if not len(taken):
        return ordinal
    shifted = taken - np.arange(len(taken))
    return ordinal + np.searchsorted(shifted, ordinal, side="right")


# -- Parquet ---------------------------------------------------------------------------------------
def open_parquet(path: Path):
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(str(path))
    except (OSError, pa.ArrowException) as exc:
        raise MalformedInputError(path, None, None, f"not a readable Parquet file: {exc}") from exc


def iter_parquet(
    path: Path, columns: Sequence[str], batch_size: int, row_groups: Sequence[int] | None = None
) -> Iterator[SourceBatch]:
    """Stream `columns` of the given row groups (all by default), in batches of `batch_size` rows."""
    parquet = open_parquet(path)
    meta = parquet.metadata
    starts = np.concatenate(
        [[0], np.cumsum([meta.row_group(i).num_rows for i in range(meta.num_row_groups)])]
    )
    groups = range(meta.num_row_groups) if row_groups is None else row_groups
    for group in groups:
        offset = int(starts[group])
        try:
            for batch in parquet.iter_batches(
                batch_size=batch_size, row_groups=[group], columns=list(columns), use_threads=True
            ):
                rows = np.arange(offset + 1, offset + batch.num_rows + 1, dtype=np.int64)
                offset += batch.num_rows
                yield SourceBatch(path, batch, rows)
        except (OSError, pa.ArrowException) as exc:
            raise MalformedInputError(
                path, offset + 1, None, f"Parquet data cannot be read (row group {group}): {exc}"
            ) from exc
