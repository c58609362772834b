"""Evaluation stage: the leaderboard asset, the champion gate (a blocking check) and the champion.

`evaluation` depends on every model asset (lineage) but ranks whichever models trained on the
current dataset and lists the others (failed, stale, broken), so it is also launched on its own by
`evaluate_after_failure` when a run's model step failed (Dagster skips a downstream step then).
`champion_gate` is blocking: when it fails, `champion` does not run and the previous champion stays.
"""

import dagster as dg

from assets.metadata import first_view_table, inline_table, markdown_table
from assets.resources import WarehouseResource
from ctr_dagster.champion import GatePolicy
from ctr_dagster.registry import default_registry
from ctr_dagster.settings import Settings

#: The evaluation asset's warning check over the models' warm-start audits.
WARM_START_CHECK = "warm_starts_track_full_retrains"


class EvaluationConfig(dg.Config):
    """The champion gate's policy (see `ctr_dagster.champion.GatePolicy`)."""

    confidence: float = GatePolicy.confidence
    margin: float = GatePolicy.margin
    logloss_tolerance: float = GatePolicy.logloss_tolerance
    ece_tolerance: float = GatePolicy.ece_tolerance
    slice_tolerance: float = GatePolicy.slice_tolerance
    min_auc: float = GatePolicy.min_auc
    min_slice_rows: int = GatePolicy.min_slice_rows


def _model_keys() -> list[dg.AssetKey]:
    """Every CTR model asset and every distilled student: all that the leaderboard ranks."""
    from ctr_dagster.distillation import students

    registry = default_registry()  # the same selection as `evaluation.leaderboard_entries` (no numpy here)
    keys = [dg.AssetKey(p.asset_key) for p in registry.good("model") if p.cls.task == "ctr"]
    return keys + [dg.AssetKey(["distilled", s.name]) for s, _ in students(registry)]


def evaluation_assets(settings: Settings) -> list:
    """`evaluation` (labelled with the data it judges), its blocking `champion_gate`, and `champion`."""
    evaluation = evaluation_asset(settings)
    return [evaluation, champion_gate_check(evaluation), champion_asset()]


def evaluation_asset(settings: Settings) -> dg.AssetsDefinition:
    @dg.asset(
        name="evaluation",
        group_name="evaluation",
        code_version="1",
        deps=_model_keys(),
        kinds={"python"},
        check_specs=[
            dg.AssetCheckSpec(
                WARM_START_CHECK,
                asset="evaluation",
                description="Warns when a model's latest warm-start audit (made on the night its full "
                "retrain came due) puts the warm start below the full retrain's validation-AUC interval.",
            )
        ],
    )
    def evaluation(context: dg.AssetExecutionContext, config: EvaluationConfig, warehouse: WarehouseResource):
        """Leaderboard on the test split: AUC, GAUC, logloss, ECE, slices, the oracle and each model's gap to it."""
        result, names = _evaluate(context, config, warehouse, settings)
        yield result
        yield _warm_start_check(warehouse, names, settings)

    return evaluation


def _warm_start_check(
    warehouse: WarehouseResource, names: list[str], settings: Settings
) -> dg.AssetCheckResult:
    """Every ranked model's latest warm-start audit (`ctr_dagster.warm_start_audit`), as a warning check."""
    from ctr_dagster import warm_start_audit
    from ctr_dagster.modeling import read_status

    home = warehouse.ctr_home
    rows = warm_start_audit.check_rows({name: read_status(home, name) for name in names})
    passed, description = warm_start_audit.check_summary(rows, settings.full_retrain_every_days)
    return dg.AssetCheckResult(
        check_name=WARM_START_CHECK,
        passed=passed,
        severity=dg.AssetCheckSeverity.WARN,
        description=description,
        metadata={
            "audits": dg.MetadataValue.md(markdown_table(rows) if rows else description),
            "models_audited": len(rows),
        },
    )


