"""MicroLens / MMCTR-style item tables -> canonical ITEMS + precomputed item vectors.

The MMCTR challenge (WWW'25 multimodal CTR, built on MicroLens) ships an ``item_info.parquet`` with
``item_id`` (integer), ``item_tags`` (a list of tag ids) and ``item_emb_d128`` (a list of 128
floats: a precomputed multimodal embedding); MicroLens itself adds titles (``MicroLens-*_titles``)
and cover images. `read_items` streams any such table (Parquet, one batch at a time) and returns:

* `items`: the canonical ITEMS table (`item_id` as text, `title`, a `category`, `price` 0.0 and
  `first_seen` from the spec when the source has none, `image_png` when an image column is mapped);
  a list-valued category column (MMCTR's `item_tags`) gives its first non-zero element;
* `attributes`: the canonical ITEM_ATTRIBUTES table of the tags column (`tags_column`): one row per
  distinct non-zero tag of a kept item, attribute ``tag``, value = the tag id as text (the form
  `ctr_dagster.item_tags` reads for models such as QIN);
* `vectors`: `raw_item_vectors` (schema `schemas.vector_table`): one fixed-size-list float32 column
  per mapped embedding column, which the `item_embeddings` stage fuses next to (or instead of) its
  own encoders (`ctr_dagster.embeddings.PRECOMPUTED_TABLE`);
* `quarantine`: every rejected row, with its file, 1-based row and column, the rule and the record.

A tag of 0 (or an empty text) is padding, as in MMCTR's fixed-length tag lists. A row whose id is
the spec's `padding_id` (MMCTR's ``item_info.parquet`` row 0: item_id 0, no tags, a zero vector) is
padding too: skipped and counted (`padding`), never quarantined, and never the row an embedding's
width is inferred from.

An embedding cell may be a list / large list / fixed-size list of numbers, or binary holding a
``.npy`` array or raw little-endian float32 values ("numpy in Parquet"). A row is quarantined when its
id is missing or repeats an earlier one (`missing_id`, `duplicate_id`), an embedding has the wrong
number of values (`wrong_width`; the width comes from the spec, or else from the first non-null
cell of the column), holds NaN/inf (`non_finite`), or cannot be decoded (`unparseable`). A null
embedding is not an error: the item simply has no vector of that kind. Rows read = clean +
quarantined + padding, always. A file that is unreadable, lacks a mapped column or stores a column
in a type that cannot hold vectors (or tags) raises `MalformedInputError` naming the file and column.
"""

from __future__ import annotations

import datetime as dt
import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ctr_dagster import schemas
from ctr_dagster.embeddings import PRECOMPUTED_TABLE
from ctr_dagster.errors import MalformedInputError
from ctr_dagster.importers.readers import iter_parquet, open_parquet

TABLE = "raw_items"
VECTORS_TABLE = PRECOMPUTED_TABLE
_NPY_MAGIC = b"\x93NUMPY"


@dataclass(frozen=True)
class MicrolensSpec:
    """Which source columns feed the canonical item columns (None = not in the source)."""

    id_column: str = "item_id"
    title_column: str | None = None  # e.g. "title" (MicroLens titles); absent -> "" (no text)
    category_column: str | None = None  # text, or a list (e.g. MMCTR's item_tags: first tag)
    image_column: str | None = None  # PNG/JPEG bytes
    tags_column: str | None = None  # a list of tag ids (0 = padding) -> `attributes` (attribute "tag")
    #: source embedding column -> name of its column in raw_item_vectors
    vectors: Mapping[str, str] = field(default_factory=lambda: {"item_emb_d128": "mm"})
    #: expected width per source embedding column (default: the first non-null cell's)
    widths: Mapping[str, int] = field(default_factory=dict)
    default_category: str = "unknown"
    first_seen: str = "1970-01-01"
    batch_size: int = 65_536
    padding_id: str | None = None  # rows with this id (as text) are padding: skipped, counted

    @classmethod
    def mmctr(cls) -> MicrolensSpec:
        """The MMCTR ``item_info.parquet`` layout: item_id (0 = the padding row), item_tags (0 = pad),
        item_emb_d128 (128 floats)."""
        return cls(
            category_column="item_tags",
            tags_column="item_tags",
            vectors={"item_emb_d128": "mm"},
            widths={"item_emb_d128": 128},
            padding_id="0",
        )


