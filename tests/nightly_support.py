"""A reconstructable job for the multiprocess-executor tests of issue 22 (thread shares): two real
model assets (`lightgbm`, `baseline_lr`) that read a warehouse given in the run config. Imported by
name in the executor's step processes, so it lives in a module, not in the test."""

import dagster as dg

from assets.models import model_asset
from assets.resources import WarehouseResource
from ctr_dagster.registry import default_registry

MODELS = ("lightgbm", "baseline_lr")


def definitions() -> dg.Definitions:
    registry = default_registry()
    assets = [model_asset(registry.get("model", name)) for name in MODELS]
    return dg.Definitions(
        assets=assets,
        jobs=[dg.define_asset_job("two_models", selection=dg.AssetSelection.groups("models"))],
        resources={"warehouse": WarehouseResource.configure_at_launch()},
    )


def two_models_job() -> dg.JobDefinition:
    return definitions().resolve_job_def("two_models")
