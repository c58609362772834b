"""The uplift evaluation of the lineage: every trained uplift model on the dataset's test split.

The Dagster-free half of the `uplift_evaluation` asset (and of `ctr leaderboard --json`'s "uplift"):
loads each uplift plugin's latest artifact (`models/<name>/status.json`, the same record the CTR
evaluation reads), refuses one trained on an older dataset, aligns the synthetic world's oracle (true
effect of every arm) when the data has one, scores per arm x chain stage (`evaluate.evaluate_uplift`)
and keeps the document as `<home>/uplift/latest.json`.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from ctr_dagster import atomic
from ctr_dagster.registry import PluginInfo, Registry
from ctr_dagster.settings import Home
from ctr_dagster.warehouse import Warehouse


def uplift_plugins(registry: Registry) -> list[PluginInfo]:
    """The installed model plugins whose task is uplift (their own leaderboard, never the CTR one)."""
    return [p for p in registry.good("model") if p.cls.task == "uplift"]


def _oracle(wh: Warehouse, test: pa.Table) -> dict[str, Any] | None:
    """The per-arm true probabilities of the test rows (synthetic world), or None (imported logs)."""
    from ctr_dagster.uplift.evaluate import oracle_for

    days = sorted(set(pc.strftime(test.column("ts"), format="%Y-%m-%d").to_pylist()))
    if not days or not all(wh.exists("oracle_impressions", d) for d in days):
        return None
    table = wh.read("oracle_impressions", days)
    return oracle_for(test, table) if table.num_rows else None


#: The bootstrap's cluster in the lineage: the user (rows of one user are not independent draws).
USER_CLUSTER = "user_id"


def evaluate_trained(
    wh: Warehouse, home: Home, registry: Registry, log: Callable[[str], None] = print
) -> tuple[dict[str, Any], Any]:
    """(the JSON document, the `UpliftReport` with its curves) for every trained uplift model."""
    from ctr_dagster.modeling import read_status
    from ctr_dagster.uplift.evaluate import evaluate_uplift

    dataset_path = wh.path("training_dataset")
    data_sha = wh.content_sha256("training_dataset")
    dataset = wh.read("training_dataset")
    test = dataset.filter(pc.equal(dataset.column("split"), "test"))
    models: dict[str, Any] = {}
    unranked: list[dict[str, Any]] = []
    for plugin in uplift_plugins(registry):
        status = read_status(home, plugin.name)
        if status is None or status.get("status") != "ok":
            if status is None:
                state, reason = "not_trained", "no training has run yet"
            elif status.get("status") == "skipped":  # not applicable to this data (no treatment arms)
                state, reason = "skipped", status.get("reason") or "not applicable to this data"
            else:
                state, reason = "failed", status.get("error") or "training failed"
            unranked.append({"model": plugin.name, "status": state, "error": reason})
            continue
        if status.get("data_sha256") != data_sha:
            unranked.append(
                {"model": plugin.name, "status": "stale", "error": "trained on an older training_dataset"}
            )
            continue
        models[plugin.name] = plugin.cls.load(Path(status["artifact"]))
    oracle = _oracle(wh, test)
    log(
        f"uplift evaluation: {len(models)} model(s) on {test.num_rows} test rows, oracle {'yes' if oracle else 'no'}"
    )
    # a user's impressions (and a request's slate, which shares its arm) are correlated: resample users
    report = evaluate_uplift(models, test, oracle, cluster_column=USER_CLUSTER)
    for name, error in report.failed.items():
        unranked.append({"model": name, "status": "failed", "error": error})
    doc = {
        "evaluated_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "dataset": {"path": str(dataset_path), "sha256": data_sha, "test_rows": test.num_rows},
        **report.as_json(),
        "unranked": unranked,
    }
    return doc, report


def save(doc: dict[str, Any], home: Home) -> Path:
    """`<home>/uplift/latest.json`, written atomically."""
    return atomic.write_text(home.root / "uplift" / "latest.json", json.dumps(doc, indent=2, default=str))


def latest(home: Home) -> dict[str, Any] | None:
    """The latest uplift evaluation document, or None before the first one."""
    path = home.root / "uplift" / "latest.json"
    return json.loads(path.read_text()) if path.exists() else None


def summary_rows(doc: dict[str, Any], stage: str) -> list[dict[str, Any]]:
    """One row per model x arm of `stage`: AUUC and Qini with their intervals, and the verdict."""

    def cell(row: dict[str, Any], metric: str) -> str:
        value, low, high = row.get(metric), row.get(f"{metric}_low"), row.get(f"{metric}_high")
        if value is None:
            return "–"
        return f"{value:+.3f}" + (
            f" [{low:+.3f}, {high:+.3f}]" if low is not None and high is not None else ""
        )

    return [
        {
            "model": r["model"],
            "arm": r["arm"],
            "AUUC": cell(r, "auuc"),
            "Qini": cell(r, "qini"),
            "verdict": r["verdict"],
        }
        for r in doc["rows"]
        if r["stage"] == stage
    ]
