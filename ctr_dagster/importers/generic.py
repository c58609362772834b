"""The generic importer: the user's CSV/Parquet files + a mapping -> canonical tables.

- `iter_file_days(mapping, file)` streams one impressions file once and yields, per source batch
  and day, the RAW_IMPRESSIONS rows whose `ts` falls in that UTC day plus the quarantine rows of
  that day (cells that do not parse); `importers.staging` stores them as per-day shards. The days
  come from the data: `import_window` makes the partitions [first, last] (`start_date` /
  `end_date`, else the first / last day in the data, never past today); rows dated outside are
  out of range (counted and reported by the staging, never imported), and rows that cannot be
  dated (ts missing or unparseable, unsplittable lines) belong to the first partition.
  `iter_impressions(mapping, partition)` is the same, for one day.
- `read_catalogue(mapping, table)` reads items / users / item_attributes whole (they are small),
  quarantining unparseable rows and then rows failing the table's quality suite. Items and
  item_attributes may instead come from MAVE-style JSONL (`format: mave`, `importers.mave`): lines
  judged by the MAVE reader, item_attributes with their negatives (`CatalogueTables.negatives`);
  or from MicroLens / MMCTR item Parquet (`format: microlens`, `importers.microlens`): rows judged
  by its reader, tags as item_attributes, precomputed vectors (`CatalogueTables.vectors`).
- Constants per file (`file_defaults`, e.g. a date per file of a log split by time) are part of each
  file's plan (`ImportMapping.constants`): the staging, the day scan and the catalogue all use them.
- `read_attribute_taxonomy(mapping)` reads the published value list (`attribute_taxonomy`,
  `importers.taxonomy`), bad lines quarantined, bad files skipped and reported.
- `scan_days(mapping, file)` / `scan_file` list the days a file covers (the new-data sensor's question).

A file is bad as a whole (`MalformedInputError`) when it cannot be read, is empty or has no data
row, a mapped or required column is missing, a Parquet column has an incompatible type, or more
than `max_bad_fraction` of its rows are unparseable; the staging and `read_catalogue` skip and
report such a file, and fail only when every file of a table is bad. A glob matching no file is a
`MappingError` (`table_files`).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ctr_dagster import schemas
from ctr_dagster.errors import MalformedInputError
from ctr_dagster.importers.convert import Converted, IncompatibleType, convert, describe
from ctr_dagster.importers.mapping import (
    AUTO_IDS,
    DERIVABLE,
    RAW_TABLE,
    ColumnExpr,
    ColumnPosition,
    ImportMapping,
    MappingError,
    TableMapping,
)
from ctr_dagster.importers.readers import (
    RejectedRow,
    SourceBatch,
    csv_header,
    iter_csv,
    iter_parquet,
    open_parquet,
)

UNPARSEABLE = "unparseable"
#: DuckDB's names for the Arrow types expression inputs get (for error messages).
_SQL_TYPES = {"int64": "BIGINT", "double": "DOUBLE", "string": "VARCHAR"}
_MS_PER_DAY = 86_400_000


@dataclass
class ImportBatch:
    """One source batch's contribution to a daily partition."""

    batch: pa.RecordBatch  # RAW_IMPRESSIONS rows of the partition
    quarantine: pa.Table  # QUARANTINE rows of the partition (rule "unparseable")
    source_file: str
    source_rows: pa.Array  # 1-based data row in source_file of each row of `batch`
    rows_read: int  # source rows examined to produce this batch


