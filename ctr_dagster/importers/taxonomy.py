"""A published attribute-value taxonomy (value list) -> canonical ATTRIBUTE_TAXONOMY (+ quarantine).

The taxonomy is the marketplace's vocabulary: every value an attribute may take, whether or not an
item has it yet (the candidate values a zero-shot extractor ranks). It says nothing about items.
`read_taxonomy` reads it from any of:

* CSV / TSV with a header line naming the columns ``attribute`` and ``value`` (other columns are
  ignored; case and surrounding spaces of the header names do not matter)::

      attribute,value
      Color,Red

* JSONL, one ``{"attribute": ..., "value": ...}`` object per line;
* MAVE-style JSONL (a line with an ``attributes`` list, see `ctr_dagster.importers.mave`): every
  (key, evidence value) pair of the line is an entry, so a MAVE file can serve as the value list
  (ids, categories, paragraphs and spans are not needed; attributes with no evidence add nothing).
  JSON lines of both shapes may be mixed in one file.

The format comes from `format` ("csv", "tsv", "jsonl") or the file name (``.csv``, ``.tsv`` /
``.tab``, ``.jsonl`` / ``.ndjson`` / ``.json``, each optionally compressed: ``.gz`` ...), else from
the first non-blank line (``{`` -> JSONL, a tab -> TSV, else CSV).

Entries are distinct (attribute, value) pairs in the order first read. A bad line (not JSON, a
missing or empty attribute or value, a CSV line that does not parse or lacks a cell) goes to the
quarantine (QUARANTINE, `table` "raw_attribute_taxonomy") with its file, 1-based line number, the
offending column (``attribute``, ``value``, ``attributes[0].evidences[1].value`` ...), the rule and
the raw line; blank lines are skipped. Lines read = entry lines + quarantined + blank (an entry line
may repeat an earlier entry). A file that cannot be used as a whole (missing, unreadable, a CSV
header without ``attribute`` and ``value``) raises `MalformedInputError` naming it.
"""

from __future__ import annotations

import csv
import itertools
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import pyarrow as pa

from ctr_dagster import schemas
from ctr_dagster.errors import MalformedInputError
from ctr_dagster.importers.mave import _lines, _Reject, evidences

FORMATS = ("csv", "tsv", "jsonl")
TABLE = "raw_attribute_taxonomy"
_COMPRESSED = (".gz", ".bz2", ".zst", ".lz4", ".br")
_BY_SUFFIX = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
}
_COLUMNS = ("attribute", "value")


class TaxonomyImport(NamedTuple):
    """`read_taxonomy`'s result; unpacks as ``taxonomy, quarantine = read_taxonomy(path)``."""

    taxonomy: pa.Table  # schemas.ATTRIBUTE_TAXONOMY
    quarantine: pa.Table  # schemas.QUARANTINE


def _format(file: Path, lines: Iterator[tuple[int, str]], given: str | None) -> tuple[str, list]:
    """(format, lines already consumed to sniff it) of one file."""
    if given is not None:
        return given, []
    name = file.name.lower()
    for suffix in _COMPRESSED:
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    suffix = Path(name).suffix
    if suffix in _BY_SUFFIX:
        return _BY_SUFFIX[suffix], []
    consumed = []
    for number, text in lines:
        consumed.append((number, text))
        if text.strip():
            head = text.lstrip("\ufeff").lstrip()
            return ("jsonl" if head.startswith("{") else "tsv" if "\t" in text else "csv"), consumed
    return "csv", consumed


def _text(obj: dict, key: str, where: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str) or not value.strip():
        raise _Reject("bad_field", where, f"{where} must be a non-empty string, got {value!r}")
    return value


def _json_pairs(text: str) -> list[tuple[str, str]]:
    """The (attribute, value) entries of one JSON line: a plain entry or a MAVE product."""
    try:
        record = json.loads(text)
    except json.JSONDecodeError as exc:
        raise _Reject("unparseable", None, f"invalid JSON: {exc.msg} at column {exc.colno}") from exc
    if not isinstance(record, dict):
        raise _Reject("unparseable", None, f"a line must hold a JSON object, got {type(record).__name__}")
    if "attributes" not in record:
        return [(_text(record, "attribute", "attribute"), _text(record, "value", "value"))]
    return [
        (key, _text(evidence, "value", f"{at}.value"))
        for key, at, evidence in evidences(record)
        if evidence is not None
    ]


class _Csv:
    """One CSV / TSV file's rows, after its header (which must name attribute and value)."""

    def __init__(self, file: Path, delimiter: str):
        self.file, self.delimiter = file, delimiter
        self.positions: dict[str, int] | None = None

    def _cells(self, text: str) -> list[str]:
        try:
            rows = list(csv.reader([text], delimiter=self.delimiter, skipinitialspace=True, strict=True))
        except csv.Error as exc:
            raise _Reject("unparseable", None, f"not a {self._name} line: {exc}") from exc
        return rows[0] if rows else []

    @property
    def _name(self) -> str:
        return "TSV" if self.delimiter == "\t" else "CSV"

    def pairs(self, number: int, text: str) -> list[tuple[str, str]] | None:
        """None for the header line, else the line's entry."""
        if self.positions is None:
            try:
                names = [c.strip().lstrip("\ufeff").strip().lower() for c in self._cells(text)]
            except _Reject as bad:
                raise MalformedInputError(
                    self.file, number, None, f"unreadable header: {bad.message}"
                ) from None
            missing = [c for c in _COLUMNS if c not in names]
            if missing:
                raise MalformedInputError(
                    self.file,
                    number,
                    missing[0],
                    f"the header must name the columns attribute and value ({self._name}); got {names}",
                )
            self.positions = {c: names.index(c) for c in _COLUMNS}
            return None
        cells = self._cells(text)
        entry = []
        for column in _COLUMNS:
            at = self.positions[column]
            value = cells[at] if at < len(cells) else None
            if value is None or not value.strip():
                shown = "missing" if value is None else "empty"
                raise _Reject("bad_field", column, f"{column} is {shown} (column {at + 1})")
            entry.append(value)
        return [(entry[0], entry[1])]


def read_taxonomy(paths: str | Path | Sequence[str | Path], *, format: str | None = None) -> TaxonomyImport:
    """(ATTRIBUTE_TAXONOMY, QUARANTINE) of the value-list file(s), see the module doc."""
    if format is not None and format not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {format!r}")
    files = [Path(paths)] if isinstance(paths, str | Path) else [Path(p) for p in paths]
    entries: dict[tuple[str, str], None] = {}
    rejected: list[dict[str, Any]] = []
    for file in files:
        if not file.is_file():
            raise MalformedInputError(file, None, None, "no such file")
        lines = _lines(file)
        kind, consumed = _format(file, lines, format)
        table = None if kind == "jsonl" else _Csv(file, "\t" if kind == "tsv" else ",")
        for number, text in itertools.chain(consumed, lines):
            if not text.strip():
                continue
            try:
                pairs = _json_pairs(text) if table is None else table.pairs(number, text)
            except _Reject as bad:
                rejected.append(bad.quarantine_row(TABLE, file, number, text, name_column=True))
                continue
            for pair in pairs or ():
                entries[pair] = None
    taxonomy = pa.table(
        {
            "attribute": pa.array([a for a, _ in entries], pa.string()),
            "value": pa.array([v for _, v in entries], pa.string()),
        }
    )
    return TaxonomyImport(
        schemas.conform(taxonomy, schemas.ATTRIBUTE_TAXONOMY, source="taxonomy"),
        pa.Table.from_pylist(rejected, schema=schemas.QUARANTINE),
    )
