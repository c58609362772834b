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

from ctr_dagster import atomic, mechanisms, metrics, significance
from ctr_dagster.champion import ChampionStore, GatePolicy
from ctr_dagster.model_cost import cost_row
from ctr_dagster.modeling import features_only, read_status
from ctr_dagster.registry import PluginInfo, Registry, default_registry
from ctr_dagster.settings import Home
from ctr_dagster.warehouse import Warehouse

#: Metrics of every ranked model that the leaderboard shows and Dagster plots over time.
RANKED_METRICS = ("auc", "gauc", "logloss", "ece", "oracle_gap")
#: Columns of the leaderboard table, in display order (the JSON rows carry more).
LEADERBOARD_COLUMNS = [
    "rank",
    "model",
    "task",
    "valid_auc",
    "auc",
    "auc_95ci",
    "vs_champion",
    *RANKED_METRICS[1:],
    "auc_new_items",
    "auc_new_users",
    "status",
]


#: The UI's first table: what fits a laptop screen (the rest is in `DETAIL_COLUMNS`).
#: The UI's first two tables, side by side in content and each narrow enough for the value column of
#: Dagster's asset page (about 450 px at 1,600 px wide): ranking, then quality against the oracle.
COMPACT_COLUMNS = ["model", "AUC ± 95% CI", "status"]
QUALITY_COLUMNS = ["model", "GAUC", "logloss", "gap"]
#: The UI's second table: selection, the champion comparison, calibration, slices, errors.
DETAIL_COLUMNS = [
    "model",
    "task",
    "valid_auc",
    "vs_champion",
    "ece",
    "auc_new_items",
    "auc_new_users",
    "error",
]


def compact_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`leaderboard_rows` for the UI's first tables (`COMPACT_COLUMNS`, `QUALITY_COLUMNS`), in
    validation-AUC order: three decimals, the AUC ± its interval's half-width, `gap` = the oracle's
    AUC minus the model's."""

    def short(value: Any) -> str:
        return f"{value:.3f}" if isinstance(value, float) else ("–" if value is None else str(value))

    out = []
    for r in rows:
        ci, value = r.get("auc_ci"), r.get("auc")
        # the DeLong interval is symmetric but for clipping at 0 / 1: its wider half, narrow in the UI
        half = max(value - ci[0], ci[1] - value) if ci and value is not None else None
        auc = short(value) + (f" ±{half:.3f}" if half is not None else "")
        model = "oracle" if r.get("status") == "ceiling" else r["model"]
        out.append(
            {
                "model": model,
                "AUC ± 95% CI": auc,
                "GAUC": short(r.get("gauc")),
                "logloss": short(r.get("logloss")),
                "gap": short(r.get("oracle_gap")),
                "status": r.get("status"),
            }
        )
    return out


def _interval(ci: list[float] | None, signed: bool = False) -> str | None:
    if not ci:
        return None
    fmt = "{:+.4f}" if signed else "{:.4f}"
    return f"[{fmt.format(ci[0])}, {fmt.format(ci[1])}]"


def _versus(row: dict[str, Any], champion: dict[str, Any] | None) -> str | None:
    """The difference to the champion with its paired interval, or 'champion' for the champion itself."""
    if champion and row.get("artifact") == champion.get("artifact"):
        return "champion"
    found = row.get("vs_champion")
    if not found:
        return None
    return f"{found['delta']:+.4f} {_interval(found['ci'], signed=True)}"


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


def _oracle(wh: Warehouse, test: pa.Table) -> tuple[np.ndarray | None, dict[str, np.ndarray]]:
    """(the true p_click of every test row, its click-logit components by name), or (None, {}) when
    the data has no oracle (imported logs write no oracle partition; an empty partition counts as
    none). Components are absent from oracle partitions written before the oracle kept them."""
    days = sorted(set(pc.strftime(test.column("ts"), format="%Y-%m-%d").to_pylist()))
    if not days or not all(wh.exists("oracle_impressions", d) for d in days):
        return None, {}
    oracle = wh.read("oracle_impressions", days)
    if oracle.num_rows == 0:
        return None, {}
    wanted = ["impression_id", "p_click", *(c for c in oracle.column_names if c.startswith("logit_"))]
    oracle = oracle.select(wanted)
    # align the test rows once (as `_aligned` does for one column), then read every column
    rows = oracle.take(pc.index_in(test.column("impression_id"), value_set=oracle.column("impression_id")))
    missing = rows.column("p_click").null_count
    if missing:
        raise LookupError(f"oracle_impressions has no score for {missing} of {test.num_rows} test rows")

    def values(name: str) -> np.ndarray:
        return rows.column(name).to_numpy(zero_copy_only=False).astype(np.float64)

    components = {name.removeprefix("logit_"): values(name) for name in wanted[2:]}
    return values("p_click"), components


