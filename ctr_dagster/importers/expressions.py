"""`{expr: ...}` columns of a mapping: one DuckDB SQL expression over one row of a source file.

Why DuckDB: labels and categories are rarely stored as-is (a rating >= 4 is a click, the first of
a genre list is the category), and DuckDB's SQL says that in one line while running vectorized on
the Arrow batches the importer already streams, with no prep script and no Python loop over rows.

- `analyse(sql)`, at load time: the expression's syntax (DuckDB's own parser) and the source
  columns it refers to. One expression only: no FROM / WHERE, no subquery, window or aggregate.
- `typed_inputs(batch, names)`, per batch: the referenced columns as DuckDB will see them. Text
  columns (every CSV column) are typed per batch: BIGINT when every non-null cell parses as an
  integer, else DOUBLE when every one parses as a number, else VARCHAR (so `"rating" >= 4` works
  on a text file; `TRY_CAST` / `CAST` for anything else). Typed columns (Parquet) pass as they are.
- `Evaluator.evaluate(sql, inputs)`, per batch: the expression's values; rows where it raises come
  back null, flagged, with DuckDB's message (found with one `TRY` query, or by bisection as
  `convert._cells` does when the expression is volatile), for the caller to quarantine.
"""

from __future__ import annotations

import contextlib
import functools
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

#: AST classes an expression may not contain (each reads more than the row it is evaluated on).
_REFUSED = {
    "SUBQUERY": "a subquery",
    "WINDOW": "a window function",
    "STAR": "*",
    "PARAMETER": "a ? parameter",
}


#: Failing rows whose own DuckDB message is fetched (per batch, per distinct input); others say less.
MESSAGES = 100


class ExpressionError(ValueError):
    """The expression cannot be evaluated on this file at all (wrong types, unknown function...)."""


@dataclass
class Evaluated:
    """An expression's values over one batch; `bad` rows raised (value null, `messages[row]` why)."""

    values: pa.Array
    bad: np.ndarray | None = None
    messages: dict[int, str] = field(default_factory=dict)


def analyse(sql: str) -> tuple[str, ...]:
    """The source columns `sql` refers to, in order of appearance; ValueError when it is not one
    valid expression (the message is DuckDB's, first line only)."""
    import duckdb

    if not sql.strip():
        raise ValueError("empty expression")
    with duckdb.connect() as con:
        (text,) = con.execute("SELECT json_serialize_sql(?)", [f"SELECT {sql}"]).fetchone()
    tree = json.loads(text)
    if tree.get("error"):
        raise ValueError(f"not a valid DuckDB expression: {first_line(tree.get('error_message', ''))}")
    statements = tree["statements"]
    node = statements[0]["node"] if len(statements) == 1 else {}
    extra = [key for key in ("where_clause", "having", "qualify", "sample") if node.get(key) is not None]
    if (
        node.get("type") != "SELECT_NODE"
        or len(node.get("select_list", [])) != 1
        or node.get("from_table", {}).get("type") != "EMPTY"
        or node.get("group_expressions")
        or node.get("modifiers")
        or node.get("cte_map", {}).get("map")
        or extra
    ):
        raise ValueError("must be one SQL expression over the file's columns (no FROM, WHERE, ...)")
    expression = node["select_list"][0]
    for kind, words in _REFUSED.items():
        if any(n.get("class") == kind for n in _nodes(expression)):
            raise ValueError(f"{words} cannot be used: the expression sees one row at a time")
    aggregates = sorted(
        {
            n["function_name"].replace("count_star", "count")
            for n in _nodes(expression)
            if n.get("class") == "FUNCTION" and n.get("function_name", "").lower() in _aggregates()
        }
    )
    if aggregates:
        raise ValueError(f"aggregate {aggregates} cannot be used: the expression sees one row at a time")
    params = {
        ref["column_names"][0]
        for n in _nodes(expression)
        if n.get("class") == "LAMBDA"
        for ref in _nodes(n["lhs"])
        if ref.get("class") == "COLUMN_REF"
    }
    refs = (
        n["column_names"][0]
        for n in _nodes(expression)
        if n.get("class") == "COLUMN_REF" and n["column_names"][0] not in params
    )
    return tuple(dict.fromkeys(refs))


