"""Studies (group "studies"): experiments shown in the UI but outside the nightly lineage.

`suan_scaling` exists only when the opt-in `suan` model plugin is installed (`pip install -e
plugins/ctr-suan`); without it `study_assets()` returns nothing, so the default Materialize-all never
runs a study. Materialized, it runs the scaling study (`ctr_dagster.studies.run_scaling`) at its
smallest settings (the `tiny` world, grades 1-3 x 1.5k / 4.5k / 13.5k training rows, up to 4 epochs
or enough for 200 steps, one torch thread: 48 s measured on a shared 2-core machine; all of it launchpad config) and
shows the fits, the cells and the plot; when the benchmark's result (`benchmarks/results/suan.json`,
from `benchmarks/bench_suan.py`) exists it is shown beside it. It reads no upstream asset: the study
builds its own synthetic world.
"""

from pathlib import Path

import dagster as dg

from assets.metadata import first_view_table, markdown_table
from assets.models import TORCH_POOL
from assets.resources import WarehouseResource
from ctr_dagster.registry import default_registry

#: The model the scaling asset studies (its Config must have a `grade`).
SCALED_MODEL = "suan"
#: Where `benchmarks/bench_suan.py` writes its result (shown by the asset when present).
BENCHMARK_RESULT = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "suan.json"


class SuanScalingConfig(dg.Config):
    """The study's settings; the defaults are `ctr_dagster.studies.SMALLEST`."""

    profile: str = "tiny"  # synthetic world profile the study builds in memory
    seeds: list[int] = [0]  # one world + subsample + init seed each
    grades: list[int] = [1, 2, 3]  # model grades (SUAN: 1-5)
    train_rows: list[int] = [1_500, 4_500, 13_500]  # nested subsets of the world's train split
    epochs: int = 4  # most passes per fit (early stopping on validation AUC may end it sooner)
    min_steps: int = 200  # smaller training sets may run more epochs, so that a fit may take this many steps
    max_epochs: int = 20  # ... but never more epochs than this
    num_threads: int = 1  # torch threads (1: SUAN collapses under OpenMP contention on shared CPUs)
    show_benchmark: bool = True  # also show benchmarks/results/suan.json when it exists


def scaling_metadata(doc: dict, png: Path | None, prefix: str = "") -> dict[str, dg.MetadataValue]:
    """A scaling study as metadata: the fits (first view), the cells, the plot (inline PNG behind
    [Show Markdown]) and the study's settings."""
    from ctr_dagster import reports, studies

    meta: dict[str, dg.MetadataValue] = {
        f"{prefix}headline": dg.MetadataValue.text(studies.headline(doc["fits"])),
        f"{prefix}fits": first_view_table(studies.fit_rows(doc["fits"])),
        f"{prefix}cells": dg.MetadataValue.md(markdown_table(studies.cell_rows(doc["cells"]))),
        f"{prefix}settings": dg.MetadataValue.json(doc.get("settings", {})),
        f"{prefix}wall_s": dg.MetadataValue.float(float(doc.get("wall_s") or 0.0)),
    }
    if png is not None:
        meta[f"{prefix}plot"] = dg.MetadataValue.md(reports.png_markdown(png, doc.get("title", "scaling")))
        meta[f"{prefix}plot_path"] = dg.MetadataValue.path(str(png))
    return meta


def suan_scaling(
    context: dg.AssetExecutionContext, config: SuanScalingConfig, warehouse: WarehouseResource
) -> dg.MaterializeResult:
    """SUAN's AUC and logloss against log10(parameters) and log10(training samples) on the synthetic world."""
    from ctr_dagster import studies

    settings = studies.ScalingSettings(
        profile=config.profile,
        seeds=tuple(config.seeds),
        grades=tuple(config.grades),
        train_rows=tuple(config.train_rows),
        epochs=config.epochs,
        min_steps=config.min_steps,
        max_epochs=config.max_epochs,
        num_threads=config.num_threads,
    )
    model_cls = default_registry().get("model", SCALED_MODEL).cls
    doc = studies.run_scaling(model_cls, settings, log=context.log.info)
    path, png = studies.write_study(doc, warehouse.ctr_home.reports / "suan_scaling")
    meta = scaling_metadata(doc, png)
    meta["study_json"] = dg.MetadataValue.path(str(path))
    if config.show_benchmark and BENCHMARK_RESULT.exists():
        try:
            bench, bench_png = studies.load_scaling(BENCHMARK_RESULT)
        except ValueError as exc:
            context.log.warning(f"suan_scaling: {exc}")
        else:
            meta.update(scaling_metadata(bench, bench_png, prefix="benchmark/"))
            meta["benchmark/json"] = dg.MetadataValue.path(str(BENCHMARK_RESULT))
    return dg.MaterializeResult(metadata=meta)


def study_assets() -> list[dg.AssetsDefinition]:
    """`suan_scaling` when the `suan` model plugin is installed (and selected), else nothing."""
    if ("model", SCALED_MODEL) not in default_registry():
        return []
    return [
        dg.asset(
            name="suan_scaling",
            group_name="studies",
            code_version="1",
            kinds={"python"},
            pool=TORCH_POOL,
            description="SUAN scaling study on the synthetic world (grades x training sizes); "
            "runs at its smallest settings unless configured",
        )(suan_scaling)
    ]
