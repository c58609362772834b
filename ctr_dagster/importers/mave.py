"""MAVE-style attribute JSONL -> canonical ITEMS + ITEM_ATTRIBUTES + ATTRIBUTE_NEGATIVES (+ quarantine).

MAVE (Yang et al., WSDM'22; google-research-datasets/MAVE, the data HyperPAVE evaluates on) stores
one product per line::

    {"id": "B0002H0A3S", "category": "Guitar Strings",
     "paragraphs": [{"text": "D'Addario EJ26 Phosphor Bronze ...", "source": "title"}, ...],
     "attributes": [{"key": "Winding Material",
                     "evidences": [{"value": "Phosphor Bronze", "pid": 0, "begin": 15, "end": 30}]},
                    {"key": "Core Material", "evidences": []}]}

An attribute whose `evidences` list is empty is a *negative* example (MAVE's negatives): the
product does not state / have that attribute. It is kept as such, never a reason to drop the line.

`read_mave` streams such files line by line (plain or compressed, pyarrow detects it) and returns:

* `items` (ITEMS): `item_id` = id, `category`, `title` = the first paragraph whose source is "title"
  (else the first paragraph; "" when the line has none, as in MAVE's label-only files), or title +
  description paragraphs with `text="title+description"` (HyperPAVE's "title&description");
  `price` = the `price` argument (0.0) and `first_seen` = the `first_seen` argument, which MAVE does
  not have;
* `item_attributes` (ITEM_ATTRIBUTES): one row per distinct (id, key, value) of the evidences;
* `negatives` (ATTRIBUTE_NEGATIVES): one row per distinct (id, key) whose evidence list is empty,
  unless the same line also gives that key a non-empty evidence list (the positive wins);
* `quarantine` (QUARANTINE): every rejected line with its file, 1-based line number, the offending
  field (e.g. ``attributes[0].evidences[1].end``), the rule and the raw line.

Label-only lines are accepted: without `paragraphs` the spans are not checked (an evidence may be
just ``{"value": ...}``), and an evidence that gives none of `pid` / `begin` / `end` is a value
without a span even when the line has paragraphs. A line may hold only negatives (it still yields
an item).

A line is rejected when it is not JSON (`unparseable`), lacks or mistypes a required field
(`bad_field`; e.g. an attribute without an `evidences` list, or a span given in part), has an
evidence span that does not spell its value in the referenced paragraph (`bad_span`; checked only
when the line has paragraphs), or repeats an earlier id (`duplicate_id`). Blank lines are skipped.
Lines read = items + quarantined + blank, always. An unreadable file raises `MalformedInputError`
naming it.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import pyarrow as pa

from ctr_dagster import schemas
from ctr_dagster.errors import MalformedInputError

TEXT_MODES = ("title", "title+description")
_MAX_RECORD_CHARS = 20_000


class _Reject(ValueError):
    def __init__(self, rule: str, column: str | None, message: str):
        super().__init__(message)
        self.rule, self.column, self.message = rule, column, message

    def quarantine_row(
        self, table: str, file: Path, number: int, text: str, *, name_column: bool = False
    ) -> dict[str, Any]:
        """The QUARANTINE row of rejected line `number` of `file`, its raw text kept (capped).
        Shared with the taxonomy reader, which rejects lines the same way."""
        where = f", column {self.column!r}" if name_column and self.column else ""
        return {
            "table": table,
            "partition": None,
            "source_file": str(file),
            "source_row": number,
            "column": self.column,
            "rule": self.rule,
            "detail": f"{file}, line {number}{where}: {self.message}",
            "record": json.dumps({"text": text[:_MAX_RECORD_CHARS]}, ensure_ascii=False),
        }


@dataclass(frozen=True)
class MaveImport:
    items: pa.Table  # schemas.ITEMS
    item_attributes: pa.Table  # schemas.ITEM_ATTRIBUTES
    quarantine: pa.Table  # schemas.QUARANTINE
    lines: int  # non-blank lines read
    negatives: pa.Table  # schemas.ATTRIBUTE_NEGATIVES: (item, attribute) pairs with no evidence


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """(1-based line number, text) of every line, streamed (compression detected from the name)."""
    try:
        stream = pa.input_stream(str(path), compression="detect")
    except (OSError, pa.ArrowException) as exc:
        raise MalformedInputError(path, None, None, f"cannot read the file: {exc}") from exc
    with stream:
        pending = b""
        number = 0
        while True:
            try:
                chunk = stream.read(1 << 20)
            except (OSError, pa.ArrowException) as exc:
                raise MalformedInputError(path, number + 1, None, f"cannot read the file: {exc}") from exc
            if not chunk:
                break
            parts = (pending + chunk).split(b"\n")
            pending = parts.pop()
            for raw in parts:
                number += 1
                yield number, raw.decode("utf-8", errors="replace").rstrip("\r")
        if pending:
            yield number + 1, pending.decode("utf-8", errors="replace").rstrip("\r")


def _string(obj: dict, key: str, where: str, *, required: bool = True) -> str | None:
    value = obj.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or (required and not value.strip()):
        raise _Reject("bad_field", where, f"{where} must be a non-empty string, got {value!r}")
    return value


def _int(obj: dict, key: str, where: str) -> int:
    value = obj.get(key)
    if not isinstance(value, int) or isinstance(value, bool):
        raise _Reject("bad_field", where, f"{where} must be an integer, got {value!r}")
    return value


class MaveLine(NamedTuple):
    """One parsed MAVE line."""

    item_id: str
    category: str
    title: str
    pairs: list[tuple[str, str]]  # (attribute, value), distinct, in order
    negatives: list[str]  # attributes with an empty evidence list only, distinct, in order


_SPAN = ("pid", "begin", "end")


def evidences(record: dict) -> Iterator[tuple[str, str, dict | None]]:
    """(attribute key, where, evidence object) for every evidence of a MAVE record, checking the
    structure (`_Reject` names the field); an attribute with an empty evidence list yields one
    (key, where, None): MAVE's negative. Shared with the taxonomy reader, which takes MAVE lines."""
    attributes = record.get("attributes")
    if not isinstance(attributes, list):
        raise _Reject("bad_field", "attributes", f"attributes must be a list, got {attributes!r}")
    for a, attribute in enumerate(attributes):
        where = f"attributes[{a}]"
        if not isinstance(attribute, dict):
            raise _Reject("bad_field", where, f"{where} must be an object, got {attribute!r}")
        key = _string(attribute, "key", f"{where}.key")
        found = attribute.get("evidences")
        if not isinstance(found, list):
            raise _Reject(
                "bad_field",
                f"{where}.evidences",
                f"{where}.evidences must be a list ([] for a negative), got {found!r}",
            )
        if not found:
            yield key, where, None  # type: ignore[misc]
        for e, evidence in enumerate(found):
            at = f"{where}.evidences[{e}]"
            if not isinstance(evidence, dict):
                raise _Reject("bad_field", at, f"{at} must be an object, got {evidence!r}")
            yield key, at, evidence  # type: ignore[misc]


