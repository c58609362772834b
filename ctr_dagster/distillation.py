"""Distillation: train a student plugin from a teacher's soft predictions plus the true labels.

Any model plugin with ``role = "student"`` and ``teacher = "<model name>"`` can be distilled. The
engine loads the teacher's current artifact (it must be fresh: trained on today's training
dataset), scores the train split with it (features only, as every engine call of `predict`), and
trains the student under its own entry ``<student>_distilled`` with ``FitContext.inputs["distillation"]``::

    {"teacher": "din", "teacher_scores": float32[n_train],   # aligned with the train rows
     "label_weight": 1.0, "teacher_weight": 1.0, "temperature": 2.0}   # DistillationWeights

How a student uses it is its own business; students built on the engine's torch trainer
(`ctr_dagster.training`) get the standard loss
``label_weight·BCE(z, y) + teacher_weight·T²·BCE(z/T, σ(z_teacher/T))`` for free.

The temperature is chosen on the validation split, never on test: the student is fitted once per
temperature of a small grid (`TEMPERATURES`, launchpad config of ``distilled/<student>``), the
best validation AUC wins (ties: the smaller T), and only the winner is scored on test and stored;
the grid's validation AUCs travel with the result (`Selection`). The same student is also trained
alone by the ordinary model stage, so the leaderboard shows what the teacher adds; `comparison`
reports that lift only when the lone student was trained on the same training dataset, and the
scoring latency of student and teacher side by side (the reason to distil at all).

Two modes (`MODES`, launchpad ``mode`` of ``distilled/<student>``): "offline" (the default, above)
and "online" (`distill_online_and_store`): no stored teacher is read; a fresh teacher (the declared
teacher plugin, its config from the launchpad) and the student are trained together in one run by
`ctr_dagster.online_distillation` (torch plugins only), one joint fit at the assumed temperature
(`online_distillation.ONLINE_WEIGHTS`; the grid is offline only). The student is stored under the
same entry either way; its record and status say which mode made it. The nightly warm start
(`_warm_start`) is offline only: it never continues from an online-distilled student.
"""

from __future__ import annotations

import dataclasses
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ctr_dagster.registry import PluginInfo, Registry
from ctr_dagster.training.config import DistillationWeights  # the one typed definition (torch-free)

if TYPE_CHECKING:  # numpy/pyarrow/the trainer are imported inside the functions: the code location
    import pyarrow as pa  # imports this module (to pair students with teachers) at load time

    from ctr_dagster.modeling import Fitted, TrainResult, WarmStart
    from ctr_dagster.settings import Home
    from ctr_dagster.warehouse import Warehouse

#: The entry name under which a distilled student is stored, evaluated and ranked.
SUFFIX = "_distilled"

#: The distillation modes: "offline" learns from the stored teacher's soft labels (the default),
#: "online" trains a fresh teacher and the student together in one run.
MODES: tuple[str, ...] = ("offline", "online")

#: The temperatures tried by default (each is one fit of the student; the best validation AUC wins).
TEMPERATURES: tuple[float, ...] = (1.0, 2.0, 4.0)

#: Columns that describe the user and the request (kept fixed when building a one-user candidate set).
USER_COLUMNS = (
    "user_id",
    "user_idx",
    "device_idx",
    "region_idx",
    "age_group_idx",
    "hour",
    "day_of_week",
    "user_click_count",
    "is_new_user",
    "hist_item_idx",
    "hist_category_idx",
    "hist_age_s",
    "hist_rel_pos",
)


def entry_name(student: str) -> str:
    return f"{student}{SUFFIX}"


def students(registry: Registry) -> list[tuple[PluginInfo, PluginInfo]]:
    """(student, teacher) pairs among the good model plugins; students whose teacher is missing are skipped."""
    models = {p.name: p for p in registry.good("model")}
    pairs = []
    for plugin in models.values():
        if getattr(plugin.cls, "role", None) == "student":
            teacher = models.get(getattr(plugin.cls, "teacher", ""))
            if teacher is not None:
                pairs.append((plugin, teacher))
    return pairs


