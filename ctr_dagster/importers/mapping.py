"""The import mapping: which of the user's files and columns make up each canonical table.

The YAML's schema is declared once, here, as pydantic models (`MappingDoc` and the per-table
models built from `CANONICAL`): unknown keys fail, a typo fails at load time with its dotted key
named (`MappingError`), not halfway through an import, and `json_schema()` gives editors the same
schema (`ctr mapping-schema`). Every key is documented in ``examples/mapping.example.yaml``.

The rest of the importer sees plain frozen dataclasses (`ImportMapping`, `TableMapping`), built from
the validated document by `parse_mapping`.

This module imports pydantic, so it is only imported where a mapping is used (never by the CLI or
the synthetic code location at import time).
"""

from __future__ import annotations

import codecs
import datetime as dt
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import pyarrow as pa
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    PrivateAttr,
    Tag,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from ctr_dagster import schemas
from ctr_dagster.column_docs import COLUMN_DOCS
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
#: Catalogue tables that may be derived from the impressions files (`from: impressions`), with the
#: id they are distinct on and the date column that defaults to the id's first impression.
DERIVABLE = {"items": ("item_id", "first_seen"), "users": ("user_id", "signup_date")}
#: Columns that, when absent everywhere, get a stable id from file and row (`file:row`).
AUTO_IDS = ("impression_id", "request_id")

FORMATS = ("csv", "parquet")
#: Tables that may be read from MAVE-style attribute JSONL (`format: mave`, `importers.mave`), and
#: the `defaults` each accepts (the columns MAVE does not have).
MAVE_TABLES = {"items": ("first_seen", "price"), "item_attributes": ()}
MAVE_TEXT_MODES = ("title", "title+description")
#: Tables that may be read from MicroLens / MMCTR item Parquet (`format: microlens`,
#: `importers.microlens`), and the `defaults` each accepts (what such a table does not have).
MICROLENS_TABLES = {"items": ("first_seen", "price"), "item_attributes": ()}
#: Formats read whole by their own reader (no columns / parse / csv / file_defaults).
WHOLE_FORMATS = {"mave": MAVE_TABLES, "microlens": MICROLENS_TABLES}
#: Formats of a published attribute taxonomy (`attribute_taxonomy`, `importers.taxonomy`).
TAXONOMY_FORMATS = ("csv", "tsv", "jsonl")
TIME_UNITS = ("s", "ms", "us", "ns")
_CSV_SUFFIXES = (".csv", ".tsv", ".txt", ".csv.gz", ".csv.bz2", ".csv.zst", ".tsv.gz")
_PARQUET_SUFFIXES = (".parquet", ".pq", ".parq")


class MappingError(ValueError):
    """The mapping YAML is invalid; `key` is the dotted path of the offending key."""

    def __init__(self, source: str, key: str, message: str):
        self.source, self.key, self.message = source, key, message
        super().__init__(f"{source}: key {key!r}: {message}")


# -- what the importer uses ------------------------------------------------------------------------
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
    header: bool = True  # False: no header line; columns are column1, column2, ...


@dataclass(frozen=True)
class ColumnExpr:
    """`{expr: ...}`: a DuckDB expression over the file's columns (`columns`: the ones it reads)."""

    sql: str
    columns: tuple[str, ...]


@dataclass(frozen=True)
class ColumnPosition:
    """`{position: N}`: the N-th column of the file (1-based), whatever its header says."""

    index: int


#: Where a canonical column comes from: a source column name, an expression, or a column number.
ColumnSource = str | ColumnExpr | ColumnPosition


@dataclass(frozen=True)
class MicrolensOptions:
    """`format: microlens`: which columns of a MicroLens / MMCTR item table feed what (None: absent).

    The reader (`importers.microlens.MicrolensSpec`) gets these; `vectors` and `widths` are tuples of
    pairs so the options stay hashable (the catalogue read caches by them).
    """

    id: str = "item_id"
    tags: str | None = "item_tags"  # list of tag ids, 0 = padding: item_attributes (tag) + category
    vectors: tuple[tuple[str, str], ...] = (("item_emb_d128", "mm"),)  # source column -> vector name
    widths: tuple[tuple[str, int], ...] = ()  # source column -> expected width (else the first cell's)
    title: str | None = None
    category: str | None = None  # None: the first non-zero tag
    image: str | None = None
    padding_id: str | None = "0"  # rows with this id are padding (MMCTR's row 0): skipped, counted


