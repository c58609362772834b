"""Train one model plugin on the training dataset and store it: the engine side of a model asset.

Artifacts are content-addressed: the plugin saves into a temporary folder, the folder's files are
hashed, and the folder is renamed to ``<home>/artifacts/<model>/<sha256[:16]>``. Re-training to
identical weights therefore lands in the same place, and a failed or diverged run never overwrites
the last good model (nothing is renamed until `save` has finished).

Every training also leaves a reproducibility record (`ctr_dagster.reproducibility`) and the model's
latest status (``<home>/models/<model>/status.json``: ok with its artifact and data hash, or
failed with the error), which the evaluation reads to rank the fresh models and list the failed ones.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ctr_dagster import atomic, model_cost, reproducibility, threads, vocab
from ctr_dagster.contracts import INPUT_TABLES, FitContext, config_from_dict, config_to_dict
from ctr_dagster.dataset import VOCAB_FIELDS
from ctr_dagster.errors import NotApplicableError
from ctr_dagster.metrics import auc
from ctr_dagster.registry import PluginInfo
from ctr_dagster.schemas import ORACLE_IMPRESSIONS
from ctr_dagster.settings import Home
from ctr_dagster.warehouse import Warehouse

PREDICTIONS = pa.schema([("impression_id", pa.string()), ("split", pa.string()), ("score", pa.float32())])

#: The targets, under the TRAINING table's names and the raw log's (`click`). A model fits on them and
#: is scored against them, but `predict` never receives them (`features_only`).
LABEL_COLUMNS: tuple[str, ...] = ("label", "click", "conversion")
#: The synthetic world's true probabilities (ORACLE_IMPRESSIONS): never a feature, should a table
#: ever carry them.
ORACLE_COLUMNS: tuple[str, ...] = tuple(f.name for f in ORACLE_IMPRESSIONS if f.name != "impression_id")
#: Every column `features_only` removes. `treatment` (the coupon arm of the request) is a feature, not
#: a label: uplift and CTR models may read it.
HIDDEN_AT_PREDICT: tuple[str, ...] = LABEL_COLUMNS + ORACLE_COLUMNS


def features_only(table: pa.Table) -> pa.Table:
    """`table` without its label and oracle columns: what every engine call of `model.predict` gets.

    Why: a plugin that read the label at predict time would pass every check and top the
    leaderboard; handing it a table without them makes that impossible rather than merely forbidden.
    """
    hidden = [name for name in HIDDEN_AT_PREDICT if name in table.column_names]
    return table.drop_columns(hidden) if hidden else table


@dataclass
class TrainResult:
    name: str
    artifact_dir: Path
    config: dict[str, Any]
    scores: dict[str, float | None] = field(default_factory=dict)
    fit_seconds: float = 0.0
    record: dict[str, Any] = field(default_factory=dict)
    record_path: Path | None = None
    #: How a stage chose between several fits (distillation: the temperature on validation AUC).
    selection: dict[str, Any] = field(default_factory=dict)
    #: Size, training speed and 1,000-candidate latency (`ctr_dagster.model_cost.measure`).
    cost: dict[str, Any] = field(default_factory=dict)
    #: How this model came to be: warm-started or full retrain (`WarmStart.as_dict`), threads used.
    lineage: dict[str, Any] = field(default_factory=dict)
    #: Set when nothing changed since the last training and its artifact was kept (`unchanged_training`).
    skipped: str | None = None

    def metadata(self) -> dict[str, Any]:
        meta: dict[str, Any] = {
            "artifact": str(self.artifact_dir),
            "config": json.dumps(self.config, sort_keys=True),
            "fit_seconds": round(self.fit_seconds, 3),
        }
        if self.skipped:
            meta["skipped"] = self.skipped
        meta.update({k: v for k, v in self.lineage.items() if v is not None})
        meta.update({k: v for k, v in self.scores.items() if v is not None})
        meta.update({k: v for k, v in model_cost.cost_row(self.cost).items() if v is not None})
        if self.record:
            meta["seed"] = self.record["seed"]
            meta["data_sha256"] = self.record["data"]["sha256"]
            meta["code_sha256"] = self.record["code"]["sha256"]
            meta["record"] = str(self.record_path)
        return meta


def cardinalities(warehouse: Warehouse) -> dict[str, int]:
    """Embedding-table sizes of the indexed columns (vocabulary rows + pad + OOV)."""
    return {f"{name}_idx": vocab.FIRST_INDEX + vocab.load(warehouse, name).num_rows for name in VOCAB_FIELDS}


def content_hash(directory: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        digest.update(path.relative_to(directory).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def store_artifact(model: Any, name: str, root: Path) -> Path:
    """Save `model` under ``root/<name>/<content sha16>`` (root: `Home.artifacts`); returns the folder."""
    root = root / name
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=root))
    try:
        model.save(tmp)
        target = root / content_hash(tmp)[:16]
        if target.exists():
            shutil.rmtree(tmp)
        else:
            os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def _split(table: pa.Table, name: str) -> pa.Table:
    return table.filter(pc.equal(table.column("split"), name))


def status_path(home: Home, name: str) -> Path:
    return home.models / name / "status.json"


def write_status(home: Home, name: str, status: dict[str, Any]) -> None:
    """Atomically record a model's latest training outcome (read by the evaluation)."""
    atomic.write_json(
        status_path(home, name), {"model": name, "at": time.time(), **status}, indent=2, default=str
    )


