"""Materialize the whole graph in-process, as the UI's "Materialize all" would (used by `ctr demo`).

Every step is a real Dagster run in the instance (`Settings.dagster_home` when set, so `make ui`
shows the runs, their metadata and checks afterwards; otherwise an ephemeral instance).
"""

import time
from collections.abc import Callable

import dagster as dg
import pyarrow.compute as pc

from assets.definitions import build_definitions
from assets.raw import CATALOGUE_TABLES
from assets.resources import daily_partitions
from assets.schedules import DAY_ASSETS, EVALUATION_ASSETS
from ctr_dagster.settings import Settings


def instance_for(settings: Settings) -> dg.DagsterInstance:
    """The Dagster instance in `settings.dagster_home` (created with telemetry off), else an ephemeral one."""
    home = settings.dagster_home
    if home is None:
        return dg.DagsterInstance.ephemeral()
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists():
        config.write_text("telemetry:\n  enabled: false\n")
    return dg.DagsterInstance.from_config(str(home))


def _keys(defs: dg.Definitions, group: str) -> list[dg.AssetKey]:
    return [
        key
        for a in defs.assets  # type: ignore[union-attr]
        if isinstance(a, dg.AssetsDefinition)
        for key in a.keys
        if a.group_names_by_key.get(key) == group
    ]


def materialize_all(
    settings: Settings,
    instance: dg.DagsterInstance | None = None,
    log: Callable[[str], None] = print,
    partitions: list[str] | None = None,
    log_level: str = "INFO",
) -> dict[str, float]:
    """Catalogue -> every daily partition -> training dataset -> plugins and models. Returns timings."""
    defs = build_definitions(settings)
    instance = instance or instance_for(settings)
    assets = list(defs.assets) + list(defs.asset_checks or [])  # type: ignore[arg-type]
    resources = dict(defs.resources or {})
    timings: dict[str, float] = {}
    # Step progress and the assets' own log lines, without Dagster's per-event DEBUG chatter.
    run_config = {"loggers": {"console": {"config": {"log_level": log_level}}}}

    def run(label: str, selection: list, partition_key: str | None = None, must_succeed: bool = True) -> None:
        started = time.perf_counter()
        result = dg.materialize(
            assets,
            selection=selection,
            partition_key=partition_key,
            instance=instance,
            resources=resources,
            raise_on_error=must_succeed,
            run_config=run_config,
        )
        timings[label] = time.perf_counter() - started
        outcome = "" if result.success else "  FAILED: " + "; ".join(_failures(result))
        log(f"  {label:<28} {timings[label]:6.1f} s  run {result.run_id[:8]}{outcome}")

    where = f", warehouse {settings.data_warehouse}" if settings.data_warehouse else ""
    log(f"source: {settings.label}, home {settings.data_home}{where}")
    if partitions is None:
        partitions = _days_with_data(settings, log) if settings.source == "import" else None
    run("catalogue", [*CATALOGUE_TABLES, "plugin_registry"])
    for day in partitions if partitions is not None else daily_partitions(settings).get_partition_keys():
        run(f"day {day}", DAY_ASSETS, partition_key=day)
    run("training_dataset", ["training_dataset"])
    # Enrichment stages: a failure is reported (and leaves the models without that input), not fatal.
    run("item_embeddings", ["item_embeddings"], must_succeed=False)
    run("item_attributes", ["item_attributes"], must_succeed=False)
    models = _keys(defs, "models") + _keys(defs, "distillation")
    if models:
        # A failing model fails its own asset; the others and the evaluation still run (as the
        # `evaluate_after_failure` sensor does in the UI), and the leaderboard lists the failure.
        run("models", models, must_succeed=False)
    run("evaluation + champion gate", EVALUATION_ASSETS, must_succeed=False)
    timings["total"] = sum(timings.values())
    return timings