# -- planning a file ---------------------------------------------------------------------------------
class _FilePlan:
    """Where each canonical column of one file comes from, checked against its header up front.

    A source column (by name or `{position: N}`), an expression over source columns (`{expr: ...}`),
    a constant (`defaults`), a column named like the canonical one, a stable per-row id
    (`impression_id` / `request_id` absent everywhere: `file:row`), or null (optional columns).
    A wrong mapping (a missing column, an expression naming a column the file lacks, a default
    that shadows a column of the file) fails here, before any row is read. `derived`: columns the
    caller fills in itself when nothing maps them (a derived catalogue's first-seen date).
    """

    def __init__(
        self,
        mapping: ImportMapping,
        table: TableMapping,
        file: Path,
        only: Sequence[str] | None = None,
        derived: Sequence[str] = (),
    ):
        self.mapping, self.table, self.file = mapping, table, file
        self.format = mapping.format_of(table.name, file)
        self.parquet = open_parquet(file) if self.format == "parquet" else None
        names = self.parquet.schema_arrow.names if self.parquet else csv_header(file, table.csv)
        self.names = list(names)
        self.sources: dict[str, str] = {}  # canonical -> its source's label (messages, quarantine)
        self._read: dict[str, str] = {}  # canonical -> the file column read as it is
        self.exprs: dict[str, ColumnExpr] = {}
        self._inputs: dict[str, list[str]] = {}  # canonical -> file columns its expression reads
        self._labels: dict[str, str] = {}  # file column -> label, where a position names it
        self.auto_ids: list[str] = []
        self._evaluator = None
        key = f"tables.{table.name}"
        # constants of this file: the table's defaults, overridden by its matching file_defaults
        given = mapping.constants(table.name, file)
        self.defaults: dict[str, pa.Scalar] = {column: value for column, (value, _k) in given.items()}
        scope = [f for f in table.schema if only is None or f.name in only]
        for field in scope:
            name = field.name
            source = table.columns.get(name)
            if isinstance(source, ColumnExpr):
                self._inputs[name] = [self._column(ref, name, source) for ref in source.columns]
                self.exprs[name] = source
                self.sources[name] = f"expr:{name}"
            elif isinstance(source, ColumnPosition):
                self._read[name] = self._at(source, name)
                self.sources[name] = self._labels.get(self._read[name], self._read[name])
            elif source is not None:
                if source not in names:
                    raise MalformedInputError(
                        file,
                        None,
                        source,
                        f"mapped column {source!r} (for {table.name}.{name}) is not in "
                        f"the file; its columns are {names}",
                    )
                self._read[name] = self.sources[name] = source
            elif name in self.defaults:
                if name in names and name not in self._used():
                    raise MalformedInputError(
                        file,
                        None,
                        name,
                        f"{given[name][1]} gives a constant, but the file has a column {name!r}: "
                        f"map it ({key}.columns.{name}: {name}) or drop the default",
                    )
            elif name in names:
                self._read[name] = self.sources[name] = name
            elif name in AUTO_IDS and table.name == "impressions":
                self.auto_ids.append(name)
            elif not field.nullable and name not in derived:
                raise MalformedInputError(
                    file,
                    None,
                    name,
                    f"required column {name!r} of {table.name} is missing: map it under "
                    f"{key}.columns or give {key}.defaults (or {key}.file_defaults for this file)",
                )
        self.fields = [f for f in table.raw_schema if only is None or f.name in only]
        if self.parquet:
            self._check_parquet_types()

    def _used(self) -> set[str]:
        """File columns some canonical column of the table reads (by name, position or expression)."""
        used: set[str] = set()
        for source in self.table.columns.values():
            if isinstance(source, ColumnExpr):
                refs = {r.lower() for r in source.columns}
                used.update(n for n in self.names if n.lower() in refs)
            elif isinstance(source, ColumnPosition):
                if source.index <= len(self.names):
                    used.add(self.names[source.index - 1])
            else:
                used.add(source)
        return used

    def _at(self, source: ColumnPosition, name: str) -> str:
        """The file column at a 1-based position; its label is `#N` when its header is blank or repeated."""
        key = f"tables.{self.table.name}.columns.{name}"
        if source.index > len(self.names):
            raise MalformedInputError(
                self.file,
                None,
                f"#{source.index}",
                f"{key}: position {source.index}, but the file has {len(self.names)} columns: {self.names}",
            )
        header = self.names[source.index - 1]
        first = self.names.index(header) + 1
        if first != source.index:
            raise MalformedInputError(
                self.file,
                None,
                f"#{source.index}",
                f"{key}: column {source.index}'s header {header!r} repeats column {first}'s, and only the "
                "first of repeated headers can be read: rename one of them in the file",
            )
        if not header.strip() or self.names.count(header) > 1:
            self._labels[header] = f"#{source.index}"
        return header

    def _column(self, ref: str, name: str, expr: ColumnExpr) -> str:
        """The file column an expression's reference means (DuckDB matches names case-insensitively)."""
        if ref in self.names:
            return ref
        matches = [n for n in self.names if n.lower() == ref.lower()]
        if len(matches) == 1:
            return matches[0]
        raise MalformedInputError(
            self.file,
            None,
            ref,
            f"tables.{self.table.name}.columns.{name}: the expression {expr.sql!r} reads {ref!r}, "
            f'which is not a column of the file; its columns are {self.names} (quote odd names: "a:b")',
        )

    def _check_parquet_types(self) -> None:
        schema = self.parquet.schema_arrow
        for field in self.fields:
            source = self._read.get(field.name)
            if source is None:
                continue
            kind = schema.field(source).type
            try:
                convert(pa.array([], type=kind), field, self.table.time_spec(field.name))
            except IncompatibleType as exc:
                raise MalformedInputError(
                    self.file,
                    None,
                    source,
                    f"Parquet type {kind} cannot be read as {self.table.name}.{field.name} "
                    f"({field.type}): {exc}",
                ) from exc

    @property
    def columns(self) -> list[str]:
        """File columns this plan reads."""
        wanted = [*self._read.values(), *(c for cols in self._inputs.values() for c in cols)]
        return list(dict.fromkeys(wanted))

    def read(
        self, row_groups: Sequence[int] | None = None, also: Sequence[str] = ()
    ) -> Iterator[SourceBatch]:
        """Stream the plan's columns (plus `also`: columns another plan of the same file needs)."""
        columns = list(dict.fromkeys([*self.columns, *also]))
        if self.parquet:
            return iter_parquet(self.file, columns, self.mapping.batch_size, row_groups)
        return iter_csv(self.file, columns, self.table.csv)

    def convert(self, source: SourceBatch) -> _Converted:
        n = source.data.num_rows
        arrays, cell_bad, notes = [], {}, {}
        shown: dict[str, pa.Array] = {}  # expression results, shown in quarantine records
        bad = np.zeros(n, dtype=bool)
        for field in self.fields:
            name = field.name
            if name in self._read:
                result = convert(source.data.column(self._read[name]), field, self.table.time_spec(name))
            elif name in self.exprs:
                result, shown[self.sources[name]], notes[name] = self._evaluate(name, field, source)
            elif name in self.defaults:
                arrays.append(pa.repeat(self.defaults[name], n))
                continue
            elif name in self.auto_ids:  # request_id: the row's impression id (its own request)
                arrays.append(
                    arrays[0]
                    if name == "request_id" and self.fields[0].name == "impression_id"
                    else pc.binary_join_element_wise(
                        pa.scalar(f"{self.mapping.relative_name(self.file)}:"),
                        pa.array(source.rows).cast(pa.string()),
                        "",
                    )
                )
                continue
            else:
                arrays.append(pa.nulls(n, field.type))
                continue
            arrays.append(result.values)
            if result.bad is not None and result.bad.any():
                cell_bad[name] = result.bad
                bad |= result.bad
        batch = pa.RecordBatch.from_arrays(arrays, schema=pa.schema(self.fields))
        if self._labels or shown:  # what quarantine records show: columns by label, expression results
            data = source.data
            names = [self._labels.get(c, c) for c in data.schema.names]
            data = pa.RecordBatch.from_arrays([*data.columns, *shown.values()], names=[*names, *shown])
            source = dataclasses.replace(source, data=data)
        return _Converted(source, batch, bad, cell_bad, notes)

    def _evaluate(
        self, name: str, field: pa.Field, source: SourceBatch
    ) -> tuple[Converted, pa.Array, dict[int, str]]:
        """(converted values, the expression's own values, batch position -> why it failed there)."""
        from ctr_dagster.importers.expressions import Evaluator, ExpressionError, typed_inputs

        expr, key = self.exprs[name], f"tables.{self.table.name}.columns.{name}"
        if self._evaluator is None:
            self._evaluator = Evaluator()
        inputs, not_text = typed_inputs(source.data, self._inputs[name])
        first_row = int(source.rows[0]) if len(source.rows) else None
        try:
            evaluated = self._evaluator.evaluate(expr.sql, inputs)
        except ExpressionError as exc:
            types = ", ".join(f"{f.name!r} {_SQL_TYPES.get(str(f.type), f.type)}" for f in inputs.schema)
            raise MalformedInputError(
                self.file,
                first_row,
                self.sources[name],
                f"{key}: {expr.sql!r} cannot be evaluated: {exc} (the batch's columns are typed {types}: "
                "CAST or TRY_CAST them)",
            ) from exc
        try:
            result = convert(evaluated.values, field, self.table.time_spec(name))
        except IncompatibleType as exc:
            raise MalformedInputError(
                self.file,
                first_row,
                self.sources[name],
                f"{key}: {expr.sql!r} gives {evaluated.values.type}, which cannot be read as "
                f"{self.table.name}.{name} ({field.type}): {exc}",
            ) from exc
        messages = dict(evaluated.messages)
        bad = np.zeros(len(evaluated.values), dtype=bool)
        for mask in (result.bad, evaluated.bad, *not_text.values()):
            if mask is not None:
                bad |= mask
        for column, mask in not_text.items():
            for position in np.flatnonzero(mask).tolist():
                messages.setdefault(position, f"column {column!r} is not text (bad encoding or NUL bytes)")
        result.bad = bad if bad.any() else None
        return result, evaluated.values, messages

    def problem(self, converted: _Converted, column: str, position: int) -> str:
        """Why the cell of canonical `column` at batch `position` did not parse, naming its source."""
        label = self.sources[column]
        note = (converted.notes or {}).get(column, {}).get(position)
        where = (
            f"{label} ({self.exprs[column].sql!r})"
            if column in self.exprs
            else f"column {label!r} ({column})"
        )
        if note is not None:
            return f"{where}: {note}"
        raw = converted.source.data.column(label)[position].as_py()
        value = _text(raw)
        field = self.table.schema.field(column)
        return f"{where}: {value!r} {_why_bad(raw)}{describe(field.type, self.table.time_spec(column))}"

    # -- Parquet statistics ------------------------------------------------------------------------
    def ts_ranges(self) -> list[tuple[int, int, int] | None]:
        """Per row group: (min ms, max ms, null count) of `ts` from statistics, or None if unknown."""
        source = self._read.get("ts")
        if not self.parquet or source is None:
            return []
        meta = self.parquet.metadata
        kind = self.parquet.schema_arrow.field(source).type
        if not (pa.types.is_timestamp(kind) or pa.types.is_integer(kind) or pa.types.is_floating(kind)):
            return [None] * meta.num_row_groups  # text times: statistics order is not time order
        field = self.table.schema.field("ts")
        spec = self.table.time_spec("ts")
        out: list[tuple[int, int, int] | None] = []
        for group in range(meta.num_row_groups):
            stats = _column_stats(meta.row_group(group), source)
            if stats is None or not stats.has_min_max:
                out.append(None)
                continue
            try:
                bounds = convert(pa.array([stats.min, stats.max], type=kind), field, spec).values
                low, high = bounds.cast(pa.int64()).to_pylist()
            except (IncompatibleType, pa.ArrowException, TypeError, ValueError):
                out.append(None)
                continue
            out.append((low, high, stats.null_count if stats.has_null_count else 1))
        return out