@dataclass(frozen=True)
class TableMapping:
    """One canonical table: its files, column sources, time formats and constant defaults.

    A table derived from the impressions (`from_table="impressions"`) has no files of its own: it
    reads the impressions files, with their format and CSV options (copied here).
    """

    name: str
    files: tuple[str, ...]
    format: str | None = None
    columns: Mapping[str, ColumnSource] = field(default_factory=dict)  # canonical -> source
    parse: Mapping[str, TimeSpec] = field(default_factory=dict)  # canonical time column -> spec
    defaults: Mapping[str, pa.Scalar] = field(default_factory=dict)  # canonical -> constant
    csv: CsvOptions = field(default_factory=CsvOptions)
    from_table: str | None = None
    mave_text: str = "title"  # format mave, items: the title text (`importers.mave.TEXT_MODES`)
    #: glob (relative to root) -> canonical column -> constant for the files the glob matches; wins
    #: over `defaults` (`ImportMapping.constants`)
    file_defaults: Mapping[str, Mapping[str, pa.Scalar]] = field(default_factory=dict)
    microlens: MicrolensOptions | None = None  # format microlens: the reader's options

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
class TaxonomyMapping:
    """The published attribute-value taxonomy: its files (globs) and their format (None: inferred)."""

    files: tuple[str, ...]
    format: str | None = None


@dataclass(frozen=True)
class ImportMapping:
    tables: Mapping[str, TableMapping]
    root: Path
    start_date: dt.date | None = None  # None: the partitions start at the first day in the data
    max_bad_fraction: float = 0.5
    batch_size: int = 131_072  # rows per Parquet batch
    path: Path | None = None
    end_date: dt.date | None = None  # last partition (inclusive); None: the last day in the data
    attribute_taxonomy: TaxonomyMapping | None = None  # the published value list, when there is one

    def table(self, name: str) -> TableMapping:
        if name not in self.tables:
            where = self.path or "the mapping"
            raise MappingError(
                str(where), f"tables.{name}", f"not mapped; mapped tables: {sorted(self.tables)}"
            )
        return self.tables[name]

    def files(self, name: str) -> list[Path]:
        """Files of a table, sorted, from its globs (relative to `root`); a derived table's are the
        files it is derived from."""
        spec = self.table(name)
        if spec.from_table is not None:
            return self.files(spec.from_table)
        return self.glob(spec.files)

    def glob(self, patterns: tuple[str, ...]) -> list[Path]:
        """The files the globs match (relative to `root`; absolute globs and ~ / $VARS work), sorted."""
        found: set[Path] = set()
        for pattern in patterns:
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
        owner = self.table(name).from_table or name
        raise MalformedInputError(
            file, None, None, f"cannot infer the format from the name: set tables.{owner}.format"
        )

    def constants(self, name: str, file: Path) -> dict[str, tuple[pa.Scalar, str]]:
        """Canonical column -> (constant, the dotted key giving it) for one file of table `name`: the
        table's `defaults`, then its `file_defaults` whose glob matches the file (a file's own constant
        wins). Two globs matching the file and setting the same column is a `MappingError`."""
        spec = self.table(name)
        out = {column: (value, f"tables.{name}.defaults.{column}") for column, value in spec.defaults.items()}
        if not spec.file_defaults:
            return out
        target = Path(file).resolve()
        by_file: dict[str, str] = {}  # column -> the glob that set it for this file
        for pattern, values in spec.file_defaults.items():
            if target not in {p.resolve() for p in self.glob((pattern,))}:
                continue
            for column, value in values.items():
                if column in by_file:
                    raise MappingError(
                        str(self.path or "the mapping"),
                        f"tables.{name}.file_defaults.{pattern}.{column}",
                        f"{self.relative_name(target)} also matches {by_file[column]!r}, which sets "
                        f"{column} too: make the globs match different files",
                    )
                by_file[column] = pattern
                out[column] = (value, f"tables.{name}.file_defaults.{pattern}.{column}")
        return out

    def check_file_defaults(self, name: str, files: list[Path] | None = None) -> None:
        """Every `file_defaults` glob of table `name` matches at least one of its files (`files`, by
        default the table's own); a `MappingError` on `tables.<name>.file_defaults.<glob>` otherwise.
        Nothing to check while the table has no file at all (an inbox not yet filled)."""
        spec = self.table(name)
        if not spec.file_defaults:
            return
        files = self.files(name) if files is None else files
        if not files:
            return
        present = {Path(f).resolve() for f in files}
        for pattern in spec.file_defaults:
            if not any(p.resolve() in present for p in self.glob((pattern,))):
                shown = [self.relative_name(f) for f in sorted(present)[:5]]
                more = f" and {len(present) - 5} more" if len(present) > 5 else ""
                owner = spec.from_table or name
                raise MappingError(
                    str(self.path or "the mapping"),
                    f"tables.{name}.file_defaults.{pattern}",
                    f"{pattern!r} matches none of the files of tables.{owner}.files "
                    f"(root: {self.root}; they are {shown}{more})",
                )

    def relative_name(self, file: Path) -> str:
        """`file` relative to `root` (posix), or its absolute posix path when outside: the file part
        of the stable per-row ids, so ids survive moving the whole folder."""
        file = Path(file).resolve()
        try:
            return file.relative_to(self.root).as_posix()
        except ValueError:
            return file.as_posix()


