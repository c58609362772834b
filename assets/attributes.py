"""Attribute stage: `item_attributes`, the catalogue enriched by every extractor plugin, and its scores.

Thin glue around `ctr_dagster.attributes.build_item_attributes`: the launchpad config (which
extractors feed the table, each installed extractor's own Config), reading and writing through the
warehouse resource, and the metadata: the per-extractor table (status, seconds, error), the P/R/F1
table (overall / seen / unseen values) per extractor, the downstream check (CTR test AUC with
catalogue-only vs enriched attributes) and whatever each extractor reports about itself (numbers and
pictures, e.g. HyperPAVE's hypergraph counts and a product's neighbourhood). An extractor that fails,
or a broken extractor plugin, is reported (metadata, warning log, the `all_extractors_ok` warning
check) and does not fail the asset while at least one extractor works.
"""

import dagster as dg
import pydantic

from assets.launchpad import per_plugin_configs, select_plugins
from assets.metadata import markdown_table, numbers, plugin_check, table_summary, with_plugin_reports
from assets.resources import WarehouseResource

_ExtractorConfigs = per_plugin_configs("extractor", "ExtractorConfigs")


class ItemAttributesConfig(dg.Config):
    """Launchpad config of the attribute stage."""

    seed: int = pydantic.Field(0, description="seed handed to every extractor (FitContext.seed)")
    extractors: list[str] = pydantic.Field(
        default_factory=list, description="extractor plugins to run; empty = every installed one"
    )
    enrich_with: list[str] = pydantic.Field(
        default_factory=list, description="extractors whose values enter the table; empty = all that ran"
    )
    downstream: bool = pydantic.Field(True, description="compute the CTR AUC with/without enrichment")
    downstream_max_train_rows: int = pydantic.Field(200_000, description="train rows sampled for it")
    holdout_av_share: float = pydantic.Field(
        0.1, description="imported data (no oracle): share of values held out whole for the zero-shot score"
    )
    holdout_row_share: float = pydantic.Field(
        0.1, description="imported data (no oracle): share of other rows held out for the seen-value score"
    )
    extractor_config: _ExtractorConfigs = pydantic.Field(default_factory=_ExtractorConfigs)  # type: ignore[valid-type]
    refresh_every_days: int = pydantic.Field(
        0,
        description="keep the last table while only the logs changed, for this many days of new logs "
        "since the last fit (the nightly job sets its full-retrain cadence); 0 = refit every run",
    )


@dg.asset(
    group_name="attributes",
    code_version="1",
    kinds={"parquet", "python"},
    deps=[
        "raw_items",
        "raw_item_attributes",
        "raw_attribute_taxonomy",
        "raw_attribute_negatives",
        "oracle_item_attributes",
        "training_dataset",
    ],
    check_specs=[
        dg.AssetCheckSpec(
            "all_extractors_ok",
            asset="item_attributes",
            description="Warns when an extractor plugin is broken or failed (the others still ran).",
        )
    ],
)
def item_attributes(
    context: dg.AssetExecutionContext, config: ItemAttributesConfig, warehouse: WarehouseResource
):
    """Catalogue attributes plus extracted values (score, extractor), scored against the truth."""
    from ctr_dagster import attribute_refresh
    from ctr_dagster.attributes import (
        EVALUATION_TABLE,
        EXTRACTOR_COLUMNS,
        TABLE,
        ExtractorSpec,
        build_item_attributes,
    )
    from ctr_dagster.extraction_scoring import DISPLAY_COLUMNS, display_comparisons, display_rows

    wh, home = warehouse.get(), warehouse.ctr_home
    installed, wanted, broken = select_plugins("extractor", config.extractors, context.log.warning)
    values = config.extractor_config.model_dump()
    specs = [ExtractorSpec(installed[n].cls, values.get(n, {})) for n in wanted if n in installed]
    record_folder = home.reports / TABLE
    # every fit is recorded, so the first nightly after a full build can keep it
    key = attribute_refresh.catalogue_key(wh, config.model_dump(), [s.cls for s in specs])
    day = attribute_refresh.data_day(wh)
    if config.refresh_every_days > 0:
        plan = attribute_refresh.plan_refresh(
            record_folder, key, day, config.refresh_every_days, wh.exists(TABLE) and not broken
        )
        context.log.info(f"item_attributes: {plan.reason}")
        if plan.keep:
            yield from _kept(plan, wh.read(TABLE), str(wh.path(TABLE)))
            return

    def optional(table: str):
        return wh.read(table) if wh.exists(table) else None

    result = build_item_attributes(
        wh.read("raw_items"),
        wh.read("raw_item_attributes"),
        specs,
        oracle=optional("oracle_item_attributes"),
        taxonomy=optional("raw_attribute_taxonomy"),
        training=optional("training_dataset"),
        negatives=optional("raw_attribute_negatives"),
        seed=config.seed,
        enrich_with=config.enrich_with,
        downstream=config.downstream,
        downstream_max_train_rows=config.downstream_max_train_rows,
        holdout_av_share=config.holdout_av_share,
        holdout_row_share=config.holdout_row_share,
        report_root=home.reports / TABLE,
        broken=broken,
        log=context.log.info,
        warn=context.log.warning,
    )
    path = wh.write(TABLE, result.table)
    evaluation = result.evaluation_table()
    if evaluation is not None:
        wh.write(EVALUATION_TABLE, evaluation)
    shown = {
        "numbers": result.numbers(),
        "markdown": {
            "evaluation": (
                f"Against the {result.evaluation_source} ({result.truth_rows} held-out truths); only "
                "(item, attribute) pairs the fitting catalogue lacks count"
                + ("" if result.evaluation_source == "oracle" else ", and only labelled ones")
                + "; unseen = value absent from it (zero-shot); no_value = pairs known to have no "
                f"value (abstained = share left empty); 95 % intervals resample items. "
                f"{result.candidate_note}.\n\n"
                + markdown_table(display_rows(result.evaluation), DISPLAY_COLUMNS)
            ),
            "vs_baseline": (
                "Each extractor against the stronger baseline (title matching, text-only ablation) "
                "per slice, paired over the same item resamples; `noise` = the interval holds 0.\n\n"
                + markdown_table(display_comparisons(result.comparisons))
            ),
            "extractors": markdown_table(result.extractor_rows(), EXTRACTOR_COLUMNS),
        },
    }
    if not result.runs.problems:
        attribute_refresh.record_fit(record_folder, key, day, shown)
    yield dg.MaterializeResult(
        metadata=with_plugin_reports(
            {
                **table_summary(result.table, str(path)),
                **numbers(shown["numbers"]),
                **{name: dg.MetadataValue.md(text) for name, text in shown["markdown"].items()},
            },
            "extractor",
            result.runs.reports(),
            context.log.warning,
        )
    )
    yield plugin_check("all_extractors_ok", result.runs)


def _kept(plan, table, path: str):
    """The materialization of a kept table: what the fit it comes from showed, and why it was kept."""
    shown = plan.previous.get("shown") or {}
    yield dg.MaterializeResult(
        metadata={
            **table_summary(table, path),
            **numbers(shown.get("numbers") or {}),
            **{name: dg.MetadataValue.md(text) for name, text in (shown.get("markdown") or {}).items()},
            "refresh": dg.MetadataValue.md(plan.reason),
        }
    )
    yield dg.AssetCheckResult(
        check_name="all_extractors_ok",
        passed=True,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"refresh": dg.MetadataValue.md(f"no extractor ran: {plan.reason}")},
    )