def _column_stats(row_group, name: str):
    for i in range(row_group.num_columns):
        column = row_group.column(i)
        if column.path_in_schema == name:
            return column.statistics if column.is_stats_set else None
    return None


@dataclass
class _Converted:
    source: SourceBatch
    batch: pa.RecordBatch  # canonical columns, all nullable; null where the source cell was bad
    bad: np.ndarray  # rows with at least one unparseable cell
    cell_bad: dict[str, np.ndarray]  # canonical column -> its unparseable cells
    notes: dict[str, dict[int, str]] | None = None  # canonical -> batch position -> why (expressions)


class _BadRows:
    """Counts unparseable rows of one file and rejects the file past `max_bad_fraction`."""

    def __init__(self, file: Path, fraction: float):
        self.file, self.fraction = file, fraction
        self.rows = self.bad = 0
        self.first: tuple[int | None, str | None, str] | None = None

    def add(self, plan: _FilePlan, converted: _Converted) -> None:
        rejected = converted.source.rejected
        self.rows += converted.batch.num_rows + len(rejected)
        self.bad += int(converted.bad.sum()) + len(rejected)
        candidates = [(r.row, None, r.message) for r in rejected[:1]]
        for column, mask in converted.cell_bad.items():
            position = int(np.flatnonzero(mask)[0])
            candidates.append(
                (
                    int(converted.source.rows[position]),
                    plan.sources[column],
                    _cell_problem(plan, converted, column, position),
                )
            )
        if self.first is not None:
            candidates.append(self.first)
        if candidates:  # the earliest problem in the file is the one to show
            self.first = min(candidates, key=lambda c: c[0] if c[0] is not None else 1 << 62)

    def check(self) -> None:
        if self.rows and self.bad > self.fraction * self.rows:
            row, column, problem = self.first or (None, None, "")
            raise MalformedInputError(
                self.file,
                row,
                column,
                f"{self.bad} of {self.rows} rows are unparseable (more than max_bad_fraction={self.fraction}); "
                f"first: {problem}",
            )


# -- quarantine rows ---------------------------------------------------------------------------------
def _text(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="backslashreplace")
    return value


def _why_bad(raw: Any) -> str:
    """The start of a bad cell's explanation: the byte-level cause when there is one."""
    if isinstance(raw, bytes | str) and ("\x00" in raw if isinstance(raw, str) else b"\x00" in raw):
        return "holds a NUL byte, so it is not a valid "
    if isinstance(raw, bytes):
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            return f"is not UTF-8 text (byte {raw[exc.start]:#04x} at {exc.start}), so it is not a valid "
    return "is not a valid "


def _json(value: Any) -> Any:
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    return str(value)


def _cell_problem(plan: _FilePlan, converted: _Converted, column: str, position: int) -> str:
    return plan.problem(converted, column, position)


def _quarantine(
    plan: _FilePlan,
    converted: _Converted,
    positions: np.ndarray,
    partition: str | None,
    rejected: Sequence[RejectedRow],
) -> pa.Table:
    """QUARANTINE rows for the bad rows at `positions` and for rejected (unsplittable) lines."""
    table_name, file = RAW_TABLE[plan.table.name], str(plan.file)
    rows: list[int | None] = []
    columns: list[str | None] = []
    details: list[str] = []
    records: list[str] = []
    if len(positions):
        taken = converted.source.data.take(pa.array(positions)).to_pylist()
        bad = {c: mask[positions] for c, mask in converted.cell_bad.items()}
        source_rows = converted.source.rows[positions].tolist()
        for i, (row, raw) in enumerate(zip(source_rows, taken, strict=True)):
            record = {k: _text(v) for k, v in raw.items()}
            bad_columns = [c for c, mask in bad.items() if mask[i]]
            problems = "; ".join(plan.problem(converted, c, int(positions[i])) for c in bad_columns)
            rows.append(row)
            columns.append(";".join(plan.sources[c] for c in bad_columns))
            details.append(f"{file}, row {row}: {problems}")
            records.append(json.dumps(record, default=_json, ensure_ascii=False))
    for reject in rejected:
        rows.append(reject.row)
        columns.append(None)
        details.append(f"{file}, row {reject.row}: {reject.message}: {reject.text!r}")
        records.append(json.dumps({"text": reject.text}, ensure_ascii=False))
    count = len(rows)
    return pa.table(
        {
            "table": pa.array([table_name] * count, pa.string()),
            "partition": pa.array([partition] * count, pa.string()),
            "source_file": pa.array([file] * count, pa.string()),
            "source_row": pa.array(rows, pa.int64()),
            "column": pa.array(columns, pa.string()),
            "rule": pa.array([UNPARSEABLE] * count, pa.string()),
            "detail": pa.array(details, pa.string()),
            "record": pa.array(records, pa.string()),
        },
        schema=schemas.QUARANTINE,
    )


