"""Resources and the load-time settings every asset module shares (source, partitions, warehouse)."""

import functools
import warnings

import dagster as dg

from ctr_dagster.sources import SourceSettings


@functools.cache
def settings() -> SourceSettings:
    """Read once per process: the daily partitions are fixed when the code location loads."""
    return SourceSettings.from_env()


@functools.cache
def daily_partitions() -> dg.DailyPartitionsDefinition:
    start, end = settings().partition_window()
    return dg.DailyPartitionsDefinition(start_date=start, end_date=end)


def daily_check(name: str, asset: str, description: str, blocking: bool = False) -> dg.AssetCheckSpec:
    """A check evaluated per daily partition (so the UI shows its result per day).

    Partitioned check specs are a Dagster preview feature (1.13); we rely on it knowingly and keep
    its warning out of every process that loads the code location.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.PreviewWarning)
        return dg.AssetCheckSpec(
            name, asset=asset, description=description, blocking=blocking, partitions_def=daily_partitions()
        )


class WarehouseResource(dg.ConfigurableResource):
    """The Parquet warehouse; `root` empty means `$CTR_HOME/warehouse` (default ./.ctr_home)."""

    root: str = ""

    def get(self):
        """The `ctr_dagster.warehouse.Warehouse` (imported here: pyarrow loads only when a step runs)."""
        from pathlib import Path

        from ctr_dagster.warehouse import Warehouse

        return Warehouse(Path(self.root)) if self.root else Warehouse.default()
