"""The code location for Celery workers: the project's definitions with every step a Celery task.

Where steps run on Celery workers (docs/deploy.md), the webserver, the daemon and every worker load
this module instead of `assets.definitions` (``deploy/workspace.celery.yaml``), with the same
environment: the ``CTR_*`` settings, ``DAGSTER_HOME`` holding the PostgreSQL instance
(``deploy/dagster.postgres.yaml``) and the broker (``deploy/services.env``). The assets, checks, jobs,
schedules and sensors are exactly `build_definitions(settings)`'s; only the executor differs.

`materialize_on_celery` runs the whole graph through the workers, stage by stage as
`assets.run.materialize_all` does in-process (what ``make scale-test`` and
``benchmarks/bench_celery.py`` run). dagster_celery and celery are imported only when the
definitions are built, so loading `assets.definitions` never pays for them.
"""

import functools
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import dagster as dg

from assets.definitions import build_definitions
from ctr_dagster.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_QUEUE = "dagster"  # dagster-celery's own default queue


def _celery_config(config: dict) -> dict:
    """The celery executor's config: broker and backend from the deployment's environment
    (``deploy/services.env``), the queue from the run config (default: dagster-celery's)."""
    from dagster_celery.config import DEFAULT_CONFIG

    from ctr_dagster.deploy import CELERY_ENV_DEFAULTS

    env = {**CELERY_ENV_DEFAULTS, **{k: os.environ[k] for k in CELERY_ENV_DEFAULTS if os.environ.get(k)}}
    return {
        "broker": env["CTR_CELERY_BROKER"],
        "backend": env["CTR_CELERY_BACKEND"],
        "config_source": {**DEFAULT_CONFIG, "task_default_queue": config["queue"]},
        "retries": {"enabled": {}} if config["step_retries"] else {"disabled": {}},
    }


@functools.cache
def celery_definitions(settings: Settings) -> dg.Definitions:
    """`build_definitions(settings)` with the Celery executor as every job's executor."""
    from dagster_celery import celery_executor

    executor = celery_executor.configured(
        _celery_config,
        config_schema={
            "queue": dg.Field(str, default_value=DEFAULT_QUEUE, description="Celery queue the steps go to"),
            "step_retries": dg.Field(
                bool, default_value=True, description="honour op retry policies (dagster/max_retries)"
            ),
        },
    )
    return dg.Definitions.merge(build_definitions(settings), dg.Definitions(executor=executor))


@dg.definitions
def defs() -> dg.Definitions:
    """What the webserver, the daemon and the Celery workers load in a scale-out deployment."""
    return celery_definitions(Settings.from_env())


def reconstructable_asset_job(module: str = "assets.scale_out"):
    """The implicit asset job of this code location, as a pointer the workers can load themselves."""
    from dagster._core.definitions.reconstruct import ReconstructableRepository

    repo = ReconstructableRepository.for_module(module, "defs", working_directory=str(ROOT))
    return repo.get_reconstructable_job("__ASSET_JOB")


def materialize_on_celery(
    settings: Settings,
    instance: dg.DagsterInstance,
    queue: str = DEFAULT_QUEUE,
    log: Callable[[str], None] = print,
    days: Sequence[str] | None = None,
    models: Sequence[str] | None = None,
    enrichment: bool = True,
) -> list[dict]:
    """Catalogue -> every day -> dataset -> enrichment -> models -> evaluation, each stage one run
    whose steps execute on the Celery workers. This process only orchestrates; `settings` must be
    the workers' (``Settings.from_env()`` in their environment). `models` (asset keys such as
    ``models/lightgbm``) limits the model stage, default every model and distilled student;
    `enrichment` False skips item embeddings and attributes. Returns one record per run."""
    from assets.raw import CATALOGUE_TABLES
    from assets.resources import daily_partitions
    from assets.schedules import DAY_ASSETS, EVALUATION_ASSETS

    job = reconstructable_asset_job()
    defs = build_definitions(settings)
    graph = defs.resolve_asset_graph()

    def group(name: str) -> list[dg.AssetKey]:
        return sorted(k for k in graph.get_all_asset_keys() if graph.get(k).group_name == name)

    run_config = {
        "execution": {"config": {"queue": queue}},
        "loggers": {"console": {"config": {"log_level": "INFO"}}},  # without per-event DEBUG chatter
    }
    runs: list[dict] = []

    def run(label: str, selection: list, partition: str | None = None) -> None:
        keys = [dg.AssetKey.from_user_string(k) if isinstance(k, str) else k for k in selection]
        started = time.perf_counter()
        result = dg.execute_job(
            job,
            instance=instance,
            run_config=run_config,
            asset_selection=keys,
            tags={"dagster/partition": partition} if partition else None,
        )
        seconds = time.perf_counter() - started
        runs.append({"label": label, "run_id": result.run_id, "success": result.success, "seconds": seconds})
        log(f"  {label:<28} {seconds:6.1f} s  run {result.run_id[:8]}{'' if result.success else '  FAILED'}")

    run("catalogue", [*CATALOGUE_TABLES, "plugin_registry"])
    for day in days if days is not None else daily_partitions(settings).get_partition_keys():
        run(f"day {day}", DAY_ASSETS, partition=day)
    run("training_dataset", ["training_dataset"])
    if enrichment:
        run("enrichment", ["item_embeddings", "item_attributes"])
    selected = group("models") + group("distillation") if models is None else list(models)
    if selected:
        run("models", selected)
    run("evaluation + champion gate", EVALUATION_ASSETS)
    return runs
