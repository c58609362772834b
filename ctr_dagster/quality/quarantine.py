"""Turning failing row positions into quarantine rows (one row per distinct failing source row).

Vectorized where it is cheap to be: the failing (row, rule) pairs are grouped by Arrow, and the rows
are rendered as JSON by DuckDB's `to_json` (times as ISO-8601 text, bytes as base64). The human
messages are formatted in Python, one per failing (row, rule) pair only.
"""

from __future__ import annotations

import string
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ctr_dagster import schemas
from ctr_dagster.quality.engine import Evaluation
from ctr_dagster.quality.rules import Rule


class _Values(dict):
    """Format mapping that prints a placeholder instead of failing on a value it lacks."""

    def __missing__(self, key: str) -> str:
        return "?"


def _fields(template: str) -> list[str]:
    return [name for _, name, _, _ in string.Formatter().parse(template) if name]


def messages(
    rule: Rule, table: pa.Table, rows: np.ndarray, extras: Mapping[int, Mapping[str, Any]]
) -> list[str]:
    """`rule.message` formatted with the values of each failing row (only the fields it names)."""
    fields = [f for f in _fields(rule.message) if f in table.column_names]
    taken = table.select(fields).take(pa.array(rows)) if fields else None
    columns = {f: taken.column(f).to_pylist() for f in fields} if taken is not None else {}
    out = []
    for i, row in enumerate(rows.tolist()):
        values = _Values({f: column[i] for f, column in columns.items()})
        values.update(extras.get(row, {}))
        out.append(rule.message.format_map(values))
    return out


def records_json(table: pa.Table) -> pa.Array:
    """Each row as a JSON object (DuckDB `to_json`): ISO-8601 times, base64 bytes, NaN as NaN."""
    import duckdb

    prepared, select = {}, []
    for i, field in enumerate(table.schema):
        column, key = table.column(i), f"c{i}"
        name = '"' + field.name.replace('"', '""') + '"'
        if pa.types.is_timestamp(field.type):
            fmt = "%Y-%m-%dT%H:%M:%S%z" if field.type.tz else "%Y-%m-%dT%H:%M:%S"
            column = pc.strftime(column, format=fmt)
        elif pa.types.is_date(field.type) or pa.types.is_time(field.type):
            column = column.cast(pa.string())
        prepared[key] = column
        binary = pa.types.is_binary(field.type) or pa.types.is_large_binary(field.type)
        select.append(f"{name} := " + (f"to_base64({key})" if binary else key))
    con = duckdb.connect(":memory:")
    try:
        con.register("frame", pa.table(prepared))
        sql = f"SELECT to_json(struct_pack({', '.join(select)})) AS j FROM frame"
        return con.sql(sql).to_arrow_table().column("j").combine_chunks().cast(pa.string())
    finally:
        con.close()


def _located(extras: Mapping[int, Mapping[str, Any]], provenance: pa.Table | None) -> dict[int, dict]:
    """Extras with `_first_row` (a position in the validated table) said as a place: "<file> row N"
    (1-based, the user's own file) with provenance, else "row N" (the position, 0-based)."""
    out = {row: dict(values) for row, values in extras.items()}
    for values in out.values():
        position = values.get("_first_row")
        if position is None:
            continue
        if provenance is None:
            values["_first_row"] = f"row {position}"
        else:
            file = provenance.column("source_file")[position].as_py()
            values["_first_row"] = f"{file} row {provenance.column('source_row')[position].as_py()}"
    return out


def bad_rows(evaluation: Evaluation) -> np.ndarray:
    """Distinct failing row positions, sorted."""
    arrays = [a for a in evaluation.failures.values() if len(a)]
    return np.unique(np.concatenate(arrays)) if arrays else np.empty(0, dtype=np.int64)


def build_quarantine(
    *,
    table_name: str,
    partition: str | None,
    table: pa.Table,
    rules: Sequence[Rule],
    evaluation: Evaluation,
    rows: np.ndarray,
    source_file: str | None = None,
    provenance: pa.Table | None = None,
) -> pa.Table:
    """One QUARANTINE row per position in `rows`, listing all its failing rules ("a;b").

    `source_row` is the position in `table` (0-based) unless `provenance` (columns source_file,
    source_row, aligned with `table`) says where each row came from: then each detail starts with
    the row's own file and 1-based row, and a repeat names the file and row it repeats.
    """
    if not len(rows):
        return schemas.empty(schemas.QUARANTINE)
    slots, names, columns, details = [], [], [], []
    for rule in rules:  # suite order: the order rules are listed in within a row
        failing = evaluation.failures.get(rule.name)
        if failing is None or not len(failing):
            continue
        slots.append(np.searchsorted(rows, failing))
        names.append(pa.repeat(pa.scalar(rule.name), len(failing)))
        columns.append(pa.repeat(pa.scalar(rule.column), len(failing)))
        extras = _located(evaluation.extras.get(rule.name, {}), provenance)
        details.append(pa.array(messages(rule, table, failing, extras), pa.string()))
    pairs = pa.table(
        {
            "slot": pa.array(np.concatenate(slots)),
            "rule": pa.concat_arrays(names),
            "column": pa.concat_arrays(columns),
            "detail": pa.concat_arrays(details),
        }
    )
    grouped = (
        pairs.group_by("slot", use_threads=False)
        .aggregate([("rule", "list"), ("column", "distinct"), ("detail", "list")])
        .sort_by("slot")
    )
    if grouped.num_rows != len(rows):  # every listed row must have failed at least one rule
        raise RuntimeError(
            f"quarantine of {table_name}: {grouped.num_rows} grouped rows for {len(rows)} bad rows"
        )
    detail = pc.binary_join(grouped.column("detail_list"), "; ")
    if provenance is not None:
        files = provenance.column("source_file").take(pa.array(rows)).cast(pa.string())
        source_rows = provenance.column("source_row").take(pa.array(rows))
        # "<file>, row 7: ..." as the parser's own quarantine details say it
        detail = pc.binary_join_element_wise(
            files, ", row ", source_rows.cast(pa.string()), ": ", detail, "", null_handling="replace"
        )
    else:
        files = pa.repeat(pa.scalar(source_file, pa.string()), len(rows))
        source_rows = pa.array(rows, pa.int64())
    return pa.table(
        {
            "table": pa.repeat(pa.scalar(table_name, pa.string()), len(rows)),
            "partition": pa.repeat(pa.scalar(partition, pa.string()), len(rows)),
            "source_file": files,
            "source_row": source_rows,
            "column": pc.binary_join(grouped.column("column_distinct"), ";"),
            "rule": pc.binary_join(grouped.column("rule_list"), ";"),
            "detail": detail,
            "record": records_json(table.take(pa.array(rows))),
        },
        schema=schemas.QUARANTINE,
    )
