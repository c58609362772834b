"""Model stage: an asset factory, one asset per installed model plugin (keys from the registry).

The plugin's `Config` dataclass becomes the asset's launchpad config. The asset trains on the
training dataset's train split (valid split for early stopping), scores valid and test, stores the
model in a content-addressed folder (safe formats only: the plugin's `save`), and records the
predictions for evaluation.
"""

import dataclasses
import typing
from pathlib import Path

import dagster as dg

from assets.concurrency import training_threads
from assets.launchpad import plugin_config
from assets.resources import WarehouseResource
from ctr_dagster.contracts import input_tables
from ctr_dagster.registry import PluginInfo, default_registry
from ctr_dagster.settings import FULL_RETRAIN_EVERY_DAYS, Home

if typing.TYPE_CHECKING:
    from ctr_dagster.warehouse import Warehouse

#: Concurrency pool of every torch training (model and distillation assets). Unlimited on the default
#: SQLite instance; deploy/dagster.postgres.yaml limits it to one at a time (docs/deploy.md).
TORCH_POOL = "torch"


def training_pool(plugin: PluginInfo) -> str | None:
    """`TORCH_POOL` for a torch plugin (the engine's trainer), None for the others (LightGBM, numpy)."""
    return TORCH_POOL if getattr(plugin.cls, "distributed", False) else None


def _launchpad_config(plugin: PluginInfo) -> type[dg.Config]:
    """The plugin's Config as launchpad config, plus the engine's fields it does not define itself."""
    import pydantic

    # engine fields carry their descriptions like the plugin's own (the launchpad shows them)
    extra: dict[str, tuple[object, object]] = {
        "seed": (int, pydantic.Field(0, description="the run's seed (FitContext.seed) for splits and init")),
        "warm_start": (
            bool,
            pydantic.Field(
                False,
                description="continue from this model's previous artifact (LightGBM keeps boosting, torch "
                "fine-tunes) until full_retrain_every_days of new data have passed",
            ),
        ),
        "full_retrain_every_days": (
            int,
            pydantic.Field(
                FULL_RETRAIN_EVERY_DAYS,
                description="with warm_start: train from scratch once the data moved this many days past "
                "the last full retrain (< 1: always)",
            ),
        ),
    }
    if getattr(plugin.cls, "distributed", False):
        # torchrun/DDP through Dagster Pipes; CTR_DDP_PROCS=N forces N CPU processes
        extra["gpus"] = (
            int,
            pydantic.Field(
                0, description=">= 2: train under torchrun/DDP, one process per GPU; 0 = in-process"
            ),
        )
    return plugin_config(plugin, "LaunchpadConfig", **extra)


def split_engine_fields(plugin: PluginInfo, values: dict) -> tuple[int, bool, dict]:
    """(run seed, warm_start, plugin config values) from the launchpad values.

    `seed` is the plugin's own when its Config has one (then it is passed both ways), else an engine
    field the plugin never sees; `warm_start` likewise. The other engine fields (`gpus`,
    `full_retrain_every_days`) are read by the asset (`retrain_cadence`) and removed here.
    """
    values = dict(values)
    own = {f.name for f in dataclasses.fields(plugin.cls.Config)}
    seed = int(values["seed"] if "seed" in own else values.pop("seed"))
    warm_start = bool(values["warm_start"] if "warm_start" in own else values.pop("warm_start", False))
    for engine_field in ("gpus", "full_retrain_every_days"):
        if engine_field not in own:
            values.pop(engine_field, None)  # engine field, read by the asset (see _launchpad_config)
    return seed, warm_start, values


def retrain_cadence(values: dict) -> int:
    """The launchpad's `full_retrain_every_days`."""
    return int(values.get("full_retrain_every_days", FULL_RETRAIN_EVERY_DAYS))


def warm_start_dir(
    plugin: PluginInfo, home: Home, warehouse: "Warehouse", every_days: int, log: typing.Callable[[str], None]
) -> Path | None:
    """The artifact a torchrun (DDP) training continues from: `modeling.plan_warm_start` on the
    dataset's last day (the in-process path lets `train_and_store` decide)."""
    from ctr_dagster.modeling import Splits, dataset_end_day, plan_warm_start

    day = dataset_end_day(Splits.read(warehouse))
    start = plan_warm_start(home, plugin.name, plugin.name, day, every_days)
    log(f"{plugin.name}: {start.reason}")
    return start.init_from