def online_teacher_defaults(student: PluginInfo, teacher: PluginInfo) -> dict[str, Any]:
    """The teacher config a student asks its online mode to train by default (its class attribute
    `online_teacher_config`, e.g. LightSUAN: a high-grade SUAN, as the paper distils from), checked
    against the teacher's Config fields: ValueError names any field the teacher does not have."""
    declared = dict(getattr(student.cls, "online_teacher_config", None) or {})
    known = {f.name for f in dataclasses.fields(teacher.cls.Config)}
    unknown = sorted(set(declared) - known)
    if unknown:
        raise ValueError(
            f"{student.name}.online_teacher_config names {', '.join(map(repr, unknown))}, "
            f"not a field of {teacher.name}'s Config"
        )
    return declared


def fresh_teacher_artifact(teacher: PluginInfo, warehouse: Warehouse, home: Home) -> Path:
    """The teacher's artifact folder, refusing a teacher that failed or is stale."""
    from ctr_dagster.modeling import read_status

    status = read_status(home, teacher.name)
    where = f"materialize models/{teacher.name} first"
    if status is None:
        raise RuntimeError(f"teacher {teacher.name!r} has never been trained: {where}")
    if status["status"] != "ok":
        raise RuntimeError(
            f"teacher {teacher.name!r} failed its last training ({status.get('error')}): {where}"
        )
    if status.get("data_sha256") != warehouse.content_sha256("training_dataset"):
        raise RuntimeError(f"teacher {teacher.name!r} was trained on an older training_dataset: {where}")
    artifact = Path(status["artifact"])
    if not artifact.is_dir():
        raise RuntimeError(f"teacher {teacher.name!r} artifact {artifact} is missing: {where}")
    return artifact


@dataclass(frozen=True)
class Selection:
    """How the distilled student's temperature was chosen: validation AUC per grid point, the winner."""

    valid_auc: dict[float, float | None]
    temperature: float
    chosen_by: str = "valid_auc"
    fit_seconds: dict[float, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "chosen_by": self.chosen_by,
            "temperature": self.temperature,
            "valid_auc": {f"{t:g}": auc for t, auc in self.valid_auc.items()},
            "fit_seconds": {f"{t:g}": round(s, 3) for t, s in self.fit_seconds.items()},
        }


def temperature_grid(temperatures: Sequence[float]) -> tuple[float, ...]:
    """The distinct temperatures, ascending (so a tie goes to the smaller), each validated."""
    grid = tuple(sorted({float(t) for t in temperatures}))
    if not grid:
        raise ValueError("the distillation temperature grid is empty: give at least one temperature")
    for t in grid:
        DistillationWeights(temperature=t)  # raises with the reason when t is not > 0 and finite
    return grid


def best_on_valid(valid_auc: dict[float, float | None]) -> float:
    """The temperature with the best validation AUC; ties go to the smaller T, and an undefined AUC
    (a one-class validation split) never wins over a defined one."""
    defined = [t for t in valid_auc if valid_auc[t] is not None]
    if not defined:
        return min(valid_auc)
    return max(defined, key=lambda t: (valid_auc[t], -t))