def _model_scores(wh: Warehouse, name: str, rows: pa.Table, split: str = "test") -> np.ndarray:
    table = wh.read(f"predictions_{name}")
    table = table.filter(pc.equal(table.column("split"), split))
    return _aligned(rows, table.column("impression_id"), table.column("score"), f"predictions_{name}")


def _valid_auc(wh: Warehouse, name: str, valid: pa.Table) -> float | None:
    """The model's AUC on the validation split: what the candidate is chosen by (never test)."""
    try:
        scores = _model_scores(wh, name, valid, "valid")
    except LookupError:
        return None
    return metrics.auc(valid.column("label").to_numpy(), scores)


def trained_until(dataset: pa.Table) -> str | None:
    """The last timestamp a model trained on `dataset` has seen (train and valid rows): later rows are
    fair test rows for it, earlier ones may be its own training data."""
    seen = dataset.filter(pc.not_equal(dataset.column("split"), "test")).column("ts")
    latest = pc.max(seen).as_py() if len(seen) else None
    return latest.isoformat() if latest is not None else None


def fair_rows(test: pa.Table, champion: dict[str, Any] | None) -> tuple[np.ndarray, str]:
    """Mask of the test rows after the champion's own training data, and a sentence saying which."""
    until = (champion or {}).get("trained_until")
    if not until:
        return np.ones(test.num_rows, dtype=bool), (
            "all test rows (the champion's training span is unknown: it was promoted before it was recorded)"
        )
    cut = pa.scalar(dt.datetime.fromisoformat(until), test.schema.field("ts").type)
    mask = pc.greater(test.column("ts"), cut).to_numpy(zero_copy_only=False)
    return (
        mask,
        f"{int(mask.sum())} of {test.num_rows} test rows after the champion's training data (> {until})",
    )


def compare(
    test: pa.Table, mask: np.ndarray, scores: np.ndarray, baseline: np.ndarray, confidence: float
) -> dict[str, Any] | None:
    """Paired DeLong comparison (and logloss / ECE of both) on the masked test rows; None if one class."""
    labels = test.column("label").to_numpy()[mask]
    result = significance.paired_comparison(labels, scores[mask], baseline[mask], confidence)
    if result is None:
        return None
    out = result.as_dict()
    for side, values in (("a", scores[mask]), ("b", baseline[mask])):
        out[f"logloss_{side}"] = metrics.logloss(labels, values)
        out[f"ece_{side}"] = metrics.calibration(labels, values).ece
    return out


def champion_scores(
    wh: Warehouse,
    home: Home,
    current: dict[str, Any] | None,
    registry: Registry,
    test: pa.Table,
    data_sha: str,
    log: Callable[[str], None],
) -> tuple[dict[str, Any] | None, np.ndarray | None]:
    """The current champion's metrics and per-row scores on this test split: from its predictions when
    it is one of the models trained on this dataset, else re-scored from its artifact."""
    if current is None:
        return None, None
    for name in {current["name"], current.get("plugin") or current["name"]}:
        status = read_status(home, name)
        fresh = status and status.get("status") == "ok" and status.get("data_sha256") == data_sha
        if fresh and status.get("artifact") == current.get("artifact"):
            try:
                scores = _model_scores(wh, name, test)
            except (LookupError, FileNotFoundError):
                break
            return _baseline(current, _metrics_row(test, scores)), scores
    loader = current.get("plugin") or current["name"]
    plugin = next((p for p in registry.good("model") if p.name == loader), None)
    artifact = Path(current.get("artifact") or "")
    if plugin is None or not artifact.is_dir():
        log(
            f"champion {current['name']} cannot be re-scored: plugin installed={plugin is not None}, "
            f"artifact present={artifact.is_dir()}"
        )
        return None, None
    model = plugin.cls.load(artifact)
    scores = np.asarray(model.predict(features_only(test)), dtype=np.float64)
    found = _metrics_row(test, scores)
    log(f"champion {current['name']} re-scored from {artifact}: test AUC {found['auc']}")
    return _baseline(current, found), scores