def _days_with_data(settings: Settings, log: Callable[[str], None]) -> list[str]:
    """The imported days that hold rows (not every calendar day of the partitions), after saying
    what the import left out: skipped files and rows outside the partitions' range."""
    from ctr_dagster.sources import Source

    plan = Source(settings).import_plan()
    log(
        f"import: {len(plan.files)} file(s), {plan.rows_read} rows, {len(plan.days)} day(s) with data "
        f"({plan.first} .. {plan.last})"
    )
    for file, problem in plan.skipped:
        log(f"  SKIPPED file {file}: {problem}")
    if plan.out_of_range:
        days = sorted(plan.out_of_range)
        log(
            f"  {sum(plan.out_of_range.values())} row(s) outside the partitions {plan.first} .. {plan.last} "
            f"(on {len(days)} day(s): {days[0]} .. {days[-1]}): counted, not imported"
        )
    if not plan.days:
        raise ValueError(f"{settings.mapping}: the impressions files hold no row to import")
    return plan.days


def _failures(result: dg.ExecuteInProcessResult) -> list[str]:
    """One line per failed step or failed blocking check, for the demo's log."""
    lines = []
    for event in result.all_events:
        if event.event_type_value == "STEP_FAILURE":
            lines.append(f"{event.step_key}: {error_text(event.step_failure_data.error)}")
        elif event.event_type_value == "ASSET_CHECK_EVALUATION":
            check = event.event_specific_data
            if not check.passed:
                lines.append(f"check {check.check_name} failed")
    return lines


def error_text(error) -> str:
    """The step's own error, not Dagster's wrapper ("Error occurred while executing op ..."): the
    innermost cause of the serialized error chain, on one line."""
    if error is None:
        return "failed"
    while error.cause is not None:
        error = error.cause
    text = " ".join(line.strip() for line in error.message.strip().splitlines() if line.strip())
    return text or error.cls_name or "failed"


def summary(settings: Settings) -> dict[str, object]:
    """Figures the demo prints: rows, clean/quarantined, vocabulary sizes, oracle AUC of the test split."""
    from ctr_dagster import metrics, vocab
    from ctr_dagster.dataset import VOCAB_FIELDS

    wh = settings.ctr_home.open_warehouse()

    def rows(table: str) -> int:
        return (
            sum(wh.num_rows(table, p) for p in wh.partitions(table))
            if wh.partitions(table)
            else wh.num_rows(table)
        )

    dataset = wh.read("training_dataset")
    out: dict[str, object] = {
        "items": rows("raw_items"),
        "users": rows("raw_users"),
        "days": len(wh.partitions("clean_impressions")),
        "raw_impressions": rows("raw_impressions"),
        "clean_impressions": rows("clean_impressions"),
        "quarantined": rows("quarantine_impressions"),
        "training_rows": {
            s: int(pc.sum(pc.equal(dataset.column("split"), s)).as_py() or 0)
            for s in ("train", "valid", "test")
        },
        "vocabulary_sizes": {n: vocab.FIRST_INDEX + vocab.load(wh, n).num_rows for n in VOCAB_FIELDS},
    }
    test = dataset.filter(pc.equal(dataset.column("split"), "test")).select(["impression_id", "ts", "label"])
    test_days = sorted(set(pc.strftime(test.column("ts"), format="%Y-%m-%d").to_pylist()))
    oracle_rows = sum(wh.num_rows("oracle_impressions", d) for d in test_days)
    if test_days and oracle_rows:
        out["oracle_auc_test"] = metrics.oracle_auc(dataset, wh.read("oracle_impressions", test_days))
    if settings.source == "import":
        out.update(_import_accounting(settings, out))
    models = {}
    for table in wh.tables("predictions_"):
        scored = test.join(wh.read(table).select(["impression_id", "score"]), "impression_id")
        models[table.removeprefix("predictions_")] = metrics.auc(
            scored.column("label").to_numpy(), scored.column("score").to_numpy()
        )
    if models:
        out["model_auc_test"] = models
    return out


def _import_accounting(settings: Settings, counts: dict[str, object]) -> dict[str, object]:
    """Where every imported row went: rows read = clean + quarantined + outside the partitions."""
    from ctr_dagster.sources import Source

    plan = Source(settings).import_plan()
    out_of_range = sum(plan.out_of_range.values())
    accounted = int(counts["clean_impressions"]) + int(counts["quarantined"]) + out_of_range
    return {
        "rows_read": plan.rows_read,
        "out_of_range": out_of_range,
        "skipped_files": [f"{file}: {problem}" for file, problem in plan.skipped],
        "rows_accounted": f"{accounted} of {plan.rows_read} (clean + quarantined + out of range)"
        + ("" if accounted == plan.rows_read else "  MISMATCH"),
    }