def read_status(home: Home, name: str) -> dict[str, Any] | None:
    path = status_path(home, name)
    return json.loads(path.read_text()) if path.exists() else None


def _item_embeddings(warehouse: Warehouse) -> Any:
    from ctr_dagster import embeddings

    return embeddings.item_matrix(warehouse)


def _item_attributes(warehouse: Warehouse) -> Any:
    return warehouse.read("item_attributes")


def _item_tags(warehouse: Warehouse) -> Any:
    from ctr_dagster.item_tags import item_tags

    return item_tags(warehouse)


#: Prepared inputs the engine can hand a model (`FitContext.inputs`), each from an upstream table.
#: Offered whenever the upstream table exists (a plugin may use one behind a config switch), and
#: required (a clear error when absent) when the plugin lists it in `requires`.
INPUT_PROVIDERS: dict[str, tuple[str, Callable[[Warehouse], Any]]] = {
    "item_embeddings": (INPUT_TABLES["item_embeddings"], _item_embeddings),
    "item_attributes": (INPUT_TABLES["item_attributes"], _item_attributes),
    "item_tags": (INPUT_TABLES["item_tags"], _item_tags),  # ctr_dagster.item_tags.ItemTags
}


def prepare_inputs(plugin: PluginInfo, warehouse: Warehouse, log: Callable[[str], None] = print) -> dict:
    """The prepared inputs for `plugin`'s fit: every available one, and all those it requires."""
    requires = set(getattr(plugin.cls, "requires", ()))
    inputs: dict[str, Any] = {}
    for name, (table, provide) in INPUT_PROVIDERS.items():
        if warehouse.exists(table):
            inputs[name] = provide(warehouse)
        elif name in requires:
            raise ValueError(
                f"{plugin.name} requires {name!r}, but the {table!r} table has not been materialized yet: "
                f"materialize the {table} asset first"
            )
    if inputs:
        log(f"{plugin.name}: prepared inputs {sorted(inputs)}")
    return inputs


@dataclass(frozen=True)
class Splits:
    """The training dataset's three splits, read once, and the file they came from (a path, or an
    ``s3://`` URI); `data_sha256`, its content hash, is the record's data hash."""

    data_path: Path | str
    train: pa.Table
    valid: pa.Table
    test: pa.Table
    source: Warehouse | None = field(default=None, repr=False, compare=False)

    @classmethod
    def read(cls, warehouse: Warehouse) -> Splits:
        dataset = warehouse.read("training_dataset")
        train, valid, test = (_split(dataset, s) for s in ("train", "valid", "test"))
        return cls(warehouse.path("training_dataset"), train, valid, test, source=warehouse)

    @functools.cached_property
    def data_sha256(self) -> str:
        """sha256 of the training table's bytes (asked of the warehouse: it may be an object store)."""
        if self.source is not None:
            return self.source.content_sha256("training_dataset")
        return reproducibility.file_sha256(Path(self.data_path))

    def rows(self) -> dict[str, int]:
        return {"train": self.train.num_rows, "valid": self.valid.num_rows, "test": self.test.num_rows}


