"""Evaluating rules: Great Expectations on a pandas *validation view*, Arrow for reference checks.

The validation view is the table reduced to the columns the expectations read, in cheap form:
timestamps as epoch milliseconds, dates as epoch days, numbers widened to int64/float64 (GE's
`between` is vectorized only for those; other dtypes cost a Python call per row, ~1 s per million),
columns checked for uniqueness as dictionary codes, plus helper columns such as each row's item
`first_seen`. GE returns the failing row positions (`unexpected_index_list` with
`result_format="COMPLETE"`), which is all the quarantine needs.

GE costs ~0.2-0.4 s per validation whatever the size (Python bookkeeping), so the Arrow work
(hash lookups, dictionary encoding) runs on a small thread pool meanwhile: Arrow kernels release
the GIL. Heavy imports (great_expectations, pandas) happen on first use only.
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ctr_dagster.quality.rules import Rule

_MS_PER_DAY = 86_400_000
_WORKERS = max(2, min(4, os.cpu_count() or 1))
_RESULT_FORMAT = {
    "result_format": "COMPLETE",
    "return_unexpected_index_query": False,  # a pandas query string listing every failing index
    "partial_unexpected_count": 0,
}


@dataclass
class Evaluation:
    """Failing row positions per rule, and extra values some messages name (e.g. `_first_row`)."""

    failures: dict[str, np.ndarray]
    extras: dict[str, dict[int, dict[str, Any]]] = field(default_factory=dict)


class _GxRuntime:
    """One ephemeral GE context per process, with a pandas datasource and one asset per table."""

    def __init__(self) -> None:
        import great_expectations as gx
        import great_expectations.execution_engine.pandas_execution_engine as pandas_engine
        from great_expectations.data_context.types.base import ProgressBarsConfig

        # GE fingerprints every in-memory frame with an md5 over a full pandas hash (~1.5 s per
        # million rows); the fingerprint is only batch metadata, so it is switched off.
        if hasattr(pandas_engine, "HASH_THRESHOLD"):
            pandas_engine.HASH_THRESHOLD = 0
        self.gx = gx
        self.context = gx.get_context(mode="ephemeral")
        self.context.variables.progress_bars = ProgressBarsConfig(globally=False)
        self.datasource = self.context.data_sources.add_pandas("ctr_quality")
        self.batch_definitions: dict[str, Any] = {}
        self.lock = threading.Lock()

    def batch_definition(self, name: str):
        if name not in self.batch_definitions:
            asset = self.datasource.add_dataframe_asset(name)
            self.batch_definitions[name] = asset.add_batch_definition_whole_dataframe("whole")
        return self.batch_definitions[name]


@functools.cache
def gx_runtime() -> _GxRuntime:
    return _GxRuntime()


def run_expectations(suite_name: str, frame, rules: Sequence[Rule]) -> dict[str, np.ndarray]:
    """Validate `frame` (pandas, RangeIndex) against the GE rules; failing positions per rule."""
    import great_expectations.expectations as gxe

    runtime = gx_runtime()
    expectations = [getattr(gxe, r.expectation)(**r.kwargs, meta={"rule": r.name}) for r in rules]
    suite = runtime.gx.ExpectationSuite(name=suite_name, expectations=expectations)
    with runtime.lock:
        batch = runtime.batch_definition(suite_name).get_batch(batch_parameters={"dataframe": frame})
        result = batch.validate(suite, result_format=_RESULT_FORMAT)
    failures: dict[str, np.ndarray] = {}
    for res in result.results:
        rule = res.expectation_config.meta["rule"]
        _raise_on_exception(suite_name, rule, res.exception_info)
        index = res.result.get("unexpected_index_list")
        if not res.success and index is None:
            raise RuntimeError(f"{suite_name}: rule {rule!r} failed without row indices: {res.result}")
        failures[rule] = np.asarray(index or [], dtype=np.int64)
    return failures


def _raise_on_exception(suite: str, rule: str, info: Mapping[str, Any] | None) -> None:
    """A rule that could not be computed must fail loudly, never pass silently."""
    if not info:
        return
    entries = [info] if "raised_exception" in info else list(info.values())
    for entry in entries:
        if isinstance(entry, Mapping) and entry.get("raised_exception"):
            raise RuntimeError(
                f"{suite}: rule {rule!r} could not be evaluated: {entry.get('exception_message')}"
            )


def _view_column(column: pa.ChunkedArray, *, codes: bool) -> pa.ChunkedArray:
    """Cheap comparable form of a column: epoch ms/days for time, dictionary codes for uniqueness."""
    kind = column.type
    if pa.types.is_timestamp(kind):
        return column.cast(pa.timestamp("ms", tz=kind.tz), safe=False).cast(pa.int64())
    if pa.types.is_date32(kind):
        return column.cast(pa.int32())
    if codes:
        encoded = pc.dictionary_encode(column)
        return pa.chunked_array([chunk.indices for chunk in encoded.chunks], type=pa.int32())
    # GE's between is vectorized only for int64/float64 columns (else a Python call per row)
    if pa.types.is_integer(kind):
        return column.cast(pa.int64())
    if pa.types.is_floating(kind):
        return column.cast(pa.float64())
    return column


class _Lookups:
    """Reference positions (`index_in`) of one evaluation, shared by rules and helper columns.

    Arrow kernels release the GIL, so the lookups and the view columns run on a small thread pool
    (a hash lookup of a million ids takes ~0.1 s, the dictionary encoding for uniqueness ~0.3 s).
    Only the caller's thread waits on futures, so the pool cannot deadlock.
    """

    def __init__(self, table: pa.Table, context: Mapping[str, pa.Table], pool: ThreadPoolExecutor):
        self.table, self.context, self.pool = table, context, pool
        self._futures: dict[tuple[str, str], Future] = {}

    def submit(self, column: str, reference: str) -> None:
        if (column, reference) not in self._futures:
            ref = self.context[reference].column(column).combine_chunks()
            self._futures[(column, reference)] = self.pool.submit(
                pc.index_in, self.table.column(column), value_set=ref
            )

    def positions(self, column: str, reference: str) -> pa.ChunkedArray:
        """Row of each value of `column` in the reference table's same-named column (null: absent)."""
        self.submit(column, reference)
        return self._futures[(column, reference)].result()


