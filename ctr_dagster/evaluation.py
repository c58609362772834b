"""The evaluation: rank every fresh model on the test split, list the ones that are not, and measure
the current champion on the same rows, so the gate compares like with like.

A model is *ranked* when its latest training succeeded on the current ``training_dataset`` (same
file hash) and its predictions cover every test row. Otherwise it is *listed*, never silently
dropped: ``failed`` (its training raised; the error is shown), ``stale`` (trained on an older
dataset), ``not_trained``; and plugins that could not even be loaded are listed as ``broken``. One
bad plugin therefore never hides the leaderboard.

The result is one JSON document (`evaluate`), kept as ``<home>/evaluation/latest.json`` and in
a dated history; `ctr leaderboard` and the Dagster asset both read it.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ctr_dagster import atomic, metrics
from ctr_dagster.champion import ChampionStore, GatePolicy
from ctr_dagster.modeling import read_status
from ctr_dagster.registry import PluginInfo, Registry
from ctr_dagster.reproducibility import file_sha256
from ctr_dagster.settings import Home
from ctr_dagster.warehouse import Warehouse

#: Metrics of every ranked model that the leaderboard shows and Dagster plots over time.
RANKED_METRICS = ("auc", "gauc", "logloss", "ece", "oracle_gap")
#: Columns of the leaderboard table, in display order (the JSON rows carry more).
LEADERBOARD_COLUMNS = ["rank", "model", "task", *RANKED_METRICS, "auc_new_items", "auc_new_users", "status"]


def display(value: Any) -> Any:
    """A leaderboard cell: floats to 4 decimals, missing values as an en dash."""
    return f"{value:.4f}" if isinstance(value, float) else ("–" if value is None else value)


def latest(home: Home) -> dict[str, Any] | None:
    """The latest evaluation document as saved (None before the first evaluation)."""
    path = home.evaluation / "latest.json"
    return json.loads(path.read_text()) if path.exists() else None


def _test_split(dataset: pa.Table) -> pa.Table:
    return dataset.filter(pc.equal(dataset.column("split"), "test"))


def _aligned(test: pa.Table, ids: pa.Array, values: pa.Array, what: str) -> np.ndarray:
    """`values` reordered to the test rows; raises when any test row has no value."""
    scores, missing = metrics.scores_for(test, ids, values)
    if missing:
        raise LookupError(f"{what} has no score for {missing} of {test.num_rows} test rows")
    return scores


def _metrics_row(test: pa.Table, scores: np.ndarray) -> dict[str, Any]:
    found = metrics.score_metrics(test, scores)
    found.pop("calibration", None)
    return found


#: Why a leaderboard has no ceiling row, by source kind.
NO_ORACLE = {
    "import": "no oracle: imported logs carry no true click probabilities, so there is no ceiling "
    "(AUC of the truth) to measure models against; the ceiling row exists for the synthetic world only",
    "synthetic": "no oracle rows for the test days (oracle_impressions not materialized for them)",
}


def _oracle_scores(wh: Warehouse, test: pa.Table) -> np.ndarray | None:
    """The true p_click of every test row, or None when the data has no oracle (imported logs write
    no oracle partition; an empty partition counts as none)."""
    days = sorted(set(pc.strftime(test.column("ts"), format="%Y-%m-%d").to_pylist()))
    if not days or not all(wh.exists("oracle_impressions", d) for d in days):
        return None
    oracle = wh.read("oracle_impressions", days)
    if oracle.num_rows == 0:
        return None
    return _aligned(test, oracle.column("impression_id"), oracle.column("p_click"), "oracle_impressions")


def _model_scores(wh: Warehouse, name: str, test: pa.Table) -> np.ndarray:
    table = wh.read(f"predictions_{name}")
    table = table.filter(pc.equal(table.column("split"), "test"))
    return _aligned(test, table.column("impression_id"), table.column("score"), f"predictions_{name}")


def _champion_baseline(
    current: dict[str, Any] | None,
    ranked: list[dict[str, Any]],
    registry: Registry,
    test: pa.Table,
    log: Callable[[str], None],
) -> dict[str, Any] | None:
    """The current champion's metrics on this test split (re-scored from its artifact if needed)."""
    if current is None:
        return None
    for row in ranked:
        if row.get("artifact") == current.get("artifact"):
            return {
                "name": row["name"],
                "artifact": row["artifact"],
                "auc": row["auc"],
                "slices": row["slices"],
            }
    loader = current.get("plugin") or current["name"]
    plugin = next((p for p in registry.good("model") if p.name == loader), None)
    artifact = Path(current.get("artifact") or "")
    if plugin is None or not artifact.is_dir():
        log(
            f"champion {current['name']} cannot be re-scored: plugin installed={plugin is not None}, "
            f"artifact present={artifact.is_dir()}"
        )
        return None
    model = plugin.cls.load(artifact)
    scores = np.asarray(model.predict(test), dtype=np.float64)
    found = _metrics_row(test, scores)
    log(f"champion {current['name']} re-scored from {artifact}: test AUC {found['auc']}")
    return {
        "name": current["name"],
        "artifact": str(artifact),
        "auc": found["auc"],
        "slices": found["slices"],
    }