@dataclass
class MicrolensImport:
    items: pa.Table  # ITEMS
    vectors: pa.Table  # vector_table({name: width}) with item_id
    quarantine: pa.Table  # QUARANTINE
    rows_read: int  # = items + quarantined + padding
    attributes: pa.Table = field(default_factory=lambda: schemas.empty(schemas.ITEM_ATTRIBUTES))
    padding: int = 0  # rows skipped as padding (`MicrolensSpec.padding_id`)


@dataclass
class _Bad:
    """First problem per row: row position in the batch -> (column, rule, detail)."""

    found: dict[int, tuple[str, str, str]] = field(default_factory=dict)

    def add(self, rows: np.ndarray, column: str, rule: str, detail: Any) -> None:
        for r in np.flatnonzero(rows).tolist():
            if r not in self.found:
                self.found[r] = (column, rule, detail(r) if callable(detail) else str(detail))


def _as_text(values: pa.Array, file: Path, column: str) -> pa.Array:
    kind = values.type
    if pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_integer(kind):
        return pc.cast(values, pa.string())
    if pa.types.is_dictionary(kind):
        return pc.cast(values.dictionary_decode(), pa.string())
    raise MalformedInputError(
        file, None, column, f"type {kind} cannot be read as text (expected string/integer)"
    )


def _is_list(kind: pa.DataType) -> bool:
    return pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind)


def _tags(values: pa.Array, file: Path, column: str) -> tuple[pa.Array, np.ndarray]:
    """(non-padding elements as text, the batch row of each), in list order: the elements of a list
    column, or the cell itself of a scalar one; null, "" and "0" are padding."""
    if _is_list(values.type):
        flat = pc.list_flatten(values)
        parents = pc.list_parent_indices(values).to_numpy(zero_copy_only=False)
    else:
        flat, parents = values, np.arange(len(values))
    try:
        text = _as_text(flat, file, column)
    except MalformedInputError:
        raise MalformedInputError(
            file, None, column, f"type {values.type} cannot hold tags (a list of integer or text ids)"
        ) from None
    real = pc.and_(pc.is_valid(text), pc.invert(pc.is_in(text, value_set=pa.array(["", "0"]))))
    real = real.fill_null(False).to_numpy(zero_copy_only=False)
    return text.filter(pa.array(real)), parents[real]


def _first_tag(values: pa.Array, file: Path, column: str) -> pa.Array:
    """The first non-padding element of each list (null when there is none), e.g. MMCTR's first tag
    as the category."""
    tags, rows = _tags(values, file, column)
    owners, first = np.unique(rows, return_index=True)  # rows ascend: the first index is list order's
    index = np.full(len(values), -1, dtype=np.int64)
    index[owners] = first
    return tags.take(pa.array(index, pa.int64(), mask=index < 0))


def _decode_binary(cell: bytes) -> np.ndarray:
    if cell.startswith(_NPY_MAGIC):
        return np.load(io.BytesIO(cell), allow_pickle=False).astype(np.float64).reshape(-1)
    if len(cell) % 4:
        raise ValueError(f"{len(cell)} bytes is not a whole number of float32 values")
    return np.frombuffer(cell, dtype="<f4").astype(np.float64)