@dataclass
class Fitted:
    """A model fitted by `fit_model`, not stored yet (the distillation stage fits several, keeps one)."""

    model: Any
    config: Any
    ctx: FitContext
    fit_seconds: float


def fit_context(
    plugin: PluginInfo,
    warehouse: Warehouse,
    home: Home,
    name: str,
    *,
    seed: int = 0,
    init_from: Path | None = None,
    log: Callable[[str], None] = print,
    inputs: dict[str, Any] | None = None,
    workdir: Path | None = None,
) -> FitContext:
    """The FitContext of one fit; `inputs` (default: `prepare_inputs`) lets a caller prepare them once
    for several fits, `workdir` (default ``<home>/work/<name>``) keeps their checkpoints apart."""
    from ctr_dagster.training.device import device_name  # torch-free unless a GPU device node exists

    return FitContext(
        seed=seed,
        device=device_name(),
        # Stable per-entry folder: torch plugins checkpoint there each epoch and resume after a crash.
        workdir=workdir or home.work / name,
        cardinalities=cardinalities(warehouse),
        log=log,
        init_from=init_from,
        inputs=dict(prepare_inputs(plugin, warehouse, log) if inputs is None else inputs),
    )


def fit_model(
    plugin: PluginInfo, config_values: dict[str, Any], splits: Splits, ctx: FitContext, name: str
) -> Fitted:
    """Build the plugin from its config values and fit it on train (valid for early stopping)."""
    config = config_from_dict(plugin.cls, config_values)
    model = plugin.cls(config)
    ctx.log(
        f"{name}: fitting on {splits.train.num_rows} rows (valid {splits.valid.num_rows}) with "
        f"{config_to_dict(config)}" + (f", warm start from {ctx.init_from}" if ctx.init_from else "")
    )
    started = time.perf_counter()
    model.fit(splits.train, splits.valid, ctx)
    return Fitted(model, config, ctx, time.perf_counter() - started)


def score(model: Any, part: pa.Table, name: str, split_name: str) -> np.ndarray:
    """`model.predict` on `part`'s features only (never a label), checked for shape and finiteness."""
    pred = np.asarray(model.predict(features_only(part)), dtype=np.float64)
    if pred.shape != (part.num_rows,) or not np.all(np.isfinite(pred)):
        raise ValueError(f"{name}.predict returned shape {pred.shape} / non-finite scores on {split_name}")
    return pred


def valid_auc(fitted: Fitted, splits: Splits, name: str) -> float | None:
    """AUC on the validation split: what a stage may choose between fits by (never the test split)."""
    return auc(splits.valid.column("label").to_numpy(), score(fitted.model, splits.valid, name, "valid"))


def record_failure(home: Home, name: str, exc: BaseException, run_id: str | None) -> None:
    """The entry's status becomes failed, with the error: the leaderboard lists it and says why."""
    write_status(home, name, {"status": "failed", "error": f"{type(exc).__name__}: {exc}", "run_id": run_id})


#: `FitContext.inputs` key of a warm start from `plan_warm_start`: ``{"previous_train_end": ISO
#: timestamp}``, the last train row the previous artifact saw (`TorchModel` fine-tunes on later rows).
WARM_START_INPUT = "warm_start"


def _last_ts(table: pa.Table) -> str | None:
    last = pc.max(table.column("ts")).as_py() if table.num_rows else None
    return last.isoformat() if last is not None else None