def leaderboard_entries(registry: Registry) -> list[tuple[str, PluginInfo, str]]:
    """(entry name, plugin, kind) of everything that can be ranked: each model, each distilled student."""
    from ctr_dagster import distillation

    entries = [(p.name, p, "model") for p in registry.good("model")]
    entries += [(distillation.entry_name(s.name), s, "distilled") for s, _ in distillation.students(registry)]
    return entries


def _variant(plugin: PluginInfo, kind: str) -> dict[str, str]:
    """What this entry is an ablation of: a plugin's `variant_of`/`variant` class attributes (e.g. the
    same GBDT with item embeddings), or, for a distilled student, the same student trained alone."""
    if kind == "distilled":
        return {"variant_of": plugin.name, "variant": f"distilled from {plugin.cls.teacher}"}
    base = getattr(plugin.cls, "variant_of", None)
    return {"variant_of": base, "variant": getattr(plugin.cls, "variant", None) or "variant"} if base else {}


def comparisons(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """Each ranked variant beside the entry it modifies: AUC/GAUC/logloss with and without, and the lift."""
    by_name = {r["name"]: r for r in doc["models"]}
    rows = []
    for r in doc["models"]:
        base = by_name.get(r.get("variant_of") or "")
        if base is None or r["auc"] is None or base["auc"] is None:
            continue
        rows.append(
            {
                "model": r["name"],
                "what": r["variant"],
                "baseline": base["name"],
                "auc": r["auc"],
                "baseline_auc": base["auc"],
                "auc_lift": r["auc"] - base["auc"],
                "gauc_lift": None if None in (r["gauc"], base["gauc"]) else r["gauc"] - base["gauc"],
                "logloss_change": r["logloss"] - base["logloss"],
            }
        )
    return rows


COMPARISON_COLUMNS = [
    "model",
    "what",
    "baseline",
    "auc",
    "baseline_auc",
    "auc_lift",
    "gauc_lift",
    "logloss_change",
]


def evaluate(
    wh: Warehouse,
    home: Home,
    registry: Registry,
    *,
    policy: GatePolicy | None = None,
    profile: str | None = None,
    data: str | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Score every model's test predictions and assemble the evaluation document.

    `home` holds the models' statuses and the champion; `profile` (the synthetic profile, or
    "import") and `data` (a one-line description of the source) say which data was judged.
    """
    policy = policy or GatePolicy()
    store = ChampionStore(home.champion)
    dataset_path = wh.path("training_dataset")
    data_sha = file_sha256(dataset_path)
    test = _test_split(wh.read("training_dataset"))
    if test.num_rows == 0:
        raise ValueError(f"{dataset_path} has no test rows: nothing to evaluate")
    labels = test.column("label").to_numpy()

    oracle_scores = _oracle_scores(wh, test)
    oracle = _metrics_row(test, oracle_scores) if oracle_scores is not None else None
    curves: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    ranked: list[dict[str, Any]] = []
    unranked: list[dict[str, Any]] = []
    for name, plugin, kind in leaderboard_entries(registry):
        status = read_status(home, name)
        base = {
            "name": name,
            "plugin": plugin.name,
            "kind": kind,
            "task": plugin.cls.task,
            "distribution": plugin.dist,
            **_variant(plugin, kind),
        }
        if status is None:
            unranked.append({**base, "status": "not_trained", "error": "no training has run yet"})
            continue
        if status["status"] != "ok":
            unranked.append(
                {**base, "status": "failed", "error": status.get("error"), "run_id": status.get("run_id")}
            )
            continue
        if status.get("data_sha256") != data_sha:
            unranked.append(
                {
                    **base,
                    "status": "stale",
                    "error": "trained on an older training_dataset; retrain it",
                    "artifact": status.get("artifact"),
                }
            )
            continue
        try:
            scores = _model_scores(wh, name, test)
        except (LookupError, FileNotFoundError) as exc:
            unranked.append({**base, "status": "failed", "error": str(exc)})
            continue
        row = {
            **base,
            "status": "ok",
            **_metrics_row(test, scores),
            "artifact": status.get("artifact"),
            "record": status.get("record"),
        }
        if oracle is not None and row["auc"] is not None:
            row["oracle_gap"] = oracle["auc"] - row["auc"]
        ranked.append(row)
        curves[name] = (labels, scores)
        log(
            f"{name}: AUC {row['auc']:.4f} GAUC {row['gauc']} logloss {row['logloss']:.4f} ECE {row['ece']:.4f}"
        )
    for plugin in registry.broken_of("model"):
        unranked.append(
            {
                "name": plugin.name,
                "task": None,
                "distribution": plugin.dist,
                "status": "broken",
                "error": plugin.error,
            }
        )

    ranked.sort(key=lambda r: -(r["auc"] if r["auc"] is not None else -1.0))
    for rank, row in enumerate(ranked, 1):
        row["rank"] = rank
    ctr_rows = [r for r in ranked if r["task"] == "ctr" and r["auc"] is not None]
    current = store.current()
    doc: dict[str, Any] = {
        "evaluated_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "profile": profile,
        "data": data,
        "split": "test",
        "dataset": {
            "path": str(dataset_path),
            "sha256": data_sha,
            "test_rows": test.num_rows,
            "test_positives": int(labels.sum()),
        },
        "gauc_weighting": "impressions per user; users with a single class skipped",
        "models": ranked,
        "unranked": unranked,
        "oracle": oracle,
        "oracle_note": None
        if oracle is not None
        else NO_ORACLE["import" if profile == "import" else "synthetic"],
        "candidate": _candidate(ctr_rows[0]) if ctr_rows else None,
        "champion_baseline": _champion_baseline(current, ranked, registry, test, log),
        "champion": current and {k: v for k, v in current.items() if k != "previous"},
        "gate_policy": asdict(policy),
    }
    if oracle_scores is not None:
        curves["oracle"] = (labels, oracle_scores)
    doc["curves"] = curves  # not JSON: the caller renders and drops it
    return doc


def _candidate(row: dict[str, Any]) -> dict[str, Any]:
    keys = ("name", "plugin", "task", "artifact", "auc", "gauc", "logloss", "ece", "slices")
    return {k: row.get(k) for k in keys}


def save(doc: dict[str, Any], home: Home) -> Path:
    """Write the document as latest.json (atomically) and into the dated history; returns latest."""
    root = home.evaluation
    body = json.dumps({k: v for k, v in doc.items() if k != "curves"}, indent=2, default=_jsonable)
    stamp = doc["evaluated_at"].replace(":", "").replace("+00:00", "Z")
    atomic.write_text(root / "history" / f"{stamp}.json", body)
    return atomic.write_text(root / "latest.json", body)


def save_gate(decision: dict[str, Any], doc: dict[str, Any], home: Home) -> Path:
    """Keep the gate's latest decision beside the evaluation it judged (read by `ctr leaderboard`)."""
    gate = {"evaluated_at": doc["evaluated_at"], **decision}
    return atomic.write_json(home.evaluation / "gate.json", gate, indent=2, default=_jsonable)


def report(home: Home) -> dict[str, Any] | None:
    """The latest evaluation as `ctr leaderboard --json` prints it: the document, the current champion
    (after any promotion or rollback) and the gate decision on this evaluation, if one was made."""
    root = home.evaluation
    path = root / "latest.json"
    if not path.exists():
        return None
    doc = json.loads(path.read_text())
    current = ChampionStore(home.champion).current()
    doc["champion"] = current and {k: v for k, v in current.items() if k != "previous"}
    gate_path = root / "gate.json"
    gate = json.loads(gate_path.read_text()) if gate_path.exists() else None
    doc["gate"] = gate if gate and gate.get("evaluated_at") == doc["evaluated_at"] else None
    return doc


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def slice_rows(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """AUC per slice (user-activity buckets, new users, new items) of each ranked model and the oracle,
    with the slice's test rows in the header: where the long tail and cold start stand."""
    named = [(r["name"], r["slices"]) for r in doc["models"]]
    if doc.get("oracle"):
        named.append(("oracle", doc["oracle"]["slices"]))
    if not named:
        return []
    names = list(named[0][1])
    header = {n: f"{n} ({named[0][1][n]['rows']} rows)" for n in names}
    return [
        {"model": model, **{header[n]: display(slices[n]["auc"]) for n in names}} for model, slices in named
    ]


def leaderboard_rows(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """Flat rows for tables: ranked models, then the oracle, then the unranked with their reason."""
    rows = []
    for r in doc["models"]:
        rows.append(
            {
                "rank": r["rank"],
                "model": r["name"],
                "task": r["task"],
                **{m: r.get(m) for m in RANKED_METRICS},
                "auc_new_items": (r["slices"].get("new_items") or {}).get("auc"),
                "auc_new_users": (r["slices"].get("new_users") or {}).get("auc"),
                "status": "ok",
            }
        )
    if doc.get("oracle"):
        o = doc["oracle"]
        rows.append(
            {
                "rank": None,
                "model": "oracle (true p_click)",
                "task": "ctr",
                **{m: o.get(m) for m in RANKED_METRICS if m != "oracle_gap"},
                "oracle_gap": 0.0,
                "auc_new_items": (o["slices"].get("new_items") or {}).get("auc"),
                "auc_new_users": (o["slices"].get("new_users") or {}).get("auc"),
                "status": "ceiling",
            }
        )
    for r in doc["unranked"]:
        rows.append(
            {
                "rank": None,
                "model": r["name"],
                "task": r.get("task"),
                "status": r["status"],
                "error": r.get("error"),
            }
        )
    return rows