def parse_line(text: str, mode: str = "title") -> MaveLine:
    """The `MaveLine` of one MAVE line, or `_Reject`."""
    try:
        record = json.loads(text)
    except json.JSONDecodeError as exc:
        raise _Reject("unparseable", None, f"invalid JSON: {exc.msg} at column {exc.colno}") from exc
    if not isinstance(record, dict):
        raise _Reject("unparseable", None, f"a line must hold a JSON object, got {type(record).__name__}")
    item_id = _string(record, "id", "id")
    category = _string(record, "category", "category")
    paragraphs = record.get("paragraphs")
    texts: list[str] = []
    sources: list[str | None] = []
    if paragraphs is not None:
        if not isinstance(paragraphs, list):
            raise _Reject(
                "bad_field", "paragraphs", f"paragraphs must be a list, got {type(paragraphs).__name__}"
            )
        for k, p in enumerate(paragraphs):
            if not isinstance(p, dict) or not isinstance(p.get("text"), str):
                raise _Reject(
                    "bad_field", f"paragraphs[{k}].text", f"paragraphs[{k}] needs a string 'text', got {p!r}"
                )
            texts.append(p["text"])
            sources.append(p.get("source") if isinstance(p.get("source"), str) else None)
    pairs: dict[tuple[str, str], None] = {}
    empty: dict[str, None] = {}
    for key, at, evidence in evidences(record):
        if evidence is None:  # MAVE's negative: the product does not state this attribute
            empty[key] = None  # type: ignore[index]
            continue
        value = _string(evidence, "value", f"{at}.value")
        if texts and any(k in evidence for k in _SPAN):  # no span at all: a label-only value
            pid, begin, end = (_int(evidence, k, f"{at}.{k}") for k in _SPAN)
            if not 0 <= pid < len(texts):
                raise _Reject(
                    "bad_span", f"{at}.pid", f"{at}.pid={pid} but the line has {len(texts)} paragraph(s)"
                )
            span = texts[pid][begin:end] if 0 <= begin < end <= len(texts[pid]) else None
            if span != value:
                raise _Reject(
                    "bad_span",
                    f"{at}.begin",
                    f"{at}: paragraph {pid}[{begin}:{end}] is {span!r}, not the value {value!r}",
                )
        pairs[(key, value)] = None  # type: ignore[index]
    positive = {key for key, _ in pairs}
    negatives = [key for key in empty if key not in positive]
    title = _title(texts, sources, mode)
    return MaveLine(item_id, category, title, list(pairs), negatives)  # type: ignore[arg-type]


