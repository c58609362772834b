"""How many training steps of this run can execute at the same time, and so each one's thread share.

The engine's rule is `ctr_dagster.threads.share` (cores // concurrent trainings); this module gives
it the number of concurrent trainings, read from what Dagster knows about the run:

* the executor: the in-process executor (``ctr demo``, ``materialize``) runs one step at a time; the
  multiprocess executor (the UI's *Materialize all*, schedules, ``dagster job execute``) at most
  ``max_concurrent`` steps (run config, else ``DAGSTER_MULTIPROCESS_EXECUTOR_MAX_CONCURRENT``,
  else one per core, as Dagster does); another executor (Celery, k8s) runs each step on its own
  worker: counted as one;
* the run's training steps (assets of the `TRAINING_GROUPS`): no more can run at once than there are;
* concurrency pools: a pool with a limit (``deploy/dagster.postgres.yaml``: every pool at 1, so one
  torch training at a time) caps its steps.

So on 2 cores with the default executor, two LightGBM steps side by side get 1 thread each, while
one step alone in ``ctr demo`` gets both cores.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import dagster as dg

from ctr_dagster import threads

#: Asset groups whose steps train models (thread-hungry: LightGBM, torch).
TRAINING_GROUPS = frozenset({"models", "distillation"})
MULTIPROCESS = ("multiprocess", "multi_or_in_process_executor")


def executor_concurrency(context: dg.AssetExecutionContext) -> int:
    """Steps the run's executor may run at once (1 for in-process and per-worker executors)."""
    name = context.job_def.executor_def.name
    if name not in MULTIPROCESS:
        return 1
    execution = dict((context.run.run_config or {}).get("execution") or {})
    config = dict(execution.get("config") or {})
    if name == "multi_or_in_process_executor":
        if "in_process" in config:
            return 1
        config = dict(config.get("multiprocess") or {})
    limit = config.get("max_concurrent") or os.environ.get("DAGSTER_MULTIPROCESS_EXECUTOR_MAX_CONCURRENT")
    return max(1, int(limit)) if limit else threads.cpu_count()


def _pool_limits(instance: dg.DagsterInstance) -> tuple[dict[str, int], int | None]:
    """(limit per configured pool, default limit of other pools); empty when the instance has none."""
    try:
        storage = instance.event_log_storage
        limits = {p.name: int(p.limit) for p in storage.get_pool_limits() if p.limit is not None}
        default = storage.get_pool_config().default_pool_limit
        return limits, default
    except Exception:  # noqa: BLE001 - an instance without pool support: no pool caps anything
        return {}, None


def training_steps(context: dg.AssetExecutionContext) -> int:
    """Training steps of this run that can overlap, pools' limits applied."""
    graph = context.job_def.asset_layer.asset_graph
    selected = context.run.step_keys_to_execute
    if selected is None:  # the whole job: the steps of its plan
        snapshot_id = context.run.execution_plan_snapshot_id
        plan = context.instance.get_execution_plan_snapshot(snapshot_id) if snapshot_id else None
        selected = [step.key for step in plan.steps] if plan is not None else None
    counts: dict[str | None, int] = {}
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        if node.group_name not in TRAINING_GROUPS:
            continue
        if selected is not None and "__".join(key.path) not in selected:
            continue
        pool = next(iter(sorted(node.pools or ())), None)
        counts[pool] = counts.get(pool, 0) + 1
    if not counts:
        return 1
    limits, default = _pool_limits(context.instance) if any(p for p in counts) else ({}, None)
    total = 0
    for pool, n in counts.items():
        limit = limits.get(pool, default) if pool else None
        total += min(n, limit) if limit else n
    return max(1, total)


def concurrent_trainings(context: dg.AssetExecutionContext) -> int:
    """Training steps that may run at the same time as this one (this one included)."""
    return max(1, min(executor_concurrency(context), training_steps(context)))


@contextlib.contextmanager
def training_threads(context: dg.AssetExecutionContext) -> Iterator[int]:
    """Set the step's thread share (``CTR_STEP_THREADS``) for the block; yields it."""
    concurrent = concurrent_trainings(context)
    share = threads.share(concurrent)
    context.log.info(
        f"threads: {share} for this training ({threads.cpu_count()} cores / {concurrent} training "
        f"step(s) that may run at once); a plugin's own num_threads > 0 wins"
    )
    with threads.step_threads(share) as n:
        yield n