# -- the YAML document: declared once -------------------------------------------------------------
def _fail(at: str, message: str) -> PydanticCustomError:
    """A validation error at the sub-key `at` (dotted, relative to the model raising it)."""
    return PydanticCustomError("mapping", "{message}", {"at": at, "message": message})


class _Doc(BaseModel):
    """Base of every mapping model: unknown keys fail, naming the key and the allowed ones."""

    model_config = ConfigDict(extra="forbid", strict=False)
    #: what an unknown key is called in the error ("unknown key", "not a column of items", ...)
    unknown_key: ClassVar[str] = "unknown key"

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, data: Any) -> Any:
        if isinstance(data, dict):
            allowed = [f.alias or name for name, f in cls.model_fields.items()]
            for key in data:
                if key not in allowed:
                    raise _fail(str(key), f"{cls.unknown_key}; expected one of {allowed}")
        return data


class TimeDoc(_Doc):
    """How a time column is written. Epoch numbers (`unit`), a strptime `format`, or neither (ISO-8601)."""

    model_config = ConfigDict(title="Time format")

    unit: Literal["s", "ms", "us", "ns"] | None = Field(
        None, description="epoch numbers (integers or decimals) in this unit; timestamps only"
    )
    format: str | None = Field(None, description='strptime format, e.g. "%Y-%m-%d %H:%M:%S" (%z accepted)')
    timezone: str = Field("UTC", description="IANA zone of values without an offset, e.g. Europe/Berlin")

    @field_validator("format")
    @classmethod
    def _strptime(cls, value: str | None) -> str | None:
        if value is not None and "%" not in value:
            raise ValueError(f"must be a strptime format such as '%Y-%m-%d', got {value!r}")
        return value

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        import pyarrow.compute as pc

        try:
            pc.assume_timezone(pa.array([0], pa.timestamp("ms")), value)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise ValueError(f"unknown time zone {value!r}: {exc}") from exc
        return value

    @model_validator(mode="after")
    def _one_way(self) -> TimeDoc:
        if self.unit is not None and self.format is not None:
            raise _fail("", "give either unit (epoch numbers) or format (strptime), not both")
        return self

    def spec(self) -> TimeSpec:
        return TimeSpec(unit=self.unit, format=self.format, timezone=self.timezone)


class CsvDoc(_Doc):
    """CSV dialect. Every key optional."""

    model_config = ConfigDict(title="CSV dialect")

    delimiter: str = Field(",", description='one character, e.g. "," or "\\t"')
    quote_char: str = Field('"', description="one character")
    null_values: list[str] = Field([""], description="cell texts read as null")
    encoding: str = Field("utf8", description="text encoding of the file (Python codec name)")
    block_size: int = Field(4 << 20, strict=True, gt=0, description="bytes parsed per block (bounds memory)")
    header: bool = Field(
        True,
        description="false: the file has no header line (e.g. MovieLens u.data); its columns are named "
        "column1, column2, ... (or addressed with {position: N})",
    )

    @field_validator("delimiter", "quote_char")
    @classmethod
    def _one_character(cls, value: str) -> str:
        if len(value) != 1:
            raise ValueError(f"must be one character, got {value!r}")
        return value

    @field_validator("encoding")
    @classmethod
    def _codec(cls, value: str) -> str:
        try:
            codecs.lookup(value)
        except LookupError as exc:
            raise ValueError(f"unknown encoding {value!r}") from exc
        return value

    def options(self) -> CsvOptions:
        return CsvOptions(
            delimiter=self.delimiter,
            quote_char=self.quote_char,
            null_values=tuple(self.null_values),
            encoding=self.encoding,
            block_size=self.block_size,
            header=self.header,
        )


class ExprDoc(_Doc):
    """A DuckDB SQL expression over the file's columns (quote odd names: "rating:float")."""

    model_config = ConfigDict(title="Expression")

    unknown_key: ClassVar[str] = "a column source has one key (expr or position)"
    expr: str = Field(
        description='e.g. CAST("rating:float" >= 4 AS TINYINT); text columns arrive as BIGINT, DOUBLE '
        "or VARCHAR, whichever holds every cell of the batch"
    )
    _columns: tuple[str, ...] = PrivateAttr(())

    @model_validator(mode="after")
    def _parses(self) -> ExprDoc:
        from ctr_dagster.importers.expressions import analyse

        try:
            self._columns = analyse(self.expr)
        except ValueError as exc:
            raise _fail("expr", f"{exc}: {self.expr!r}") from None
        return self