class _VectorColumn:
    """Parses one embedding column batch by batch, remembering its width across batches and files."""

    def __init__(self, source: str, name: str, width: int | None):
        self.source, self.name, self.width = source, name, width

    def parse(
        self, values: pa.Array, file: Path, bad: _Bad, ignore: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(float32[n, width] with zero rows where null/bad, bool[n] present) for a batch; rows in
        `ignore` (padding) count as null: never judged, never the row the width is inferred from."""
        n, kind = len(values), values.type
        if ignore is not None and ignore.any():
            values = pc.if_else(pa.array(ignore), pa.nulls(n, kind), values)
        if pa.types.is_fixed_size_list(kind) or pa.types.is_list(kind) or pa.types.is_large_list(kind):
            child = kind.value_type
            if not (pa.types.is_floating(child) or pa.types.is_integer(child)):
                raise MalformedInputError(file, None, self.source, f"type {kind} is not a list of numbers")
            lengths = pc.list_value_length(values).to_numpy(zero_copy_only=False)
            present = values.is_valid().to_numpy(zero_copy_only=False)
            lengths = np.where(present, np.nan_to_num(lengths.astype(np.float64), nan=0), 0).astype(np.int64)
            rows: list[np.ndarray | None] = []  # values come from the list column itself
        elif pa.types.is_binary(kind) or pa.types.is_large_binary(kind):
            present = values.is_valid().to_numpy(zero_copy_only=False)
            rows, lengths = [None] * n, np.zeros(n, dtype=np.int64)
            unreadable = np.zeros(n, dtype=bool)
            reasons: dict[int, str] = {}
            for i, cell in enumerate(values.to_pylist()):
                if cell is None:
                    continue
                try:
                    rows[i] = _decode_binary(cell)
                    lengths[i] = len(rows[i])
                except (ValueError, OSError, EOFError) as exc:
                    unreadable[i] = True
                    reasons[i] = f"cannot decode the embedding bytes: {exc}"
            bad.add(unreadable, self.source, "unparseable", lambda r: reasons[r])
            present &= ~unreadable
        else:
            raise MalformedInputError(
                file, None, self.source, f"type {kind} cannot hold embeddings (list of numbers or binary)"
            )
        if self.width is None and present.any():
            self.width = int(lengths[np.flatnonzero(present)[0]])
        width = self.width or 0
        wrong = present & (lengths != width)
        bad.add(wrong, self.source, "wrong_width", lambda r: f"expected {width} values, got {lengths[r]}")
        good = present & ~wrong
        out = np.zeros((n, width), dtype=np.float32)
        if good.any():
            if not rows:
                flat = pc.list_flatten(values.filter(pa.array(good))).to_numpy(zero_copy_only=False)
                matrix = np.asarray(flat, dtype=np.float64).reshape(-1, width)
            else:
                matrix = np.stack([rows[i] for i in np.flatnonzero(good)])
            finite = np.isfinite(matrix).all(axis=1)
            idx = np.flatnonzero(good)
            nonfinite = np.zeros(n, dtype=bool)
            nonfinite[idx[~finite]] = True
            bad.add(nonfinite, self.source, "non_finite", "embedding holds NaN or infinite values")
            out[idx[finite]] = matrix[finite].astype(np.float32)
            good[idx[~finite]] = False
        return out, good


def _record(batch: pa.RecordBatch, row: int, vector_columns: Sequence[str]) -> str:
    record: dict[str, Any] = {}
    for name in batch.schema.names:
        value = batch.column(name)[row].as_py()
        if name in vector_columns and value is not None:
            size = len(value)
            value = f"<{size} {'bytes' if isinstance(value, bytes) else 'values'}>"
        elif isinstance(value, bytes):
            value = f"<{len(value)} bytes>"
        record[name] = value
    return json.dumps(record, default=str, ensure_ascii=False)


def read_items(files: Sequence[str | Path], spec: MicrolensSpec | None = None) -> MicrolensImport:
    """Stream MicroLens/MMCTR-style item Parquet files into canonical tables (see the module doc)."""
    spec = spec or MicrolensSpec()
    first_seen = dt.date.fromisoformat(spec.first_seen)
    parsers = {s: _VectorColumn(s, name, spec.widths.get(s)) for s, name in spec.vectors.items()}
    wanted = [
        spec.id_column,
        spec.title_column,
        spec.category_column,
        spec.image_column,
        spec.tags_column,
        *spec.vectors,
    ]
    columns = list(dict.fromkeys(c for c in wanted if c))
    seen: set[str] = set()
    item_parts: list[pa.Table] = []
    tag_parts: list[pa.Table] = []
    padding = 0
    vector_parts: dict[str, list[np.ndarray]] = {s: [] for s in spec.vectors}
    present_parts: dict[str, list[np.ndarray]] = {s: [] for s in spec.vectors}
    quarantine: list[dict[str, Any]] = []
    rows_read = 0
    for file in map(Path, files):
        names = open_parquet(file).schema_arrow.names
        missing = [c for c in columns if c not in names]
        if missing:
            raise MalformedInputError(
                file, None, missing[0], f"mapped column(s) {missing} not in the file {names}"
            )
        for source in iter_parquet(file, columns, spec.batch_size):
            batch, n = source.data, source.data.num_rows
            rows_read += n
            bad = _Bad()
            ids = _as_text(batch.column(spec.id_column), file, spec.id_column)
            id_list = ids.to_pylist()
            pad = np.array(
                [
                    spec.padding_id is not None and i is not None and str(i).strip() == spec.padding_id
                    for i in id_list
                ],
                dtype=bool,
            )
            padding += int(pad.sum())
            no_id = np.array([i is None or not str(i).strip() for i in id_list], dtype=bool)
            bad.add(no_id, spec.id_column, "missing_id", "item id is missing or empty")
            parsed = {s: p.parse(batch.column(s), file, bad, pad) for s, p in parsers.items()}
            duplicate = np.zeros(n, dtype=bool)
            for r, item in enumerate(id_list):
                if no_id[r] or pad[r] or r in bad.found:
                    continue
                if item in seen:
                    duplicate[r] = True
                else:
                    seen.add(item)
            bad.add(
                duplicate,
                spec.id_column,
                "duplicate_id",
                lambda r, ids=id_list: f"item id {ids[r]!r} repeats an earlier row",
            )
            keep = ~pad
            keep[list(bad.found)] = False
            for r, (column, rule, detail) in sorted(bad.found.items()):
                row = int(source.rows[r])
                quarantine.append(
                    {
                        "table": TABLE,
                        "partition": None,
                        "source_file": str(file),
                        "source_row": row,
                        "column": column,
                        "rule": rule,
                        "detail": f"{file}, row {row}, column {column!r}: {detail}",
                        "record": _record(batch, r, list(spec.vectors)),
                    }
                )
            mask = pa.array(keep)
            title = (
                pc.fill_null(_as_text(batch.column(spec.title_column), file, spec.title_column), "")
                if spec.title_column
                else pa.array([""] * n, pa.string())
            )
            if spec.category_column:
                raw = batch.column(spec.category_column)
                if _is_list(raw.type):
                    raw = _first_tag(raw, file, spec.category_column)
                category = pc.fill_null(_as_text(raw, file, spec.category_column), spec.default_category)
            else:
                category = pa.array([spec.default_category] * n, pa.string())
            image = batch.column(spec.image_column) if spec.image_column else pa.nulls(n, pa.binary())
            item_parts.append(
                pa.table(
                    {
                        "item_id": ids,
                        "category": category,
                        "title": title,
                        "price": pa.array(np.zeros(n, dtype=np.float32)),
                        "first_seen": pa.array([first_seen] * n, pa.date32()),
                        "image_png": pc.cast(image, pa.binary()),
                    }
                ).filter(mask)
            )
            for s, (vectors, present) in parsed.items():
                vector_parts[s].append(vectors[keep])
                present_parts[s].append(present[keep])
            if spec.tags_column:
                tags, rows = _tags(batch.column(spec.tags_column), file, spec.tags_column)
                kept = keep[rows]
                tag_parts.append(
                    pa.table(
                        {
                            "item_id": ids.take(pa.array(rows[kept], pa.int64())),
                            "attribute": pa.array(["tag"] * int(kept.sum()), pa.string()),
                            "value": tags.filter(pa.array(kept)),
                        }
                    )
                )
    items = (
        schemas.conform(pa.concat_tables(item_parts), schemas.ITEMS, source="microlens import")
        if item_parts
        else schemas.empty(schemas.ITEMS)
    )
    widths = {spec.vectors[s]: parsers[s].width or 1 for s in spec.vectors}
    arrays: list[pa.Array] = [items.column("item_id").combine_chunks()]
    for s, name in spec.vectors.items():
        width = widths[name]
        blocks = [
            v.reshape(-1, width) if v.size else np.zeros((len(v), width), np.float32) for v in vector_parts[s]
        ]
        matrix = np.concatenate(blocks) if blocks else np.zeros((0, width), np.float32)
        present = np.concatenate(present_parts[s]) if present_parts[s] else np.zeros(0, bool)
        values = pa.array(np.ascontiguousarray(matrix, dtype=np.float32).reshape(-1))
        arrays.append(pa.FixedSizeListArray.from_arrays(values, width, mask=pa.array(~present)))
    vectors = pa.Table.from_arrays(arrays, schema=schemas.vector_table(widths))
    rejected = pa.Table.from_pylist(quarantine, schema=schemas.QUARANTINE)
    attributes = schemas.empty(schemas.ITEM_ATTRIBUTES)
    if tag_parts:  # distinct (item, tag) pairs
        tagged = pa.concat_tables(tag_parts)
        distinct = tagged.group_by(["item_id", "attribute", "value"], use_threads=False).aggregate([])
        attributes = schemas.conform(
            distinct.select(["item_id", "attribute", "value"]),
            schemas.ITEM_ATTRIBUTES,
            source="microlens tags",
        )
    return MicrolensImport(items, vectors, rejected, rows_read, attributes, padding)


def write(warehouse: Any, result: MicrolensImport) -> dict[str, int]:
    """Write the canonical items, the precomputed vectors and the quarantine rows; returns row counts."""
    warehouse.write(TABLE, result.items)
    warehouse.write(VECTORS_TABLE, result.vectors)
    warehouse.write("quarantine_items_import", result.quarantine)
    return {
        "rows_read": result.rows_read,
        "items": result.items.num_rows,
        "quarantined": result.quarantine.num_rows,
    }
