"""Resources and the per-settings pieces every stage shares: the warehouse resource and the daily partitions."""

import functools
import warnings

import dagster as dg

from ctr_dagster.settings import Home, Settings


@functools.cache
def daily_partitions(settings: Settings) -> dg.DailyPartitionsDefinition:
    """The source's days: fixed when the definitions are built (a new profile is a new code location)."""
    from ctr_dagster.sources import Source

    start, end = Source(settings).partition_window()
    return dg.DailyPartitionsDefinition(start_date=start, end_date=end)


def daily_check(
    name: str,
    asset: str,
    description: str,
    partitions: dg.PartitionsDefinition,
    blocking: bool = False,
) -> dg.AssetCheckSpec:
    """A check evaluated per daily partition (so the UI shows its result per day).

    Partitioned check specs are a Dagster preview feature (1.13); we rely on it knowingly and keep
    its warning out of every process that loads the code location.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.PreviewWarning)
        return dg.AssetCheckSpec(
            name, asset=asset, description=description, blocking=blocking, partitions_def=partitions
        )


class WarehouseResource(dg.ConfigurableResource):
    """Where every asset reads and writes: the Parquet warehouse and the rest of the project home.

    `home` is `Settings.data_home` (``$CTR_HOME``, default ./.ctr_home; imported logs get a folder per
    mapping under it), set when the definitions are built. `warehouse` is `Settings.data_warehouse`
    (``$CTR_WAREHOUSE``: ``s3://bucket/prefix`` or a local folder); empty: ``<home>/warehouse``.
    """

    home: str
    warehouse: str = ""

    @classmethod
    def for_settings(cls, settings: Settings) -> "WarehouseResource":
        return cls(home=str(settings.data_home), warehouse=settings.data_warehouse or "")

    @property
    def ctr_home(self) -> Home:
        """The folders under the home: artifacts, champion, evaluation, caches, reports, ...; and
        where the tables are (`Home.warehouse`)."""
        from pathlib import Path

        return Home(Path(self.home), self.warehouse or None)

    def get(self):
        """The `ctr_dagster.warehouse.Warehouse` (an `ObjectStoreWarehouse` for ``s3://``; imported
        here: pyarrow loads only when a step runs)."""
        return self.ctr_home.open_warehouse()