class PositionDoc(_Doc):
    """The N-th column of the file (1-based): for an empty or duplicated header."""

    model_config = ConfigDict(title="Column position")

    unknown_key: ClassVar[str] = "a column source has one key (expr or position)"
    position: int = Field(strict=True, gt=0, description="1-based column number")


def _source_kind(value: Any) -> str | None:
    if isinstance(value, str):
        return "<name>"
    if isinstance(value, dict) and ("expr" in value or "position" in value):
        return "<expr>" if "expr" in value else "<position>"
    if isinstance(value, ExprDoc | PositionDoc):
        return "<expr>" if isinstance(value, ExprDoc) else "<position>"
    return None


#: Union tags, dropped from error locations (they are not keys of the document).
_TAGS = {"<name>", "<expr>", "<position>"}

SourceDoc = Annotated[
    Annotated[str, Tag("<name>"), Field(min_length=1)]
    | Annotated[ExprDoc, Tag("<expr>")]
    | Annotated[PositionDoc, Tag("<position>")],
    Discriminator(
        _source_kind,
        custom_error_type="column_source",
        custom_error_message="give a source column name, {expr: <SQL expression>} or {position: N}",
    ),
]


def _globs(value: Any) -> Any:
    """`files`: a glob or a non-empty list of globs."""
    if value is None:
        return value
    globs = [value] if isinstance(value, str) else value
    if not isinstance(globs, list) or not globs or not all(isinstance(g, str) and g for g in globs):
        raise ValueError("give a glob or a list of globs (relative to root)")
    return value


_FORMAT_HELP = "inferred from the extension when omitted (.csv .tsv .txt .csv.gz | .parquet .pq)"
_MAVE_FIELDS = "a MAVE file's fields are fixed (id, category, paragraphs, attributes)"
_MICROLENS_FIELDS = "a MicroLens / MMCTR item table is read whole (its columns are named under microlens:)"


class MaveDoc(_Doc):
    """Options of a table read from MAVE-style attribute JSONL (format: mave)."""

    model_config = ConfigDict(title="MAVE options")

    text: Literal["title", "title+description"] = Field(
        "title",
        description="the items' title: the title paragraph, or title + description paragraphs "
        "(HyperPAVE's title&description)",
    )


class MicrolensDoc(_Doc):
    """Options of a table read from MicroLens / MMCTR item Parquet (format: microlens)."""

    model_config = ConfigDict(title="MicroLens / MMCTR options")

    id: str = Field("item_id", min_length=1, description="the item id column (integer or text)")
    tags: str | None = Field(
        "item_tags",
        description="list of tag ids (0 or empty = padding): one item_attributes row per non-zero tag "
        "(attribute 'tag', value = the tag id as text) and, unless category is given, the category "
        "(the first non-zero tag); null: the table has no tags",
    )
    vectors: dict[str, str] = Field(
        {"item_emb_d128": "mm"},
        description="precomputed embedding column (list of numbers, or .npy / float32 bytes) -> its "
        "column in raw_item_vectors, which the item_embeddings stage fuses; {} for none",
    )
    widths: dict[str, int] = Field(
        {},
        description="expected number of values per embedding column (e.g. {item_emb_d128: 128}); "
        "default: the first non-null cell's. A cell of another width is quarantined",
    )
    title: str | None = Field(None, description='text column for the items\' title (default: none, "")')
    category: str | None = Field(
        None,
        description="text (or list: its first non-zero element) column for the category; "
        "default: the first non-zero tag",
    )
    image: str | None = Field(None, description="column of image bytes (PNG/JPEG) for image_png")
    padding_id: str | int | None = Field(
        "0",
        description="rows with this id are padding (MMCTR's item_info row 0: item_id 0), skipped and "
        "counted, not quarantined; null: every row is an item",
    )

    @field_validator("vectors")
    @classmethod
    def _vector_names(cls, value: dict[str, str]) -> dict[str, str]:
        names = list(value.values())
        for source, name in value.items():
            if not source or not name:
                raise ValueError("give embedding column -> vector name, both non-empty")
            if name == "item_id" or not name.replace("_", "a").isalnum():
                raise ValueError(f"vector name {name!r} must be letters, digits and _ (not item_id)")
        if len(set(names)) != len(names):
            raise ValueError(f"vector names repeat: {names}")
        return value

    @model_validator(mode="after")
    def _known_widths(self) -> MicrolensDoc:
        for column, width in self.widths.items():
            if column not in self.vectors:
                raise _fail(f"widths.{column}", f"not one of the vectors columns {sorted(self.vectors)}")
            if width < 1:
                raise _fail(f"widths.{column}", f"must be >= 1, got {width}")
        return self

    def options(self) -> MicrolensOptions:
        return MicrolensOptions(
            id=self.id,
            tags=self.tags,
            vectors=tuple(self.vectors.items()),
            widths=tuple(self.widths.items()),
            title=self.title,
            category=self.category,
            image=self.image,
            padding_id=None if self.padding_id is None else str(self.padding_id),
        )