def distill_and_store(
    student: PluginInfo,
    teacher: PluginInfo,
    config_values: dict[str, Any],
    weights: DistillationWeights,
    warehouse: Warehouse,
    home: Home,
    *,
    seed: int = 0,
    log: Callable[[str], None] = print,
    run_id: str | None = None,
    temperatures: Sequence[float] = TEMPERATURES,
    full_retrain_every_days: int | None = None,
) -> TrainResult:
    """Train `student` on labels + `teacher`'s soft predictions; stored as ``<student>_distilled``.

    One fit per temperature in `temperatures` (the grid replaces `weights.temperature`), each with
    its own checkpoint folder; the best validation AUC wins (ties: smaller T) and only the winner is
    scored on test and stored. The result's `selection` and its reproducibility record say how.

    Warm start (`full_retrain_every_days` not None, a student with ``supports_warm_start``): within
    the cadence, as the model assets do (`modeling.plan_warm_start`), the distilled student continues
    from its own previous artifact at the temperature chosen then, one fit instead of the grid; the
    grid runs again at each full retrain.
    """
    import numpy as np

    from ctr_dagster import warm_start_audit
    from ctr_dagster.modeling import (
        WARM_START_INPUT,
        Splits,
        features_only,
        fit_context,
        fit_model,
        prepare_inputs,
        record_failure,
        store_trained,
        valid_auc,
    )

    name = entry_name(student.name)
    try:
        grid = temperature_grid(temperatures)
        teacher_model = teacher.cls.load(fresh_teacher_artifact(teacher, warehouse, home))
        splits = Splits.read(warehouse)
        start, previous_t = _warm_start(student, home, name, splits, full_retrain_every_days)
        if start.warm:
            grid = (previous_t,)
        log(f"{name}: {start.reason}" + (f"; temperature {grid[0]:g} as chosen then" if start.warm else ""))
        started = time.perf_counter()
        soft = np.asarray(teacher_model.predict(features_only(splits.train)), dtype=np.float32)
        if soft.shape != (splits.train.num_rows,) or not np.all(np.isfinite(soft)):
            raise ValueError(f"teacher {teacher.name} gave shape {soft.shape} / non-finite soft labels")
        log(
            f"{name}: teacher {teacher.name} scored {splits.train.num_rows} train rows "
            f"in {time.perf_counter() - started:.1f}s (mean soft label {soft.mean():.4f})"
        )
        inputs = prepare_inputs(student, warehouse, log)

        def context_at(t: float) -> Any:
            """The fit context at temperature `t` (its own checkpoint folder)."""
            tried = dataclasses.replace(weights, temperature=t)
            ctx = fit_context(
                student,
                warehouse,
                home,
                name,
                seed=seed,
                log=log,
                inputs={
                    **inputs,
                    "distillation": {"teacher": teacher.name, "teacher_scores": soft, **tried.as_dict()},
                },
                workdir=home.work / name / f"temperature-{t:g}",
                init_from=start.init_from,
            )
            if start.warm and start.previous_train_end:  # fine-tune on the rows the artifact never saw
                ctx.inputs[WARM_START_INPUT] = {"previous_train_end": start.previous_train_end}
            return ctx

        best: tuple[float, Fitted] | None = None
        aucs: dict[float, float | None] = {}
        seconds: dict[float, float] = {}
        for t in grid:
            fitted = fit_model(student, config_values, splits, context_at(t), name)
            aucs[t], seconds[t] = valid_auc(fitted, splits, name), fitted.fit_seconds
            log(f"{name}: temperature {t:g}: valid AUC {aucs[t]}")
            if best_on_valid(aucs) == t:
                best = (t, fitted)  # keep only the leader in memory
        assert best is not None
        selection = Selection(valid_auc=aucs, temperature=best[0], fit_seconds=seconds)
        chosen = dataclasses.replace(weights, temperature=best[0])
        log(f"{name}: chose temperature {best[0]:g} on validation AUC ({selection.as_dict()['valid_auc']})")
        audit = None
        if start.audit_from is not None and previous_t is not None:
            # the nightly's warm start: the previous artifact at the temperature chosen then
            audit = warm_start_audit.audit(
                student, config_values, context_at(previous_t), best[1], splits, home, name, start, log
            )
        result = store_trained(
            student,
            best[1],
            splits,
            warehouse,
            home,
            name,
            seed=seed,
            log=log,
            run_id=run_id,
            record_extra={
                "distillation": {
                    "mode": "offline",
                    "teacher": teacher.name,
                    **chosen.as_dict(),
                    "selection": selection.as_dict(),
                }
            },
            warm_start=start,
            status_extra={"distillation_mode": "offline"},
            warm_start_audit=audit,
        )
    except BaseException as exc:  # the leaderboard lists the distilled entry as failed, with why
        record_failure(home, name, exc, run_id)
        raise
    result.selection = selection.as_dict()
    return result