# -- impressions -------------------------------------------------------------------------------------
#: Day key of rows that cannot be dated (ts missing or unparseable) and of unsplittable lines: they
#: belong to the first partition, which only the whole import knows (`import_window`).
_UNDATED = int(np.iinfo(np.int64).min)
_EPOCH = dt.date(1970, 1, 1)


def _day_name(key: int) -> str | None:
    return None if key == _UNDATED else (_EPOCH + dt.timedelta(days=key)).isoformat()


def _today() -> dt.date:
    return dt.datetime.now(dt.UTC).date()


def _bounds(mapping: ImportMapping, today: dt.date | None = None) -> tuple[str | None, str]:
    """(lowest, highest) day a dated row may fall on to be imported: `start_date` (or no bound) and
    `end_date`, else today (UTC; or `start_date` when that is later, so the window is never empty).

    Why a bound of its own: whether a *dated* row is in range never depends on the other files, so
    a partition can be read from one file at a time; only the first partition's name (home of the
    undated rows, when `start_date` is not given) needs every file's days.
    """
    today = today or _today()
    start, end = mapping.start_date, getattr(mapping, "end_date", None)
    cap = end or max(today, start or today)
    return (start.isoformat() if start else None), cap.isoformat()


def import_window(
    mapping: ImportMapping, days: Iterable[str], undated: bool, today: dt.date | None = None
) -> tuple[str | None, str | None]:
    """(first, last) daily partition, inclusive, of an import whose rows fall on `days` (UTC days
    of their ts) and, if `undated`, also include rows without a day; (None, None) when there is no
    row at all.

    first = `start_date`, else the earliest day in range; last = `end_date`, else the latest day in
    range (never after today). A day outside [first, last] is out of range: its rows are counted,
    not imported. Undated rows belong to `first`.
    """
    days = set(days)
    if not days and not undated:
        return None, None
    low, cap = _bounds(mapping, today)
    inside = sorted(d for d in days if (low is None or d >= low) and d <= cap)
    first = low or (inside[0] if inside else cap)
    end = getattr(mapping, "end_date", None)
    last = end.isoformat() if end else (inside[-1] if inside else first)
    return first, max(first, last)


def _with_partition(part: ImportBatch, day: str) -> ImportBatch:
    """An undated batch given to partition `day`: its quarantine rows name that partition."""
    quarantine = part.quarantine
    if quarantine.num_rows:
        index = quarantine.schema.get_field_index("partition")
        column = pa.array([day] * quarantine.num_rows, pa.string())
        quarantine = quarantine.set_column(index, quarantine.schema.field(index), column)
    return dataclasses.replace(part, quarantine=quarantine)


def iter_impressions(
    mapping: ImportMapping, partition: str, *, files: Sequence[Path] | None = None
) -> Iterator[ImportBatch]:
    """Stream the impressions of one UTC day (YYYY-MM-DD) from every impressions file (see module doc).

    The rows of `partition` out of `iter_file_days`: one definition of which day a row belongs to;
    nothing when the day is outside the import's range. The first partition also gets the undated
    rows of every file (held until the last file is read when `start_date` is not given: only then
    is the first day known). Every file is read in full and a bad file raises; the pipeline goes
    through `importers.staging`, which keeps each file's other days too and skips bad files.
    """
    low, cap = _bounds(mapping)
    if (low is not None and partition < low) or partition > cap:
        return
    held: list[ImportBatch] = []  # undated rows, until the first partition is known
    earliest: str | None = None  # earliest day in range seen so far
    for file in files if files is not None else table_files(mapping, "impressions"):
        for day, part in iter_file_days(mapping, file):
            if day is None:
                held.append(part)
                continue
            if (low is None or day >= low) and day <= cap and (earliest is None or day < earliest):
                earliest = day
            if day == partition:
                yield part
        if low is not None:  # the first partition is start_date: no need to hold anything
            if partition == low:
                yield from (_with_partition(p, partition) for p in held)
            held = []
    if held and partition == (low or earliest or cap):
        yield from (_with_partition(p, partition) for p in held)


def iter_file_days(mapping: ImportMapping, file: str | Path) -> Iterator[tuple[str | None, ImportBatch]]:
    """One pass over one impressions file, yielding (day, batch) for every day its rows fall on.

    A row's day is the UTC day of its ts, whatever the mapping's dates (which rows are in range is
    the caller's question: `import_window`); day None holds the rows that cannot be dated (ts
    missing or unparseable) and unsplittable lines, which go to the first partition. Staging a file
    once (`importers.staging`) thus gives every partition the rows `iter_impressions` would give
    it. A file without data rows, or with more than `max_bad_fraction` unparseable rows (judged
    over the whole file, after the last batch), raises `MalformedInputError`.
    """
    table = mapping.table("impressions")
    plan = _FilePlan(mapping, table, Path(file))
    counter = _BadRows(plan.file, mapping.max_bad_fraction)
    for source in plan.read():
        converted = plan.convert(source)
        counter.add(plan, converted)
        keys = _day_offsets(converted.batch.column("ts"))
        for key, part in _split_days(plan, converted, keys):
            yield _day_name(key), part
    if not counter.rows:
        raise MalformedInputError(plan.file, None, None, "no data rows (an empty file or a header only)")
    counter.check()


def _day_offsets(ts: pa.Array) -> np.ndarray:
    """UTC day of each row's ts as days since 1970-01-01 (floor: before 1970 too); `_UNDATED` where
    the row has no ts (missing, or nulled because it did not parse)."""
    ms = ts.cast(pa.int64())
    days = ms.fill_null(0).to_numpy() // _MS_PER_DAY
    if ms.null_count:
        days[ms.is_null().to_numpy(zero_copy_only=False)] = _UNDATED
    return days


