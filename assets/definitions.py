"""The code location: assembles every stage's assets, checks, jobs and sensors.

Built once per process (`functools.cache`): Dagster calls definition loaders several times.
"""

import functools

import dagster as dg

from assets.clean import clean_day
from assets.features import training_dataset
from assets.models import model_assets
from assets.plugins import plugin_registry_asset
from assets.raw import raw_catalogue, raw_day
from assets.resources import WarehouseResource
from assets.sensors import inbox_sensor, ingest_job


@functools.cache
def build_definitions() -> dg.Definitions:
    return dg.Definitions(
        assets=[
            raw_catalogue,
            raw_day,
            clean_day,
            training_dataset,
            plugin_registry_asset(),
            *model_assets(),
        ],
        jobs=[ingest_job],
        sensors=[inbox_sensor],
        resources={"warehouse": WarehouseResource()},
    )


defs = build_definitions()