def online_unsupported(student: PluginInfo, teacher: PluginInfo) -> str | None:
    """Why this pair cannot be distilled online, else None: the joint loop
    (`ctr_dagster.online_distillation`) needs both to be torch plugins (`TorchModel`)."""
    from ctr_dagster.training.plugin import TorchModel  # torch-free module

    others = [p.name for p in (student, teacher) if not issubclass(p.cls, TorchModel)]
    if not others:
        return None
    return (
        f"online distillation trains teacher and student in one torch loop, but {', '.join(others)} "
        f"{'is not a torch plugin' if len(others) == 1 else 'are not torch plugins'} (TorchModel); "
        f"use mode 'offline' for {student.name}"
    )


def distill_online_and_store(
    student: PluginInfo,
    teacher: PluginInfo,
    config_values: dict[str, Any],
    teacher_values: dict[str, Any],
    weights: DistillationWeights,
    warehouse: Warehouse,
    home: Home,
    *,
    seed: int = 0,
    log: Callable[[str], None] = print,
    run_id: str | None = None,
) -> TrainResult:
    """Train a fresh `teacher` (config `teacher_values`) and `student` together; store the student as
    ``<student>_distilled``, exactly where the offline mode stores it.

    One joint fit (`online_distillation.fit_online`, the student's trainer settings) at the assumed
    weights `ONLINE_WEIGHTS` with the launchpad's `teacher_weight`; the student's label term is its
    own loss (weight 1, so `label_weight` must be 1). Raises ValueError, before any status changes,
    for a pair that is not torch on both sides. The record's ``distillation`` says ``mode: online``,
    the weights, the teacher's config and the jointly trained teacher's own AUCs (reported only: it
    is not stored); the status carries ``distillation_mode: online`` for the evaluation.
    """
    from ctr_dagster.contracts import config_from_dict, config_to_dict
    from ctr_dagster.metrics import auc
    from ctr_dagster.modeling import (
        Fitted,
        Splits,
        WarmStart,
        dataset_end_day,
        fit_context,
        prepare_inputs,
        record_failure,
        score,
        store_trained,
        valid_auc,
    )
    from ctr_dagster.online_distillation import ONLINE_WEIGHTS, fit_online

    name = entry_name(student.name)
    reason = online_unsupported(student, teacher)
    if reason is not None:
        raise ValueError(f"{name}: {reason}")
    if weights.label_weight != 1.0:
        raise ValueError(
            f"{name}: online mode keeps the student's own label loss at weight 1 (label_weight "
            f"{weights.label_weight:g} applies to the offline mode only); set label_weight to 1"
        )
    online = dataclasses.replace(ONLINE_WEIGHTS, teacher_weight=weights.teacher_weight)
    try:
        splits = Splits.read(warehouse)
        day = dataset_end_day(splits)
        # the teacher's required inputs first (a clear error when missing), then every available one
        inputs = {**prepare_inputs(teacher, warehouse, log), **prepare_inputs(student, warehouse, log)}
        ctx = fit_context(
            student,
            warehouse,
            home,
            name,
            seed=seed,
            log=log,
            inputs=inputs,
            workdir=home.work / name / "online",
        )
        student_config = config_from_dict(student.cls, config_values)
        teacher_config = config_from_dict(teacher.cls, teacher_values)
        student_model, teacher_model = student.cls(student_config), teacher.cls(teacher_config)
        log(
            f"{name}: online distillation, a fresh {teacher.name} ({config_to_dict(teacher_config)}) and "
            f"{student.name} ({config_to_dict(student_config)}) on {splits.train.num_rows} train rows "
            f"with {online} (assumed; the temperature grid is for the offline mode)"
        )
        started = time.perf_counter()
        fit_online(student_model, teacher_model, splits.train, splits.valid, ctx, online)
        fitted = Fitted(student_model, student_config, ctx, time.perf_counter() - started)
        student_valid = valid_auc(fitted, splits, name)
        teacher_aucs = {
            f"{split}_auc": auc(
                part.column("label").to_numpy(), score(teacher_model, part, f"{teacher.name} (online)", split)
            )
            for split, part in (("valid", splits.valid), ("test", splits.test))
        }
        log(f"{name}: student valid AUC {student_valid}; the online teacher {teacher.name}: {teacher_aucs}")
        selection = Selection(
            valid_auc={online.temperature: student_valid},
            temperature=online.temperature,
            chosen_by="online_assumption",
            fit_seconds={online.temperature: fitted.fit_seconds},
        )
        result = store_trained(
            student,
            fitted,
            splits,
            warehouse,
            home,
            name,
            seed=seed,
            log=log,
            run_id=run_id,
            record_extra={
                "distillation": {
                    "mode": "online",
                    "teacher": teacher.name,
                    **online.as_dict(),
                    "weights_are": "assumed (the paper's are not public); teacher_weight from the launchpad",
                    "teacher_config": config_to_dict(teacher_config),
                    "online_teacher": teacher_aucs,
                    "selection": selection.as_dict(),
                }
            },
            # a full retrain today (both from scratch): recorded like the offline mode's, for the cadence
            warm_start=WarmStart(None, day, day, "full retrain (online distillation)"),
            status_extra={"distillation_mode": "online"},
        )
    except BaseException as exc:  # the leaderboard lists the distilled entry as failed, with why
        record_failure(home, name, exc, run_id)
        raise
    result.selection = selection.as_dict()
    return result