def _split_days(
    plan: _FilePlan, converted: _Converted, keys: np.ndarray
) -> Iterator[tuple[int, ImportBatch]]:
    """(day key, ImportBatch) for each day the batch's rows (good or bad) fall on, in day order
    (`_UNDATED` first); within a day rows keep their file order."""
    source, bad = converted.source, converted.bad
    rejected = source.rejected  # unsplittable lines cannot be dated
    good = _good_rows_by_day(converted.batch, source.rows, keys, ~bad)
    bad_positions = np.flatnonzero(bad)
    bad_keys = keys[bad_positions]
    found = set(good) | set(bad_keys.tolist()) | ({_UNDATED} if rejected else set())
    for key in sorted(found):
        batch, rows = good.get(key, (converted.batch.slice(0, 0), source.rows[:0]))
        positions = bad_positions[bad_keys == key]
        day_rejected = rejected if key == _UNDATED else []
        quarantine = _NO_QUARANTINE
        if len(positions) or day_rejected:
            quarantine = _quarantine(plan, converted, positions, _day_name(key), day_rejected)
        yield (
            key,
            ImportBatch(
                batch=batch,
                quarantine=quarantine,
                source_file=str(plan.file),
                source_rows=pa.array(rows),
                rows_read=batch.num_rows + len(positions) + len(day_rejected),
            ),
        )