def _title(texts: list[str], sources: list[str | None], mode: str) -> str:
    if not texts:
        return ""
    titles = [t for t, s in zip(texts, sources, strict=True) if s == "title"]
    title = titles[0] if titles else texts[0]
    if mode == "title+description":
        extra = [t for t, s in zip(texts, sources, strict=True) if s == "description"]
        title = " ".join([title, *extra])
    return title


def read_mave(
    paths: str | Path | Sequence[str | Path],
    *,
    text: str = "title",
    first_seen: dt.date = dt.date(1970, 1, 1),
    price: float = 0.0,
) -> MaveImport:
    """Every line of the MAVE-style JSONL file(s), in order, as canonical tables (see the module doc)."""
    if text not in TEXT_MODES:
        raise ValueError(f"text must be one of {TEXT_MODES}, got {text!r}")
    files = [Path(paths)] if isinstance(paths, str | Path) else [Path(p) for p in paths]
    items: dict[str, list[Any]] = {"item_id": [], "category": [], "title": []}
    attrs: dict[str, list[str]] = {"item_id": [], "attribute": [], "value": []}
    negatives: dict[str, list[str]] = {"item_id": [], "attribute": []}
    rejected: list[dict[str, Any]] = []
    seen: dict[str, tuple[Path, int]] = {}
    lines = 0
    for file in files:
        if not file.is_file():
            raise MalformedInputError(file, None, None, "no such file")
        for number, line in _lines(file):
            if not line.strip():
                continue
            lines += 1
            try:
                item_id, category, title, pairs, absent = parse_line(line, text)
                if item_id in seen:
                    first_file, first_line = seen[item_id]
                    raise _Reject(
                        "duplicate_id",
                        "id",
                        f"id {item_id!r} already read at {first_file}, line {first_line}",
                    )
            except _Reject as reject:
                rejected.append(reject.quarantine_row("raw_items", file, number, line))
                continue
            seen[item_id] = (file, number)
            items["item_id"].append(item_id)
            items["category"].append(category)
            items["title"].append(title)
            for attribute, value in pairs:
                attrs["item_id"].append(item_id)
                attrs["attribute"].append(attribute)
                attrs["value"].append(value)
            for attribute in absent:
                negatives["item_id"].append(item_id)
                negatives["attribute"].append(attribute)
    n = len(items["item_id"])
    items_table = pa.table(
        {
            **items,
            "price": pa.array([price] * n, pa.float32()),
            "first_seen": pa.array([first_seen] * n, pa.date32()),
            "image_png": pa.array([None] * n, pa.binary()),
        }
    )
    return MaveImport(
        items=schemas.conform(items_table, schemas.ITEMS, source="mave items"),
        item_attributes=schemas.conform(
            pa.table(attrs), schemas.ITEM_ATTRIBUTES, source="mave item_attributes"
        ),
        quarantine=pa.Table.from_pylist(rejected, schema=schemas.QUARANTINE),
        lines=lines,
        negatives=schemas.conform(pa.table(negatives), schemas.ATTRIBUTE_NEGATIVES, source="mave negatives"),
    )
