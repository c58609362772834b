"""Distillation stage: an asset factory, one `distilled/<student>` asset per student plugin.

A student plugin (``role = "student"``, ``teacher = "<model>"``) is trained from its teacher's soft
predictions plus the labels; the loss weights and the temperature grid (the temperature is chosen
on validation AUC, never on test) are launchpad config beside the student's own. The same student
trained alone is its ordinary `models/<student>` asset, so the leaderboard shows the distilled one,
the lone one and the teacher together; this asset's metadata compares them (a lift only against a
lone student trained on the same dataset) and their scoring latency.

Launchpad ``mode``: "offline" (the default: the soft labels of the stored ``models/<teacher>``) or
"online" (a fresh teacher, configured by ``teacher_config``, trained together with the student in
this run; torch pairs only, `ctr_dagster.distillation.distill_online_and_store`). One asset, not two:
both modes write the same ``<student>_distilled`` entry the evaluation ranks, so a second asset would
be a second writer of one artifact. The ``models/<teacher>`` dependency is read by the offline mode only.
"""

from typing import Literal

import dagster as dg
import pydantic

from assets.concurrency import training_threads
from assets.launchpad import plugin_config
from assets.metadata import markdown_table
from assets.models import _launchpad_config, retrain_cadence, split_engine_fields, training_pool
from assets.resources import WarehouseResource
from ctr_dagster.registry import PluginInfo, default_registry


def _distill_config(student: PluginInfo, teacher: PluginInfo | None = None) -> type[dg.Config]:
    """The student's launchpad config plus the distillation fields (and, given the teacher, its
    config for the online mode: the teacher that mode trains is configured here, not in models/)."""
    from ctr_dagster.distillation import MODES, TEMPERATURES, DistillationWeights, online_teacher_defaults

    defaults = DistillationWeights()
    extra: dict[str, tuple[object, object]] = {}
    if teacher is not None:
        title = student.name.title().replace("_", "")
        nested = plugin_config(teacher, f"TeacherOf{title}Config")
        try:  # the student's declared online teacher (e.g. a higher grade), else the teacher's own defaults
            declared = online_teacher_defaults(student, teacher)
            default, note = nested(**declared), ""
            if declared:
                note = f"; defaults: {teacher.name}'s own, except {declared} ({student.name}'s online_teacher_config)"
        except ValueError as exc:  # a bad declaration is reported here, never fatal to the code location
            default, note = nested(), f"; {student.name}'s online_teacher_config was refused ({exc})"
        extra["teacher_config"] = (
            nested,
            pydantic.Field(
                default,
                description=f"online mode only: the config of the fresh {teacher.name} trained with the "
                f"student (its model fields; the joint loop runs with the student's trainer fields){note}",
            ),
        )
    return pydantic.create_model(
        f"{student.name.title().replace('_', '')}DistillConfig",
        __base__=_launchpad_config(student),
        mode=(
            Literal[MODES],  # type: ignore[valid-type]
            pydantic.Field(
                default=MODES[0],
                description="offline: learn from the stored teacher's soft labels (temperature grid); "
                "online: train a fresh teacher and the student together in one run (torch plugins, "
                "one joint fit at the assumed temperature 1; no warm start)",
            ),
        ),
        label_weight=(float, defaults.label_weight),
        teacher_weight=(float, defaults.teacher_weight),
        temperatures=(
            list[float],
            pydantic.Field(
                default=list(TEMPERATURES),
                description="temperatures tried (one student fit each); the best validation AUC wins, "
                "ties to the smaller (offline mode)",
            ),
        ),
        **extra,
    )