def _warm_start(
    student: PluginInfo, home: Home, name: str, splits: Any, every_days: int | None
) -> tuple[WarmStart, float | None]:
    """Where this distillation starts, and the temperature to keep: a full retrain (the grid; None,
    or on the night the cadence comes due the previous temperature, for the warm-start audit), or,
    within the cadence, the previous distilled artifact at the temperature chosen then (only when
    that temperature is recorded)."""
    from ctr_dagster.modeling import WarmStart, dataset_end_day, plan_warm_start

    day = dataset_end_day(splits)
    if every_days is None or not getattr(student.cls, "supports_warm_start", False):
        return WarmStart(None, day, day, "full retrain (temperature grid)"), None
    start = plan_warm_start(home, name, student.name, day, every_days)
    if not start.warm:  # a full retrain; the temperature is kept for its warm-start audit, if due
        return start, _previous_temperature(home, name) if start.audit_from is not None else None
    temperature = _previous_temperature(home, name)
    if temperature is None:
        why = "the previous temperature is not recorded (or that student was distilled online)"
        return WarmStart(None, day, day, f"full retrain: {why}"), None
    return start, temperature


def _previous_temperature(home: Home, name: str) -> float | None:
    """The temperature the last good offline distillation chose (from its reproducibility record);
    None after an online one: its temperature was assumed, not chosen, and its teacher is not stored."""
    import json

    from ctr_dagster.modeling import read_status

    status = read_status(home, name) or {}
    record = Path(status.get("record") or "")
    if not record.is_file():
        return None
    distilled = json.loads(record.read_text()).get("distillation") or {}
    if distilled.get("mode", "offline") != "offline":
        return None
    value = distilled.get("temperature")
    return float(value) if value is not None else None


