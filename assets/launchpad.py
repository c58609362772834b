"""Launchpad config from plugin Config dataclasses: one place that mirrors a dataclass in Dagster.

Every plugin kind shows its typed `Config` in the launchpad: a model asset as its own config (plus
engine fields), the embedding and attribute stages as one nested block per installed encoder or
extractor. The mirroring (types from the annotations, defaults from the dataclass) lives here once.
"""

import dataclasses
import typing
from collections.abc import Callable, Sequence

import dagster as dg
import pydantic

from ctr_dagster.registry import BrokenPlugin, PluginInfo, default_registry


def dataclass_fields(config: type) -> dict[str, tuple[object, object]]:
    """pydantic field definitions `(type, Field(default, description))` for each field of a Config
    dataclass; the description is the one its author wrote (`config_docs.field_descriptions`), so
    the launchpad explains `patience`, `amp`, ... where they are edited."""
    from ctr_dagster.config_docs import field_descriptions

    hints = typing.get_type_hints(config)
    described = field_descriptions(config)
    fields = {}
    for f in dataclasses.fields(config):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        fields[f.name] = (
            hints.get(f.name, typing.Any),
            pydantic.Field(default, description=described.get(f.name)),
        )
    return fields


def plugin_config(plugin: PluginInfo, suffix: str, **extra: tuple[object, object]) -> type[dg.Config]:
    """A Dagster Config class mirroring `plugin.Config`, plus `extra` fields the plugin does not have."""
    fields = dataclass_fields(plugin.cls.Config)
    for name, spec in extra.items():
        fields.setdefault(name, spec)
    return pydantic.create_model(
        f"{plugin.name.title().replace('_', '')}{suffix}", __base__=dg.Config, **fields
    )


def per_plugin_configs(kind: str, class_name: str) -> type[dg.Config]:
    """One nested config block per installed `kind` plugin, named after it (stage-level launchpad)."""
    fields = {}
    for plugin in default_registry().good(kind):
        nested = plugin_config(plugin, f"{kind.title()}Config")
        fields[plugin.name] = (nested, nested())
    return pydantic.create_model(class_name, __base__=dg.Config, **fields)


def select_plugins(
    kind: str, names: Sequence[str], warn: Callable[[str], None]
) -> tuple[dict[str, PluginInfo], list[str], list[BrokenPlugin]]:
    """(installed good plugins by name, the names to run, the broken ones among them) for a stage.

    `names` empty means every installed plugin. A requested name that is neither installed nor a
    broken plugin is a config error; each broken one is logged through `warn` (the stage reports
    it and runs the others).
    """
    registry = default_registry()
    installed = {p.name: p for p in registry.good(kind)}
    wanted = list(names) or sorted(installed)
    broken = [b for b in registry.broken_of(kind) if not names or b.name in names]
    unknown = [n for n in wanted if n not in installed and n not in {b.name for b in broken}]
    if unknown:
        raise ValueError(f"unknown {kind}(s) {unknown}; installed: {sorted(installed)}")
    for b in broken:
        warn(f"broken {kind} plugin {b.name!r} ({b.dist}): {b.error}")
    return installed, wanted, broken