def dataset_end_day(splits: Splits) -> str | None:
    """The last day (UTC, ISO) the training dataset holds: the day a training is "as of"."""
    ends = [
        pc.max(part.column("ts")).as_py()
        for part in (splits.train, splits.valid, splits.test)
        if part.num_rows
    ]
    ends = [e for e in ends if e is not None]
    return max(ends).date().isoformat() if ends else None


@dataclass(frozen=True)
class WarmStart:
    """Where a training starts from: `init_from` (None: from scratch) and the data day of the full
    retrain its weights descend from (`full_retrain_day`, carried from night to night in the status)."""

    init_from: Path | None
    full_retrain_day: str | None
    data_day: str | None
    reason: str
    #: The last train timestamp (ISO) the previous artifact saw: rows after it are new to the model.
    previous_train_end: str | None = None
    #: On a full retrain the cadence made due: the artifact the nightly would have continued from (and
    #: its `previous_train_end`), so `warm_start_audit` can fine-tune it too and compare the two.
    audit_from: Path | None = None
    audit_train_end: str | None = None

    @property
    def warm(self) -> bool:
        return self.init_from is not None

    def as_dict(self) -> dict[str, Any]:
        return {
            "training": "warm start" if self.warm else "full retrain",
            "warm_started_from": str(self.init_from) if self.init_from else None,
            "full_retrain_day": self.full_retrain_day,
            "data_day": self.data_day,
            "warm_start_reason": self.reason,
        }


def plan_warm_start(
    home: Home, name: str, plugin_name: str, data_day: str | None, every_days: int
) -> WarmStart:
    """Continue from the model's own previous artifact (its last good training), unless that is
    missing or `every_days` days of data have passed since the full retrain it descends from
    (then: from scratch, and this training becomes the new full retrain). ``every_days < 1``: always
    from scratch. A model whose last warm-start audit was below its full retrain's interval also
    retrains from scratch, audited again, each night until an audit is not below: warm starts resume
    only once they are shown to track a full retrain (`warm_start_audit`)."""
    import datetime as dt

    def full(reason: str) -> WarmStart:
        return WarmStart(None, data_day, data_day, f"full retrain: {reason}")

    previous = read_status(home, name)
    if every_days < 1:
        return full(f"full_retrain_every_days={every_days}")
    if previous is None or previous.get("status") != "ok":
        return full("no previous good training")
    artifact = Path(previous.get("artifact") or "")
    if previous.get("plugin") not in (None, plugin_name) or not artifact.is_dir():
        return full(f"the previous artifact {artifact} is missing")
    last_full = previous.get("full_retrain_day")
    if not last_full or data_day is None:
        return full("the previous training does not say when it was last fully retrained")
    age = (dt.date.fromisoformat(data_day) - dt.date.fromisoformat(last_full)).days
    if age < 0:
        return full(f"the data day {data_day} is before the last full retrain ({last_full})")
    audit = previous.get("warm_start_audit") or {}
    if age >= every_days or audit.get("verdict") == "below":
        why = (
            f"{age} day(s) of data since the last full retrain ({last_full}), cadence {every_days}"
            if age >= every_days
            else f"the last warm-start audit ({audit.get('day')}) put the warm start below the full "
            "retrain's validation-AUC interval; full retrains (each audited) until one is not"
        )
        # the night a full retrain comes due is the night a warm start can be checked against it
        return replace(full(why), audit_from=artifact, audit_train_end=previous.get("train_end"))
    return WarmStart(
        artifact,
        last_full,
        data_day,
        f"warm start from {artifact.name}: {age} day(s) since the full retrain on {last_full} "
        f"(full retrain every {every_days})",
        previous.get("train_end"),
    )


