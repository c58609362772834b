"""Scale-out (docs/deploy.md): two Celery worker processes on a Redis broker, the instance on
PostgreSQL, the `tiny` graph materialized through them stage by stage (`make scale-test`).

To stay within a few minutes on 2 cores the model stage is a subset that still trains models of
both kinds: `baseline_lr` (numpy), `lightgbm` and the torch `din_student` (in the torch pool); the
enrichment stage (text/image encoders, attribute extraction) is left out.
`benchmarks/bench_celery.py` runs the whole graph with one and with two workers.
"""

import uuid

import dagster as dg
import pytest

from ctr_dagster import deploy
from ctr_dagster.settings import Settings
from tests.deploy_support import DEPLOY, ROOT, pg_env, require  # noqa: F401  (fixture)

pytestmark = [
    pytest.mark.scale,
    pytest.mark.integration,
    pytest.mark.timeout(900),
    # dagster-celery registers its task once per submission; Celery warns each time (harmless)
    pytest.mark.filterwarnings("ignore::celery.exceptions.DuplicateTaskNameWarning"),
]
MODELS = ["models/baseline_lr", "models/lightgbm", "models/din_student"]
WORKERS = 2


@pytest.fixture
def cluster(pg_env, tmp_path, monkeypatch):  # noqa: F811
    """(settings, instance, queue, worker names, env): two started workers listening on a queue of
    this test's own, so parallel test sessions on the same Redis never take each other's steps."""
    require(deploy.redis_ready(pg_env["CTR_CELERY_BROKER"]))
    settings = Settings(profile="tiny", home=tmp_path / "ctr_home")
    env = {**pg_env, **settings.as_env(), "PYTHONPATH": str(ROOT)}
    for name in ("CTR_MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_URI"):  # no tracking from the workers
        env.pop(name, None)
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():  # this process orchestrates: same settings and instance
        monkeypatch.setenv(name, value)
    queue = f"ctr-test-{uuid.uuid4().hex[:8]}"
    try:
        with (
            deploy.local_workers(WORKERS, DEPLOY / "celery.yaml", env, tmp_path, queue, cwd=ROOT) as names,
            dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance,
        ):
            yield settings, instance, queue, names
    except BaseException:
        for log in sorted(tmp_path.glob("*.log")):
            print(f"--- {log} (tail)\n" + "\n".join(log.read_text(errors="replace").splitlines()[-40:]))
        raise


def test_two_celery_workers_materialize_the_tiny_graph(cluster):
    from dagster._core.execution.stats import StepEventStatus

    from assets.scale_out import materialize_on_celery
    from ctr_dagster.evaluation import report

    settings, instance, queue, names = cluster
    runs = materialize_on_celery(settings, instance, queue=queue, models=MODELS, enrichment=False)
    assert len(runs) == 1 + 6 + 1 + 1 + 1  # catalogue, the tiny world's 6 days, dataset, models, evaluation
    failed = [r["label"] for r in runs if not r["success"]]
    assert not failed, f"runs failed: {failed}"

    workers_used: set[str] = set()
    for record in runs:
        steps = instance.get_run_step_stats(record["run_id"])
        assert steps and all(s.status == StepEventStatus.SUCCESS for s in steps), record["label"]
        ran_on = deploy.celery_workers_by_step(instance, record["run_id"])
        # every step of every run was executed by one of this test's Celery workers
        assert set(ran_on) == {s.step_key for s in steps}, record["label"]
        workers_used |= {worker.split("@", 1)[0] for worker in ran_on.values()}
    assert workers_used == set(names), f"steps ran on {sorted(workers_used)}, expected both of {names}"

    # the graph is complete: the evaluation ranked the models trained on the workers
    doc = report(settings.ctr_home)
    assert {m.split("/", 1)[1] for m in MODELS} <= {row["name"] for row in doc["models"]}
    assert instance.get_latest_materialization_event(dg.AssetKey("champion")) is not None