def distilled_asset(student: PluginInfo, teacher: PluginInfo) -> dg.AssetsDefinition:
    config_class = _distill_config(student, teacher)

    @dg.asset(
        key=["distilled", student.name],
        group_name="distillation",
        deps=["training_dataset", dg.AssetKey(teacher.asset_key)],
        code_version=student.version or "0",
        kinds={"python"},
        tags={"ctr/task": student.cls.task, "ctr/teacher": teacher.name},
        pool=training_pool(student),
        metadata={"plugin": student.entry_point_value, "teacher": teacher.name},
        description=f"{student.name} distilled from {teacher.name}'s soft predictions plus the labels "
        f"(offline), or trained together with a fresh {teacher.name} (launchpad mode: online)",
    )
    def _distilled(
        context: dg.AssetExecutionContext,
        config: config_class,  # type: ignore[valid-type]
        warehouse: WarehouseResource,
    ) -> dg.MaterializeResult:
        from ctr_dagster.distillation import (
            DistillationWeights,
            comparison,
            distill_and_store,
            distill_online_and_store,
        )

        values = config.model_dump()
        weights = DistillationWeights(
            label_weight=values.pop("label_weight"), teacher_weight=values.pop("teacher_weight")
        )
        temperatures = values.pop("temperatures")
        mode = values.pop("mode")
        teacher_values = values.pop("teacher_config", {})
        cadence = retrain_cadence(values)
        seed, warm_start, values = split_engine_fields(student, values)
        wh, home = warehouse.get(), warehouse.ctr_home
        with training_threads(context):  # this step's share of the cores (assets.concurrency)
            if mode == "online":
                if warm_start:
                    context.log.info(
                        "warm_start applies to the offline mode: online trains both from scratch"
                    )
                result = distill_online_and_store(
                    student,
                    teacher,
                    values,
                    teacher_values,
                    weights,
                    wh,
                    home,
                    seed=seed,
                    log=context.log.info,
                    run_id=context.run.run_id,
                )
            else:
                result = distill_and_store(
                    student,
                    teacher,
                    values,
                    weights,
                    wh,
                    home,
                    seed=seed,
                    log=context.log.info,
                    run_id=context.run.run_id,
                    temperatures=temperatures,
                    # nightly: continue from the previous distilled artifact at its temperature (no grid)
                    full_retrain_every_days=cadence if warm_start else None,
                )
        compared = comparison(student, teacher, result, wh, home)
        context.log.info(f"distillation: {compared}")
        rows = [
            {
                "model": f"{student.name} (distilled)",
                "test AUC": compared["student_auc"],
                "latency p50 ms": compared["student_latency_ms"]["p50"],
                "latency p99 ms": compared["student_latency_ms"]["p99"],
            },
            {
                "model": f"{student.name} (alone)",
                "test AUC": compared["student_alone_auc"],
                "note": compared["lift_note"] or "",
            },
        ]
        if "teacher_latency_ms" in compared:
            rows.append(
                {
                    "model": f"{teacher.name} (teacher)"
                    if mode == "offline"
                    else f"{teacher.name} (models/)",
                    "test AUC": compared["teacher_auc"],
                    "latency p50 ms": compared["teacher_latency_ms"]["p50"],
                    "latency p99 ms": compared["teacher_latency_ms"]["p99"],
                    "note": compared["gap_note"] or "",
                }
            )
        distilled = result.record["distillation"]
        online_teacher = distilled.get("online_teacher") or {}
        if mode == "online":  # the teacher trained in this run (scored on test to report it, never stored)
            rows.append(
                {
                    "model": f"{teacher.name} (online teacher, this run)",
                    "test AUC": online_teacher.get("test_auc"),
                    "note": "trained with the student; not stored",
                }
            )
        selection = result.selection
        metadata = result.metadata()
        metadata.update(
            {
                "comparison": dg.MetadataValue.md(
                    markdown_table(rows, ["model", "test AUC", "latency p50 ms", "latency p99 ms", "note"])
                ),
                "teacher": teacher.name,
                "distillation_mode": mode,
                "loss_weights": dg.MetadataValue.json(
                    {k: distilled[k] for k in ("label_weight", "teacher_weight", "temperature")}
                ),
                "temperature": float(selection["temperature"]),
                "temperature_chosen_by": selection["chosen_by"],
                "temperature_grid_valid_auc": dg.MetadataValue.json(selection["valid_auc"]),
            }
        )
        for key in ("gap_to_teacher", "lift_over_alone", "teacher_auc", "student_alone_auc"):
            if compared[key] is not None:
                metadata[key] = float(compared[key])
        for key in ("lift_note", "gap_note"):
            if compared[key]:
                metadata[key] = compared[key]
        if online_teacher.get("test_auc") is not None:
            metadata["online_teacher_test_auc"] = float(online_teacher["test_auc"])
            metadata["online_weights_are"] = distilled["weights_are"]
        metadata["student_latency_p50_ms"] = compared["student_latency_ms"]["p50"]
        if "teacher_latency_ms" in compared:
            metadata["teacher_latency_p50_ms"] = compared["teacher_latency_ms"]["p50"]
        # data version = the artifact's content hash (see assets.models): a new student marks the evaluation unsynced
        return dg.MaterializeResult(metadata=metadata, data_version=dg.DataVersion(result.artifact_dir.name))

    return _distilled


def distilled_assets() -> list[dg.AssetsDefinition]:
    from ctr_dagster.distillation import students

    return [distilled_asset(s, t) for s, t in students(default_registry())]