def one_user_candidates(table: pa.Table, n: int = 1000) -> pa.Table:
    """`n` candidate rows for a single user: the user/request columns of row 0, items from `n` rows.

    This is the serving shape: one request, one user history, many items to rank.
    """
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    if table.num_rows == 0:
        raise ValueError("no rows to build candidates from")
    rows = np.arange(n) % table.num_rows
    items = table.take(pa.array(rows))
    first = pa.array(np.zeros(n, dtype=np.int64))
    columns = {
        name: (pc.take(table.column(name), first) if name in USER_COLUMNS else items.column(name))
        for name in table.column_names
    }
    return pa.table(columns, schema=table.schema)


@contextmanager
def _single_thread() -> Iterator[None]:
    """One intra-op thread for the latency measurement, when torch is in use (a serving replica's core)."""
    torch = sys.modules.get("torch")
    previous = torch.get_num_threads() if torch is not None else None
    if torch is not None:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if torch is not None and previous is not None:
            torch.set_num_threads(previous)


def scoring_latency_ms(
    model: Any, candidates: pa.Table, repeats: int = 50, warmup: int = 5
) -> dict[str, float]:
    """p50/p99 wall milliseconds of `model.predict(candidates)` on one thread (informational metadata)."""
    with _single_thread():
        for _ in range(warmup):
            model.predict(candidates)
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            model.predict(candidates)
            times.append((time.perf_counter() - started) * 1000.0)
    times.sort()
    return {
        "p50": round(statistics.median(times), 3),
        "p99": round(times[min(len(times) - 1, int(round(0.99 * (len(times) - 1))))], 3),
        "candidates": candidates.num_rows,
    }


def fresh_metric(
    status: dict[str, Any] | None, who: str, data_sha256: str
) -> tuple[float | None, str | None]:
    """(test AUC, None) of a model whose status is ok for the dataset `data_sha256`, else (None, why).

    Why: a lift or gap between two models means something only on the same training dataset; a
    stale one is reported as stale, never as a number."""
    if status is None:
        return None, f"{who} has never been trained"
    if status.get("status") != "ok":
        return None, f"{who} failed its last training ({status.get('error')})"
    if status.get("data_sha256") != data_sha256:
        return None, f"stale: {who} was trained on another training_dataset (materialize it again to compare)"
    return (status.get("metrics") or {}).get("test_auc"), None


def comparison(
    student: PluginInfo, teacher: PluginInfo, result: TrainResult, warehouse: Warehouse, home: Home
) -> dict[str, Any]:
    """Student (distilled and alone) vs teacher: test AUCs, gaps and scoring latency.

    The lift over the lone student and the gap to the teacher are given only when that model was
    trained on the same training dataset as the distilled student (`*_note` says why not)."""
    import pyarrow.compute as pc

    from ctr_dagster.modeling import features_only, read_status

    data_sha = result.record["data"]["sha256"]
    teacher_status = read_status(home, teacher.name)
    teacher_auc, teacher_note = fresh_metric(teacher_status, f"models/{teacher.name}", data_sha)
    alone_auc, alone_note = fresh_metric(read_status(home, student.name), f"models/{student.name}", data_sha)
    distilled_auc = result.scores.get("test_auc")
    test = warehouse.read("training_dataset")
    test = features_only(test.filter(pc.equal(test.column("split"), "test")))
    candidates = one_user_candidates(test)
    out: dict[str, Any] = {
        "student": student.name,
        "teacher": teacher.name,
        "student_auc": distilled_auc,
        "teacher_auc": teacher_auc,
        "student_alone_auc": alone_auc,
        "gap_to_teacher": None if None in (teacher_auc, distilled_auc) else teacher_auc - distilled_auc,
        "lift_over_alone": None if None in (alone_auc, distilled_auc) else distilled_auc - alone_auc,
        "gap_note": teacher_note,
        "lift_note": alone_note,
        "student_latency_ms": scoring_latency_ms(student.cls.load(result.artifact_dir), candidates),
    }
    artifact = (teacher_status or {}).get("artifact")
    if artifact and Path(artifact).is_dir():
        out["teacher_latency_ms"] = scoring_latency_ms(teacher.cls.load(Path(artifact)), candidates)
    return out
