"""Wall time of the whole `tiny` graph on Celery workers (PostgreSQL instance, Redis broker) with one
and with two worker processes, and in-process for reference -> benchmarks/results/celery.json.

Needs the services of deploy/services.env (PostgreSQL, Redis). Each variant gets a fresh database,
project home and queue. Every stage is one run, as `make scale-test` does (assets/scale_out.py).
Usage: python benchmarks/bench_celery.py [PROFILE] [--no-in-process]
"""

import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

from common import write_result

ROOT = Path(__file__).resolve().parents[1]


def on_celery(profile: str, workers: int) -> dict[str, object]:
    import dagster as dg

    from ctr_dagster import deploy
    from ctr_dagster.code_location import load_code_location
    from ctr_dagster.settings import Settings

    scale_out = load_code_location(ROOT, "scale_out")
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        env = deploy.service_env()
        for problem in (deploy.postgres_ready(env), deploy.redis_ready(env["CTR_CELERY_BROKER"])):
            if problem:
                raise SystemExit(problem)
        db = f"ctr_bench_{uuid.uuid4().hex[:10]}"
        deploy.create_database(env, db)
        settings = Settings(profile=profile, home=tmp_path / "ctr_home")
        home = deploy.instance_home(tmp_path / "dagster_home", ROOT / "deploy/dagster.postgres.yaml")
        env.update({"DAGSTER_PG_DB": db, "DAGSTER_HOME": str(home), "PYTHONPATH": str(ROOT)})
        env.update(settings.as_env())
        saved = dict(os.environ)
        os.environ.update(env)
        queue = f"ctr-bench-{uuid.uuid4().hex[:8]}"
        try:
            started = time.perf_counter()
            with deploy.local_workers(workers, ROOT / "deploy/celery.yaml", env, tmp_path, queue, cwd=ROOT):
                ready = time.perf_counter() - started
                with dg.DagsterInstance.from_config(str(home)) as instance:
                    began = time.perf_counter()
                    runs = scale_out.materialize_on_celery(
                        settings, instance, queue=queue, log=lambda s: print(s, flush=True)
                    )
                    graph_s = time.perf_counter() - began
                    steps = {
                        s.step_key: round((s.end_time or 0) - (s.start_time or 0), 2)
                        for r in runs
                        for s in instance.get_run_step_stats(r["run_id"])
                    }
                    used = {
                        w for r in runs for w in deploy.celery_workers_by_step(instance, r["run_id"]).values()
                    }
        finally:
            os.environ.clear()
            os.environ.update(saved)
            deploy.drop_database(env, db)
    return {
        "workers": workers,
        "load_avg_1m_after": round(os.getloadavg()[0], 2),  # other processes on the machine skew it
        "graph_wall_s": round(graph_s, 1),
        "workers_ready_s": round(ready, 1),
        "all_runs_succeeded": all(r["success"] for r in runs),
        "workers_that_ran_steps": len(used),
        "stages_s": {r["label"]: round(r["seconds"], 1) for r in runs},
        "steps_s": steps,
    }


def in_process(profile: str) -> dict[str, object]:
    from ctr_dagster.code_location import load_code_location
    from ctr_dagster.settings import Settings

    run = load_code_location(ROOT, "run")
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(profile=profile, home=Path(tmp) / "ctr", dagster_home=Path(tmp) / "dagster")
        began = time.perf_counter()
        timings = run.materialize_all(settings, log=lambda s: print(s, flush=True))
        return {
            "graph_wall_s": round(time.perf_counter() - began, 1),
            "load_avg_1m_after": round(os.getloadavg()[0], 2),
            "stages_s": timings,
        }


def main() -> None:
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    profile = args[0] if args else "tiny"
    figures: dict[str, object] = {"profile": profile}
    for workers in (1, 2):
        print(f"== {workers} Celery worker(s)", flush=True)
        figures[f"celery_{workers}_worker"] = on_celery(profile, workers)
    if "--no-in-process" not in sys.argv:
        print("== in-process (assets.run.materialize_all)", flush=True)
        figures["in_process"] = in_process(profile)
    figures["note"] = (
        "torch trainings share the pool 'torch' limited to 1 by deploy/dagster.postgres.yaml (one per "
        "machine), so the second worker overlaps them only with non-torch steps; 2 CPU cores in all"
    )
    write_result("celery", figures)


if __name__ == "__main__":
    main()
