"""Data quality: Great Expectations 1.x suites per table, bad rows to the quarantine.

`split_clean_impressions` (and `split_clean` for any table with a suite) returns the clean rows,
the quarantined rows and a report; `validate_table` only reports (Dagster asset checks). Rows in =
clean + quarantined, always: a row failing several rules is quarantined once, its `rule` listing them
all ("user_id_known;click_binary"). `source_row` of a quality quarantine row is the 0-based position
of the row in the validated table (e.g. the raw partition), unless the caller passes provenance
(source_file, 1-based source_row per row): then details read "<file>, row 7: impression_id 'x'
repeats <file> row 3", the user's own files and rows, across files.

Rules (names are stable, see `ctr_dagster.quality.rules`):
  impressions: <col>_not_null (required columns), impression_id_unique (repeats after the first),
    position_positive, treatment_arm, click_binary, conversion_binary, conversion_implies_click,
    ts_in_partition, user_id_known, item_id_known, item_not_yet_listed
  items: <col>_not_null, item_id_unique, price_non_negative
  users: <col>_not_null, user_id_unique, age_group_in_range
  item_attributes: <col>_not_null, item_id_known

Nothing heavy at import time: GE and pandas load on the first validation.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pyarrow as pa

from ctr_dagster import schemas
from ctr_dagster.quality.report import QualityReport
from ctr_dagster.quality.rules import STRICT_SCHEMAS, Rule, rules_for

__all__ = [
    "QualityReport",
    "Rule",
    "rules_for",
    "split_clean",
    "split_clean_impressions",
    "validate_table",
]


def _references(context: Mapping[str, object]) -> dict[str, pa.Table]:
    """Reference tables among the keyword context (items, users); other keys are ignored."""
    return {k: v for k, v in context.items() if k in ("items", "users") and v is not None}


def _report(
    table_name: str, partition: str | None, rows_in: int, evaluation, bad: np.ndarray
) -> QualityReport:
    counts = {name: int(len(rows)) for name, rows in evaluation.failures.items()}
    return QualityReport(
        table=table_name,
        partition=partition,
        rows_in=rows_in,
        rows_clean=rows_in - int(len(bad)),
        rows_quarantined=int(len(bad)),
        rule_counts=counts,
        success=not len(bad),
    )


def validate_table(
    table_name: str, table: pa.Table, *, partition: str | None = None, **context
) -> QualityReport:
    """Run the suite of `table_name` (raw_items, raw_users, raw_item_attributes, raw_impressions,
    clean_impressions) and report; nothing is split. Pass `items=` / `users=` tables to include the
    reference rules, `partition=` to include `ts_in_partition`."""
    from ctr_dagster.quality.engine import evaluate
    from ctr_dagster.quality.quarantine import bad_rows

    references = _references(context)
    rules = rules_for(table_name, partition, references)
    evaluation = evaluate(table_name, table, rules, references)
    return _report(table_name, partition, table.num_rows, evaluation, bad_rows(evaluation))


def split_clean(
    table_name: str,
    table: pa.Table,
    *,
    partition: str | None = None,
    source_file: str | None = None,
    provenance: pa.Table | None = None,
    **context,
) -> tuple[pa.Table, pa.Table, QualityReport]:
    """(clean rows conforming to the table's strict schema, QUARANTINE rows, report)."""
    from ctr_dagster.quality.engine import evaluate
    from ctr_dagster.quality.quarantine import bad_rows, build_quarantine

    references = _references(context)
    rules = rules_for(table_name, partition, references)
    evaluation = evaluate(table_name, table, rules, references)
    bad = bad_rows(evaluation)
    quarantine = build_quarantine(
        table_name=table_name,
        partition=partition,
        table=table,
        rules=rules,
        evaluation=evaluation,
        rows=bad,
        source_file=source_file,
        provenance=provenance,
    )
    keep = np.ones(table.num_rows, dtype=bool)
    keep[bad] = False
    kept = table.filter(pa.array(keep)) if len(bad) else table
    clean = schemas.conform(kept, STRICT_SCHEMAS[table_name], source=f"{table_name}[{partition}]")
    report = _report(table_name, partition, table.num_rows, evaluation, bad)
    if quarantine.num_rows != report.rows_quarantined or clean.num_rows != report.rows_clean:
        raise RuntimeError(f"quality split of {table_name}[{partition}] lost rows: {report}")
    return clean, quarantine, report


def split_clean_impressions(
    raw: pa.Table,
    *,
    partition: str,
    items: pa.Table,
    users: pa.Table,
    source_file: str | None = None,
    provenance: pa.Table | None = None,
) -> tuple[pa.Table, pa.Table, QualityReport]:
    """Clean one daily partition of RAW_IMPRESSIONS: (IMPRESSIONS rows, QUARANTINE rows, report).

    `provenance` (source_file, source_row per raw row) makes quarantine rows name the user's own
    file and row instead of the position in the raw partition.
    """
    return split_clean(
        "raw_impressions",
        raw,
        partition=partition,
        source_file=source_file,
        provenance=provenance,
        items=items,
        users=users,
    )
