"""`uplift_evaluation`: the uplift models (task "uplift", e.g. ECUP and the meta-learners) per coupon
arm and chain stage, with the oracle's ceiling, beside the CTR `evaluation`. Thin glue over
`ctr_dagster.uplift.lineage`."""

import dagster as dg

from assets.metadata import first_view_table, markdown_table
from assets.resources import WarehouseResource
from ctr_dagster.registry import default_registry


def _uplift_model_keys() -> list[dg.AssetKey]:
    """The uplift model assets (no numpy at discovery: the same selection as `lineage.uplift_plugins`)."""
    return [dg.AssetKey(p.asset_key) for p in default_registry().good("model") if p.cls.task == "uplift"]


def uplift_evaluation_asset() -> dg.AssetsDefinition:
    """Built with the code location (not at import): its deps are the selected uplift models."""
    return dg.asset(
        name="uplift_evaluation",
        group_name="evaluation",
        code_version="1",
        deps=["training_dataset", *_uplift_model_keys()],
        kinds={"python"},
    )(uplift_evaluation)


def uplift_evaluation(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource
) -> dg.MaterializeResult:
    """Uplift leaderboard on the test split: normalised AUUC and Qini per arm and stage, 95 % intervals, the oracle."""
    from ctr_dagster import reports
    from ctr_dagster.uplift import lineage
    from ctr_dagster.uplift.plots import uplift_curves_png

    home = warehouse.ctr_home
    doc, report = lineage.evaluate_trained(warehouse.get(), home, default_registry(), log=context.log.info)
    path = lineage.save(doc, home)
    for note in doc["notes"]:
        context.log.info(f"uplift: {note}")
    meta: dict[str, object] = {}
    for stage in doc["stages"]:
        # per stage, each (model, arm) with its interval: drawn on the first view
        meta[f"uplift_{stage}"] = first_view_table(lineage.summary_rows(doc, stage))
    zero = [a for a in doc["arms"] if a["zero_effect"]]
    meta["zero_effect_arms"] = dg.MetadataValue.text(
        "; ".join(f"arm {a['arm']} {a['stage']} ({a['basis']})" for a in zero) or "none"
    )
    meta["sanity"] = dg.MetadataValue.text(" ".join(n for n in doc["notes"]) or "no notes")
    if report.curves:
        for stage, png in uplift_curves_png(report, path.parent).items():
            meta[f"curves_{stage}"] = dg.MetadataValue.md(
                reports.png_markdown(png, f"uplift and Qini, {stage}")
            )
    if doc["unranked"]:
        meta["unranked"] = dg.MetadataValue.md(markdown_table(doc["unranked"]))
    meta["uplift_json"] = dg.MetadataValue.path(str(path))
    meta["models_scored"] = len({r["model"] for r in doc["rows"] if r["kind"] == "model"})
    for r in doc["rows"]:
        if r["auuc"] is not None:
            meta[f"{r['model']}/arm{r['arm']}/{r['stage']}/auuc"] = dg.MetadataValue.float(float(r["auuc"]))
    return dg.MaterializeResult(metadata=meta)
