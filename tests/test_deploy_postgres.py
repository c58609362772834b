"""The production instance (deploy/dagster.postgres.yaml) on a fresh PostgreSQL database: storage,
run queue, pools and run retries as configured, and an asset materialized into it."""

import re

import dagster as dg
import pytest

from ctr_dagster import deploy
from tests.deploy_support import DEPLOY, pg_env  # noqa: F401  (fixture)


@pytest.fixture
def pg_instance(pg_env, monkeypatch):  # noqa: F811
    for name, value in pg_env.items():
        if name.startswith("DAGSTER_"):
            monkeypatch.setenv(name, value)
    with dg.DagsterInstance.from_config(pg_env["DAGSTER_HOME"]) as instance:
        yield instance


def test_the_instance_runs_on_postgres_with_a_queue_pools_and_retries(pg_instance, pg_env, tiny_settings):  # noqa: F811
    from dagster._core.run_coordinator import QueuedRunCoordinator
    from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage, PostgresScheduleStorage

    from assets.definitions import build_definitions

    instance = pg_instance
    assert isinstance(instance.run_storage, PostgresRunStorage)
    assert isinstance(instance.event_log_storage, PostgresEventLogStorage)
    assert isinstance(instance.schedule_storage, PostgresScheduleStorage)
    assert isinstance(instance.run_coordinator, QueuedRunCoordinator)
    config = instance.get_concurrency_config()
    assert config.run_queue_config.max_concurrent_runs > 0
    limits = {
        (t["key"], str(t.get("value"))): t["limit"] for t in config.run_queue_config.tag_concurrency_limits
    }
    assert limits[("ctr/heavy", "torch")] == 1
    assert config.pool_config.default_pool_limit == 1  # the torch pool: one training at a time
    assert instance.run_retries_enabled and instance.run_retries_max_retries >= 1
    assert not instance.run_retries_retry_on_asset_or_op_failure  # a failing model is not retried
    assert instance.run_monitoring_enabled

    # torch trainings are in the pool that limit governs; LightGBM and the numpy baseline are not
    defs = build_definitions(tiny_settings)
    pools = {key.to_user_string(): node.pools for key, node in _nodes(defs)}
    assert pools["models/din"] == {"torch"} and pools["distilled/din_student"] == {"torch"}
    assert not pools["models/lightgbm"] and not pools["models/baseline_lr"]

    # an asset materialized through this instance lands in PostgreSQL
    result = dg.materialize(
        list(defs.assets) + list(defs.asset_checks or []),
        selection=["plugin_registry"],
        instance=instance,
        resources=dict(defs.resources or {}),
    )
    assert result.success
    event = instance.get_latest_materialization_event(dg.AssetKey("plugin_registry"))
    assert event is not None and event.run_id == result.run_id
    conn = deploy.pg_connect(pg_env, pg_env["DAGSTER_PG_DB"])
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM event_logs WHERE run_id = %s", (result.run_id,))
            assert cur.fetchone()[0] > 0
            cur.execute("SELECT status FROM runs WHERE run_id = %s", (result.run_id,))
            assert cur.fetchone()[0] == "SUCCESS"
    finally:
        conn.close()


def _nodes(defs: dg.Definitions):
    graph = defs.resolve_asset_graph()
    for key in graph.get_all_asset_keys():
        yield key, graph.get(key)


def test_the_environment_file_and_the_python_defaults_agree():
    """deploy/services.env (for shells) and ctr_dagster.deploy (for scripts and tests) hold the same
    defaults, and the yaml files read only variables that one of them defines."""
    text = (DEPLOY / "services.env").read_text()
    in_file = dict(re.findall(r"^(\w+)=\$\{\1:-([^}]*)\}$", text, flags=re.M))
    assert in_file == {**deploy.PG_ENV_DEFAULTS, **deploy.CELERY_ENV_DEFAULTS}
    for yaml_file in ("dagster.postgres.yaml", "celery.yaml"):
        used = set(re.findall(r"\{env: (\w+)\}", (DEPLOY / yaml_file).read_text()))
        assert used and used <= set(in_file), yaml_file
