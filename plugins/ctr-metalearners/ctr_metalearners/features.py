"""Generic tabular features for the meta-learners (numpy/pyarrow live here, imported only when used).

`FeatureSpec.fit(train)` decides once, from the training table's schema and values, which columns are
features and how; `matrix(batch)` turns any later table into the same float64 matrix:

* left out: the targets and the treatment (label, click, conversion, treatment), the bookkeeping
  columns (split, impression_id, ts, user_id, item_id), raw user / item ids (user_idx, item_idx: too
  many levels for tree categoricals), oracle columns (p_click*, p_conv*, logit_*), and every column
  whose type is not a number, a boolean or text (lists, timestamps, dates, binary, structs);
* numbers and booleans: numeric features (null -> NaN, LightGBM's missing value);
* integer columns named `*_idx` (the TRAINING table's indexed categoricals: category, device, region,
  age group): LightGBM categoricals, the index itself as the code (negative or null -> missing);
* text (and dictionary-encoded text): LightGBM categoricals over a vocabulary of the
  `max_categories` most frequent training values (ties by value); other values -> missing.

The spec is JSON (saved with the model), so a reloaded model builds the identical matrix.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

#: Never features: targets, the treatment (the learners set it themselves), bookkeeping, raw ids.
EXCLUDED = frozenset(
    {
        "label",
        "click",
        "conversion",
        "treatment",
        "split",
        "impression_id",
        "ts",
        "user_id",
        "item_id",
        "user_idx",
        "item_idx",
    }
)
#: Oracle columns of the synthetic world (`schemas.ORACLE_IMPRESSIONS`), should a table carry them.
ORACLE_PREFIXES = ("p_click", "p_conv", "logit_")


@dataclass
class FeatureSpec:
    """Which columns are features: {"name", "kind": numeric | index | text, "vocab": [...] (text only)}."""

    columns: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def fit(cls, table: pa.Table, max_categories: int = 255) -> FeatureSpec:
        columns = []
        for f in table.schema:
            if f.name in EXCLUDED or f.name.startswith(ORACLE_PREFIXES):
                continue
            kind = f.type.value_type if pa.types.is_dictionary(f.type) else f.type
            if pa.types.is_integer(kind) and f.name.endswith("_idx"):
                columns.append({"name": f.name, "kind": "index"})
            elif pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind):
                columns.append({"name": f.name, "kind": "numeric"})
            elif pa.types.is_string(kind) or pa.types.is_large_string(kind):
                columns.append(
                    {"name": f.name, "kind": "text", "vocab": _vocabulary(table, f.name, max_categories)}
                )
        return cls(columns)

    def names(self) -> list[str]:
        return [c["name"] for c in self.columns]

    def categorical(self) -> list[str]:
        return [c["name"] for c in self.columns if c["kind"] in ("index", "text")]

    def matrix(self, table: pa.Table) -> np.ndarray:
        """float64[n, len(names())]; a column the spec needs but `table` lacks is a KeyError naming it."""
        out = np.empty((table.num_rows, len(self.columns)), dtype=np.float64)
        for j, spec in enumerate(self.columns):
            name = spec["name"]
            if name not in table.column_names:
                raise KeyError(f"feature column {name!r} (seen in training) is missing from the batch")
            column = table.column(name)
            if pa.types.is_dictionary(column.type):
                column = column.cast(column.type.value_type)
            if spec["kind"] == "text":
                codes = pc.index_in(column.cast(pa.string()), value_set=pa.array(spec["vocab"], pa.string()))
                out[:, j] = _floats(codes)
            else:
                values = _floats(column)
                if spec["kind"] == "index":
                    values[values < 0] = np.nan
                out[:, j] = values
        return out

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, document: dict[str, Any]) -> FeatureSpec:
        return cls(list(document["columns"]))


def _floats(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """Numbers as float64 with NaN for null (booleans as 0/1)."""
    if pa.types.is_boolean(column.type):
        column = column.cast(pa.int8())
    return np.array(
        pc.fill_null(column.cast(pa.float64()), np.nan).to_numpy(zero_copy_only=False), dtype=np.float64
    )


def _vocabulary(table: pa.Table, name: str, limit: int) -> list[str]:
    """The `limit` most frequent non-null values of a text column (ties: by value), most frequent first."""
    column = table.column(name)
    if pa.types.is_dictionary(column.type):
        column = column.cast(column.type.value_type)
    counts = pc.value_counts(column.cast(pa.string()).drop_null())
    pairs = sorted(
        zip(counts.field("values").to_pylist(), counts.field("counts").to_pylist(), strict=True),
        key=lambda vc: (-vc[1], vc[0]),
    )
    return [v for v, _ in pairs[:limit]]
