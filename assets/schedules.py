"""Nightly retrain and its safety net.

`nightly_retrain` is one partitioned asset job: the new day's partition (raw → clean, with its
quality checks), the catalogue, the trailing-window `training_dataset`, every model plugin, the
`evaluation` and, through the blocking `champion_gate`, the `champion`. The schedule is built from
the daily partitioning, so each tick launches the partition of the day that just ended.

Dagster skips every step downstream of a failed one, so a single failing model would skip the
evaluation. `evaluate_after_failure` closes that gap: when a run that included the evaluation fails
before materializing it, it launches `evaluate_and_promote` alone, which ranks the models that did
train and lists the failed one.

Incremental by default: with `Settings.warm_start` (on; ``CTR_WARM_START=0`` turns it off) the job's
runs continue each model from its own previous artifact (LightGBM keeps boosting, torch models
fine-tune), and train from scratch once the data has moved `Settings.full_retrain_every_days` days
(default 7) past the model's last full retrain: the `warm_start` and `full_retrain_every_days`
launchpad fields of every model asset. Trainings whose inputs did not change are skipped. The
attribute stage keeps its table while only the logs changed, for the same cadence
(`item_attributes`' `refresh_every_days`, `ctr_dagster.attribute_refresh`).
"""

import dagster as dg

from assets.raw import CATALOGUE_TABLES
from ctr_dagster.registry import default_registry
from ctr_dagster.settings import FULL_RETRAIN_EVERY_DAYS, Settings

NIGHTLY_HOUR = 2  # UTC; the day's logs are complete by then
EVALUATION_ASSETS = ["evaluation", "champion", "uplift_evaluation"]
DAY_ASSETS = ["raw_impressions", "oracle_impressions", "clean_impressions", "quarantine_impressions"]


def warm_start_config(enabled: bool, full_retrain_every_days: int = FULL_RETRAIN_EVERY_DAYS) -> dict:
    """Run config turning `warm_start` on, with the full-retrain cadence, for every model asset
    (empty when disabled)."""
    if not enabled:
        return {}
    from ctr_dagster.distillation import students

    config = {"warm_start": True, "full_retrain_every_days": full_retrain_every_days}
    registry = default_registry()
    ops = {"__".join(p.asset_key): {"config": dict(config)} for p in registry.good("model")}
    # the distilled students too: within the cadence, their previous artifact and temperature
    ops.update({f"distilled__{s.name}": {"config": dict(config)} for s, _ in students(registry)})
    # attribute extraction: kept while only the logs changed, refit at the same cadence
    ops["item_attributes"] = {"config": {"refresh_every_days": full_retrain_every_days}}
    return {"ops": ops}


def nightly(settings: Settings) -> tuple:
    """(`nightly_retrain` asset job, its schedule): warm-started when `settings.warm_start`."""
    job = dg.define_asset_job(
        "nightly_retrain",
        selection=dg.AssetSelection.assets(
            *CATALOGUE_TABLES,
            *DAY_ASSETS,
            "plugin_registry",
            "training_dataset",
            "item_embeddings",
            "item_attributes",
            *EVALUATION_ASSETS,
        )
        | dg.AssetSelection.groups("models", "distillation"),
        config=warm_start_config(settings.warm_start, settings.full_retrain_every_days),
        description="New day's partition → trailing-window dataset → every model → evaluation → champion gate.",
    )
    schedule = dg.build_schedule_from_partitioned_job(
        job,
        hour_of_day=NIGHTLY_HOUR,
        name="nightly_retrain_schedule",
        description="Every night: the day that just ended, retrain every model, evaluate, gate.",
    )
    return job, schedule


evaluate_and_promote = dg.define_asset_job(
    "evaluate_and_promote",
    selection=dg.AssetSelection.assets(*EVALUATION_ASSETS),
    description="Rank the models that trained, list the failed ones, gate and promote the champion.",
)


def _evaluation_skipped(instance: dg.DagsterInstance, run: dg.DagsterRun) -> bool:
    """Did `run` target the evaluation and end without materializing it?"""
    if run.asset_selection:
        targeted = dg.AssetKey("evaluation") in run.asset_selection
    else:  # a run of a whole asset job: look for the evaluation's step in its plan
        plan = instance.get_execution_plan_snapshot(run.execution_plan_snapshot_id)
        targeted = any(step.key == "evaluation" for step in plan.steps)
    if not targeted:
        return False
    records = instance.fetch_materializations(dg.AssetKey("evaluation"), limit=1).records
    return not records or records[0].run_id != run.run_id


@dg.run_failure_sensor(
    name="evaluate_after_failure",
    request_job=evaluate_and_promote,
    monitor_all_code_locations=False,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="A failed model skips the evaluation: launch it alone so the leaderboard still appears.",
)
def evaluate_after_failure(context: dg.RunFailureSensorContext):
    run = context.dagster_run
    if run.job_name == evaluate_and_promote.name or not _evaluation_skipped(context.instance, run):
        return dg.SkipReason(f"run {run.run_id[:8]} did not skip the evaluation")
    return dg.RunRequest(run_key=f"evaluate-after-{run.run_id}", tags={"ctr/after_failed_run": run.run_id})