def first_line(message: str) -> str:
    """DuckDB messages carry the query and a caret on later lines: the first line says it."""
    return message.strip().splitlines()[0] if message.strip() else message


def _nodes(tree: Any) -> Iterator[dict]:
    """Every JSON object of an AST (depth first)."""
    if isinstance(tree, dict):
        yield tree
        for value in tree.values():
            yield from _nodes(value)
    elif isinstance(tree, list):
        for value in tree:
            yield from _nodes(value)


@functools.cache
def _aggregates() -> frozenset[str]:
    """Names that are only aggregate functions (`sum`, `count`...), not also scalar ones."""
    import duckdb

    with duckdb.connect() as con:
        rows = con.execute(
            "SELECT function_name, bool_and(function_type = 'aggregate') FROM duckdb_functions() "
            "GROUP BY function_name"
        ).fetchall()
    return frozenset(name.lower() for name, only in rows if only)


# -- per batch -----------------------------------------------------------------------------------------
def typed_inputs(batch: pa.RecordBatch, names: Sequence[str]) -> tuple[pa.Table, dict[str, np.ndarray]]:
    """(the referenced columns typed as the module doc says, name -> cells that are not text).

    Raw bytes (CSV cells) become text exactly as `convert` makes text of any cell, so a cell that
    is not valid text there (bad encoding, NUL bytes) is a bad cell here too.
    """
    from ctr_dagster.importers.convert import convert
    from ctr_dagster.importers.mapping import TimeSpec

    columns, bad = {}, {}
    if not names:  # an expression of constants still gives one value per row
        return pa.table({"_row": pa.nulls(batch.num_rows)}), bad
    for name in names:
        values = batch.column(name)
        if pa.types.is_dictionary(values.type):
            values = values.dictionary_decode()
        if pa.types.is_binary(values.type) or pa.types.is_large_binary(values.type):
            text = convert(values, pa.field(name, pa.string()), TimeSpec())
            values = text.values
            if text.bad is not None and text.bad.any():
                bad[name] = text.bad
        if pa.types.is_string(values.type) or pa.types.is_large_string(values.type):
            values = _narrowest(values)
        columns[name] = values
    return pa.table(columns), bad


def _narrowest(text: pa.Array) -> pa.Array:
    """BIGINT if every cell is an integer, else DOUBLE if every cell is a number, else the text."""
    for kind in (pa.int64(), pa.float64()):
        try:
            return text.cast(kind)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            continue
    return text


def _distinct(table: pa.Table) -> tuple[pa.Table, np.ndarray]:
    """(the distinct rows of `table`, for each row the index of its distinct row)."""
    codes = []
    for column in table.columns:
        try:
            encoded = pc.dictionary_encode(column.combine_chunks())
        except (pa.ArrowNotImplementedError, pa.ArrowInvalid):  # e.g. nested values: no dedup
            return table, np.arange(table.num_rows)
        codes.append(encoded.indices.fill_null(-1).to_numpy(zero_copy_only=False))
    if not codes or not table.num_rows:
        return table, np.arange(table.num_rows)
    _, first, inverse = np.unique(np.stack(codes, axis=1), axis=0, return_index=True, return_inverse=True)
    return table.take(pa.array(first, pa.int64())), inverse.reshape(-1)


