"""Resources and the load-time settings every asset module shares (source, partitions, warehouse)."""

import functools

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


class WarehouseResource(dg.ConfigurableResource):
    """The Parquet warehouse; `root` empty means `$CTR_HOME/warehouse` (default ./.ctr_home)."""

    root: str = ""

    def get(self):
        """The `ctr_dagster.warehouse.Warehouse` (imported here: pyarrow loads only when a step runs)."""
        from pathlib import Path

        from ctr_dagster.warehouse import Warehouse

        return Warehouse(Path(self.root)) if self.root else Warehouse.default()
