"""MLflow tracking of model assets (extra ``[mlflow]``), against a local sqlite tracking store:
params, metrics and the artifact logged per training, the run's link in the asset's metadata."""

from pathlib import Path

import dagster as dg
import pytest

from assets.models import model_asset
from assets.resources import WarehouseResource
from ctr_dagster import tracking
from ctr_dagster.registry import discover
from ctr_dagster.settings import Home
from ctr_dagster.testing import make_training_table
from ctr_dagster.warehouse import Warehouse
from tests.plugin_fixtures import MODELS, on_sys_path, write_dist

pytest.importorskip("mlflow")


@pytest.fixture
def plugin(tmp_path):
    root = tmp_path / "site"
    write_dist(root, "ctrfix-good", {MODELS: {"ctrfix_good": "ctrfix_good:GoodModel"}}, ("ctrfix_good",))
    with on_sys_path(root):
        yield discover(["model"], path=[root]).get("model", "ctrfix_good")


def _materialize(plugin, home: Home, **config) -> tuple[dg.ExecuteInProcessResult, dict]:
    Warehouse(home.warehouse).write("training_dataset", make_training_table(2000, seed=1))
    result = dg.materialize(
        [model_asset(plugin)],
        resources={"warehouse": WarehouseResource(home=str(home.root))},
        run_config={"ops": {"models__ctrfix_good": {"config": config}}} if config else None,
    )
    (event,) = result.get_asset_materialization_events()
    return result, {k: v.value for k, v in event.materialization.metadata.items()}


def test_without_a_tracking_store_nothing_is_logged(plugin, tmp_path, monkeypatch):
    for name in ("CTR_MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(name, raising=False)
    assert tracking.tracking_uri() is None
    _, meta = _materialize(plugin, Home(tmp_path / "home"))
    assert not any(k.startswith("mlflow") for k in meta)


def test_each_training_is_an_mlflow_run_linked_from_the_asset(plugin, tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path}/mlflow/mlflow.db"
    (tmp_path / "mlflow").mkdir()
    monkeypatch.setenv("CTR_MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("CTR_MLFLOW_EXPERIMENT", "ctr-test")
    home = Home(tmp_path / "home")
    result, meta = _materialize(plugin, home, smoothing=3.0, seed=7)

    assert meta["mlflow_run"] == f"runs:/{meta['mlflow_run_id']}"
    client = MlflowClient(tracking_uri=uri)
    run = client.get_run(meta["mlflow_run_id"])
    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.name == "ctr-test"
    # params: the plugin's config and the engine's seed; metrics: the asset's numbers
    assert run.data.params["smoothing"] == "3.0" and run.data.params["seed"] == "7"
    assert run.data.params["data_sha256"] == meta["data_sha256"]
    assert run.data.metrics["valid_auc"] == pytest.approx(meta["valid_auc"])
    assert run.data.metrics["test_auc"] == pytest.approx(meta["test_auc"])
    assert run.data.tags["dagster.run_id"] == result.run_id and run.data.tags["ctr.model"] == "ctrfix_good"
    # the artifact (every file of the content-addressed folder) and the reproducibility record
    artifact = Path(meta["artifact"])
    logged = {f.path for f in client.list_artifacts(run.info.run_id, "model")}
    assert logged == {f"model/{p.name}" for p in artifact.iterdir()}
    assert [f.path for f in client.list_artifacts(run.info.run_id, "record")] == [
        f"record/{Path(meta['record']).name}"
    ]
    # a local store keeps its artifacts beside its database, not in the worker's current directory
    assert meta["mlflow_artifacts"].startswith((tmp_path / "mlflow" / "mlartifacts").as_uri())

    # a second training is a second run in the same experiment
    _, again = _materialize(plugin, home, smoothing=30.0)
    assert again["mlflow_run_id"] != meta["mlflow_run_id"]
    assert len(client.search_runs([run.info.experiment_id])) == 2


def test_a_tracking_server_that_is_down_does_not_fail_the_model(plugin, tmp_path, monkeypatch):
    monkeypatch.setenv("CTR_MLFLOW_TRACKING_URI", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    result, meta = _materialize(plugin, Home(tmp_path / "home"))
    assert result.success and "mlflow_error" in meta and "mlflow_run" not in meta
    assert meta["test_auc"] > 0.5


def test_a_server_run_links_to_its_page():
    link = tracking.run_link("https://mlflow.example.org/", "3", "abc")
    assert link == "https://mlflow.example.org/#/experiments/3/runs/abc"
