"""Attribute stage: `item_attributes`, the catalogue enriched by every extractor plugin, and its scores.

Thin glue around `ctr_dagster.hypergraph` and `ctr_dagster.extraction`: the launchpad config (which
extractors feed the table, each installed extractor's own Config), the hypergraph counts and a
picture of one product's neighbourhood, the P/R/F1 table (overall / seen / unseen values) per
extractor, and the downstream check (CTR test AUC with catalogue-only vs enriched attributes). An
extractor that fails, or a broken extractor plugin, is reported (metadata, warning log, the
`all_extractors_ok` warning check) and does not fail the asset while at least one extractor works.
"""

import dagster as dg
import pydantic

from assets.launchpad import per_plugin_configs, select_plugins
from assets.metadata import markdown_table, numbers, table_summary
from assets.resources import WarehouseResource

_EXTRACTOR_COLUMNS = ["extractor", "status", "fit_s", "extract_s", "rows", "enriched_rows", "error"]
_EVALUATION_COLUMNS = ["extractor", "slice", "precision", "recall", "f1", "tp", "predicted", "true"]


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


@dg.asset(
    group_name="attributes",
    code_version="1",
    kinds={"parquet", "python"},
    deps=[
        "raw_items",
        "raw_item_attributes",
        "raw_attribute_taxonomy",
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
    import time

    import pyarrow as pa

    from ctr_dagster import extraction, hypergraph, reports
    from ctr_dagster.contracts import FitContext

    wh = warehouse.get()
    installed, wanted, broken = select_plugins("extractor", config.extractors, context.log.warning)

    items = wh.read("raw_items")
    attributes = wh.read("raw_item_attributes")
    oracle = wh.read("oracle_item_attributes") if wh.exists("oracle_item_attributes") else None
    training = wh.read("training_dataset") if wh.exists("training_dataset") else None
    if training is None:
        context.log.warning("training_dataset not materialized: no also_view/also_buy, no downstream AUC")
    setup = extraction.evaluation_setup(
        attributes,
        oracle,
        seed=config.seed,
        av_share=config.holdout_av_share,
        row_share=config.holdout_row_share,
    )
    # candidates: the catalogue's values plus the source's published taxonomy (never the oracle)
    published = wh.read("raw_attribute_taxonomy") if wh.exists("raw_attribute_taxonomy") else None
    inputs = {"candidates": extraction.taxonomy(attributes, published)}
    if training is not None:
        inputs["interactions"] = extraction.interactions_from_training(training)

    started = time.perf_counter()
    graph = hypergraph.build_hypergraph(
        items, setup.fit_attributes, inputs.get("interactions"), inputs["candidates"]
    )
    counts = hypergraph.graph_counts(graph.to_networkx())
    build_seconds = time.perf_counter() - started
    png = hypergraph.render_neighbourhood(
        graph,
        warehouse.ctr_home.reports / "item_attributes" / "hypergraph_neighbourhood.png",
        title="one product's neighbourhood (squares: hyperedges)",
    )

    values = config.extractor_config.model_dump()
    runs = []
    for name in wanted:
        if name not in installed:
            continue
        extractor = installed[name].instantiate(values.get(name, {}))
        ctx = FitContext(seed=config.seed, inputs=dict(inputs), log=context.log.info)
        run = extraction.run_extractor(name, extractor, items, setup.fit_attributes, ctx)
        if run.ok:
            context.log.info(
                f"extractor {name}: {run.predictions.num_rows} rows, fit {run.fit_seconds:.1f} s"
            )
        else:
            context.log.warning(f"extractor {name} failed: {run.error}\n{run.detail}")
        runs.append(run)
    if (wanted or broken) and not any(r.ok for r in runs):
        raise RuntimeError(
            "every extractor failed or is broken: "
            + "; ".join([f"{r.name}: {r.error}" for r in runs] + [f"{b.name}: {b.error}" for b in broken])
        )

    enriched = extraction.enrich(attributes, runs, use=list(config.enrich_with) or None)
    path = wh.write("item_attributes", enriched)
    evaluation = [
        row
        for r in runs
        if r.ok
        for row in extraction.evaluate(r.name, r.predictions, setup.truth, setup.fit_attributes)
    ]
    if evaluation:
        wh.write("item_attributes_evaluation", pa.Table.from_pylist(evaluation))
    downstream: dict[str, float] = {}
    if config.downstream and training is not None:
        downstream = extraction.downstream_auc(
            training,
            {"catalogue": attributes, "enriched": enriched},
            seed=config.seed,
            max_train_rows=config.downstream_max_train_rows,
            log=context.log.info,
        )
        if "auc_enriched" in downstream and "auc_catalogue" in downstream:
            downstream["auc_gain"] = downstream["auc_enriched"] - downstream["auc_catalogue"]

    from_extractor = enriched.column("extractor").to_pylist()
    rows = [
        {
            "extractor": r.name,
            "status": "ok" if r.ok else "failed",
            "fit_s": round(r.fit_seconds, 2),
            "extract_s": round(r.extract_seconds, 2),
            "rows": r.predictions.num_rows if r.ok else None,
            "enriched_rows": from_extractor.count(r.name),
            "error": r.error,
        }
        for r in runs
    ] + [{"extractor": b.name, "status": "broken", "error": b.error} for b in broken]
    failed = [r for r in rows if r["status"] != "ok"]
    summaries = {r.name: r.summary for r in runs if r.summary}
    yield dg.MaterializeResult(
        metadata={
            **table_summary(enriched, str(path)),
            **numbers({f"hypergraph/{k}": v for k, v in counts.items()}),
            **numbers({f"downstream/{k}": v for k, v in downstream.items()}),
            **numbers({f"seconds/fit_{r.name}": round(r.fit_seconds, 3) for r in runs}),
            **numbers(
                {"seconds/hypergraph_build": round(build_seconds, 3), "catalogue_rows": attributes.num_rows}
            ),
            **numbers({f"f1/{e['extractor']}/{e['slice']}": e["f1"] for e in evaluation}),
            "evaluation": dg.MetadataValue.md(
                f"Against the {setup.source} ({setup.truth.num_rows} held-out truths); only (item, attribute) "
                "pairs the fitting catalogue lacks count; unseen = value absent from it (zero-shot).\n\n"
                + markdown_table(evaluation, _EVALUATION_COLUMNS)
            ),
            "extractors": dg.MetadataValue.md(markdown_table(rows, _EXTRACTOR_COLUMNS)),
            "hypergraph": dg.MetadataValue.md(
                markdown_table([{"part": k, "count": v} for k, v in counts.items()])
                + "\n\n"
                + reports.png_markdown(png, "hypergraph neighbourhood")
            ),
            "plot_path": dg.MetadataValue.path(str(png)),
            "extractor_summaries": dg.MetadataValue.json(summaries),
        }
    )
    yield dg.AssetCheckResult(
        check_name="all_extractors_ok",
        passed=not failed,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"problems": dg.MetadataValue.md(markdown_table(failed, ["extractor", "status", "error"]))},
    )