def model_inputs(plugin: PluginInfo) -> set[str]:
    """Prepared inputs the plugin requires or reads by default (`optional_inputs`): its lineage deps."""
    return set(plugin.cls.requires) | set(getattr(plugin.cls, "optional_inputs", ()))


def model_asset(plugin: PluginInfo) -> dg.AssetsDefinition:
    config_class = _launchpad_config(plugin)

    @dg.asset(
        key=plugin.asset_key,
        group_name="models",
        # lineage: the prepared inputs the plugin requires (they are offered to every model when present)
        deps=["training_dataset", *input_tables(model_inputs(plugin))],
        code_version=plugin.version or "0",
        kinds={"python"},
        tags={"ctr/task": plugin.cls.task},
        pool=training_pool(plugin),
        metadata={"plugin": plugin.entry_point_value, "distribution": plugin.dist or ""},
        description=(plugin.cls.__doc__ or f"model plugin {plugin.name}").strip().splitlines()[0],
    )
    def _model(
        context: dg.AssetExecutionContext,
        config: config_class,  # type: ignore[valid-type]
        warehouse: WarehouseResource,
    ) -> dg.MaterializeResult:
        from ctr_dagster.errors import NotApplicableError
        from ctr_dagster.modeling import train_and_store

        home = warehouse.ctr_home
        seed, warm_start, values = split_engine_fields(plugin, config.model_dump())
        cadence = retrain_cadence(config.model_dump())
        if getattr(plugin.cls, "distributed", False):
            from ctr_dagster.training import launch

            nproc, cpu_only = launch.processes(int(config.model_dump().get("gpus", 0)), context.log.info)
            if nproc > 1:  # torchrun; rank 0 reports the materialization through Pipes
                init_from = (
                    warm_start_dir(plugin, home, warehouse.get(), cadence, context.log.info)
                    if warm_start
                    else None
                )
                command = launch.command(
                    plugin.name,
                    values,
                    nproc,
                    home.root,
                    seed=seed,
                    init_from=init_from,
                    run_id=context.run.run_id,
                    warehouse=home.warehouse_uri,
                )
                env = {"CUDA_VISIBLE_DEVICES": ""} if cpu_only else {}
                client = dg.PipesSubprocessClient(env=env)
                try:
                    with training_threads(context):  # the torchrun processes inherit CTR_STEP_THREADS
                        return client.run(command=command, context=context).get_materialize_result()
                except Exception as exc:
                    launch.record_failure(home, plugin.name, context.run.run_id, exc)
                    raise
        with training_threads(context):
            try:
                result = train_and_store(
                    plugin,
                    values,
                    warehouse.get(),
                    home,
                    seed=seed,
                    log=context.log.info,
                    run_id=context.run.run_id,
                    # warm start: continue from this model's previous artifact within the cadence
                    full_retrain_every_days=cadence if warm_start else None,
                )
            except NotApplicableError as exc:  # e.g. an uplift model on a log without treatment
                context.log.warning(f"skipped, not applicable to this data: {exc}")
                return dg.MaterializeResult(
                    metadata={"skipped": f"not applicable: {exc}"},
                    data_version=dg.DataVersion("not-applicable"),
                )
        metadata = result.metadata()
        if getattr(plugin.cls, "distributed", False):
            from ctr_dagster.training.launch import training_metadata

            metadata.update(training_metadata(result.artifact_dir))
        # MLflow run (params, metrics, artifact) when a tracking store is configured; its link here
        from ctr_dagster.tracking import log_training

        tracked = log_training(plugin.name, result, dagster_run_id=context.run.run_id, log=context.log.info)
        metadata.update(
            {k: dg.MetadataValue.url(v) if v.startswith("http") else v for k, v in tracked.items()}
        )
        # the artifact's content hash is the model's data version: a retrain that changes the weights
        # marks `evaluation` and `champion` unsynced in the UI; one that reproduces them does not
        return dg.MaterializeResult(metadata=metadata, data_version=dg.DataVersion(result.artifact_dir.name))

    return _model


def model_assets() -> list[dg.AssetsDefinition]:
    return [model_asset(p) for p in default_registry().good("model")]
