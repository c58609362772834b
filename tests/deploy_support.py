"""Shared pieces of the deployment tests (PostgreSQL instance, Celery workers): service checks and
a fresh database per test, dropped afterwards.

Without a reachable PostgreSQL / Redis these tests skip with the reason, unless
``CTR_REQUIRE_SERVICES=1`` (set by `.ci/run`, which starts both): then a missing service fails them.
"""

import os
import uuid
from pathlib import Path

import pytest

from ctr_dagster import deploy

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"


def require(problem: str | None) -> None:
    """Skip (or fail, under CTR_REQUIRE_SERVICES=1) when a service check reported a problem."""
    if problem is None:
        return
    if os.environ.get("CTR_REQUIRE_SERVICES", "").lower() in ("1", "true", "yes"):
        pytest.fail(problem)
    pytest.skip(problem)


@pytest.fixture
def pg_env(tmp_path):
    """The deployment's environment (defaults filled in) pointing at a fresh database, dropped at
    the end; DAGSTER_HOME is a folder under tmp_path holding deploy/dagster.postgres.yaml."""
    env = deploy.service_env()
    require(deploy.postgres_ready(env))
    name = f"ctr_test_{uuid.uuid4().hex[:12]}"
    deploy.create_database(env, name)
    home = deploy.instance_home(tmp_path / "dagster_home", DEPLOY / "dagster.postgres.yaml")
    env.update({"DAGSTER_PG_DB": name, "DAGSTER_HOME": str(home)})
    try:
        yield env
    finally:
        deploy.drop_database(env, name)
