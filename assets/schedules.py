"""Nightly retrain and its safety net.

`nightly_retrain` is one partitioned asset job: the new day's partition (raw → clean, with its
quality checks), the catalogue, the trailing-window `training_dataset`, every model plugin, the
`evaluation` and, through the blocking `champion_gate`, the `champion`. The schedule is built from
the daily partitioning, so each tick launches the partition of the day that just ended.

Dagster skips every step downstream of a failed one, so a single failing model would skip the
evaluation. `evaluate_after_failure` closes that gap: when a run that included the evaluation fails
before materializing it, it launches `evaluate_and_promote` alone, which ranks the models that did
train and lists the failed one.

Set ``CTR_WARM_START=1`` for the schedule's runs to continue each model from the champion's
artifact when the champion is that model (the `warm_start` launchpad field of every model asset).
"""

import os

import dagster as dg

from assets.clean import clean_day
from assets.raw import raw_catalogue, raw_day
from ctr_dagster.registry import default_registry

NIGHTLY_HOUR = 2  # UTC; the day's logs are complete by then
EVALUATION_ASSETS = ["evaluation", "champion"]


def warm_start_config(enabled: bool) -> dict:
    """Run config turning `warm_start` on for every model asset (empty when disabled)."""
    if not enabled:
        return {}
    ops = {"__".join(p.asset_key): {"config": {"warm_start": True}} for p in default_registry().good("model")}
    return {"ops": ops}


nightly_retrain = dg.define_asset_job(
    "nightly_retrain",
    selection=dg.AssetSelection.assets(
        raw_catalogue,
        raw_day,
        clean_day,
        "plugin_registry",
        "training_dataset",
        "item_embeddings",
        "item_attributes",
        *EVALUATION_ASSETS,
    )
    | dg.AssetSelection.groups("models", "distillation"),
    config=warm_start_config(os.environ.get("CTR_WARM_START", "") in ("1", "true", "yes")),
    description="New day's partition → trailing-window dataset → every model → evaluation → champion gate.",
)

evaluate_and_promote = dg.define_asset_job(
    "evaluate_and_promote",
    selection=dg.AssetSelection.assets(*EVALUATION_ASSETS),
    description="Rank the models that trained, list the failed ones, gate and promote the champion.",
)

nightly_schedule = dg.build_schedule_from_partitioned_job(
    nightly_retrain,
    hour_of_day=NIGHTLY_HOUR,
    name="nightly_retrain_schedule",
    description="Every night: the day that just ended, retrain every model, evaluate, gate.",
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