def _baseline(current: dict[str, Any], found: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": current["name"],
        "artifact": str(current.get("artifact")),
        "auc": found["auc"],
        "logloss": found["logloss"],
        "ece": found["ece"],
        "slices": found["slices"],
    }


def leaderboard_entries(registry: Registry) -> list[tuple[str, PluginInfo, str]]:
    """(entry name, plugin, kind) of everything that can be ranked: each CTR model, each distilled student.

    Uplift models (task "uplift") score a treatment effect, not a click probability: they have their
    own evaluation (`ctr_dagster.uplift`), never a row here nor a say in the champion."""
    from ctr_dagster import distillation

    entries = [(p.name, p, "model") for p in registry.good("model") if p.cls.task == "ctr"]
    entries += [(distillation.entry_name(s.name), s, "distilled") for s, _ in distillation.students(registry)]
    return entries


def _variant(plugin: PluginInfo, kind: str, status: dict[str, Any] | None = None) -> dict[str, str]:
    """What this entry is an ablation of: a plugin's `variant_of`/`variant` class attributes (e.g. the
    same GBDT with item embeddings), or, for a distilled student, the same student trained alone (its
    status says whether it was distilled online, with a teacher trained in the same run)."""
    if kind == "distilled":
        online = (status or {}).get("distillation_mode") == "online"
        how = "distilled online from" if online else "distilled from"
        return {"variant_of": plugin.name, "variant": f"{how} {plugin.cls.teacher}"}
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
                "lift_95ci": _interval((r.get("vs_base") or {}).get("ci"), signed=True),
                "verdict": _verdict(r.get("vs_base")),
                "gauc_lift": None if None in (r["gauc"], base["gauc"]) else r["gauc"] - base["gauc"],
                "logloss_change": r["logloss"] - base["logloss"],
            }
        )
    return rows


def _verdict(paired: dict[str, Any] | None) -> str | None:
    """Whether a lift is a finding or noise (the paired 95 % interval excludes zero or not)."""
    if not paired:
        return None
    low, high = paired["ci"]
    return "better" if low > 0 else "worse" if high < 0 else "noise"


COMPARISON_COLUMNS = [
    "model",
    "what",
    "baseline",
    "auc",
    "baseline_auc",
    "auc_lift",
    "lift_95ci",
    "verdict",
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
    data_sha = wh.content_sha256("training_dataset")
    dataset = wh.read("training_dataset")
    test = _test_split(dataset)
    valid = dataset.filter(pc.equal(dataset.column("split"), "valid"))
    if test.num_rows == 0:
        raise ValueError(f"{dataset_path} has no test rows: nothing to evaluate")
    labels = test.column("label").to_numpy()
    data_until = trained_until(dataset)
    scored: dict[str, np.ndarray] = {}

    oracle_scores, oracle_components = _oracle(wh, test)
    oracle = _metrics_row(test, oracle_scores) if oracle_scores is not None else None
    if oracle is not None:
        interval = significance.auc_interval(labels, oracle_scores)
        oracle["auc_ci"] = interval.as_list() if interval else None
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
            **_variant(plugin, kind, status),
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
        interval = significance.auc_interval(labels, scores)
        row = {
            **base,
            "status": "ok",
            "valid_auc": _valid_auc(wh, name, valid),
            **_metrics_row(test, scores),
            "auc_ci": interval.as_list() if interval else None,
            "artifact": status.get("artifact"),
            "record": status.get("record"),
            "trained_until": data_until,
            **cost_row(status.get("cost")),
        }
        scored[name] = scores
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

    # Ranked and chosen by validation AUC; the test columns are reported, never chosen on.
    ranked.sort(key=lambda r: -(r["valid_auc"] if r["valid_auc"] is not None else -1.0))
    for rank, row in enumerate(ranked, 1):
        row["rank"] = rank
    ctr_rows = [r for r in ranked if r["task"] == "ctr" and r["valid_auc"] is not None]
    everything = np.ones(test.num_rows, dtype=bool)
    for row in ranked:  # each variant against the model it modifies, paired on the same rows
        base = row.get("variant_of")
        if base in scored:
            row["vs_base"] = compare(test, everything, scored[row["name"]], scored[base], 0.95)
    current = store.current()
    baseline, baseline_scores = champion_scores(wh, home, current, registry, test, data_sha, log)
    if baseline_scores is not None:
        mask, which = fair_rows(test, current)
        for row in ranked:
            found = compare(test, mask, scored[row["name"]], baseline_scores, significance.DEFAULT_CONFIDENCE)
            row["vs_champion"] = found and {**found, "champion": current["name"], "rows_used": which}
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
        "selected_by": "highest validation AUC among the ranked CTR models (test is reported, never chosen on)",
        "champion_baseline": baseline,
        "champion": current and {k: v for k, v in current.items() if k != "previous"},
        "gate_policy": asdict(policy),
    }
    ctr_scores = {
        r["name"]: scored[r["name"]] for r in ranked if r.get("task") == "ctr" and r["name"] in scored
    }
    doc["mechanisms"] = (
        mechanisms.attribution(labels, oracle_components, ctr_scores) if oracle_components else None
    )
    if oracle_scores is not None:
        curves["oracle"] = (labels, oracle_scores)
    doc["curves"] = curves  # not JSON: the caller renders and drops it
    return doc