def _evaluate(
    context: dg.AssetExecutionContext,
    config: EvaluationConfig,
    warehouse: WarehouseResource,
    settings: Settings,
) -> tuple[dg.MaterializeResult, list[str]]:
    """The leaderboard's materialization, and the names of the models it ranks."""
    from ctr_dagster import evaluation as engine
    from ctr_dagster import mechanisms, reports

    home = warehouse.ctr_home
    policy = GatePolicy(**config.model_dump())
    doc = engine.evaluate(
        warehouse.get(),
        home,
        default_registry(),
        policy=policy,
        profile=settings.profile if settings.source == "synthetic" else settings.source,
        data=settings.label,
        log=context.log.info,
    )
    curves = doc.pop("curves")
    latest = engine.save(doc, home)
    png = reports.roc_calibration_png(curves, latest.parent / "roc_calibration.png", title="test split")
    board = engine.leaderboard_rows(doc)
    rows = [{k: engine.display(v) for k, v in r.items()} for r in board]
    meta: dict[str, object] = {
        # the first table fits a laptop screen; selection, calibration and slices sit in the next one
        # the first two tables, drawn on the first view and narrow enough not to scroll sideways at
        # 1,600 px: markdown while short enough for the UI to draw it inline, else a table entry
        "leaderboard": first_view_table(compact := engine.compact_rows(board), engine.COMPACT_COLUMNS),
        "leaderboard_quality": first_view_table(compact, engine.QUALITY_COLUMNS),
        # the ROC of the best models, small enough (< 1,000 characters) to be drawn without a click
        "roc_at_a_glance": dg.MetadataValue.md(reports.roc_thumbnail_markdown(curves)),
        "leaderboard_details": dg.MetadataValue.md(markdown_table(rows, engine.DETAIL_COLUMNS)),
        "slice_auc": dg.MetadataValue.md(markdown_table(engine.slice_rows(doc))),
        # what each model costs: parameters, training rows/s, 1,000-candidate latency (1 thread)
        "cost": dg.MetadataValue.md(
            markdown_table(
                [{k: engine.display(v) for k, v in r.items()} for r in engine.cost_rows(doc)],
                engine.COST_COLUMNS,
            )
        ),
        # with vs without: variants (e.g. + item embeddings) and distilled students beside their base
        "comparisons": dg.MetadataValue.md(
            markdown_table(
                [{k: engine.display(v) for k, v in r.items()} for r in engine.comparisons(doc)],
                engine.COMPARISON_COLUMNS,
            )
        ),
        # which planted mechanism each model captures (synthetic world: the oracle keeps each component)
        "mechanisms": dg.MetadataValue.md(
            "Worth = test AUC the oracle loses without the component; per model, the share of it the "
            "model captures (1 - AUC it would still gain from the component / worth; blank: worth too "
            "small to attribute); in parentheses its loading, the coefficient of the component in the "
            "model's logit (least squares over all components: 1 = moves with it as the truth does).\n\n"
            + markdown_table(mechanisms.table_rows(doc["mechanisms"]))
            if doc.get("mechanisms")
            else "no oracle components (imported data, or oracle partitions written before they were kept)"
        ),
        "roc_calibration": dg.MetadataValue.md(reports.png_markdown(png, "ROC and reliability")),
        "plot_path": dg.MetadataValue.path(str(png)),
        "evaluation_json": dg.MetadataValue.path(str(latest)),
        "models_ranked": len(doc["models"]),
        "models_unranked": len(doc["unranked"]),
        "test_rows": doc["dataset"]["test_rows"],
        "gauc_weighting": doc["gauc_weighting"],
        "best_model": doc["candidate"]["name"] if doc["candidate"] else "none",
        "selected_by": doc["selected_by"],
    }
    if doc["oracle"]:
        meta["oracle/auc"] = dg.MetadataValue.float(doc["oracle"]["auc"])
    for row in doc["models"]:
        for metric in (*engine.RANKED_METRICS, "valid_auc"):
            if row.get(metric) is not None:
                meta[f"{row['name']}/{metric}"] = dg.MetadataValue.float(float(row[metric]))
    # data version: the dataset and the artifacts judged; a new evaluation of the same artifacts keeps
    # `champion` in sync, a retrained model changes it (and shows `champion` unsynced until it runs)
    result = dg.MaterializeResult(metadata=meta, data_version=dg.DataVersion(engine.judged_version(doc)))
    return result, [row["name"] for row in doc["models"]]


def champion_gate_check(evaluation: dg.AssetsDefinition) -> dg.AssetChecksDefinition:
    @dg.asset_check(
        asset=evaluation,
        blocking=True,
        description="Champion gate: promote only a clear, non-regressing winner.",
    )
    def champion_gate(
        context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource
    ) -> dg.AssetCheckResult:
        """Passes when the best model may become (or already is) the champion; blocks `champion` otherwise."""
        return _gate(context, warehouse)

    return champion_gate


