"""The plugin registry as an asset: which plugins are installed, and which are broken and why.

Broken plugins never take the code location down; they are listed here (definition metadata, so
they show before anything is materialized) and fail this asset's warning check when materialized.
"""

import dagster as dg

from assets.metadata import inline_table
from ctr_dagster.registry import default_registry

_COLUMNS = ["kind", "name", "status", "dist", "version", "asset_key", "error"]


def plugin_registry_asset() -> dg.AssetsDefinition:
    registry = default_registry()
    rows = registry.as_rows()

    @dg.asset(
        name="plugin_registry",
        group_name="plugins",
        code_version="1",
        metadata={
            "plugins": inline_table(rows, _COLUMNS),
            "broken_count": len(registry.broken),
        },
        check_specs=[
            dg.AssetCheckSpec(
                "no_broken_plugins",
                asset="plugin_registry",
                description="Warns when an installed plugin failed to import or validate.",
            )
        ],
    )
    def plugin_registry(context: dg.AssetExecutionContext):
        """Installed model/encoder/extractor plugins (entry points), good and broken."""
        for b in registry.broken:
            context.log.warning(f"broken {b.kind} plugin {b.name!r} ({b.dist}): {b.error}")
        yield dg.MaterializeResult(
            metadata={
                "plugins": inline_table(rows, _COLUMNS),
                "good_count": len(registry.plugins),
                "broken_count": len(registry.broken),
            }
        )
        yield dg.AssetCheckResult(
            check_name="no_broken_plugins",
            passed=not registry.broken,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={"broken": inline_table([b.as_row() for b in registry.broken], _COLUMNS)},
        )

    return plugin_registry