def training_key(
    plugin: PluginInfo,
    config_values: dict[str, Any],
    warehouse: Warehouse,
    data_sha256: str,
    seed: int,
    mode: str = "full",
) -> str | None:
    """What a training computes from: the dataset, the prepared input tables, the vocabularies' sizes,
    the plugin's code, its full config (defaults filled in), the seed, the library versions and the
    `mode` (a warm-starting run, or a full retrain).
    Equal keys: the same training (`unchanged_training`). None when an input cannot be fingerprinted."""
    tables = sorted({table for table, _ in INPUT_PROVIDERS.values() if warehouse.exists(table)})
    inputs = {}
    for table in tables:
        inputs[table] = warehouse.table_sha256(table)
        if inputs[table] is None:
            return None
    document = {
        "data": data_sha256,
        "inputs": inputs,
        "cardinalities": cardinalities(warehouse),
        "code": reproducibility.code_sha256(plugin.cls)[0],
        "config": config_to_dict(config_from_dict(plugin.cls, config_values)),
        "seed": seed,
        "libraries": reproducibility.library_versions((plugin.dist,) if plugin.dist else ()),
        "mode": mode,
    }
    return hashlib.sha256(json.dumps(document, sort_keys=True, default=str).encode()).hexdigest()


def unchanged_training(
    home: Home, warehouse: Warehouse, name: str, key: str | None, log: Callable[[str], None]
) -> TrainResult | None:
    """The last training's result when it had this `key` and its artifact and predictions are still
    there (the caller then skips the fit), else None."""
    previous = read_status(home, name)
    if (
        key is None
        or previous is None
        or previous.get("status") != "ok"
        or previous.get("training_key") != key
    ):
        return None
    artifact = Path(previous.get("artifact") or "")
    record_path = Path(previous.get("record") or "")
    if not artifact.is_dir() or not record_path.is_file() or not warehouse.exists(f"predictions_{name}"):
        return None
    record = json.loads(record_path.read_text())
    when = previous.get("run_id") or "an earlier run"
    log(f"{name}: unchanged since {when} (same data, inputs, code, config and seed): kept {artifact}")
    return TrainResult(
        name,
        artifact,
        record.get("config", {}),
        dict(previous.get("metrics") or {}),
        0.0,
        record=record,
        record_path=record_path,
        cost=dict(previous.get("cost") or {}),
        lineage={k: previous.get(k) for k in ("training", "full_retrain_day", "data_day")},
        skipped=f"unchanged: same data, inputs, code, config and seed as {when}; artifact kept",
    )


