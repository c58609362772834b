"""Distillation: train a student plugin from a teacher's soft predictions plus the true labels.

Any model plugin with ``role = "student"`` and ``teacher = "<model name>"`` can be distilled. The
engine loads the teacher's current artifact (it must be fresh: trained on today's training
dataset), scores the train split with it, and trains the student under its own entry
``<student>_distilled`` with ``FitContext.inputs["distillation"]``::

    {"teacher": "din", "teacher_scores": float32[n_train],   # aligned with the train rows
     "label_weight": 1.0, "teacher_weight": 1.0, "temperature": 2.0}   # DistillationWeights

How a student uses it is its own business; students built on the engine's torch trainer
(`ctr_dagster.training`) get the standard loss
``label_weight·BCE(z, y) + teacher_weight·T²·BCE(z/T, σ(z_teacher/T))`` for free. The same
student is also trained alone by the ordinary model stage, so the leaderboard shows what the
teacher adds, and the stage measures the scoring latency of student and teacher side by side
(the reason to distil at all).
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ctr_dagster.registry import PluginInfo, Registry
from ctr_dagster.training.config import DistillationWeights  # the one typed definition (torch-free)

if TYPE_CHECKING:  # numpy/pyarrow/the trainer are imported inside the functions: the code location
    import pyarrow as pa  # imports this module (to pair students with teachers) at load time

    from ctr_dagster.modeling import TrainResult
    from ctr_dagster.settings import Home
    from ctr_dagster.warehouse import Warehouse

#: The entry name under which a distilled student is stored, evaluated and ranked.
SUFFIX = "_distilled"

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


def fresh_teacher_artifact(teacher: PluginInfo, warehouse: Warehouse, home: Home) -> Path:
    """The teacher's artifact folder, refusing a teacher that failed or is stale."""
    from ctr_dagster.modeling import read_status
    from ctr_dagster.reproducibility import file_sha256

    status = read_status(home, teacher.name)
    where = f"materialize models/{teacher.name} first"
    if status is None:
        raise RuntimeError(f"teacher {teacher.name!r} has never been trained: {where}")
    if status["status"] != "ok":
        raise RuntimeError(
            f"teacher {teacher.name!r} failed its last training ({status.get('error')}): {where}"
        )
    if status.get("data_sha256") != file_sha256(warehouse.path("training_dataset")):
        raise RuntimeError(f"teacher {teacher.name!r} was trained on an older training_dataset: {where}")
    artifact = Path(status["artifact"])
    if not artifact.is_dir():
        raise RuntimeError(f"teacher {teacher.name!r} artifact {artifact} is missing: {where}")
    return artifact


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
) -> TrainResult:
    """Train `student` on labels + `teacher`'s soft predictions; stored as ``<student>_distilled``."""
    import numpy as np

    from ctr_dagster.modeling import train_and_store, write_status

    try:
        teacher_model = teacher.cls.load(fresh_teacher_artifact(teacher, warehouse, home))
    except BaseException as exc:  # the leaderboard lists the distilled entry as failed, with why
        write_status(
            home,
            entry_name(student.name),
            {"status": "failed", "error": f"{type(exc).__name__}: {exc}", "run_id": run_id},
        )
        raise

    def soft_labels(train: pa.Table) -> dict[str, Any]:
        started = time.perf_counter()
        scores = np.asarray(teacher_model.predict(train), dtype=np.float32)
        if scores.shape != (train.num_rows,) or not np.all(np.isfinite(scores)):
            raise ValueError(f"teacher {teacher.name} gave shape {scores.shape} / non-finite soft labels")
        log(
            f"{entry_name(student.name)}: teacher {teacher.name} scored {train.num_rows} train rows "
            f"in {time.perf_counter() - started:.1f}s (mean soft label {scores.mean():.4f})"
        )
        return {
            "distillation": {
                "teacher": teacher.name,
                "teacher_scores": scores,
                **weights.as_dict(),
            }
        }

    return train_and_store(
        student,
        config_values,
        warehouse,
        home,
        seed=seed,
        log=log,
        run_id=run_id,
        entry=entry_name(student.name),
        extra_inputs=soft_labels,
    )


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


def comparison(
    student: PluginInfo, teacher: PluginInfo, result: TrainResult, warehouse: Warehouse, home: Home
) -> dict[str, Any]:
    """Student (distilled and alone) vs teacher: test AUCs, gaps and scoring latency."""
    import pyarrow.compute as pc

    from ctr_dagster.modeling import read_status

    teacher_status = read_status(home, teacher.name) or {}
    alone = read_status(home, student.name) or {}
    distilled_auc = result.scores.get("test_auc")
    teacher_auc = (teacher_status.get("metrics") or {}).get("test_auc")
    alone_auc = (alone.get("metrics") or {}).get("test_auc") if alone.get("status") == "ok" else None
    test = warehouse.read("training_dataset")
    test = test.filter(pc.equal(test.column("split"), "test"))
    candidates = one_user_candidates(test)
    out: dict[str, Any] = {
        "student": student.name,
        "teacher": teacher.name,
        "student_auc": distilled_auc,
        "teacher_auc": teacher_auc,
        "student_alone_auc": alone_auc,
        "gap_to_teacher": None if None in (teacher_auc, distilled_auc) else teacher_auc - distilled_auc,
        "lift_over_alone": None if None in (alone_auc, distilled_auc) else distilled_auc - alone_auc,
        "student_latency_ms": scoring_latency_ms(student.cls.load(result.artifact_dir), candidates),
    }
    if teacher_status.get("artifact") and Path(teacher_status["artifact"]).is_dir():
        out["teacher_latency_ms"] = scoring_latency_ms(
            teacher.cls.load(Path(teacher_status["artifact"])), candidates
        )
    return out
