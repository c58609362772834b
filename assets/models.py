"""Model stage: an asset factory, one asset per installed model plugin (keys from the registry).

The plugin's `Config` dataclass becomes the asset's launchpad config. The asset trains on the
training dataset's train split (valid split for early stopping), scores valid and test, stores the
model in a content-addressed folder (safe formats only: the plugin's `save`), and records the
predictions for evaluation.
"""

import dataclasses
import typing

import dagster as dg
import pydantic

from ctr_dagster.registry import PluginInfo, default_registry


def _launchpad_config(plugin: PluginInfo) -> type[dg.Config]:
    """A Dagster Config class mirroring the plugin's Config dataclass (types and defaults)."""
    hints = typing.get_type_hints(plugin.cls.Config)
    fields = {}
    for f in dataclasses.fields(plugin.cls.Config):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        fields[f.name] = (hints.get(f.name, typing.Any), default)
    fields.setdefault("seed", (int, 0))  # the run's seed (FitContext.seed), unless the plugin has its own
    return pydantic.create_model(
        f"{plugin.name.title().replace('_', '')}LaunchpadConfig", __base__=dg.Config, **fields
    )


def split_seed(plugin: PluginInfo, values: dict) -> tuple[int, dict]:
    """(run seed, plugin config values): the launchpad's `seed` is the plugin's own when its Config
    has one (then it is passed both ways), else an engine field that the plugin never sees."""
    values = dict(values)
    if any(f.name == "seed" for f in dataclasses.fields(plugin.cls.Config)):
        return int(values["seed"]), values
    return int(values.pop("seed")), values


def model_asset(plugin: PluginInfo) -> dg.AssetsDefinition:
    config_class = _launchpad_config(plugin)

    @dg.asset(
        key=plugin.asset_key,
        group_name="models",
        deps=["training_dataset"],
        code_version=plugin.version or "0",
        kinds={"python"},
        tags={"ctr/task": plugin.cls.task},
        metadata={"plugin": plugin.entry_point_value, "distribution": plugin.dist or ""},
        description=(plugin.cls.__doc__ or f"model plugin {plugin.name}").strip().splitlines()[0],
    )
    def _model(context: dg.AssetExecutionContext, config: config_class) -> dg.MaterializeResult:  # type: ignore[valid-type]
        from ctr_dagster.modeling import train_and_store
        from ctr_dagster.warehouse import Warehouse

        values = config.model_dump()
        seed, values = split_seed(plugin, values)
        result = train_and_store(plugin, values, Warehouse.default(), seed=seed, log=context.log.info)
        return dg.MaterializeResult(metadata=result.metadata())

    return _model


def model_assets() -> list[dg.AssetsDefinition]:
    return [model_asset(p) for p in default_registry().good("model")]