def _gate(context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource) -> dg.AssetCheckResult:
    from ctr_dagster import evaluation as engine

    home = warehouse.ctr_home
    doc = engine.latest(home)
    if doc is None:
        return dg.AssetCheckResult(passed=False, metadata={"reason": "no evaluation document"})
    decision = engine.gate_decision(warehouse.get(), home, default_registry(), doc, log=context.log.info)
    engine.save_gate(decision.as_dict(), doc, home)
    for reason in decision.reasons:
        (context.log.info if decision.passed else context.log.warning)(f"champion gate: {reason}")
    from ctr_dagster.champion import GatePolicy, gate_criteria, gate_headline

    policy = GatePolicy(**doc["gate_policy"])
    meta = {
        # read first: who is compared with whom, what happened, and each criterion with its figures
        "verdict": gate_headline(decision),
        "criteria": inline_table(gate_criteria(decision, policy)),
        "action": decision.action,
        "candidate": decision.candidate["name"] if decision.candidate else "none",
        "selected_by": (decision.candidate or {}).get("selected_by", "none"),
        "champion": decision.champion["name"] if decision.champion else "none",
        # which evaluation this verdict judges (its time and data version), since a check's own
        # timestamp is when it ran, not what it read
        "judged_evaluation": f"{doc['evaluated_at']} (data version {engine.judged_version(doc)})",
        # plain text: the check's page draws text entries as they are, markdown behind a click
        "reasons": dg.MetadataValue.text("; ".join(decision.reasons) or gate_headline(decision)),
    }
    if decision.comparison:
        c = decision.comparison
        meta["test"] = c.get("test", "none")
        meta["rows_used"] = str(c.get("rows_used"))
        for key in ("z", "p_value", "delta"):
            if c.get(key) is not None:
                meta[key] = dg.MetadataValue.float(float(c[key]))
        if c.get("ci"):
            meta["ci"] = f"[{c['ci'][0]:+.4f}, {c['ci'][1]:+.4f}]"
    meta.update({f"slice_delta/{k}": dg.MetadataValue.float(v) for k, v in decision.slice_deltas.items()})
    return dg.AssetCheckResult(passed=decision.passed, metadata=meta, description=gate_headline(decision))


def champion_asset() -> dg.AssetsDefinition:
    """`champion`, downstream of `evaluation` and of every model it may serve.

    The model deps are real lineage (the champion is one of their artifacts) and make a retrained
    model mark `champion` unsynced in the UI directly: Dagster's staleness does not travel through
    `evaluation`, whose data version changes only when it runs again."""

    @dg.asset(
        group_name="evaluation", code_version="1", deps=["evaluation", *_model_keys()], kinds={"python"}
    )
    def champion(context: dg.AssetExecutionContext, warehouse: WarehouseResource) -> dg.MaterializeResult:
        """The model serving would use: the gate's winner, with the promotion history (`ctr champion rollback`)."""
        from ctr_dagster import evaluation as engine
        from ctr_dagster.champion import ChampionStore, current_user, history_rows
        from ctr_dagster.evaluation import display

        home = warehouse.ctr_home
        store = ChampionStore(home.champion)
        doc = engine.latest(home)
        decision = engine.gate_decision(warehouse.get(), home, default_registry(), doc, log=context.log.info)
        if not decision.passed:  # the blocking check normally stops us before this
            raise RuntimeError("champion gate failed: " + "; ".join(decision.reasons))
        if decision.action == "promote":
            who = f"{current_user()} (dagster run {context.run.run_id[:8]})"
            entry = store.promote(decision.candidate, who=who, run_id=context.run.run_id)
            context.log.info(f"promoted {entry['name']} ({entry['artifact']}) to champion")
        else:
            entry = store.current()
            context.log.info(
                f"{entry['name']} stays champion: {'; '.join(decision.reasons) or 'it is also the best model'}"
            )
        rows = [{**r, "auc": display(r["auc"])} for r in history_rows(store.history()[-10:][::-1])]
        return dg.MaterializeResult(
            metadata={
                "champion": entry["name"],
                "artifact": dg.MetadataValue.path(entry["artifact"] or ""),
                "auc": dg.MetadataValue.float(float(entry["metrics"]["auc"])),
                "action": decision.action,
                "history": dg.MetadataValue.md(markdown_table(rows, ["event", "model", "auc", "at", "by"])),
            }
        )

    return champion