def _item_first_seen_ms(lookups: _Lookups) -> pa.ChunkedArray:
    items = lookups.context["items"]
    days = items.column("first_seen").combine_chunks().cast(pa.int32()).cast(pa.int64())
    return pc.multiply(pc.take(days, lookups.positions("item_id", "items")), _MS_PER_DAY)


#: helper column -> (lookups it needs, builder run on the caller's thread once they are done)
_HELPERS = {"_item_first_seen": ([("item_id", "items")], _item_first_seen_ms)}


def _helper_lookups(rules: Sequence[Rule]) -> list[tuple[str, str]]:
    return [key for r in rules for name in r.view_columns() if name in _HELPERS for key in _HELPERS[name][0]]


def _frame(table: pa.Table, rules: Sequence[Rule], lookups: _Lookups | None = None, *, codes: bool = False):
    """The pandas frame GE validates for `rules` (see the module docstring).

    With `codes`, columns are dictionary codes (for uniqueness rules). Helper columns need `lookups`.
    """
    columns = {}
    for rule in rules:
        for name in rule.view_columns():
            if name in columns:
                continue
            if name in _HELPERS:
                assert lookups is not None, f"helper column {name} needs reference lookups"
                columns[name] = _HELPERS[name][1](lookups)
            else:
                columns[name] = _view_column(table.column(name), codes=codes)
    return pa.table(columns).to_pandas(split_blocks=True)


def _known(rule: Rule, lookups: _Lookups) -> np.ndarray:
    """Non-null values absent from the reference table (a hash lookup; GE's value sets are too slow)."""
    values = lookups.table.column(rule.column)
    found = lookups.positions(rule.column, rule.kwargs["reference"])
    unknown = pc.and_(pc.is_valid(values), pc.is_null(found))
    return pc.indices_nonzero(unknown).to_numpy().astype(np.int64)


#: Arrow checks: rule.custom -> (lookups to start early, check run on the caller's thread)
_CUSTOM = {"known": (lambda r: [(r.column, r.kwargs["reference"])], _known)}


def _first_occurrences(table: pa.Table, rule: Rule, rows: np.ndarray, extras: dict[int, dict]) -> np.ndarray:
    """Of all rows sharing a value, keep the first clean: only the repeats fail (few rows: a loop)."""
    values = table.column(rule.column).take(rows).to_pylist()
    first: dict[Any, int] = {}
    repeats = []
    for row, value in zip(rows.tolist(), values, strict=True):
        if value in first:
            repeats.append(row)
            extras[row] = {"_first_row": first[value]}
        else:
            first[value] = row
    return np.asarray(repeats, dtype=np.int64)


def _first_seen_extras(table: pa.Table, rows: np.ndarray, context: Mapping[str, pa.Table]) -> dict[int, dict]:
    if not len(rows):
        return {}
    items = context["items"]
    position = pc.index_in(
        table.column("item_id").take(rows), value_set=items.column("item_id").combine_chunks()
    )
    seen = pc.take(items.column("first_seen").combine_chunks(), position).to_pylist()
    return {row: {"_first_seen": value} for row, value in zip(rows.tolist(), seen, strict=True)}


def evaluate(
    suite_name: str, table: pa.Table, rules: Sequence[Rule], context: Mapping[str, pa.Table]
) -> Evaluation:
    """Run every rule over `table`; failing row positions (sorted) per rule name.

    Two GE validations: the uniqueness rules on dictionary codes, computed on the pool (Arrow
    hashing, GIL released) while this thread runs the other expectations (GE is Python-bound).
    """
    evaluation = Evaluation(failures={r.name: np.empty(0, dtype=np.int64) for r in rules})
    if table.num_rows == 0:
        return evaluation
    unique = [r for r in rules if r.expectation and r.keep_first]
    plain = [r for r in rules if r.expectation and not r.keep_first]
    custom = [r for r in rules if r.custom]
    with ThreadPoolExecutor(max_workers=_WORKERS) as pool:
        lookups = _Lookups(table, context, pool)
        for key in _helper_lookups(plain):  # first: this thread waits for them soonest
            lookups.submit(*key)
        codes = pool.submit(_frame, table, unique, codes=True) if unique else None
        for rule in custom:
            for key in _CUSTOM[rule.custom][0](rule):
                lookups.submit(*key)
        if plain:
            evaluation.failures.update(run_expectations(suite_name, _frame(table, plain, lookups), plain))
        if codes is not None:
            evaluation.failures.update(run_expectations(f"{suite_name}_unique", codes.result(), unique))
        for rule in custom:
            evaluation.failures[rule.name] = _CUSTOM[rule.custom][1](rule, lookups)
    for rule in rules:
        rows = np.unique(evaluation.failures[rule.name])
        extras: dict[int, dict] = {}
        if rule.keep_first:
            rows = _first_occurrences(table, rule, rows, extras)
        if rule.name == "item_not_yet_listed":
            extras = _first_seen_extras(table, rows, context)
        evaluation.failures[rule.name] = rows
        if extras:
            evaluation.extras[rule.name] = extras
    return evaluation