def gate_comparison(
    wh: Warehouse,
    home: Home,
    registry: Registry,
    doc: dict[str, Any],
    current: dict[str, Any] | None,
    policy: GatePolicy,
    log: Callable[[str], None] = print,
) -> dict[str, Any] | None:
    """The candidate against the champion in place *now*, on the same test rows after the champion's
    own training data: the paired test the gate decides on (None when there is nothing to compare)."""
    candidate = doc.get("candidate")
    if candidate is None or current is None or candidate.get("artifact") == current.get("artifact"):
        return None
    if wh.content_sha256("training_dataset") != doc["dataset"]["sha256"]:
        log("the training dataset changed since this evaluation: re-run the evaluation before the gate")
        return None
    test = _test_split(wh.read("training_dataset"))
    _, baseline = champion_scores(wh, home, current, registry, test, doc["dataset"]["sha256"], log)
    if baseline is None:
        return None
    scores = _model_scores(wh, candidate["name"], test)
    mask, which = fair_rows(test, current)
    where = {
        "rows_used": which,
        "champion": current["name"],
        "baseline_artifact": str(current.get("artifact")),
    }
    if not mask.any():
        return {"rows": 0, **where}
    found = compare(test, mask, scores, baseline, policy.confidence)
    return found and {**found, **where}


def gate_decision(
    wh: Warehouse, home: Home, registry: Registry, doc: dict[str, Any], log: Callable[[str], None] = print
):
    """The champion gate for `doc` against the current champion (see `champion.decide`)."""
    from ctr_dagster.champion import decide

    current = ChampionStore(home.champion).current()
    policy = GatePolicy(**doc["gate_policy"])
    return decide(doc, current, policy, gate_comparison(wh, home, registry, doc, current, policy, log))


def _candidate(row: dict[str, Any]) -> dict[str, Any]:
    keys = (
        "name",
        "plugin",
        "task",
        "artifact",
        "valid_auc",
        "auc",
        "auc_ci",
        "gauc",
        "logloss",
        "ece",
        "slices",
        "trained_until",
    )
    return {**{k: row.get(k) for k in keys}, "selected_by": "validation AUC"}


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


def judged_version(doc: dict[str, Any]) -> str:
    """A short hash of what an evaluation judged: the dataset and each ranked model's artifact."""
    import hashlib

    judged = sorted((r["name"], str(r.get("artifact"))) for r in doc["models"])
    body = json.dumps({"dataset": doc["dataset"]["sha256"], "models": judged})
    return hashlib.sha256(body.encode()).hexdigest()[:16]