class TableDoc(_Doc):
    """Keys every table has; `_table_model` adds the table's own columns / parse / defaults models."""

    table_name: ClassVar[str] = ""
    files: str | list[str] | None = Field(
        None, description="a glob or a list of globs, relative to root (absolute paths also work)"
    )
    format: Literal["csv", "parquet"] | None = Field(None, description=_FORMAT_HELP)
    csv: CsvDoc | None = None
    _defaults: dict[str, pa.Scalar] = PrivateAttr(default_factory=dict)
    _file_defaults: dict[str, dict[str, pa.Scalar]] = PrivateAttr(default_factory=dict)

    @field_validator("files", mode="before")
    @classmethod
    def _globs(cls, value: Any) -> Any:
        return _globs(value)

    # filled in by the per-table models
    def _columns(self) -> dict[str, Any]:
        return {k: v for k, v in dict(getattr(self, "columns", None) or {}).items() if v is not None}

    def _parse(self) -> dict[str, tuple[TimeDoc, str]]:
        parse = getattr(self, "parse", None)
        specs = {k: (v, f"parse.{k}") for k, v in dict(parse or {}).items() if v is not None}
        shorthand = getattr(self, "ts", None)
        if shorthand is not None:
            specs["ts"] = (shorthand, "ts")
        return specs

    def _defaults_given(self) -> dict[str, Any]:
        defaults = getattr(self, "defaults", None)
        if defaults is None:
            return {}
        return {k: getattr(defaults, k) for k in defaults.model_fields_set}

    def _file_defaults_given(self) -> dict[str, dict[str, Any]]:
        given = getattr(self, "file_defaults", None) or {}
        return {glob: {k: getattr(doc, k) for k in doc.model_fields_set} for glob, doc in given.items()}

    def _mave_consistent(self) -> None:
        """`format: mave` / `microlens`: files only (no columns / parse / csv / file_defaults),
        defaults only for what the format lacks; each format's options only with that format."""
        name = self.table_name
        for option, fmt in (("mave", "mave"), ("microlens", "microlens")):
            if self.format != fmt and getattr(self, option, None) is not None:
                raise _fail(option, f"{option} options apply to format: {fmt} only")
        if self.format not in WHOLE_FORMATS:
            return
        fields = _MAVE_FIELDS if self.format == "mave" else _MICROLENS_FIELDS
        for key in ("columns", "parse", "csv", "file_defaults"):
            if getattr(self, key, None) is not None:
                raise _fail(key, f"{fields}: nothing to map (leave {key} out)")
        allowed = WHOLE_FORMATS[self.format][name]
        for column in self._defaults_given():
            if column not in allowed:
                hint = f"only {list(allowed)} may be given" if allowed else "none may be given"
                raise _fail(f"defaults.{column}", f"{fields}; {hint}")

    @model_validator(mode="after")
    def _consistent(self) -> TableDoc:
        name = self.table_name
        derived = getattr(self, "from_", None)
        if derived is not None and self.files is not None:
            raise _fail("from", f"give either files or from: {derived}, not both")
        if derived is None and self.files is None:
            hint = " or from: impressions" if name in DERIVABLE else ""
            raise _fail("files", f"give a glob or a list of globs (relative to root){hint}")
        if derived is not None:
            for key in ("format", "csv"):
                if getattr(self, key) is not None:
                    raise _fail(key, f"from: {derived} reads the {derived} files with their {key}")
        self._mave_consistent()
        parse = getattr(self, "parse", None)
        if getattr(self, "ts", None) is not None and parse is not None and parse.ts is not None:
            raise _fail("ts", "given twice (also under parse.ts)")
        fields = {f.name: f for f in CANONICAL[name]}
        specs = self._parse()
        for column, (doc, key) in specs.items():
            if doc.unit is not None and pa.types.is_date(fields[column].type):
                raise _fail(f"{key}.unit", f"must be one of {TIME_UNITS} (timestamps only), got {doc.unit!r}")
        columns = self._columns()
        for column, value in self._defaults_given().items():
            key = f"defaults.{column}"
            if column == "impression_id":
                raise _fail(
                    key,
                    "impression_id must be unique per row, so it cannot be a constant: leave it out "
                    "and each row gets a stable id from its file and row (file:row)",
                )
            if column in columns:
                raise _fail(key, "the column is also mapped under columns: give one or the other")
            spec = specs[column][0].spec() if column in specs else TimeSpec()
            self._defaults[column] = _default(value, fields[column], spec, key)
        for glob, given in self._file_defaults_given().items():
            if not glob.strip():
                raise _fail("file_defaults", "a glob must not be empty")
            constants = self._file_defaults[glob] = {}
            for column, value in given.items():
                key = f"file_defaults.{glob}.{column}"
                if column == "impression_id":
                    raise _fail(key, "impression_id must be unique per row, so it cannot be a constant")
                if column in columns:
                    raise _fail(key, "the column is also mapped under columns: give one or the other")
                spec = specs[column][0].spec() if column in specs else TimeSpec()
                constants[column] = _default(value, fields[column], spec, key)
        return self