def train_and_store(
    plugin: PluginInfo,
    config_values: dict[str, Any],
    warehouse: Warehouse,
    home: Home,
    *,
    seed: int = 0,
    init_from: Path | None = None,
    log: Callable[[str], None] = print,
    run_id: str | None = None,
    entry: str | None = None,
    extra_inputs: Callable[[pa.Table], dict[str, Any]] | None = None,
    full_retrain_every_days: int | None = None,
    skip_unchanged: bool = True,
) -> TrainResult:
    """Fit, score valid/test, store the artifact, the predictions, the record and the status.

    `entry` names what is stored (default: the plugin's name); `extra_inputs(train)` is added to
    `FitContext.inputs`. (The distillation stage uses the steps below directly: it fits a student
    once per temperature and stores the one with the best validation AUC.)

    Warm start: `init_from` continues from that artifact; else `full_retrain_every_days` (not None)
    lets `plan_warm_start` continue from the model's own previous artifact within the cadence, for
    plugins that declare ``supports_warm_start = True`` (they read `FitContext.init_from`: LightGBM,
    every `TorchModel`); the others train from scratch and say so.
    With `skip_unchanged` (and no `extra_inputs`), a training whose `training_key` equals the last
    good one's is not repeated: its artifact and numbers are returned, marked `skipped`.

    On any exception the status becomes ``failed`` (with the error) and the exception propagates:
    the asset fails and the previous artifact stays on disk, untouched.
    """
    name = entry or plugin.name
    try:
        splits = Splits.read(warehouse)
        reason = not_applicable(plugin, splits)
        if reason is not None:
            write_status(home, name, {"status": "skipped", "reason": reason, "run_id": run_id})
            log(f"{name}: skipped: {reason}")
            raise NotApplicableError(f"{name}: {reason}")
        key = None
        if skip_unchanged and extra_inputs is None:
            data_sha = splits.data_sha256
            # a full retrain asked for after warm-started ones is not "unchanged"
            warm = init_from is not None or (
                full_retrain_every_days is not None and getattr(plugin.cls, "supports_warm_start", False)
            )
            key = training_key(
                plugin, config_values, warehouse, data_sha, seed, mode="warm" if warm else "full"
            )
            kept = unchanged_training(home, warehouse, name, key, log)
            if kept is not None:
                return kept
        data_day = dataset_end_day(splits)
        if init_from is not None:
            start = WarmStart(init_from, None, data_day, f"warm start from {init_from} (given)")
        elif full_retrain_every_days is not None and not getattr(plugin.cls, "supports_warm_start", False):
            start = WarmStart(None, data_day, data_day, "full retrain: the plugin does not warm-start")
        elif full_retrain_every_days is not None:
            start = plan_warm_start(home, name, plugin.name, data_day, full_retrain_every_days)
        else:
            start = WarmStart(None, data_day, data_day, "full retrain")
        log(f"{name}: {start.reason}")
        ctx = fit_context(plugin, warehouse, home, name, seed=seed, init_from=start.init_from, log=log)
        if start.warm and start.previous_train_end:
            # which train rows the previous artifact never saw: a torch model fine-tunes on them
            ctx.inputs[WARM_START_INPUT] = {"previous_train_end": start.previous_train_end}
        if extra_inputs is not None:
            ctx.inputs.update(extra_inputs(splits.train))
        fitted = fit_model(plugin, config_values, splits, ctx, name)
        audit = None
        if start.audit_from is not None and getattr(plugin.cls, "task", "ctr") == "ctr":  # AUC vs clicks
            from ctr_dagster import warm_start_audit

            audit = warm_start_audit.audit(plugin, config_values, ctx, fitted, splits, home, name, start, log)
        return store_trained(
            plugin,
            fitted,
            splits,
            warehouse,
            home,
            name,
            seed=seed,
            log=log,
            run_id=run_id,
            warm_start=start,
            training_key=key,
            warm_start_audit=audit,
        )
    except NotApplicableError:
        raise
    except BaseException as exc:
        record_failure(home, name, exc, run_id)
        raise


def not_applicable(plugin: PluginInfo, splits: Splits) -> str | None:
    """Why `plugin` cannot learn from these splits at all, else None. An uplift model needs a
    randomized experiment: control rows (treatment 0) and at least one treated arm in the train split;
    a CTR log without a treatment column (imported with ``treatment: 0``) has neither."""
    if getattr(plugin.cls, "task", "ctr") != "uplift":
        return None
    arms = set(pc.unique(splits.train.column("treatment")).to_pylist()) if splits.train.num_rows else set()
    if 0 not in arms or not any(arm for arm in arms if arm):
        return (
            f"uplift needs control rows (treatment 0) and a treated arm (treatment >= 1) in the train "
            f"split; it has arms {sorted(arms)} (a log without a randomized treatment)"
        )
    return None


def measure_cost(fitted: Fitted, splits: Splits, name: str, log: Callable[[str], None]) -> dict[str, Any]:
    """`model_cost.measure` of a fitted model; a measurement that fails is logged, never fatal (the
    model is trained and stored: only its cost columns stay empty)."""
    try:
        cost = model_cost.measure(
            fitted.model, splits.train.num_rows, fitted.fit_seconds, features_only(splits.test)
        )
    except Exception as exc:  # noqa: BLE001 - informational figures must not fail a trained model
        log(f"{name}: cost not measured ({type(exc).__name__}: {exc})")
        return {"error": f"{type(exc).__name__}: {exc}"}
    latency = cost["latency_ms"] or {}
    log(
        f"{name}: {cost['parameters']} parameters, {cost['train_rows_per_s']} training rows/s, "
        f"1,000 candidates in p50 {latency.get('p50')} ms / p99 {latency.get('p99')} ms (1 thread)"
    )
    return cost