class Evaluator:
    """One DuckDB connection (per planned file) that evaluates expressions over Arrow tables."""

    def __init__(self) -> None:
        import duckdb

        self._duckdb = duckdb
        self.con = duckdb.connect()
        with contextlib.suppress(duckdb.Error):  # ICU missing: DuckDB is UTC already
            self.con.execute("SET TimeZone = 'UTC'")  # time functions' results in UTC
        self._row_errors = (
            duckdb.ConversionException,
            duckdb.InvalidInputException,
            duckdb.OutOfRangeException,
            duckdb.TypeMismatchException,
        )

    def close(self) -> None:
        self.con.close()

    def evaluate(self, sql: str, inputs: pa.Table) -> Evaluated:
        """`sql` over every row of `inputs`; ExpressionError when it fails for reasons no row explains.

        When some rows raise, one more query finds them all: `TRY(struct_pack(v := sql))` is null
        exactly on failing rows (a legitimately null value gives {v: null}). DuckDB's own message is
        then fetched for the first `MESSAGES` distinct failing inputs, one small query each. TRY
        refuses volatile functions (`error()`, `random()`): then failing rows are bisected among
        the distinct input rows, so a thousand rows with the same bad value cost one step.
        """
        try:
            return Evaluated(self._run(sql, inputs))
        except self._row_errors:
            pass
        try:
            packed = self._run(f"TRY(struct_pack(v := ({sql})))", inputs)
        except ExpressionError:
            return self._bisected(sql, inputs)
        failed = packed.is_null().to_numpy(zero_copy_only=False)
        values = packed.field("v")
        if packed.null_count:  # struct nulls are not the child's: null those rows explicitly
            values = pc.if_else(pa.array(failed), pa.nulls(len(values), values.type), values)
        rows = np.flatnonzero(failed)
        distinct, inverse = _distinct(inputs.take(pa.array(rows, pa.int64())))
        said = {}  # distinct failing input -> DuckDB's message for it
        for d in range(min(distinct.num_rows, MESSAGES)):
            found = self._failing(sql, distinct, d, d + 1)
            if d in found:
                said[d] = found[d]
        messages = {}
        for row, d in zip(rows.tolist(), inverse.tolist(), strict=True):
            messages[row] = said.get(d, "the expression fails on this row (TRY(...) gives null)")
        return Evaluated(values, failed if failed.any() else None, messages)

    def _bisected(self, sql: str, inputs: pa.Table) -> Evaluated:
        """Failing rows by bisection over the distinct input rows, then the others in one run."""
        distinct, inverse = _distinct(inputs)
        failing = self._failing(sql, distinct, 0, distinct.num_rows)
        fails = np.zeros(distinct.num_rows, dtype=bool)
        fails[list(failing)] = True
        bad = fails[inverse]
        messages = {int(r): failing[int(inverse[r])] for r in np.flatnonzero(bad)}
        good = self._run(sql, inputs.filter(pa.array(~bad)))
        index = np.cumsum(~bad) - 1
        values = good.take(pa.array(index, pa.int64(), mask=bad))
        return Evaluated(values, bad if bad.any() else None, messages)

    def _failing(self, sql: str, inputs: pa.Table, lo: int, hi: int) -> dict[int, str]:
        """Rows lo..hi of `inputs` on which `sql` raises a row error -> DuckDB's message."""
        if hi <= lo:
            return {}
        try:
            self._run(sql, inputs.slice(lo, hi - lo))
            return {}
        except self._row_errors as exc:
            if hi - lo == 1:
                return {lo: first_line(str(exc))}
        mid = (lo + hi) // 2
        return {**self._failing(sql, inputs, lo, mid), **self._failing(sql, inputs, mid, hi)}

    def _run(self, sql: str, inputs: pa.Table) -> pa.Array:
        try:
            self.con.register("source_rows", inputs)
            out = self.con.sql(f"SELECT ({sql}) AS value FROM source_rows").to_arrow_table()
        except self._row_errors:
            raise
        except self._duckdb.Error as exc:
            raise ExpressionError(first_line(str(exc))) from exc
        finally:
            self.con.unregister("source_rows")
        if out.num_rows != inputs.num_rows:
            raise ExpressionError(f"gives {out.num_rows} values for {inputs.num_rows} rows: not one per row")
        return out.column(0).combine_chunks()
