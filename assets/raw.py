"""Raw stage: the catalogue (items, attributes, users) and daily raw impressions, from the source.

The catalogue also holds the published attribute taxonomy (`raw_attribute_taxonomy`) and the
attribute negatives (`raw_attribute_negatives`: (item, attribute) pairs known absent, from MAVE
files; empty for sources without them). Precomputed item vectors that came with the data (MMCTR's
`item_emb_d128`, read by `format: microlens`) are written as `raw_item_vectors`, which the
`item_embeddings` stage fuses; only when the source has some (a source without them clears an
earlier import's table, so no stale vectors are fused).

The source is the synthetic marketplace or the user's own files (`ctr_dagster.sources.Source`, made
from the `Settings` the definitions are built for); the oracle tables (ground truth) exist only for
the synthetic world and stay apart from the features.
"""

import dagster as dg

from assets.metadata import numbers, table_summary
from assets.resources import WarehouseResource, daily_check, daily_partitions
from ctr_dagster.settings import Settings

CATALOGUE_TABLES = (
    "raw_items",
    "raw_item_attributes",
    "raw_attribute_taxonomy",
    "raw_attribute_negatives",
    "raw_users",
    "oracle_item_attributes",
    "quarantine_catalogue",
)
_CATALOGUE_CHECKED = ("raw_items", "raw_item_attributes", "raw_users")


def raw_assets(settings: Settings) -> list[dg.AssetsDefinition]:
    """The catalogue and the daily raw logs of the source `settings` names."""
    return [catalogue_asset(settings), raw_day_asset(settings)]


def catalogue_asset(settings: Settings) -> dg.AssetsDefinition:
    from ctr_dagster.sources import Source

    source = Source(settings)

    @dg.multi_asset(
        name="raw_catalogue",
        specs=[
            dg.AssetSpec(name, group_name="raw", code_version="1", kinds={"parquet"})
            for name in CATALOGUE_TABLES
        ],
        check_specs=[dg.AssetCheckSpec("quality_suite", asset=name) for name in _CATALOGUE_CHECKED],
    )
    def raw_catalogue(context: dg.AssetExecutionContext, warehouse: WarehouseResource):
        """Item catalogue, structured attributes (and their known negatives), the published attribute
        taxonomy, users (and the attribute oracle for synthetic data).

        Catalogue rows that fail to parse or fail their table's rules land in `quarantine_catalogue`.
        """
        yield from _materialize_catalogue(context, source, warehouse)

    return raw_catalogue


def _materialize_catalogue(context: dg.AssetExecutionContext, source, warehouse: WarehouseResource):
    from ctr_dagster.quality import validate_table

    wh = warehouse.get()
    catalogue = source.catalogue()
    context.log.info(f"catalogue source: {catalogue.origin}")
    tables = {
        "raw_items": catalogue.items,
        "raw_item_attributes": catalogue.item_attributes,
        "raw_attribute_taxonomy": catalogue.attribute_taxonomy,
        "raw_attribute_negatives": catalogue.attribute_negatives,
        "raw_users": catalogue.users,
        "oracle_item_attributes": catalogue.oracle_item_attributes,
        "quarantine_catalogue": catalogue.quarantine,
    }
    if catalogue.quarantine.num_rows:
        context.log.warning(f"{catalogue.quarantine.num_rows} catalogue rows quarantined")
    for table, file, problem in catalogue.skipped_files:
        context.log.warning(f"{table}: file {file} skipped: {problem}")
    vectors_meta = _write_item_vectors(context, wh, catalogue.item_vectors)
    for name, table in tables.items():
        path = wh.write(name, table)
        context.log.info(f"{name}: {table.num_rows} rows -> {path}")
        extra = {"source": catalogue.origin, **(vectors_meta if name == "raw_items" else {})}
        skipped = [f"{file}: {problem}" for t, file, problem in catalogue.skipped_files if f"raw_{t}" == name]
        if skipped:
            extra["skipped_files"] = dg.MetadataValue.md("\n".join(f"- {line}" for line in skipped))
        yield dg.MaterializeResult(asset_key=name, metadata={**table_summary(table, str(path)), **extra})
    context_tables = {"items": tables["raw_items"], "users": tables["raw_users"]}
    for name in _CATALOGUE_CHECKED:
        report = validate_table(name, tables[name], **context_tables)
        yield dg.AssetCheckResult(
            asset_key=name,
            check_name="quality_suite",
            passed=report.success,
            severity=dg.AssetCheckSeverity.WARN,
            metadata=report.as_metadata(),
        )


def _write_item_vectors(context: dg.AssetExecutionContext, wh, vectors) -> dict:
    """Write the precomputed item vectors (`raw_item_vectors`) when the source has some; replace an
    earlier import's table with an empty one when it has none. Returns raw_items' extra metadata."""
    from ctr_dagster import schemas
    from ctr_dagster.embeddings import PRECOMPUTED_TABLE

    if vectors is not None and vectors.num_rows:
        path = wh.write(PRECOMPUTED_TABLE, vectors)
        widths = {f.name: f.type.list_size for f in vectors.schema if f.name != "item_id"}
        context.log.info(f"{PRECOMPUTED_TABLE}: {vectors.num_rows} items, widths {widths} -> {path}")
        return {
            "precomputed_vectors": dg.MetadataValue.json(
                {"table": PRECOMPUTED_TABLE, "items": vectors.num_rows, "widths": widths, "path": str(path)}
            )
        }
    if wh.exists(PRECOMPUTED_TABLE):  # from an earlier import: must not be fused with this catalogue
        wh.write(PRECOMPUTED_TABLE, schemas.vector_table({}).empty_table())
        context.log.info(f"{PRECOMPUTED_TABLE}: the source has no precomputed vectors; earlier ones cleared")
    return {}