def _default(value: Any, field_: pa.Field, spec: TimeSpec, key: str) -> pa.Scalar:
    """A constant for a column the source lacks, converted exactly like a source cell would be."""
    from ctr_dagster.importers.convert import IncompatibleType, convert

    if value is None:
        if not field_.nullable:
            raise _fail(key, f"{field_.name} is required: a null default would reject every row")
        return pa.scalar(None, field_.type)
    if isinstance(value, dt.datetime | dt.date):
        value = value.isoformat()
    if isinstance(value, bool):
        value = int(value)
    if isinstance(value, list | dict):
        raise _fail(key, f"must be one value (text or number), got {value!r}")
    try:
        result = convert(pa.array([str(value)]), field_, spec)
    except IncompatibleType as exc:
        raise _fail(key, str(exc)) from None
    if result.bad is not None and result.bad.any():
        raise _fail(key, f"{value!r} is not a valid {field_.type} for {field_.name}")
    return result.values[0]


def _describe(name: str, field_: pa.Field) -> str:
    need = "optional" if field_.nullable else "required"
    return f"{COLUMN_DOCS.get(name, name)} ({field_.type}, {need})"


def _table_model(name: str) -> type[TableDoc]:
    """The model of `tables.<name>`: columns / parse / defaults keyed by the table's canonical columns."""
    schema = CANONICAL[name]
    title = name.title().replace("_", "")
    names = [f.name for f in schema]
    times = [f.name for f in schema if pa.types.is_timestamp(f.type) or pa.types.is_date(f.type)]
    columns = create_model(
        f"{title}Columns",
        __base__=_Doc,
        __doc__=f"canonical {name} column: source column name, {{expr: SQL}} or {{position: N}}",
        **{f.name: (SourceDoc | None, Field(None, description=_describe(f.name, f))) for f in schema},
    )
    columns.unknown_key = f"not a column of {name}"
    parse = create_model(
        f"{title}Parse",
        __base__=_Doc,
        __doc__="how each time column is written",
        **{t: (TimeDoc | None, None) for t in times},
    )
    parse.unknown_key = "parse applies to time columns only"
    defaults = create_model(
        f"{title}Defaults",
        __base__=_Doc,
        __doc__="constants for columns the files lack, parsed like a cell of the column",
        **{f.name: (Any, Field(None, description=_describe(f.name, f))) for f in schema},
    )
    defaults.unknown_key = f"not a column of {name}"
    extra: dict[str, Any] = {
        "columns": (columns | None, None),
        "parse": (parse | None, None),
        "defaults": (defaults | None, None),
        "file_defaults": (
            dict[str, defaults] | None,
            Field(
                None,
                description="constants per file: glob (relative to root, matching some of the table's "
                "files) -> {canonical column: constant}, parsed like defaults; a file's own constant "
                "wins over defaults (e.g. a date per file for logs split into files by time)",
            ),
        ),
    }
    if "ts" in names:
        extra["ts"] = (TimeDoc | None, Field(None, description="shorthand for parse: {ts: ...}"))
    if name in MAVE_TABLES:
        extra["format"] = (
            Literal["csv", "parquet", "mave", "microlens"] | None,
            Field(
                None,
                description=f"{_FORMAT_HELP}; mave: MAVE-style attribute JSONL (one product per line: id, "
                "category, paragraphs, attributes[{key, evidences}]), read whole: no columns / parse / csv"
                + (
                    "; an attribute with no evidence becomes a negative (raw_attribute_negatives)"
                    if name == "item_attributes"
                    else "; first_seen and price from defaults (else 1970-01-01 and 0)"
                )
                + "; microlens: MicroLens / MMCTR item Parquet (item_id, item_tags, item_emb_d128), read "
                "whole"
                + (
                    ": one row per non-zero tag (attribute tag)"
                    if name == "item_attributes"
                    else ", its precomputed vectors to raw_item_vectors"
                ),
            ),
        )
    if name == "items":
        extra["mave"] = (MaveDoc | None, Field(None, description="options of format: mave"))
    if name in MICROLENS_TABLES:
        extra["microlens"] = (
            MicrolensDoc | None,
            Field(
                None,
                description="options of format: microlens"
                + (" (default: the items' options)" if name == "item_attributes" else ""),
            ),
        )
    if name in DERIVABLE:
        extra["from_"] = (
            Literal["impressions"] | None,
            Field(
                None,
                alias="from",
                description="derive the table from the impressions files: one row per id, its latest "
                "values; the date column defaults to the id's first impression",
            ),
        )
    model = create_model(f"{title}Table", __base__=TableDoc, **extra)
    model.table_name = name
    return model


