"""Clean stage: the quality gate between raw logs and everything that learns from them.

Great Expectations rules split each raw day into `clean_impressions` and `quarantine_impressions`
(every failing row with its rule, file, row and column). Nothing is dropped: rows in = clean +
quarantined, checked on every partition.
"""

import dagster as dg

from assets.metadata import numbers, table_summary
from assets.resources import WarehouseResource, daily_check, daily_partitions
from ctr_dagster.settings import Settings


def clean_day_asset(settings: Settings) -> dg.AssetsDefinition:
    partitions = daily_partitions(settings)

    @dg.multi_asset(
        name="clean_day",
        specs=[
            dg.AssetSpec(
                "clean_impressions",
                group_name="clean",
                code_version="1",
                kinds={"parquet"},
                deps=["raw_impressions", "raw_items", "raw_users"],
                partitions_def=partitions,
            ),
            dg.AssetSpec(
                "quarantine_impressions",
                group_name="clean",
                code_version="1",
                kinds={"parquet"},
                deps=["raw_impressions"],
                partitions_def=partitions,
                description="Rows rejected by a quality rule or the parser, with the reason.",
            ),
        ],
        check_specs=[
            daily_check(
                "quality_suite",
                "clean_impressions",
                "The GE suite must pass on the clean day (blocks downstream).",
                partitions,
                blocking=True,
            ),
            daily_check(
                "rows_reconcile",
                "clean_impressions",
                "raw rows (+ unparseable) == clean + quarantined: nothing is lost.",
                partitions,
                blocking=True,
            ),
        ],
        partitions_def=partitions,
    )
    def clean_day(context: dg.AssetExecutionContext, warehouse: WarehouseResource):
        """One day of clean impressions and its quarantine (rule, file, row and column of each reject)."""
        yield from _clean(context, warehouse)

    return clean_day


def _clean(context: dg.AssetExecutionContext, warehouse: WarehouseResource):
    import pyarrow as pa

    from ctr_dagster import schemas
    from ctr_dagster.quality import split_clean_impressions, validate_table

    wh = warehouse.get()
    day = context.partition_key
    raw = wh.read("raw_impressions", [day])
    unparseable = (
        wh.read("unparseable_impressions", [day])
        if wh.exists("unparseable_impressions", day)
        else schemas.empty(schemas.QUARANTINE)
    )
    items, users = wh.read("raw_items"), wh.read("raw_users")
    # Imported rows carry their origin: quarantine rows then name the user's file and row; for
    # synthetic data (no origin) they name the raw partition file and the row within it.
    origin = (
        wh.read("raw_impressions_provenance", [day]) if wh.exists("raw_impressions_provenance", day) else None
    )
    clean, quarantine, report = split_clean_impressions(
        raw,
        partition=day,
        items=items,
        users=users,
        source_file=wh.files("raw_impressions", [day])[0],
        provenance=origin if origin is not None and origin.num_rows == raw.num_rows else None,
    )
    quarantine = pa.concat_tables([unparseable, quarantine])
    clean_path = wh.write("clean_impressions", clean, day)
    q_path = wh.write("quarantine_impressions", quarantine, day)
    quarantined_rows = report.rows_quarantined + unparseable.num_rows
    rows_in = raw.num_rows + unparseable.num_rows
    context.log.info(
        f"clean_impressions[{day}]: in={rows_in} clean={clean.num_rows} quarantined={quarantined_rows}"
    )
    counts = {"rows_in": rows_in, "rows_clean": clean.num_rows, "rows_quarantined": quarantined_rows}
    # this partition's own accounting (the same numbers its rows_reconcile check judges), with the
    # quarantined rows by rule; the raw-side report stays with raw_impressions' check
    by_rule = {f"quarantined.{rule}": n for rule, n in report.rule_counts.items() if n}
    if unparseable.num_rows:
        by_rule["quarantined.unparseable"] = unparseable.num_rows
    yield dg.MaterializeResult(
        asset_key="clean_impressions",
        metadata={
            **table_summary(clean, str(clean_path)),
            **numbers(counts),
            "quarantined_fraction": round(quarantined_rows / rows_in, 6) if rows_in else 0.0,
            **numbers(by_rule),
        },
    )
    yield dg.MaterializeResult(
        asset_key="quarantine_impressions",
        metadata={**table_summary(quarantine, str(q_path)), **numbers(report.rule_counts)},
    )
    suite = validate_table("clean_impressions", clean, partition=day, items=items, users=users)
    yield dg.AssetCheckResult(
        asset_key="clean_impressions",
        check_name="quality_suite",
        passed=suite.success,
        metadata=suite.as_check_metadata(),
    )
    yield dg.AssetCheckResult(
        asset_key="clean_impressions",
        check_name="rows_reconcile",
        passed=rows_in == clean.num_rows + quarantined_rows,
        metadata=numbers(counts),
    )
