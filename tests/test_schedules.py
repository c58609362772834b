"""Nightly retrain: the schedule built from the daily partitioning, its job, warm start, and the sensor
that evaluates after a failed model (no daemon: schedule and sensor contexts)."""

import datetime as dt

import dagster as dg

from assets.definitions import build_definitions
from assets.resources import daily_partitions
from assets.schedules import (
    evaluate_after_failure,
    evaluate_and_promote,
    warm_start_config,
)
from ctr_dagster.distillation import students
from ctr_dagster.registry import default_registry


def test_schedule_launches_the_day_that_just_ended(tiny_settings):
    days = daily_partitions(tiny_settings).get_partition_keys()
    tick = dt.datetime.fromisoformat(days[3]).replace(hour=2, tzinfo=dt.UTC)
    schedule = build_definitions(tiny_settings).resolve_schedule_def("nightly_retrain_schedule")
    with (
        dg.instance_for_test() as instance,
        # as a context manager: it closes what it opened (else the instance's state storage leaks
        # into later tests as a dead weak reference)
        dg.build_schedule_context(instance=instance, scheduled_execution_time=tick) as context,
    ):
        result = schedule.evaluate_tick(context)
    [request] = result.run_requests
    assert request.partition_key == days[2]
    assert schedule.job_name == "nightly_retrain"
    assert schedule.cron_schedule == "0 2 * * *"
    assert schedule.default_status == dg.DefaultScheduleStatus.STOPPED


def test_nightly_job_covers_the_whole_chain_with_the_gate(tiny_settings):
    defs = build_definitions(tiny_settings)
    job = defs.resolve_job_def("nightly_retrain")
    keys = {k.to_user_string() for k in job.asset_layer.selected_asset_keys}
    models = {"/".join(p.asset_key) for p in default_registry().good("model")}
    assert models, "no model plugins installed"
    assert {"raw_impressions", "clean_impressions", "training_dataset", "evaluation", "champion"} <= keys
    assert models <= keys
    checks = {
        c.name for c in job.asset_layer.asset_graph.asset_check_keys if c.asset_key.path == ["evaluation"]
    }
    assert {
        "champion_gate",
        "warm_starts_track_full_retrains",
    } <= checks  # the nightly audits its warm starts
    assert job.partitions_def == daily_partitions(tiny_settings)
    evaluate = defs.resolve_job_def(evaluate_and_promote.name)
    assert {k.to_user_string() for k in evaluate.asset_layer.selected_asset_keys} == {
        "evaluation",
        "champion",
        "uplift_evaluation",  # the uplift models' own leaderboard runs beside the CTR one
    }


def test_warm_start_config_turns_the_engine_field_on_for_every_model():
    assert warm_start_config(False) == {}
    ops = warm_start_config(True, 3)["ops"]
    names = {"__".join(p.asset_key) for p in default_registry().good("model")}
    distilled = {f"distilled__{s.name}" for s, _ in students(default_registry())}
    attributes = ops.pop("item_attributes")  # kept while only the logs changed, refit at the cadence
    assert attributes == {"config": {"refresh_every_days": 3}}
    assert distilled and set(ops) == names | distilled  # the distilled students warm-start too
    assert all(v == {"config": {"warm_start": True, "full_retrain_every_days": 3}} for v in ops.values())


def test_the_nightly_job_warm_starts_by_default_with_the_cadence_of_the_settings(tiny_settings):
    """Issue 22: incremental by design. The nightly job warm-starts every model (CTR_WARM_START=0
    turns it off) with `full_retrain_every_days` from the settings (CTR_FULL_RETRAIN_EVERY_DAYS)."""
    day = daily_partitions(tiny_settings).get_partition_keys()[1]
    assert tiny_settings.warm_start and tiny_settings.full_retrain_every_days == 7
    warm = build_definitions(tiny_settings.replace(full_retrain_every_days=2)).resolve_job_def(
        "nightly_retrain"
    )
    cold = build_definitions(tiny_settings.replace(warm_start=False)).resolve_job_def("nightly_retrain")
    assert cold.get_run_config_for_partition_key(day) == {}
    ops = warm.get_run_config_for_partition_key(day)["ops"]
    keys = ["__".join(p.asset_key) for p in default_registry().good("model")]
    keys += [f"distilled__{s.name}" for s, _ in students(default_registry())]
    assert ops.pop("item_attributes") == {"config": {"refresh_every_days": 2}}
    assert {k: v["config"] for k, v in ops.items()} == {
        key: {"warm_start": True, "full_retrain_every_days": 2} for key in keys
    }


def test_definitions_follow_the_profile_in_one_process(tmp_path):
    from ctr_dagster.settings import Settings

    tiny = daily_partitions(Settings(profile="tiny", home=tmp_path)).get_partition_keys()
    small = build_definitions(Settings(profile="small", home=tmp_path)).resolve_job_def("nightly_retrain")
    assert len(tiny) == 6 and len(small.partitions_def.get_partition_keys()) == 14
    assert build_definitions(Settings(profile="tiny", home=tmp_path)) is build_definitions(
        Settings(profile="tiny", home=tmp_path)
    )


def _failed_run(instance: dg.DagsterInstance, evaluation_runs: bool):
    """A run that selected `evaluation` and failed: either in a model (evaluation skipped) or after it."""

    @dg.asset(name="model", key_prefix="models")
    def model():
        if not evaluation_runs:
            raise RuntimeError("loss is NaN")

    @dg.asset(deps=[model])
    def evaluation():
        return None

    @dg.asset(deps=[evaluation])
    def champion():
        raise RuntimeError("disk full")

    result = dg.materialize([model, evaluation, champion], instance=instance, raise_on_error=False)
    assert not result.success
    return result


def _sensor_result(instance, result):
    run = instance.get_run_by_id(result.run_id)
    failure = next(e for e in result.all_events if e.event_type_value == "PIPELINE_FAILURE")
    context = dg.build_run_status_sensor_context(
        sensor_name="evaluate_after_failure",
        dagster_event=failure,
        dagster_instance=instance,
        dagster_run=run,
    ).for_run_failure()
    return evaluate_after_failure(context)


def test_sensor_evaluates_when_a_failed_model_skipped_the_evaluation():
    with dg.instance_for_test() as instance:
        result = _failed_run(instance, evaluation_runs=False)
        request = _sensor_result(instance, result)
        assert isinstance(request, dg.RunRequest)
        assert request.run_key == f"evaluate-after-{result.run_id}"
        assert evaluate_after_failure.job_name == "evaluate_and_promote"


def test_sensor_skips_when_the_evaluation_did_run():
    with dg.instance_for_test() as instance:
        result = _failed_run(instance, evaluation_runs=True)
        assert isinstance(_sensor_result(instance, result), dg.SkipReason)
