"""The import mapping: which of the user's files and columns make up each canonical table.

A YAML file (documented key by key in ``examples/mapping.example.yaml``) is loaded and validated
here, once, so that a typo fails at load time with the offending key named, not halfway through an
import. Only pyarrow and PyYAML are needed.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from ctr_dagster import schemas
from ctr_dagster.errors import MalformedInputError

#: Canonical tables a mapping may describe, with their strict schemas.
CANONICAL: dict[str, pa.Schema] = {
    "impressions": schemas.IMPRESSIONS,
    "items": schemas.ITEMS,
    "users": schemas.USERS,
    "item_attributes": schemas.ITEM_ATTRIBUTES,
}
#: The warehouse table each mapped table feeds (also the `table` of its quarantine rows).
RAW_TABLE = {name: f"raw_{name}" for name in CANONICAL}

FORMATS = ("csv", "parquet")
TIME_UNITS = ("s", "ms", "us", "ns")
_CSV_SUFFIXES = (".csv", ".tsv", ".txt", ".csv.gz", ".csv.bz2", ".csv.zst", ".tsv.gz")
_PARQUET_SUFFIXES = (".parquet", ".pq", ".parq")

_TOP_KEYS = {"start_date", "root", "max_bad_fraction", "batch_size", "tables"}
_TABLE_KEYS = {"files", "format", "columns", "parse", "ts", "defaults", "csv"}
_PARSE_KEYS = {"unit", "format", "timezone"}
_CSV_KEYS = {"delimiter", "quote_char", "null_values", "encoding", "block_size"}


class MappingError(ValueError):
    """The mapping YAML is invalid; `key` is the dotted path of the offending key."""

    def __init__(self, source: str, key: str, message: str):
        self.source, self.key = source, key
        super().__init__(f"{source}: key {key!r}: {message}")


@dataclass(frozen=True)
class TimeSpec:
    """How a time column is written: epoch numbers (`unit`), a strptime `format`, or ISO-8601."""

    unit: str | None = None
    format: str | None = None
    timezone: str = "UTC"  # zone of values that carry no offset


@dataclass(frozen=True)
class CsvOptions:
    delimiter: str = ","
    quote_char: str = '"'
    null_values: tuple[str, ...] = ("",)
    encoding: str = "utf8"
    block_size: int = 4 << 20  # bytes per parsed block: bounds memory, ~60k rows of a narrow log


@dataclass(frozen=True)
class TableMapping:
    """One canonical table: its files, column renames, time formats and constant defaults."""

    name: str
    files: tuple[str, ...]
    format: str | None = None
    columns: Mapping[str, str] = field(default_factory=dict)  # canonical -> source column
    parse: Mapping[str, TimeSpec] = field(default_factory=dict)  # canonical time column -> spec
    defaults: Mapping[str, pa.Scalar] = field(default_factory=dict)  # canonical -> constant
    csv: CsvOptions = field(default_factory=CsvOptions)

    @property
    def schema(self) -> pa.Schema:
        """The strict canonical schema (required columns are non-nullable)."""
        return CANONICAL[self.name]

    @property
    def raw_schema(self) -> pa.Schema:
        """Same columns, all nullable: what a parser produces before the quality rules run."""
        return pa.schema([f.with_nullable(True) for f in self.schema])

    def time_spec(self, column: str) -> TimeSpec:
        return self.parse.get(column, TimeSpec())


@dataclass(frozen=True)
class ImportMapping:
    tables: Mapping[str, TableMapping]
    root: Path
    start_date: dt.date | None = None
    max_bad_fraction: float = 0.5
    batch_size: int = 131_072  # rows per Parquet batch
    path: Path | None = None

    def table(self, name: str) -> TableMapping:
        if name not in self.tables:
            where = self.path or "the mapping"
            raise MappingError(
                str(where), f"tables.{name}", f"not mapped; mapped tables: {sorted(self.tables)}"
            )
        return self.tables[name]

    def files(self, name: str) -> list[Path]:
        """Files of a table, sorted, from its globs (relative to `root`)."""
        found: set[Path] = set()
        for pattern in self.table(name).files:
            base = Path(os.path.expandvars(pattern)).expanduser()
            if base.is_absolute():
                found.update(Path(base.anchor).glob(str(base.relative_to(base.anchor))))
            else:
                found.update(self.root.glob(str(base)))
        return sorted(p for p in found if p.is_file())

    def format_of(self, name: str, file: Path) -> str:
        configured = self.table(name).format
        if configured:
            return configured
        lower = file.name.lower()
        if lower.endswith(_CSV_SUFFIXES):
            return "csv"
        if lower.endswith(_PARQUET_SUFFIXES):
            return "parquet"
        raise MalformedInputError(
            file, None, None, f"cannot infer the format from the name: set tables.{name}.format"
        )


def load_mapping(path: str | Path) -> ImportMapping:
    """Read and validate a mapping YAML; globs resolve against its folder unless `root` says otherwise."""
    import yaml

    path = Path(path).resolve()
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise MappingError(str(path), "<file>", f"cannot read the mapping: {exc}") from exc
    return parse_mapping(data, base=path.parent, source=str(path), path=path)


def parse_mapping(
    data: Any, *, base: Path, source: str = "<mapping>", path: Path | None = None
) -> ImportMapping:
    """Validate an already-parsed mapping document (`base`: folder relative globs start from)."""
    top = _mapping(data, source, "<top>")
    _known_keys(top, _TOP_KEYS, source, "")
    root = Path(os.path.expandvars(str(top.get("root", ".")))).expanduser()
    root = root if root.is_absolute() else (base / root)
    tables_doc = _mapping(top.get("tables"), source, "tables")
    if not tables_doc:
        raise MappingError(source, "tables", f"map at least one of {sorted(CANONICAL)}")
    tables = {}
    for name, doc in tables_doc.items():
        if name not in CANONICAL:
            raise MappingError(
                source, f"tables.{name}", f"unknown table; expected one of {sorted(CANONICAL)}"
            )
        tables[name] = _table(name, doc, source)
    start = top.get("start_date")
    if start is not None:
        start = _date(start, source, "start_date")
    elif "impressions" in tables:
        raise MappingError(
            source, "start_date", "required with tables.impressions (the first daily partition)"
        )
    fraction = top.get("max_bad_fraction", 0.5)
    if not isinstance(fraction, int | float) or isinstance(fraction, bool) or not 0 <= fraction <= 1:
        raise MappingError(source, "max_bad_fraction", f"must be a number in [0, 1], got {fraction!r}")
    batch_size = _positive_int(top.get("batch_size", 131_072), source, "batch_size")
    return ImportMapping(
        tables=tables,
        root=root.resolve(),
        start_date=start,
        max_bad_fraction=float(fraction),
        batch_size=batch_size,
        path=path,
    )


# -- helpers -------------------------------------------------------------------------------------
def _mapping(value: Any, source: str, key: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise MappingError(source, key, f"must be a mapping, got {type(value).__name__}")
    return value


def _known_keys(doc: dict, allowed: set[str], source: str, prefix: str) -> None:
    for key in doc:
        if key not in allowed:
            raise MappingError(source, f"{prefix}{key}", f"unknown key; expected one of {sorted(allowed)}")


def _positive_int(value: Any, source: str, key: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise MappingError(source, key, f"must be a positive integer, got {value!r}")
    return value


def _date(value: Any, source: str, key: str) -> dt.date:
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    try:
        return dt.date.fromisoformat(str(value))
    except ValueError as exc:
        raise MappingError(source, key, f"must be a date YYYY-MM-DD, got {value!r}") from exc


def _table(name: str, doc: Any, source: str) -> TableMapping:
    prefix = f"tables.{name}"
    doc = _mapping(doc, source, prefix)
    _known_keys(doc, _TABLE_KEYS, source, prefix + ".")
    schema = CANONICAL[name]
    canonical = {f.name: f for f in schema}

    files = doc.get("files")
    if isinstance(files, str):
        files = [files]
    if not files or not isinstance(files, list) or not all(isinstance(f, str) and f for f in files):
        raise MappingError(source, f"{prefix}.files", "give a glob or a list of globs (relative to root)")
    fmt = doc.get("format")
    if fmt is not None and fmt not in FORMATS:
        raise MappingError(source, f"{prefix}.format", f"must be one of {FORMATS}, got {fmt!r}")

    columns = _mapping(doc.get("columns"), source, f"{prefix}.columns")
    for column, src in columns.items():
        if column not in canonical:
            raise MappingError(
                source,
                f"{prefix}.columns.{column}",
                f"not a column of {name}; expected one of {list(canonical)}",
            )
        if not isinstance(src, str) or not src:
            raise MappingError(
                source, f"{prefix}.columns.{column}", f"must name a source column, got {src!r}"
            )

    parse_doc = _mapping(doc.get("parse"), source, f"{prefix}.parse")
    specs = {column: (spec, f"{prefix}.parse.{column}") for column, spec in parse_doc.items()}
    if "ts" in doc:  # shorthand for parse.ts
        if "ts" in specs:
            raise MappingError(source, f"{prefix}.ts", "given twice (also under parse.ts)")
        specs["ts"] = (doc["ts"], f"{prefix}.ts")
    parse = {
        column: _time_spec(spec, canonical, source, key, column) for column, (spec, key) in specs.items()
    }

    defaults = {}
    for column, value in _mapping(doc.get("defaults"), source, f"{prefix}.defaults").items():
        key = f"{prefix}.defaults.{column}"
        if column not in canonical:
            raise MappingError(source, key, f"not a column of {name}; expected one of {list(canonical)}")
        if column in columns:
            raise MappingError(source, key, "the column is also mapped under columns: give one or the other")
        defaults[column] = _default(value, canonical[column], parse.get(column, TimeSpec()), source, key)

    csv_doc = _mapping(doc.get("csv"), source, f"{prefix}.csv")
    _known_keys(csv_doc, _CSV_KEYS, source, f"{prefix}.csv.")
    csv = _csv_options(csv_doc, source, f"{prefix}.csv")
    return TableMapping(
        name=name,
        files=tuple(files),
        format=fmt,
        columns=dict(columns),
        parse=parse,
        defaults=defaults,
        csv=csv,
    )


def _time_spec(doc: Any, canonical: dict[str, pa.Field], source: str, key: str, column: str) -> TimeSpec:
    field_ = canonical.get(column)
    if field_ is None or not (pa.types.is_timestamp(field_.type) or pa.types.is_date(field_.type)):
        times = [n for n, f in canonical.items() if pa.types.is_timestamp(f.type) or pa.types.is_date(f.type)]
        raise MappingError(source, key, f"parse applies to time columns only: {times}")
    doc = _mapping(doc, source, key)
    _known_keys(doc, _PARSE_KEYS, source, key + ".")
    unit, fmt, zone = doc.get("unit"), doc.get("format"), doc.get("timezone", "UTC")
    if unit is not None and fmt is not None:
        raise MappingError(source, key, "give either unit (epoch numbers) or format (strptime), not both")
    if unit is not None and (unit not in TIME_UNITS or pa.types.is_date(field_.type)):
        raise MappingError(
            source, f"{key}.unit", f"must be one of {TIME_UNITS} (timestamps only), got {unit!r}"
        )
    if fmt is not None and (not isinstance(fmt, str) or "%" not in fmt):
        raise MappingError(
            source, f"{key}.format", f"must be a strptime format such as '%Y-%m-%d', got {fmt!r}"
        )
    if not isinstance(zone, str):
        raise MappingError(source, f"{key}.timezone", f"must be an IANA zone name, got {zone!r}")
    _check_timezone(zone, source, f"{key}.timezone")
    return TimeSpec(unit=unit, format=fmt, timezone=zone)


def _check_timezone(zone: str, source: str, key: str) -> None:
    import pyarrow.compute as pc

    try:
        pc.assume_timezone(pa.array([0], pa.timestamp("ms")), zone)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise MappingError(source, key, f"unknown time zone {zone!r}: {exc}") from exc


def _default(value: Any, field_: pa.Field, spec: TimeSpec, source: str, key: str) -> pa.Scalar:
    """A constant for a column the source lacks, converted exactly like a source cell would be."""
    from ctr_dagster.importers.convert import IncompatibleType, convert

    if value is None:
        if not field_.nullable:
            raise MappingError(
                source, key, f"{field_.name} is required: a null default would reject every row"
            )
        return pa.scalar(None, field_.type)
    if isinstance(value, dt.datetime | dt.date):
        value = value.isoformat()
    if isinstance(value, bool):
        value = int(value)
    try:
        result = convert(pa.array([str(value)]), field_, spec)
    except IncompatibleType as exc:  # pragma: no cover - strings convert to every canonical type
        raise MappingError(source, key, str(exc)) from exc
    if result.bad is not None and result.bad.any():
        raise MappingError(source, key, f"{value!r} is not a valid {field_.type} for {field_.name}")
    return result.values[0]


def _csv_options(doc: dict, source: str, key: str) -> CsvOptions:
    options = CsvOptions()
    values: dict[str, Any] = {}
    for name in ("delimiter", "quote_char"):
        if name in doc:
            value = doc[name]
            if not isinstance(value, str) or len(value) != 1:
                raise MappingError(source, f"{key}.{name}", f"must be one character, got {value!r}")
            values[name] = value
    if "null_values" in doc:
        nulls = doc["null_values"]
        if not isinstance(nulls, list) or not all(isinstance(v, str) for v in nulls):
            raise MappingError(source, f"{key}.null_values", "must be a list of strings")
        values["null_values"] = tuple(nulls)
    if "encoding" in doc:
        import codecs

        try:
            codecs.lookup(str(doc["encoding"]))
        except LookupError as exc:
            raise MappingError(source, f"{key}.encoding", f"unknown encoding {doc['encoding']!r}") from exc
        values["encoding"] = str(doc["encoding"])
    if "block_size" in doc:
        values["block_size"] = _positive_int(doc["block_size"], source, f"{key}.block_size")
    return CsvOptions(**{**options.__dict__, **values})
