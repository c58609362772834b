"""The code location: `build_definitions(settings)` assembles every stage for one `Settings`.

Dagster loads `defs` (a lazy `@dg.definitions` function: the settings come from the environment,
read once by `Settings.from_env`). The CLI and the tests call `build_definitions` with settings of
their own, in-process. Built once per settings (`functools.cache`): Dagster calls loaders many times.
"""

import functools

import dagster as dg

from assets.attributes import item_attributes
from assets.clean import clean_day_asset
from assets.distill import distilled_assets
from assets.embeddings import item_embeddings
from assets.evaluation import evaluation_assets
from assets.features import training_dataset
from assets.models import model_assets
from assets.plugins import plugin_registry_asset
from assets.raw import raw_assets
from assets.resources import WarehouseResource
from assets.schedules import evaluate_after_failure, evaluate_and_promote, nightly
from assets.sensors import inbox_sensor, ingest_job
from assets.studies import study_assets
from assets.uplift import uplift_evaluation_asset
from ctr_dagster.registry import select_models
from ctr_dagster.settings import Settings


def build_definitions(settings: Settings) -> dg.Definitions:
    """Every asset, check, job, schedule and sensor of the project for `settings` (source, profile, home,
    the selected model plugins). The model selection is applied on every call, cached or not: the
    steps that run in this process ask the same registry."""
    select_models(settings.model_names)  # before any factory asks the registry
    return _build_definitions(settings)


@functools.cache
def _build_definitions(settings: Settings) -> dg.Definitions:
    evaluation, champion_gate, champion = evaluation_assets(settings)
    nightly_retrain, nightly_schedule = nightly(settings)
    return dg.Definitions(
        assets=[
            *raw_assets(settings),
            clean_day_asset(settings),
            training_dataset,
            item_attributes,
            item_embeddings,
            plugin_registry_asset(),
            *model_assets(),
            *distilled_assets(),
            evaluation,
            champion,
            uplift_evaluation_asset(),
            *study_assets(),  # only with the opt-in ctr-suan installed
        ],
        asset_checks=[champion_gate],
        jobs=[ingest_job, nightly_retrain, evaluate_and_promote],
        schedules=[nightly_schedule],
        sensors=[inbox_sensor(settings), evaluate_after_failure],
        resources={"warehouse": WarehouseResource.for_settings(settings)},
    )


@dg.definitions
def defs() -> dg.Definitions:
    """What `dagster dev` / `make ui` load: the settings of the environment (``CTR_*``, ``DAGSTER_HOME``)."""
    return build_definitions(Settings.from_env())