_TABLE_MODELS = {name: _table_model(name) for name in CANONICAL}

TablesDoc = create_model(
    "Tables",
    __base__=_Doc,
    __doc__="the canonical tables this mapping feeds",
    **{name: (model | None, None) for name, model in _TABLE_MODELS.items()},
)
TablesDoc.unknown_key = "unknown table"


class TaxonomyDoc(_Doc):
    """The marketplace's published attribute-value vocabulary (every value an attribute may take)."""

    model_config = ConfigDict(title="Attribute taxonomy")

    files: str | list[str] = Field(
        description="a glob or a list of globs, relative to root: CSV / TSV with a header naming "
        "attribute and value, JSONL {attribute, value} lines, or MAVE-style JSONL (every key and "
        "evidence value of it)"
    )
    format: Literal["csv", "tsv", "jsonl"] | None = Field(
        None,
        description="inferred from the extension when omitted (.csv | .tsv .tab | .jsonl .ndjson .json, "
        "optionally compressed), else from the first line",
    )

    @field_validator("files", mode="before")
    @classmethod
    def _globs(cls, value: Any) -> Any:
        return _globs(value)

    def spec(self) -> TaxonomyMapping:
        files = [self.files] if isinstance(self.files, str) else self.files
        return TaxonomyMapping(files=tuple(files), format=self.format)


class MappingDoc(_Doc):
    """ctr-dagster import mapping: how your logs and catalogue map onto the canonical tables."""

    model_config = ConfigDict(title="ctr-dagster import mapping")
    start_date: dt.date | None = Field(
        None, description="first daily partition (UTC); default: the first day in the data"
    )
    end_date: dt.date | None = Field(
        None, description="last daily partition (UTC, inclusive); default: the last day in the data"
    )
    root: str = Field(".", description="folder the files globs are relative to (default: this file's)")
    max_bad_fraction: float = Field(
        0.5, strict=True, ge=0, le=1, description="reject a file when more of its rows are unparseable"
    )
    batch_size: int = Field(131_072, strict=True, gt=0, description="rows per batch when streaming Parquet")
    tables: TablesDoc | None = None  # type: ignore[valid-type]
    attribute_taxonomy: TaxonomyDoc | None = Field(
        None,
        description="the published attribute-value taxonomy (raw_attribute_taxonomy): the candidate "
        "values extractors rank; without it they see the catalogue's values",
    )

    @model_validator(mode="after")
    def _consistent(self) -> MappingDoc:
        mapped = {n: t for n, t in dict(self.tables or {}).items() if t is not None}
        if not mapped:
            raise _fail("tables", f"map at least one of {sorted(CANONICAL)}")
        if self.start_date and self.end_date and self.end_date < self.start_date:
            raise _fail("end_date", f"{self.end_date} is before start_date {self.start_date}")
        for name, table in mapped.items():
            source = getattr(table, "from_", None)
            if source is not None and source not in mapped:
                raise _fail(f"tables.{name}.from", f"tables.{source} is not mapped")
        attributes = mapped.get("item_attributes")
        if attributes is not None and attributes.format == "microlens":
            options = _microlens_options(attributes, mapped)
            if options.tags is None:
                raise _fail(
                    "tables.item_attributes.microlens.tags",
                    "item_attributes read with format: microlens come from the tags column: name it",
                )
        return self


def _microlens_options(doc: TableDoc, docs: Mapping[str, TableDoc]) -> MicrolensOptions:
    """A `format: microlens` table's options: its own, else (item_attributes) the items' when they
    are read the same way (so both tables read the same files once), else the defaults."""
    own = getattr(doc, "microlens", None)
    if own is not None:
        return own.options()
    items = docs.get("items")
    inherits = doc.table_name == "item_attributes" and items is not None and items.format == "microlens"
    if inherits and items.microlens is not None:
        return items.microlens.options()
    return MicrolensOptions()


def json_schema() -> dict[str, Any]:
    """The mapping's JSON Schema (what `ctr mapping-schema` prints) for editors to complete and check."""
    schema = MappingDoc.model_json_schema()
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}