def changed_since(doc: dict[str, Any], home: Home) -> list[dict[str, Any]]:
    """Models whose latest training is not what this evaluation judged: a new artifact (retrained,
    or trained for the first time), or a training that failed after the evaluation ran.

    Their row in the evaluation describes an older artifact (or none): the evaluation is stale for
    them until it runs again. A retrain that reproduced the same artifact (same content hash) is no
    change. Read from each model's status file, so it also sees models trained outside Dagster; only
    the entries this leaderboard ranks (`leaderboard_entries`: not the uplift models, judged apart)."""
    evaluated = dt.datetime.fromisoformat(doc["evaluated_at"]).timestamp()
    judged = {r["name"]: r.get("artifact") for r in [*doc.get("unranked", []), *doc.get("models", [])]}
    ranked = {name for name, _, _ in leaderboard_entries(default_registry())}
    changed = []
    for path in sorted(home.models.glob("*/status.json")):
        status = json.loads(path.read_text())
        name = status.get("model") or path.parent.name
        if name not in ranked:
            continue
        at = float(status.get("at") or 0.0)
        if status.get("status") == "ok":
            if status.get("artifact") == judged.get(name):
                continue
        elif at <= evaluated + 1.0:  # evaluated_at has whole seconds: a failure it already listed
            continue
        changed.append(
            {
                "model": name,
                "status": status.get("status"),
                "trained_at": dt.datetime.fromtimestamp(at, dt.UTC).isoformat(timespec="seconds"),
                "artifact_evaluated": judged.get(name),
                "artifact_now": status.get("artifact"),
            }
        )
    return changed


def compare_models(home: Home, a: str, b: str, split: str = "test") -> dict[str, Any]:
    """`ctr compare A B`: DeLong's paired test of two models' latest predictions on the same rows of
    `split` (the evaluation protocol's paired comparison, for any two models, not only a variant and
    its base): both AUCs, the difference with its 95 % interval, the one-sided p-value that A beats
    B, and the verdict ("better" / "worse" for A when the interval excludes 0, else "noise").
    Raises `LookupError` naming what is missing (a model without predictions, a split without rows)."""
    if split not in ("valid", "test"):
        raise ValueError(f"split must be 'valid' or 'test', got {split!r}")
    if a == b:
        raise ValueError(f"compare two different models (got {a!r} twice)")
    wh = home.open_warehouse()
    if not wh.exists("training_dataset"):
        raise LookupError("no training_dataset yet: run `ctr demo` or `ctr run` first")
    dataset = wh.read("training_dataset")
    rows = dataset.filter(pc.equal(dataset.column("split"), split))
    if rows.num_rows == 0:
        raise LookupError(f"the training_dataset has no {split} rows")
    scores = {}
    for name in (a, b):
        if not wh.exists(f"predictions_{name}"):
            have = sorted(t.removeprefix("predictions_") for t in wh.tables("predictions_"))
            raise LookupError(f"{name!r} has no predictions; models with predictions: {', '.join(have)}")
        scores[name] = _model_scores(wh, name, rows, split)
    labels = rows.column("label").to_numpy(zero_copy_only=False)
    paired = significance.paired_comparison(labels, scores[a], scores[b])
    if paired is None:
        raise LookupError(f"the {split} rows hold one class only: AUC is undefined")
    result = {"a": a, "b": b, "split": split, **paired.as_dict()}
    result["verdict"] = _verdict(result)
    return result


def report(home: Home) -> dict[str, Any] | None:
    """The latest evaluation as `ctr leaderboard --json` prints it: the document, the current champion
    (after any promotion or rollback), the gate decision on this evaluation, if one was made, and the
    latest uplift evaluation (`uplift`: per model x arm x stage AUUC / Qini, or None)."""
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
    doc["changed_since_evaluation"] = changed_since(doc, home)
    from ctr_dagster.uplift.lineage import latest as latest_uplift

    doc["uplift"] = latest_uplift(home)  # the uplift models' own evaluation (None before the first)
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


#: What each ranked model costs (`ctr_dagster.model_cost`): its own table beside the leaderboard.
COST_COLUMNS = ["model", "auc", "parameters", "train_rows_per_s", "latency_p50_ms", "latency_p99_ms"]


def cost_rows(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per ranked model: test AUC next to parameters, training rows/s and scoring latency."""
    return [
        {"model": r["name"], "auc": r.get("auc"), **{c: r.get(c) for c in COST_COLUMNS[2:]}}
        for r in doc["models"]
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
                "valid_auc": r.get("valid_auc"),
                **{m: r.get(m) for m in RANKED_METRICS},
                "auc_95ci": _interval(r.get("auc_ci")),
                "auc_ci": r.get("auc_ci"),
                "vs_champion": _versus(r, doc.get("champion")),
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
                "auc_95ci": _interval(o.get("auc_ci")),
                "auc_ci": o.get("auc_ci"),
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