def store_trained(
    plugin: PluginInfo,
    fitted: Fitted,
    splits: Splits,
    warehouse: Warehouse,
    home: Home,
    name: str,
    *,
    seed: int = 0,
    log: Callable[[str], None] = print,
    run_id: str | None = None,
    record_extra: dict[str, Any] | None = None,
    warm_start: WarmStart | None = None,
    training_key: str | None = None,
    status_extra: dict[str, Any] | None = None,
    warm_start_audit: dict[str, Any] | None = None,
) -> TrainResult:
    """Score valid/test (features only), store the artifact, predictions, record and ok status.

    `record_extra` adds top-level keys to the reproducibility record (e.g. the distillation settings
    and how they were chosen); `warm_start` says where the fit started (recorded, and carried in the
    status for the next night's `plan_warm_start`); `training_key` lets the next identical training
    be skipped (`unchanged_training`); `status_extra` adds keys to the status the evaluation reads
    (e.g. the distillation mode, so the leaderboard says how a distilled student was trained);
    `warm_start_audit` is tonight's comparison of a warm start with this full retrain
    (`ctr_dagster.warm_start_audit`), kept in the status, and on warm nights the last one is carried."""
    from ctr_dagster import warm_start_audit as audits

    scores: dict[str, float | None] = {}
    predictions = []
    for split_name, part in (("valid", splits.valid), ("test", splits.test)):
        pred = score(fitted.model, part, name, split_name)
        scores[f"{split_name}_auc"] = auc(part.column("label").to_numpy(), pred)
        predictions.append(
            pa.table(
                {
                    "impression_id": part.column("impression_id"),
                    "split": pa.array([split_name] * part.num_rows),
                    "score": pa.array(pred.astype(np.float32)),
                },
                schema=PREDICTIONS,
            )
        )
    artifact = store_artifact(fitted.model, name, home.artifacts)
    warehouse.write(f"predictions_{name}", pa.concat_tables(predictions))
    log(f"{name}: valid AUC={scores['valid_auc']} test AUC={scores['test_auc']} -> {artifact}")
    cost = measure_cost(fitted, splits, name, log)
    start = warm_start or WarmStart(fitted.ctx.init_from, None, dataset_end_day(splits), "")
    lineage = {**start.as_dict(), "threads": threads.threads_per_step()}
    lineage.pop("warm_start_reason")
    audit = audits.carried(read_status(home, name), start, warm_start_audit)
    if warm_start_audit is not None:  # tonight's audit shows on the materialization
        lineage.update(
            {f"warm_start_audit/{k}": v for k, v in warm_start_audit.items() if not isinstance(v, list)}
        )
    result = TrainResult(
        name, artifact, config_to_dict(fitted.config), scores, fitted.fit_seconds, cost=cost, lineage=lineage
    )
    record = reproducibility.build_record(
        model=name,
        distribution=plugin.dist,
        plugin_class=plugin.cls,
        config=result.config,
        seed=seed,
        device=fitted.ctx.device,
        data_path=splits.data_path,
        data_sha256=splits.data_sha256,
        data_rows=splits.rows(),
        artifact=artifact,
        metrics=scores,
        fit_seconds=fitted.fit_seconds,
    )
    # threads: this step's share of the cores (`ctr_dagster.threads`); a plugin's own setting is in config
    record.update({"threads": lineage["threads"], "warm_start": start.as_dict()})
    if warm_start_audit is not None:
        record["warm_start_audit"] = warm_start_audit
    record.update(record_extra or {})
    result.record = record
    result.record_path = reproducibility.write_record(record, home.records)
    write_status(
        home,
        name,
        {
            "status": "ok",
            "plugin": plugin.name,
            "artifact": str(artifact),
            "data_sha256": record["data"]["sha256"],
            "record": str(result.record_path),
            "run_id": run_id,
            "metrics": scores,
            "cost": cost,
            "training": lineage["training"],
            "warm_started_from": lineage["warm_started_from"],
            "full_retrain_day": start.full_retrain_day,
            "data_day": start.data_day,
            "train_end": _last_ts(splits.train),
            "training_key": training_key,
            audits.STATUS_KEY: audit,
            **(status_extra or {}),
        },
    )
    return result