# -- loading -----------------------------------------------------------------------------------------
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
    try:
        doc = MappingDoc.model_validate({} if data is None else data)
    except ValidationError as exc:
        raise _mapping_error(exc, source) from None
    root = Path(os.path.expandvars(doc.root)).expanduser()
    root = root if root.is_absolute() else (base / root)
    docs = {n: t for n, t in dict(doc.tables).items() if t is not None}
    tables = {name: _table(name, table, docs) for name, table in docs.items()}
    mapping = ImportMapping(
        tables=tables,
        root=root.resolve(),
        start_date=doc.start_date,
        end_date=doc.end_date,
        max_bad_fraction=float(doc.max_bad_fraction),
        batch_size=doc.batch_size,
        path=path,
        attribute_taxonomy=doc.attribute_taxonomy.spec() if doc.attribute_taxonomy else None,
    )
    for name in tables:  # a file_defaults glob matching none of the table's files is a typo
        try:
            mapping.check_file_defaults(name)
        except MappingError as exc:
            raise MappingError(source, exc.key, exc.message) from None
    return mapping


def _table(name: str, doc: TableDoc, docs: dict[str, TableDoc]) -> TableMapping:
    """The importer's view of one validated table document."""
    columns = {column: _source(value) for column, value in doc._columns().items()}
    derived = getattr(doc, "from_", None)
    reader = docs[derived] if derived else doc  # a derived table reads its source's files
    if derived:
        origin = docs[derived]._columns()
        id_column = DERIVABLE[name][0]
        if id_column not in columns and id_column not in doc._defaults and id_column in origin:
            columns[id_column] = _source(origin[id_column])  # the same id as the impressions
    files = reader.files if not derived else ()
    return TableMapping(
        name=name,
        files=tuple([files] if isinstance(files, str) else files or ()),
        format=reader.format,
        columns=columns,
        parse={column: spec.spec() for column, (spec, _key) in doc._parse().items()},
        defaults=dict(doc._defaults),
        csv=reader.csv.options() if reader.csv is not None else CsvOptions(),
        from_table=derived,
        mave_text=doc.mave.text if getattr(doc, "mave", None) is not None else "title",
        file_defaults={glob: dict(values) for glob, values in doc._file_defaults.items()},
        microlens=_microlens_options(doc, docs) if doc.format == "microlens" else None,
    )


def _source(value: str | ExprDoc | PositionDoc) -> ColumnSource:
    if isinstance(value, ExprDoc):
        return ColumnExpr(value.expr, value._columns)
    if isinstance(value, PositionDoc):
        return ColumnPosition(value.position)
    return value


# -- pydantic errors -> MappingError -------------------------------------------------------------------
_KINDS = {
    "model_type": "must be a mapping",
    "model_attributes_type": "must be a mapping",
    "dict_type": "must be a mapping",
    "list_type": "must be a list",
    "string_type": "must be text",
    "string_too_short": "must not be empty",
    "int_type": "must be an integer",
    "int_parsing": "must be an integer",
    "int_from_float": "must be an integer",
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "date_type": "must be a date YYYY-MM-DD",
    "date_parsing": "must be a date YYYY-MM-DD",
    "date_from_datetime_parsing": "must be a date YYYY-MM-DD",
    "date_from_datetime_inexact": "must be a date YYYY-MM-DD (no time of day)",
}
_BOUNDS = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}


def _mapping_error(exc: ValidationError, source: str) -> MappingError:
    """The first problem as a MappingError on its dotted key (the others listed after it)."""
    problems = [_problem(error) for error in exc.errors(include_url=False)]
    key, message = problems[0]
    others = [f"{k!r}: {m}" for k, m in problems[1:4]]
    if others:
        more = f" (and {len(problems) - 4} more)" if len(problems) > 4 else ""
        message = f"{message}; also {'; '.join(others)}{more}"
    return MappingError(source, key, message)


def _problem(error: Any) -> tuple[str, str]:
    """(dotted key, message) of one pydantic error, in the mapping's own words."""
    loc = [str(part) for part in error["loc"] if part not in _TAGS]
    kind, ctx, value = error["type"], error.get("ctx") or {}, error.get("input")
    if kind == "mapping":
        loc += [part for part in str(ctx["at"]).split(".") if part]
        message = str(ctx["message"])
    elif kind == "value_error":
        message = str(ctx.get("error", error["msg"]))
    elif kind == "missing":
        message = "required"
    elif kind == "column_source":
        message = f"{error['msg']}, got {value!r}"
    elif kind == "literal_error":
        message = f"must be one of {ctx.get('expected')}, got {value!r}"
    elif kind in _BOUNDS:
        limit = next(iter(ctx.values()), "?")
        message = f"must be {_BOUNDS[kind]} {limit}, got {value!r}"
    elif kind in _KINDS:
        shown = type(value).__name__ if _KINDS[kind] == "must be a mapping" else repr(value)
        message = f"{_KINDS[kind]}, got {shown}"
    else:
        message = str(error["msg"])
    return ".".join(loc) or "<top>", message
