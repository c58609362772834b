"""The code location: assembles every stage's assets, checks, jobs and sensors.

Built once per process (`functools.cache`): Dagster calls definition loaders several times.
"""

import functools

import dagster as dg

from assets.attributes import item_attributes
from assets.clean import clean_day
from assets.distill import distilled_assets
from assets.embeddings import item_embeddings
from assets.evaluation import champion, champion_gate, evaluation
from assets.features import training_dataset
from assets.models import model_assets
from assets.plugins import plugin_registry_asset
from assets.raw import raw_catalogue, raw_day
from assets.resources import WarehouseResource
from assets.schedules import evaluate_after_failure, evaluate_and_promote, nightly_retrain, nightly_schedule
from assets.sensors import inbox_sensor, ingest_job


@functools.cache
def build_definitions() -> dg.Definitions:
    return dg.Definitions(
        assets=[
            raw_catalogue,
            raw_day,
            clean_day,
            training_dataset,
            item_attributes,
            item_embeddings,
            plugin_registry_asset(),
            *model_assets(),
            *distilled_assets(),
            evaluation,
            champion,
        ],
        asset_checks=[champion_gate],
        jobs=[ingest_job, nightly_retrain, evaluate_and_promote],
        schedules=[nightly_schedule],
        sensors=[inbox_sensor, evaluate_after_failure],
        resources={"warehouse": WarehouseResource()},
    )


defs = build_definitions()
