"""Production deployment helpers: the PostgreSQL instance and Celery workers (docs/deploy.md).

The configuration itself lives in the project's ``deploy/`` folder (``dagster.postgres.yaml``,
``celery.yaml``, ``services.env``); this module gives scripts and tests the pieces around it: the
connection defaults (`PG_ENV_DEFAULTS`, the same values as ``deploy/services.env``), a fresh
``DAGSTER_HOME`` from a yaml, creating / dropping a database, starting a Celery worker process and
reading back which worker ran each step. Standard library only at import; psycopg2, celery and
dagster load inside the functions that need them.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

#: The instance's connection variables (read by deploy/dagster.postgres.yaml) and their defaults.
PG_ENV_DEFAULTS = {
    "DAGSTER_PG_HOST": "127.0.0.1",
    "DAGSTER_PG_PORT": "5432",
    "DAGSTER_PG_USER": "postgres",
    "DAGSTER_PG_PASSWORD": "",
    "DAGSTER_PG_DB": "dagster",
}
#: The Redis broker / result backend of deploy/celery.yaml unless these are set.
CELERY_ENV_DEFAULTS = {
    "CTR_CELERY_BROKER": "redis://127.0.0.1:6379/0",
    "CTR_CELERY_BACKEND": "redis://127.0.0.1:6379/1",
}
#: Metadata key of the engine event dagster-celery writes when a worker picks up a step.
_CELERY_WORKER_KEY = "Celery worker"


def service_env(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """`environ` (default: os.environ) with every unset connection variable at its default."""
    env = dict(os.environ if environ is None else environ)
    for name, value in {**PG_ENV_DEFAULTS, **CELERY_ENV_DEFAULTS}.items():
        env.setdefault(name, value)
    return env


def pg_connect(env: Mapping[str, str], db_name: str | None = None):
    """A psycopg2 connection (autocommit) to `db_name` (default: the maintenance database postgres)."""
    import psycopg2

    conn = psycopg2.connect(
        host=env["DAGSTER_PG_HOST"],
        port=int(env["DAGSTER_PG_PORT"]),
        user=env["DAGSTER_PG_USER"],
        password=env.get("DAGSTER_PG_PASSWORD") or None,
        dbname=db_name or "postgres",
        connect_timeout=5,
    )
    conn.autocommit = True
    return conn


def postgres_ready(env: Mapping[str, str]) -> str | None:
    """None when the server answers, else why not (for a skip or failure message)."""
    try:
        pg_connect(env).close()
    except Exception as exc:  # any driver error means: not usable here
        return f"PostgreSQL at {env['DAGSTER_PG_HOST']}:{env['DAGSTER_PG_PORT']} not reachable: {exc}"
    return None


def redis_ready(url: str) -> str | None:
    """None when the Redis at `url` answers PING, else why not."""
    try:
        import redis

        redis.Redis.from_url(url, socket_connect_timeout=3).ping()
    except Exception as exc:
        return f"Redis at {url} not reachable: {exc}"
    return None


def create_database(env: Mapping[str, str], name: str) -> None:
    """Create database `name` (a fresh one; the name is checked, never interpolated unchecked)."""
    _on_server(env, name, 'CREATE DATABASE "{name}"')


def drop_database(env: Mapping[str, str], name: str) -> None:
    """Drop database `name`, closing whatever sessions are still attached to it."""
    _on_server(env, name, 'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _on_server(env: Mapping[str, str], name: str, statement: str) -> None:
    """Run one server-level statement about database `name` (checked: letters, digits, underscores)."""
    if not name.replace("_", "").isalnum():
        raise ValueError(f"invalid database name {name!r}")
    conn = pg_connect(env)
    try:
        with conn.cursor() as cur:
            cur.execute(statement.format(name=name))
    finally:
        conn.close()


def instance_home(home: Path, config_yaml: Path) -> Path:
    """A DAGSTER_HOME at `home` whose dagster.yaml is `config_yaml` (copied)."""
    home.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(config_yaml, home / "dagster.yaml")
    return home


def start_celery_worker(
    name: str,
    config_yaml: Path,
    env: Mapping[str, str],
    log_file: Path,
    queue: str | None = None,
    concurrency: int = 1,
    cwd: Path | None = None,
) -> subprocess.Popen:
    """``dagster-celery worker start`` in the foreground of a new process (stop it with `stop_worker`).

    `env` must hold DAGSTER_HOME (the worker writes its Celery config there) and whatever the code
    location reads (CTR_PROFILE, CTR_HOME, ...). One process per worker, `concurrency` task slots each.
    """
    command = [
        str(Path(sys.executable).parent / "dagster-celery"),
        "worker",
        "start",
        "-A",
        "dagster_celery.app",
        "-y",
        str(config_yaml),
        "-n",
        name,
        "-l",
        "INFO",
    ]
    if queue:
        command += ["-q", queue]
    command += ["--", f"--concurrency={concurrency}", "--without-gossip", "--without-mingle"]
    # `dagster-celery worker start` execs `celery` from PATH: this interpreter's scripts first
    env = dict(env)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", os.defpath)])
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("ab") as log:
        return subprocess.Popen(
            command,
            cwd=cwd,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stopping it stops its pool children
        )


def stop_worker(process: subprocess.Popen, timeout: float = 20) -> None:
    """Warm shutdown (SIGTERM to the worker's process group), then SIGKILL if it lingers."""
    import signal

    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
    except ProcessLookupError:
        pass


def wait_for_workers(names: list[str], env: Mapping[str, str], timeout: float = 90) -> None:
    """Block until every worker in `names` answers a Celery ping on the broker of `env`
    (``CTR_CELERY_BROKER``); raises TimeoutError naming the silent ones."""
    from celery import Celery

    app = Celery("ctr-ping", broker=env["CTR_CELERY_BROKER"], backend=env["CTR_CELERY_BACKEND"])
    try:
        deadline = time.monotonic() + timeout
        answered: set[str] = set()
        while time.monotonic() < deadline:
            replies = app.control.ping(timeout=1.0) or []
            answered = {host.split("@", 1)[0] for reply in replies for host in reply}
            if set(names) <= answered:
                return
            time.sleep(0.5)
        raise TimeoutError(f"Celery workers {sorted(set(names) - answered)} did not answer within {timeout}s")
    finally:
        app.close()


def create_instance_storage(env: Mapping[str, str]) -> None:
    """Create the Dagster instance's tables (``$DAGSTER_HOME/dagster.yaml``) once, from this process,
    before several workers open it: workers that create a fresh PostgreSQL schema at the same moment
    race (``type "secondary_indexes" already exists``, seen in CI). In production the same is
    ``dagster instance migrate`` before the workers start (docs/deploy.md)."""
    home = env.get("DAGSTER_HOME")
    if not home:
        return
    import dagster as dg

    with dg.DagsterInstance.from_config(home):
        pass


@contextlib.contextmanager
def local_workers(
    count: int, config_yaml: Path, env: Mapping[str, str], log_dir: Path, queue: str, cwd: Path | None = None
) -> Iterator[list[str]]:
    """`count` Celery workers on this machine listening on `queue`, answering pings before this
    yields their names; stopped on exit. Their logs: ``<log_dir>/<name>.log``."""
    tag = queue.rsplit("-", 1)[-1]
    names = [f"ctr{i}-{tag}" for i in range(count)]
    workers = []
    create_instance_storage(env)
    try:
        for name in names:
            workers.append(
                start_celery_worker(name, config_yaml, env, log_dir / f"{name}.log", queue=queue, cwd=cwd)
            )
        wait_for_workers(names, env)
        yield names
    finally:
        for worker in workers:
            stop_worker(worker)


def celery_workers_by_step(instance: Any, run_id: str) -> dict[str, str]:
    """Step key -> the Celery worker (``name@host``) that executed it, from the run's event log."""
    out: dict[str, str] = {}
    for record in instance.all_logs(run_id):
        event = record.dagster_event
        if event is None or event.event_type_value != "ENGINE_EVENT" or not event.step_key:
            continue
        metadata = event.engine_event_data.metadata if event.engine_event_data else {}
        worker = metadata.get(_CELERY_WORKER_KEY)
        if worker is not None:
            out[event.step_key] = str(getattr(worker, "value", worker))
    return out
