"""Experiment tracking (optional extra ``ctr-dagster[mlflow]``): each model training as an MLflow run.

Off unless a tracking store is configured in the process that trains (the Dagster step: a run
worker or a Celery worker), like the AWS or database variables of a deployment:

| variable | meaning |
|---|---|
| ``CTR_MLFLOW_TRACKING_URI`` (else ``MLFLOW_TRACKING_URI``) | ``http(s)://`` server, or a local store such as ``sqlite:////path/mlflow.db`` |
| ``CTR_MLFLOW_EXPERIMENT`` | experiment name (default ``ctr-dagster``) |

`log_training` writes the plugin's config and the engine's fields as params, the scores and cost
figures as metrics, the artifact folder and the reproducibility record as artifacts, and returns
what the asset shows: the run's id and link. A tracking failure (server down) is logged and
reported in the metadata, never fails the training: the model is already stored.
MLflow is imported only when a store is configured (`mlflow-skinny` suffices: the client API).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

DEFAULT_EXPERIMENT = "ctr-dagster"
_MAX_PARAM = 6000  # MLflow's limit on a param value


def tracking_uri(environ: Mapping[str, str] | None = None) -> str | None:
    """The configured tracking store, or None (tracking off)."""
    env = os.environ if environ is None else environ
    return (env.get("CTR_MLFLOW_TRACKING_URI") or env.get("MLFLOW_TRACKING_URI") or "").strip() or None


def run_link(uri: str, experiment_id: str, run_id: str) -> str:
    """Where to look at the run: the server's run page, or ``runs:/<id>`` for a local store."""
    if uri.startswith(("http://", "https://")):
        return f"{uri.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"
    return f"runs:/{run_id}"


def _artifact_location(uri: str, experiment: str) -> str | None:
    """A local store's artifacts beside its database (MLflow would use ./mlruns of the current
    directory, which differs between workers); None lets a server decide."""
    if uri.startswith("sqlite:///"):
        database = Path(uri.removeprefix("sqlite:///"))
        return (database.parent / "mlartifacts" / experiment).resolve().as_uri()
    return None


def _experiment_id(client: Any, uri: str, name: str) -> str:
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    try:
        return client.create_experiment(name, artifact_location=_artifact_location(uri, name))
    except Exception:  # created meanwhile by a parallel step
        found = client.get_experiment_by_name(name)
        if found is None:
            raise
        return found.experiment_id


def _flat(prefix: str, value: Any, out: dict[str, Any]) -> None:
    if isinstance(value, Mapping):
        for key, item in value.items():
            _flat(f"{prefix}.{key}" if prefix else str(key), item, out)
    else:
        out[prefix] = value


def log_training(
    model: str,
    result: Any,
    *,
    dagster_run_id: str | None = None,
    extra_params: Mapping[str, Any] | None = None,
    log: Callable[[str], None] = print,
    environ: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Log one training (`ctr_dagster.modeling.TrainResult`) to MLflow; returns the asset metadata
    (``mlflow_run``: link, ``mlflow_run_id``, ``mlflow_artifacts``), or {} when tracking is off."""
    uri = tracking_uri(environ)
    if uri is None:
        return {}
    env = os.environ if environ is None else environ
    experiment = env.get("CTR_MLFLOW_EXPERIMENT") or DEFAULT_EXPERIMENT
    try:
        from mlflow.entities import Metric, Param
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=uri)
        experiment_id = _experiment_id(client, uri, experiment)
        tags = {"ctr.model": model, "ctr.artifact_sha": Path(result.artifact_dir).name}
        if dagster_run_id:
            tags["dagster.run_id"] = dagster_run_id
        run = client.create_run(experiment_id, run_name=model, tags=tags)
        run_id = run.info.run_id
        params: dict[str, Any] = {}
        _flat("", dict(result.config), params)
        _flat("", dict(extra_params or {}), params)
        if result.record:
            params["seed"] = result.record.get("seed")
            params["data_sha256"] = result.record.get("data", {}).get("sha256")
            params["code_sha256"] = result.record.get("code", {}).get("sha256")
        now = int(time.time() * 1000)
        numbers = {k: v for k, v in result.metadata().items() if isinstance(v, int | float) and k != "seed"}
        metrics = [Metric(k, float(v), now, 0) for k, v in sorted(numbers.items()) if v == v]  # no NaN
        client.log_batch(
            run_id,
            metrics=metrics,
            params=[Param(k, str(v)[:_MAX_PARAM]) for k, v in sorted(params.items())],
        )
        client.log_artifacts(run_id, str(result.artifact_dir), artifact_path="model")
        if result.record_path and Path(result.record_path).is_file():
            client.log_artifact(run_id, str(result.record_path), artifact_path="record")
        client.set_terminated(run_id)
        artifacts = client.get_run(run_id).info.artifact_uri
    except Exception as exc:  # tracking is a side channel: the trained model stands
        log(f"MLflow tracking at {uri} failed ({type(exc).__name__}: {exc}); the model is stored regardless")
        return {"mlflow_error": f"{type(exc).__name__}: {exc}"[:500]}
    link = run_link(uri, experiment_id, run_id)
    log(f"MLflow: logged {model} as run {run_id} in experiment {experiment!r} ({link})")
    return {"mlflow_run": link, "mlflow_run_id": run_id, "mlflow_artifacts": artifacts}