def raw_day_asset(settings: Settings) -> dg.AssetsDefinition:
    from ctr_dagster.sources import Source

    source = Source(settings)
    partitions = daily_partitions(settings)

    @dg.multi_asset(
        name="raw_day",
        specs=[
            dg.AssetSpec(
                name,
                group_name="raw",
                code_version="1",
                kinds={"parquet"},
                deps=["raw_items", "raw_users"],
                partitions_def=partitions,
            )
            for name in ("raw_impressions", "oracle_impressions")
        ],
        check_specs=[
            daily_check(
                "quality_suite",
                "raw_impressions",
                "GE suite on the raw day; failures are expected (they go to the quarantine), so it only warns.",
                partitions,
            )
        ],
        partitions_def=partitions,
    )
    def raw_day(context: dg.AssetExecutionContext, warehouse: WarehouseResource):
        """One day of raw impressions (dirty: may contain bad rows) and, for synthetic data, the oracle."""
        yield from _materialize_day(context, source, warehouse)

    return raw_day


def _materialize_day(context: dg.AssetExecutionContext, source, warehouse: WarehouseResource):
    import pyarrow as pa

    from ctr_dagster import schemas
    from ctr_dagster.quality import validate_table

    wh = warehouse.get()
    day = context.partition_key
    batches = list(source.day(day))
    accounting = _import_accounting(context, source) if source.kind == "import" else {}

    def gather(part: str, schema) -> pa.Table:
        """One table from every batch's `part` (batches may be none, or lack the part)."""
        tables = [getattr(b, part) for b in batches if getattr(b, part) is not None]
        return pa.concat_tables(tables) if tables else schemas.empty(schema)

    impressions = gather("impressions", schemas.RAW_IMPRESSIONS)
    oracle = gather("oracle", schemas.ORACLE_IMPRESSIONS)
    unparseable = gather("quarantine", schemas.QUARANTINE)
    provenance = gather("provenance", schemas.PROVENANCE)
    impressions = schemas.conform(impressions, schemas.RAW_IMPRESSIONS, source=f"raw_impressions[{day}]")
    path = wh.write("raw_impressions", impressions, day)
    # Rows that could not even be parsed are kept beside the raw day; the clean step merges them
    # into the day's quarantine so counts in = clean + quarantined holds end to end. Imported rows
    # also keep their origin (file, row) so the quarantine can name the user's own file and row.
    wh.write("unparseable_impressions", unparseable, day)
    wh.write("raw_impressions_provenance", provenance, day)
    if source.kind == "synthetic":
        oracle_meta = table_summary(oracle, str(wh.write("oracle_impressions", oracle, day)))
    else:  # imported logs have no truth: no partition file, so no later stage mistakes one for it
        oracle_meta = {"oracle": "none: imported logs carry no true click probabilities"}
    context.log.info(
        f"raw_impressions[{day}]: {impressions.num_rows} rows, {unparseable.num_rows} unparseable"
    )
    yield dg.MaterializeResult(
        asset_key="raw_impressions",
        metadata={
            **table_summary(impressions, str(path)),
            **numbers({"unparseable_rows": unparseable.num_rows}),
            "source": batches[0].origin if batches else "none",
            **accounting,
        },
    )
    yield dg.MaterializeResult(asset_key="oracle_impressions", metadata=oracle_meta)
    report = validate_table(
        "raw_impressions", impressions, partition=day, items=wh.read("raw_items"), users=wh.read("raw_users")
    )
    yield dg.AssetCheckResult(
        asset_key="raw_impressions",
        check_name="quality_suite",
        passed=report.success,
        severity=dg.AssetCheckSeverity.WARN,
        metadata=report.as_metadata(),
    )


def _import_accounting(context: dg.AssetExecutionContext, source) -> dict:
    """What the import as a whole left out, on every imported day (and in its log): files skipped as
    bad, and rows dated outside the partitions (counted, never silently parked)."""
    plan = source.import_plan()
    meta: dict = {
        "import_window": f"{plan.first} .. {plan.last}",
        **numbers(
            {"import_out_of_range_rows": sum(plan.out_of_range.values()), "import_rows_read": plan.rows_read}
        ),
    }
    if plan.out_of_range:
        days = sorted(plan.out_of_range)
        context.log.warning(
            f"{sum(plan.out_of_range.values())} imported row(s) dated outside the partitions "
            f"{plan.first} .. {plan.last} (on {days[0]} .. {days[-1]}): counted, not imported"
        )
        meta["import_out_of_range_days"] = ", ".join(
            f"{d}: {n}" for d, n in sorted(plan.out_of_range.items())[:20]
        )
    if plan.skipped:
        for file, problem in plan.skipped:
            context.log.warning(f"impressions file {file} skipped: {problem}")
        meta["import_skipped_files"] = dg.MetadataValue.md("\n".join(f"- {f}: {p}" for f, p in plan.skipped))
    return meta
