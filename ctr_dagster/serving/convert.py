"""Training rows <-> what a bundle reads: index-space `Rows`, and JSON requests with raw ids.

`rows_from_table` feeds the export's parity checks (the bundle scores the very rows `predict` saw);
`requests_from_table` is the inverse of the runtime's request parsing (indices back to raw ids through
the bundle's vocabularies), so the tests and the benchmark score training rows through the request
path a serving client uses; `vocabularies_from_table` makes vocabularies for a table that comes
without its warehouse (the conformance kit's tables).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ctr_dagster.distillation import USER_COLUMNS
from ctr_dagster.schemas import VOCAB
from ctr_dagster.serving import runtime

#: Written for an index that no vocabulary key maps to (OOV): parsed back to OOV.
UNKNOWN_KEY = "<unknown>"
#: Request-level fields, shared by every candidate of a request (the rest describe a candidate): the
#: user and request columns of a one-user candidate set, less the history (a request carries it apart).
REQUEST_COLUMNS = tuple(c for c in USER_COLUMNS if not c.startswith("hist_"))


def _array(table: pa.Table, name: str) -> pa.Array:
    column = table.column(name)
    return column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)


def rows_from_table(table: pa.Table) -> runtime.Rows:
    """The model columns of TRAINING-schema rows as runtime `Rows` (their stored types kept)."""
    scalars: dict[str, np.ndarray] = {}
    lists: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for name, dtype in runtime.DTYPES.items():
        if name not in table.column_names:
            continue
        array = _array(table, name)
        if name in runtime.LIST_COLUMNS:
            if array.null_count:
                array = pc.fill_null(array, pa.scalar([], type=array.type))
            values = pc.list_flatten(array).to_numpy(zero_copy_only=False).astype(dtype)
            lengths = pc.list_value_length(array).to_numpy(zero_copy_only=False).astype(np.int64)
            lists[name] = (values, lengths)
        else:
            scalars[name] = array.to_numpy(zero_copy_only=False).astype(dtype)
    return runtime.Rows(table.num_rows, scalars, lists)


def inverse_vocabularies(bundle: Path) -> dict[str, dict[int, str]]:
    """index -> raw key of every vocabulary of a bundle."""
    manifest = json.loads((Path(bundle) / runtime.MANIFEST_FILE).read_text())
    files = manifest["request"]["vocabularies"]
    out = {}
    for name, file in files.items():
        mapping = json.loads((Path(bundle) / file).read_text())
        out[name] = {int(index): key for key, index in mapping.items()}
    return out


def _key(inverse: dict[str, dict[int, str]], vocabulary: str, index: int) -> str:
    return inverse[vocabulary].get(int(index), UNKNOWN_KEY)


def requests_from_table(
    table: pa.Table, inverse: dict[str, dict[int, str]]
) -> list[tuple[dict[str, Any], list[int]]]:
    """One request per group of rows sharing the request-level fields and the history, with the table
    rows its candidates came from (in order). Raw user and item ids come from the table; the other
    ids from the vocabularies' inverse (an index without a key becomes `UNKNOWN_KEY`, i.e. OOV)."""
    data = table.select([c for c in table.column_names if c != "ts"]).to_pylist()
    groups: dict[Any, list[int]] = {}
    for i, row in enumerate(data):
        history = tuple(zip(row["hist_item_idx"], row["hist_category_idx"], row["hist_age_s"], strict=True))
        key = (tuple(row[c] for c in REQUEST_COLUMNS), history)
        groups.setdefault(key, []).append(i)
    out = []
    for rows in groups.values():
        first = data[rows[0]]
        user = {
            "user_id": first["user_id"],
            "device": _key(inverse, "device", first["device_idx"]),
            "region": _key(inverse, "region", first["region_idx"]),
            "age_group": _key(inverse, "age_group", first["age_group_idx"]),
            "hour": first["hour"],
            "day_of_week": first["day_of_week"],
            "user_click_count": first["user_click_count"],
            "is_new_user": first["is_new_user"],
            "history": [
                {
                    "item_id": _key(inverse, "item", item),
                    "category": _key(inverse, "category", cat),
                    "age_s": age,
                }
                for item, cat, age in zip(
                    first["hist_item_idx"], first["hist_category_idx"], first["hist_age_s"], strict=True
                )
            ],
        }
        candidates = [
            {
                "item_id": data[i]["item_id"],
                "category": _key(inverse, "category", data[i]["category_idx"]),
                "price": data[i]["price"],
                "item_age_days": data[i]["item_age_days"],
                "position": data[i]["position"],
                "is_new_item": data[i]["is_new_item"],
                "treatment": data[i]["treatment"],
            }
            for i in rows
        ]
        out.append(({"user": user, "candidates": candidates}, rows))
    return out


def columnar_request(request: dict[str, Any]) -> dict[str, Any]:
    """The same request with its candidates in the columnar form (one list per field, in
    `runtime.CANDIDATE_FIELDS` order; a field that no candidate sets is left out, so it keeps its default)."""
    candidates = request["candidates"]
    present = [f for f in runtime.CANDIDATE_FIELDS if any(f in c for c in candidates)]
    missing = [f for f in present if not all(f in c for c in candidates)]
    if missing:
        raise ValueError(
            f"columnar_request: field(s) {', '.join(missing)} are set on some candidates only; "
            "the columnar form needs a value for every candidate"
        )
    return {**request, "candidates": {f: [c[f] for c in candidates] for f in present}}


def vocabularies_from_table(table: pa.Table) -> dict[str, pa.Table]:
    """VOCAB tables (key, index, version) consistent with a TRAINING table that has no warehouse: its
    real user / item ids where it holds them, invented keys (``category#7``) for the other indices;
    OOV (1) and padding (0) get no key. For tests and benchmarks on the conformance kit's tables."""
    index_to_key: dict[str, dict[int, str]] = {name: {} for name in runtime.VOCABULARIES}
    for name, ids in (("user", "user_id"), ("item", "item_id")):
        for key, idx in zip(
            table.column(ids).to_pylist(), table.column(f"{name}_idx").to_pylist(), strict=True
        ):
            if idx >= 2:
                index_to_key[name].setdefault(idx, key)
    columns = [(name, f"{name}_idx") for name in runtime.VOCABULARIES] + [
        ("item", "hist_item_idx"),
        ("category", "hist_category_idx"),
    ]
    for name, column in columns:
        values = table.column(column)
        if pa.types.is_list(values.type):
            values = pc.list_flatten(values)
        for idx in pc.unique(values).to_pylist():
            if idx is not None and idx >= 2:
                index_to_key[name].setdefault(idx, f"{name}#{idx}")
    return {
        name: pa.table(
            {
                "key": pa.array([key for _, key in sorted(pairs.items())], pa.string()),
                "index": pa.array(sorted(pairs), pa.int32()),
                "version": pa.array([1] * len(pairs), pa.int32()),
            },
            schema=VOCAB,
        )
        for name, pairs in index_to_key.items()
    }