def _good_rows_by_day(
    batch: pa.RecordBatch, rows: np.ndarray, offsets: np.ndarray, good: np.ndarray
) -> dict[int, tuple[pa.RecordBatch, np.ndarray]]:
    """Day key -> (good rows of that day in file order, their source row numbers).

    A log batch is ~all one day plus a few stragglers of other days. So the batch's main day is
    cut out with one filter (which copies long runs: ~1.6x faster than a take of the same rows) and
    the stragglers are ordered by day with one stable argsort and one take, then sliced per day
    (slices are free), instead of one full filter per day. A batch wholly of one day with no bad
    row is passed through untouched.
    """
    if not len(offsets):
        return {}
    main = int(offsets[len(offsets) // 2])  # any day is correct; the middle row's is likely the biggest
    in_main = (offsets == main) & good
    count = int(np.count_nonzero(in_main))
    if count == len(offsets):
        return {main: (batch, rows)}
    out = {main: (batch.filter(pa.array(in_main)), rows[in_main])} if count else {}
    rest = np.flatnonzero(good & ~in_main)
    if len(rest):
        rest = rest[np.argsort(offsets[rest], kind="stable")]
        taken, days = batch.take(pa.array(rest)), offsets[rest]
        cuts = [0, *(np.flatnonzero(np.diff(days)) + 1).tolist(), len(rest)]
        for a, b in itertools.pairwise(cuts):
            out[int(days[a])] = (taken.slice(a, b - a), rows[rest[a:b]])
    return out


_NO_QUARANTINE = schemas.empty(schemas.QUARANTINE)  # tables are immutable: one serves every batch


# -- catalogue ---------------------------------------------------------------------------------------
class CatalogueTables(tuple):
    """`read_catalogue`'s (clean, quarantine) pair, unpacked as before, plus `skipped`: the
    (file, problem) of every bad file left out (empty, header only, undecodable, a mapped column
    missing, mostly unparseable), `negatives` (ATTRIBUTE_NEGATIVES): the (item, attribute)
    pairs known absent, from item_attributes read from MAVE (`format: mave`); else empty, and
    `vectors`: the precomputed item vectors (`schemas.vector_table`, the `raw_item_vectors` table)
    of a table read with `format: microlens`; else None. `padding`: rows skipped as padding."""

    skipped: list[tuple[str, str]]
    negatives: pa.Table
    vectors: pa.Table | None
    padding: int

    def __new__(
        cls,
        clean: pa.Table,
        quarantine: pa.Table,
        skipped: Sequence[tuple[str, str]] = (),
        negatives: pa.Table | None = None,
        vectors: pa.Table | None = None,
        padding: int = 0,
    ):
        pair = super().__new__(cls, (clean, quarantine))
        pair.skipped = list(skipped)
        pair.negatives = schemas.empty(schemas.ATTRIBUTE_NEGATIVES) if negatives is None else negatives
        pair.vectors = vectors
        pair.padding = padding
        return pair


class NoUsableFileError(MalformedInputError):
    """Every file of a table is bad: the message lists each file's problem."""

    def __init__(self, table: str, problems: Sequence[tuple[str, str]], key: str | None = None):
        self.table, self.problems, self.key = table, list(problems), key
        listed = "; ".join(f"{file}: {problem}" for file, problem in self.problems)
        super().__init__(None, None, None, f"no usable file for {key or 'tables.' + table} ({listed})")

    def __str__(self) -> str:
        return self.message

    def __reduce__(self):
        return (type(self), (self.table, self.problems, self.key))


def file_problem(exc: MalformedInputError) -> str:
    """A bad file's problem without the file name (reports pair it with the file)."""
    where = [f"row {exc.row}"] if exc.row is not None else []
    where += [f"column {exc.column!r}"] if exc.column else []
    return ", ".join([*where, exc.message]) if where else exc.message


def all_bad(
    table: str,
    problems: Sequence[tuple[str, str]],
    errors: Sequence[MalformedInputError],
    key: str | None = None,
) -> Exception:
    """The error when no file of `table` is usable: a lone file's own error, else all of them."""
    return errors[0] if len(errors) == 1 else NoUsableFileError(table, problems, key)


def table_files(mapping: ImportMapping, name: str) -> list[Path]:
    """The files of table `name` (a derived table's: those it is derived from); a glob that matches
    no file is a `MappingError` naming the key, the glob and the root, never an import of nothing,
    and so is a `file_defaults` glob that matches none of these files."""
    owner = mapping.table(name).from_table or name
    spec = mapping.table(owner)
    files = mapping.files(owner)
    for pattern in spec.files:
        if len(spec.files) > 1:  # which glob is empty: ask the mapping about each alone
            alone = {**mapping.tables, owner: dataclasses.replace(spec, files=(pattern,))}
            if dataclasses.replace(mapping, tables=alone).files(owner):
                continue
        elif files:
            continue
        raise MappingError(
            str(mapping.path or "the mapping"),
            f"tables.{owner}.files",
            f"{pattern!r} matches no file (root: {mapping.root})",
        )
    mapping.check_file_defaults(name, files)
    return files


def read_catalogue(
    mapping: ImportMapping,
    table: str,
    *,
    items: pa.Table | None = None,
    cache: dict | None = None,
    mave_cache: dict | None = None,
) -> CatalogueTables:
    """(clean table in its canonical schema, quarantine rows) for items / users / item_attributes,
    with `.skipped`: the bad files left out (reported, the other files import; only when every file
    is bad does it raise, naming each file's problem), `.negatives` (item_attributes from MAVE) and
    `.vectors` (precomputed item vectors of a `format: microlens` table).

    Unparseable rows are quarantined by the parser; the rest go through the table's quality suite
    (`ctr_dagster.quality.split_clean`: required values, unique ids, domains, and for
    item_attributes the known item ids when `items` is given). A table with `format: mave` is read
    by `_read_mave_table`, one with `format: microlens` by `_read_microlens_table` instead. `cache`
    (`mave_cache`, its older name): a dict shared by the calls of one catalogue read, so items and
    item_attributes from the same MAVE / MicroLens files read them once (and report bad rows once).
    """
    from ctr_dagster.quality import split_clean

    if table == "impressions":
        raise ValueError("impressions are daily partitions: use iter_impressions(mapping, partition)")
    cache = cache if cache is not None else mave_cache
    spec = mapping.table(table)
    files = table_files(mapping, table)
    if spec.format == "mave":
        return _read_mave_table(mapping, spec, files, cache)
    if spec.format == "microlens":
        return _read_microlens_table(mapping, spec, files, cache)
    if spec.from_table is not None:  # `from: impressions`: distinct ids of the log
        clean, quarantine = _read_derived(mapping, spec, items)
        return CatalogueTables(clean, quarantine)
    parts: list[pa.RecordBatch] = []
    provenance: list[pa.Table] = []
    rejected: list[pa.Table] = []
    skipped: list[tuple[str, str]] = []
    errors: list[MalformedInputError] = []
    for file in files:
        try:  # a file's rows are kept only once the whole file has read well
            file_parts, file_origin, file_rejected = _read_catalogue_file(mapping, spec, file)
        except MalformedInputError as exc:
            skipped.append((str(file), file_problem(exc)))
            errors.append(exc)
            continue
        parts += file_parts
        provenance += file_origin
        rejected += file_rejected
    if errors and len(errors) == len(files):
        raise all_bad(table, skipped, errors)
    raw = pa.Table.from_batches(parts, schema=spec.raw_schema) if parts else spec.raw_schema.empty_table()
    origin = pa.concat_tables(provenance) if provenance else None
    context = {"items": items} if items is not None else {}
    clean, failed, _report = split_clean(RAW_TABLE[table], raw, provenance=origin, **context)
    return CatalogueTables(
        clean, pa.concat_tables([schemas.empty(schemas.QUARANTINE), *rejected, failed]), skipped
    )


def _read_catalogue_file(
    mapping: ImportMapping, spec: TableMapping, file: Path
) -> tuple[list[pa.RecordBatch], list[pa.Table], list[pa.Table]]:
    """(good rows, their provenance, quarantine rows) of one catalogue file; a bad file raises."""
    plan = _FilePlan(mapping, spec, file)
    counter = _BadRows(file, mapping.max_bad_fraction)
    parts: list[pa.RecordBatch] = []
    provenance: list[pa.Table] = []
    rejected: list[pa.Table] = []
    for source in plan.read():
        converted = plan.convert(source)
        counter.add(plan, converted)
        good = ~converted.bad
        parts.append(converted.batch.filter(pa.array(good)))
        provenance.append(
            pa.table(
                {
                    "source_file": pa.array([str(file)] * int(good.sum()), pa.string()),
                    "source_row": pa.array(source.rows[good], pa.int64()),
                }
            )
        )
        rejected.append(_quarantine(plan, converted, np.flatnonzero(converted.bad), None, source.rejected))
    if not counter.rows:
        raise MalformedInputError(file, None, None, "no data rows (an empty file or a header only)")
    counter.check()
    return parts, provenance, rejected


def _without_bad_files(
    table: str, files: Sequence[Path], read: Any, key: str | None = None
) -> tuple[Any, list[tuple[str, str]]]:
    """(`read(usable files)`, skipped (file, problem)): a file `read` rejects as a whole
    (`MalformedInputError` naming it) is left out and the others read again; when none is left,
    the error names every file's problem."""
    good, skipped, errors = list(files), [], []
    while True:
        try:
            return read(good), skipped
        except MalformedInputError as exc:
            bad = next((f for f in good if exc.file is not None and str(f) == exc.file), None)
            if bad is None:
                raise
            good.remove(bad)
            skipped.append((str(bad), file_problem(exc)))
            errors.append(exc)
            if not good:
                raise all_bad(table, skipped, errors, key) from None


def _in_table(quarantine: pa.Table, name: str) -> pa.Table:
    """Quarantine rows of a whole-file reader (MAVE, MicroLens) relabelled with the raw table they feed."""
    index = quarantine.schema.get_field_index("table")
    column = pa.array([RAW_TABLE[name]] * quarantine.num_rows, pa.string())
    return quarantine.set_column(index, quarantine.schema.field(index), column)


def _with_item_defaults(items: pa.Table, spec: TableMapping) -> pa.Table:
    """Items from a whole-file reader with the mapping's `first_seen` / `price` defaults applied."""
    for column in ("first_seen", "price"):
        default = spec.defaults.get(column)
        if default is not None and default.is_valid:
            index = items.schema.get_field_index(column)
            field_ = items.schema.field(index)
            items = items.set_column(index, field_, pa.array([default.as_py()] * items.num_rows, field_.type))
    return items


def _read_mave_table(
    mapping: ImportMapping, spec: TableMapping, files: list[Path], cache: dict | None
) -> CatalogueTables:
    """`read_catalogue` for `format: mave` (items or item_attributes; `importers.mave.read_mave`).

    The MAVE reader judges every line (required fields, spans, unique ids) and quarantines bad ones
    whole, so the tables' quality suites do not run again. Items take `first_seen` / `price` from
    the table's defaults (else 1970-01-01 and 0). Item_attributes carry MAVE's negatives. With a
    shared `cache`, a second table read from the same files (same paths, sizes, mtimes) reuses the
    first read and reports no quarantine rows of its own: a rejected line is reported once, under the
    table read first.
    """
    from ctr_dagster.importers.mave import read_mave

    signature = tuple((str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files)
    cached = (cache or {}).get(signature)
    if cached is not None and (spec.name != "items" or cached[0] == spec.mave_text):
        result, skipped = cached[1], cached[2]
        quarantine = schemas.empty(schemas.QUARANTINE)  # reported with the table read first
    else:
        result, skipped = _without_bad_files(
            spec.name, files, lambda good: read_mave(good, text=spec.mave_text)
        )
        if cache is not None:
            cache[signature] = (spec.mave_text, result, skipped)
        quarantine = _in_table(result.quarantine, spec.name)
    if spec.name == "item_attributes":
        return CatalogueTables(result.item_attributes, quarantine, skipped, result.negatives)
    items = _with_item_defaults(result.items, spec)
    return CatalogueTables(items, quarantine, skipped)


def _read_microlens_table(
    mapping: ImportMapping, spec: TableMapping, files: list[Path], cache: dict | None
) -> CatalogueTables:
    """`read_catalogue` for `format: microlens` (items or item_attributes; `importers.microlens`).

    MicroLens / MMCTR item Parquet (e.g. MMCTR's `item_info.parquet`: item_id, item_tags,
    item_emb_d128) read whole by `read_items`, which judges every row (id present and unique,
    embeddings of the right width and finite) and quarantines bad ones with file, row and column,
    so the tables' quality suites do not run again; rows whose id is the padding id (MMCTR's row 0)
    are skipped and counted (`.padding`). Items: id as text, category = the `category` column or
    the first non-zero tag, title = the `title` column or "", price / first_seen from the table's
    defaults (else 0 and 1970-01-01). Item_attributes: one row per distinct non-zero tag
    (attribute "tag", value = the tag id as text). Both carry the precomputed vectors (`.vectors`).
    With a shared `cache`, a second table read from the same files with the same options reuses the
    first read and reports no quarantine rows of its own (a bad row is reported once).
    """
    from ctr_dagster.importers.mapping import MicrolensOptions
    from ctr_dagster.importers.microlens import MicrolensSpec, read_items

    options = spec.microlens or MicrolensOptions()
    signature = ("microlens", options, *((str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files))
    cached = (cache or {}).get(signature)
    if cached is not None:
        result, skipped = cached
        quarantine = schemas.empty(schemas.QUARANTINE)  # reported with the table read first
    else:
        reader = MicrolensSpec(
            id_column=options.id,
            title_column=options.title,
            category_column=options.category or options.tags,
            image_column=options.image,
            tags_column=options.tags,
            vectors=dict(options.vectors),
            widths=dict(options.widths),
            padding_id=options.padding_id,
            batch_size=mapping.batch_size,
        )
        result, skipped = _without_bad_files(spec.name, files, lambda good: read_items(good, reader))
        if cache is not None:
            cache[signature] = (result, skipped)
        quarantine = _in_table(result.quarantine, spec.name)
    vectors = result.vectors if options.vectors else None
    if spec.name == "item_attributes":
        return CatalogueTables(
            result.attributes, quarantine, skipped, vectors=vectors, padding=result.padding
        )
    items = _with_item_defaults(result.items, spec)
    return CatalogueTables(items, quarantine, skipped, vectors=vectors, padding=result.padding)


def read_attribute_taxonomy(mapping: ImportMapping) -> CatalogueTables:
    """(ATTRIBUTE_TAXONOMY, quarantine) of the mapping's published taxonomy (`attribute_taxonomy`,
    read by `importers.taxonomy.read_taxonomy`), with `.skipped` (bad files left out; raises only
    when none is usable); empty tables when the mapping names none. A glob that matches no file is
    a `MappingError` on `attribute_taxonomy.files`."""
    from ctr_dagster.importers.taxonomy import read_taxonomy

    spec = mapping.attribute_taxonomy
    if spec is None:
        return CatalogueTables(schemas.empty(schemas.ATTRIBUTE_TAXONOMY), schemas.empty(schemas.QUARANTINE))
    for pattern in spec.files:
        if not mapping.glob((pattern,)):
            raise MappingError(
                str(mapping.path or "the mapping"),
                "attribute_taxonomy.files",
                f"{pattern!r} matches no file (root: {mapping.root})",
            )
    files = mapping.glob(spec.files)
    (taxonomy, quarantine), skipped = _without_bad_files(
        "attribute_taxonomy",
        files,
        lambda good: read_taxonomy(good, format=spec.format),
        key="attribute_taxonomy.files",
    )
    return CatalogueTables(taxonomy, quarantine, skipped)


# -- catalogue tables derived from the impressions ---------------------------------------------------
_NEVER = np.iinfo(np.int64).max  # "no time" while taking minimums


def _read_derived(
    mapping: ImportMapping, spec: TableMapping, items: pa.Table | None
) -> tuple[pa.Table, pa.Table]:
    """`read_catalogue` for a table with `from: impressions`: one row per distinct id, with the values
    of its latest parseable impression (by the impressions' ts; rows without a time rank last, ties
    go to the later row), and, when nothing maps the date column (`first_seen` / `signup_date`), the
    UTC day of the id's earliest impression.

    Why distinct before the quality suite: an id seen in 300 impressions is one catalogue row, judged
    (and if bad, quarantined) once, not 299 "repeats". An id whose every row has an unparseable
    catalogue cell is quarantined once (its first such row). Rows without an id are no catalogue
    row (the impressions' own gate quarantines them). A file the impressions import itself cannot
    read is left out here (that import reports it); a mapping problem of this table fails.
    """
    from ctr_dagster.quality import split_clean

    id_column, date_column = DERIVABLE[spec.name]
    origin_spec = mapping.table(spec.from_table)
    files = mapping.files(spec.name)
    if not files:
        raise MalformedInputError(
            mapping.root / origin_spec.files[0], None, None, f"no file matches tables.{spec.from_table}.files"
        )
    latest: pa.Table | None = None
    unparseable: dict[str, pa.Table] = {}  # id -> the quarantine row of its first unparseable row
    for number, file in enumerate(files):
        try:
            plan = _FilePlan(mapping, spec, file, derived=[date_column])
            clock = _FilePlan(mapping, origin_spec, file, only=["ts"])
        except MalformedInputError:
            if _plans(mapping, origin_spec, file):
                raise  # the file is fine for the impressions: the problem is this table's mapping
            continue
        kept, bad_rows = latest, dict(unparseable)
        try:
            for source in plan.read(also=clock.columns):
                converted = plan.convert(source)
                ts = clock.convert(source).batch.column(0).cast(pa.int64())
                ids = converted.batch.column(id_column)
                has_id = ids.is_valid().to_numpy(zero_copy_only=False)
                good = has_id & ~converted.bad
                if good.any():
                    mask = pa.array(good)
                    part = pa.Table.from_batches([converted.batch.filter(mask)])
                    times = ts.filter(mask)
                    rows = source.rows[good]
                    extra = {
                        "_ts": times,
                        "_first": times,
                        "_seq": pa.array((number << 40) + rows, pa.int64()),
                        "_file": pa.array(np.full(len(rows), number, dtype=np.int32)),
                        "_row": pa.array(rows, pa.int64()),
                    }
                    for name, values in extra.items():
                        part = part.append_column(name, values)
                    kept = _latest(part if kept is None else pa.concat_tables([kept, part]), id_column)
                positions = [p for p in np.flatnonzero(has_id & converted.bad).tolist()]
                fresh: dict[str, int] = {}
                for position, key in zip(
                    positions, ids.take(pa.array(positions, pa.int64())).to_pylist(), strict=True
                ):
                    if key not in bad_rows and key not in fresh:
                        fresh[key] = position
                if fresh:
                    quarantine = _quarantine(plan, converted, np.array(list(fresh.values())), None, [])
                    for i, key in enumerate(fresh):
                        bad_rows[key] = quarantine.slice(i, 1)
        except MalformedInputError:
            if _plans(mapping, origin_spec, file):
                raise
            continue  # unreadable data: the impressions import reports this file
        latest, unparseable = kept, bad_rows
    return _derived_tables(mapping, spec, files, latest, unparseable, items, split_clean)


def _plans(mapping: ImportMapping, spec: TableMapping, file: Path) -> bool:
    """Whether `spec` (the impressions) can be planned on `file`: if not, the file itself is bad."""
    try:
        _FilePlan(mapping, spec, file)
    except MalformedInputError:
        return False
    return True


def _latest(table: pa.Table, id_column: str) -> pa.Table:
    """One row per id: its latest (`_ts`, then `_seq`), with `_first` = the id's earliest `_first`."""
    keys = [
        (id_column, "ascending", "at_end"),
        ("_ts", "descending", "at_end"),
        ("_seq", "descending", "at_end"),
    ]
    order = pc.sort_indices(table, options=pc.SortOptions(sort_keys=keys))
    ordered = table.take(order)
    ids = ordered.column(id_column)
    starts = np.ones(len(ids), dtype=bool)
    if len(ids) > 1:
        starts[1:] = pc.not_equal(ids.slice(1), ids.slice(0, len(ids) - 1)).to_numpy()
    starts = np.flatnonzero(starts)
    earliest = np.minimum.reduceat(ordered.column("_first").fill_null(_NEVER).to_numpy(), starts)
    winners = ordered.take(pa.array(starts, pa.int64()))
    index = winners.schema.get_field_index("_first")
    return winners.set_column(index, "_first", pa.array(earliest, pa.int64(), mask=earliest == _NEVER))


def _derived_tables(
    mapping, spec, files, latest, unparseable, items, split_clean
) -> tuple[pa.Table, pa.Table]:
    """(clean, quarantine) from the latest row per id: date filled from the first impression, then
    the table's quality suite."""
    id_column, date_column = DERIVABLE[spec.name]
    if latest is None or latest.num_rows == 0:
        raw, origin = spec.raw_schema.empty_table(), None
        known: set = set()
    else:
        known = set(latest.column(id_column).to_pylist())
        columns = {name: latest.column(name) for name in spec.raw_schema.names}
        if date_column not in spec.columns and date_column not in spec.defaults:
            first_day = latest.column("_first").cast(pa.timestamp("ms")).cast(pa.date32())
            columns[date_column] = pc.coalesce(columns[date_column], first_day)
        raw = pa.table(columns, schema=spec.raw_schema)
        names = pa.array([str(f) for f in files], pa.string())
        origin = pa.table(
            {"source_file": names.take(latest.column("_file")), "source_row": latest.column("_row")}
        )
    context = {"items": items} if items is not None else {}
    clean, failed, _report = split_clean(RAW_TABLE[spec.name], raw, provenance=origin, **context)
    rejected = [q for key, q in unparseable.items() if key not in known]
    return clean, pa.concat_tables([schemas.empty(schemas.QUARANTINE), *rejected, failed])


# -- the sensor's question ---------------------------------------------------------------------------
def scan_file(mapping: ImportMapping, file: str | Path) -> tuple[set[str], bool]:
    """(UTC days (YYYY-MM-DD) that dated rows of an impressions file fall on, whether some rows or
    lines cannot be dated): the days `iter_file_days` stages the file into, read cheaply.

    Parquet row groups whose statistics put all rows in one day are not read; the others (and CSV
    files) are streamed reading the `ts` column only.
    """
    table = mapping.table("impressions")
    plan = _FilePlan(mapping, table, Path(file), only=["ts"])
    days: set[int] = set()
    undated = False

    def add(ms: pa.Array) -> None:
        nonlocal undated
        undated = undated or ms.null_count > 0
        valid = pc.drop_null(ms)
        if len(valid):
            days.update(np.unique(valid.to_numpy() // _MS_PER_DAY).tolist())

    if "ts" not in plan.sources:  # ts is a constant: the file's own (file_defaults) or the table's
        value = plan.defaults.get("ts")
        add(pa.array([value.value if value is not None and value.is_valid else None], pa.int64()))
    else:
        ranges = plan.ts_ranges()
        to_read = []
        for group, bounds in enumerate(ranges):
            if (
                bounds is not None
                and bounds[0] is not None
                and bounds[1] is not None
                and bounds[2] == 0
                and bounds[0] // _MS_PER_DAY == bounds[1] // _MS_PER_DAY
            ):
                add(pa.array([bounds[0]], pa.int64()))
            else:
                to_read.append(group)
        if not ranges or to_read:
            for source in plan.read(to_read if ranges else None):
                undated = undated or bool(source.rejected)
                add(plan.convert(source).batch.column(0).cast(pa.int64()))
    return {_day_name(d) for d in days}, undated


def scan_days(mapping: ImportMapping, file: str | Path) -> set[str]:
    """UTC days (YYYY-MM-DD) of an impressions file's rows inside the import window, as staging
    assigns them, with the file considered alone: rows out of range count for no day, undated rows
    for the first partition. With `start_date` given this is the file's share of the whole import;
    without it the first partition depends on every file (`day_index.days_by_file` sees them all).
    """
    days, undated = scan_file(mapping, file)
    first, last = import_window(mapping, days, undated)
    if first is None or last is None:
        return set()
    return {d for d in days if first <= d <= last} | ({first} if undated else set())
