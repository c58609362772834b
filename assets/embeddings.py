"""Embedding stage: `item_embeddings`, every encoder plugin over the catalogue, fused and scored.

Thin glue around `ctr_dagster.embeddings`: the launchpad config (fused width, which encoders, each
installed encoder's own Config), and the metadata (encoded vs cached counts per encoder, widths,
probe accuracies, retrieval P@10, the projection PNG, timings, each encoder's own report). An
encoder that fails, or a broken encoder plugin, is reported (metadata table, warning log, the
`all_encoders_ok` warning check; `ctr_dagster.plugin_runs`) and does not fail the asset as long as
at least one modality produced vectors; with none the asset fails.
"""

import dagster as dg
import pydantic

from assets.launchpad import per_plugin_configs, select_plugins
from assets.metadata import markdown_table, numbers, plugin_check, table_summary, with_plugin_reports
from assets.resources import WarehouseResource

_ENCODER_COLUMNS = [
    "encoder",
    "modality",
    "column",
    "status",
    "seconds",
    "dim",
    "encoded",
    "cached",
    "without_content",
    "weights",
    "fit_s",
    "encode_s",
    "items_per_s",
    "identity",
    "error",
]


_EncoderConfigs = per_plugin_configs("encoder", "EncoderConfigs")


class ItemEmbeddingsConfig(dg.Config):
    """Launchpad config of the embedding stage (see `ctr_dagster.embeddings.fusion` for the method)."""

    width: int = pydantic.Field(128, description="width of the fused vector (the challenge used 128)")
    whiten: bool = pydantic.Field(False, description="divide each fused component by its std")
    encoders: list[str] = pydantic.Field(
        default_factory=list, description="encoder plugins to run; empty = every installed one"
    )
    refit_encoders: bool = pydantic.Field(
        False, description="fit trainable encoders again instead of reusing their stored weights"
    )
    use_precomputed: bool = pydantic.Field(
        True, description="also fuse imported precomputed vectors (raw_item_vectors), when present"
    )
    retrieval_k: int = pydantic.Field(10, description="k of the same-category retrieval precision")
    encoder_config: _EncoderConfigs = pydantic.Field(default_factory=_EncoderConfigs)  # type: ignore[valid-type]


@dg.asset(
    group_name="embeddings",
    code_version="1",
    kinds={"parquet", "python"},
    deps=["raw_items", "raw_item_attributes", "oracle_item_attributes"],
    check_specs=[
        dg.AssetCheckSpec(
            "all_encoders_ok",
            asset="item_embeddings",
            description="Warns when an encoder plugin is broken or failed (the others still ran).",
        )
    ],
)
def item_embeddings(
    context: dg.AssetExecutionContext, config: ItemEmbeddingsConfig, warehouse: WarehouseResource
):
    """Per-modality item vectors (text, image, ...) and one fused vector per item, content-hash cached."""
    from ctr_dagster import embeddings, reports
    from ctr_dagster.embeddings.pipeline import EncoderSpec, build_item_embeddings

    wh, home = warehouse.get(), warehouse.ctr_home
    installed, wanted, broken = select_plugins("encoder", config.encoders, context.log.warning)
    encoder_values = config.encoder_config.model_dump()
    specs = [EncoderSpec(installed[n].cls, encoder_values.get(n, {})) for n in wanted if n in installed]

    items = wh.read("raw_items")
    attributes = wh.read("raw_item_attributes")
    oracle = wh.read("oracle_item_attributes") if wh.exists("oracle_item_attributes") else None
    has_oracle = oracle is not None and oracle.num_rows > 0
    precomputed = None
    if config.use_precomputed and wh.exists(embeddings.PRECOMPUTED_TABLE):
        precomputed = wh.read(embeddings.PRECOMPUTED_TABLE)
    result = build_item_embeddings(
        items,
        attributes,
        specs,
        cache_root=home.embedding_cache,
        state_root=home.encoders,
        width=config.width,
        whiten=config.whiten,
        refit=config.refit_encoders,
        precomputed=precomputed,
        probe_labels=oracle if has_oracle else attributes,
        label_source="oracle (complete truth)" if has_oracle else "catalogue attributes",
        k=config.retrieval_k,
        report_root=home.reports / embeddings.TABLE,
        broken=broken,
        log=context.log.info,
        warn=context.log.warning,
    )
    path = wh.write(embeddings.TABLE, result.table)

    png = reports.projection_png(
        {c: result.projections[c] for c in result.columns},
        result.categories,
        home.reports / "item_embeddings" / "projection.png",
        title="item vectors, 2-D PCA, coloured by category",
    )
    rows = [s.row() for s in result.sources]
    retrieval = [
        {"vectors": c, f"P@{result.k}": None if v is None else round(v, 4)}
        for c, v in result.retrieval.items()
    ]
    widths = {f.name: f.type.list_size for f in result.table.schema if f.name != "item_id"}
    yield dg.MaterializeResult(
        metadata=with_plugin_reports(
            {
                **table_summary(result.table, str(path)),
                **numbers(result.numbers()),
                **numbers({f"seconds/{k}": round(v, 3) for k, v in result.seconds.items()}),
                "encoders": dg.MetadataValue.md(markdown_table(rows, _ENCODER_COLUMNS)),
                "widths": dg.MetadataValue.json(widths),
                "probe_accuracy": dg.MetadataValue.md(
                    f"Linear probe accuracy on held-out items (labels: {result.label_source}):\n\n"
                    + markdown_table(result.probe_rows())
                ),
                "retrieval": dg.MetadataValue.md(markdown_table(retrieval)),
                "projection": dg.MetadataValue.md(
                    reports.png_markdown(png, "2-D projection of item vectors")
                ),
                "plot_path": dg.MetadataValue.path(str(png)),
                "fusion": (
                    f"L2 per modality -> concat ({result.fused.blocks}) -> PCA to {config.width} "
                    f"({result.fused.components} components, {result.fused.explained_variance:.1%} of variance)"
                    + (", whitened" if config.whiten else "")
                ),
            },
            "encoder",
            result.runs.reports(),
            context.log.warning,
        )
    )
    yield plugin_check("all_encoders_ok", result.runs)
