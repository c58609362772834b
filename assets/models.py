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

from assets.launchpad import plugin_config
from assets.resources import WarehouseResource
from ctr_dagster.contracts import input_tables
from ctr_dagster.registry import PluginInfo, default_registry
from ctr_dagster.settings import Home


def _launchpad_config(plugin: PluginInfo) -> type[dg.Config]:
    """The plugin's Config as launchpad config, plus the engine's fields it does not define itself."""
    extra: dict[str, tuple[object, object]] = {
        "seed": (int, 0),  # the run's seed (FitContext.seed), unless the plugin has its own
        # continue from the champion's artifact when the champion is this plugin
        "warm_start": (bool, False),
    }
    if getattr(plugin.cls, "distributed", False):
        # Engine field of torch plugins: >= 2 trains under torchrun/DDP (one process per GPU) through
        # Dagster Pipes; 0 = auto (in-process). CTR_DDP_PROCS=N forces N CPU processes.
        extra["gpus"] = (int, 0)
    return plugin_config(plugin, "LaunchpadConfig", **extra)


def split_engine_fields(plugin: PluginInfo, values: dict) -> tuple[int, bool, dict]:
    """(run seed, warm_start, plugin config values) from the launchpad values.

    `seed` is the plugin's own when its Config has one (then it is passed both ways), else an engine
    field the plugin never sees; `warm_start` likewise.
    """
    values = dict(values)
    own = {f.name for f in dataclasses.fields(plugin.cls.Config)}
    seed = int(values["seed"] if "seed" in own else values.pop("seed"))
    warm_start = bool(values["warm_start"] if "warm_start" in own else values.pop("warm_start", False))
    if "gpus" not in own:
        values.pop("gpus", None)  # engine field, read by the asset (see _launchpad_config)
    return seed, warm_start, values


def warm_start_dir(plugin: PluginInfo, home: Home, log: typing.Callable[[str], None]) -> Path | None:
    """The champion's artifact folder when the champion is this plugin, else None (with a log line)."""
    from ctr_dagster.champion import ChampionStore

    current = ChampionStore(home.champion).current()
    if current is None or current["name"] != plugin.name or not Path(current.get("artifact") or "").is_dir():
        log(
            f"warm_start: the champion is {current and current['name']}, not {plugin.name}; training from scratch"
        )
        return None
    return Path(current["artifact"])


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
        metadata={"plugin": plugin.entry_point_value, "distribution": plugin.dist or ""},
        description=(plugin.cls.__doc__ or f"model plugin {plugin.name}").strip().splitlines()[0],
    )
    def _model(
        context: dg.AssetExecutionContext,
        config: config_class,  # type: ignore[valid-type]
        warehouse: WarehouseResource,
    ) -> dg.MaterializeResult:
        from ctr_dagster.modeling import train_and_store

        home = warehouse.ctr_home
        seed, warm_start, values = split_engine_fields(plugin, config.model_dump())
        init_from = warm_start_dir(plugin, home, context.log.info) if warm_start else None
        if getattr(plugin.cls, "distributed", False):
            from ctr_dagster.training import launch

            nproc, cpu_only = launch.processes(int(config.model_dump().get("gpus", 0)), context.log.info)
            if nproc > 1:  # torchrun; rank 0 reports the materialization through Pipes
                command = launch.command(
                    plugin.name,
                    values,
                    nproc,
                    home.root,
                    seed=seed,
                    init_from=init_from,
                    run_id=context.run.run_id,
                )
                env = {"CUDA_VISIBLE_DEVICES": ""} if cpu_only else {}
                client = dg.PipesSubprocessClient(env=env)
                try:
                    return client.run(command=command, context=context).get_materialize_result()
                except Exception as exc:
                    launch.record_failure(home, plugin.name, context.run.run_id, exc)
                    raise
        result = train_and_store(
            plugin,
            values,
            warehouse.get(),
            home,
            seed=seed,
            init_from=init_from,
            log=context.log.info,
            run_id=context.run.run_id,
        )
        metadata = result.metadata()
        if getattr(plugin.cls, "distributed", False):
            from ctr_dagster.training.launch import training_metadata

            metadata.update(training_metadata(result.artifact_dir))
        # the artifact's content hash is the model's data version: a retrain that changes the weights
        # marks `evaluation` and `champion` unsynced in the UI; one that reproduces them does not
        return dg.MaterializeResult(metadata=metadata, data_version=dg.DataVersion(result.artifact_dir.name))

    return _model


def model_assets() -> list[dg.AssetsDefinition]:
    return [model_asset(p) for p in default_registry().good("model")]
