"""Export a trained model as a serving bundle (`ctr export`): find its artifact, load it, let the plugin
write its part, add the shared parts, and keep the bundle only if it scores as the model does.

How a plugin opts in (the engine knows no model; a plugin knows no Dagster):

* a method ``export(directory, example) -> dict`` on its class -- `TorchModel` has one, so every
  torch plugin on the shared trainer is exportable (`ctr_dagster.serving.torch_export`); or
* a function ``export(model, directory, example) -> dict`` in its package's ``serving`` module,
  which keeps serving code out of the module the code location imports (how ctr-lightgbm opts in).

Either writes its files into `directory` (the bundle's ``model/``) and returns the runtime description:
``kind`` (one of `runtime.MODEL_KINDS`) and its files. ``example`` holds a few training rows, features
only, to trace with. A plugin with neither, an uplift model (a bundle serves click probabilities of
candidates, not per-arm effects) or a model whose export fails is *not exportable*, and `ctr export`
says why (`NotExportable`), never skipping it silently.

Every bundle is checked before it is kept: loaded by its own runtime (manifest hashes included), it
must score the probes (`ctr_dagster.serving.probes`: several users, one user's candidates, one row,
new users) as the model's `predict` does, within `PARITY_TOLERANCE`. It is built in a temporary
folder beside the target and renamed into place, so a failed export leaves nothing half-written.
"""

from __future__ import annotations

import importlib
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ctr_dagster.serving import runtime
from ctr_dagster.serving.bundle import (
    MODEL_DIR,
    NotExportable,
    copy_runtime,
    write_manifest,
    write_vocabularies,
)
from ctr_dagster.serving.probes import PARITY_TOLERANCE

if TYPE_CHECKING:
    import pyarrow as pa

    from ctr_dagster.registry import Registry
    from ctr_dagster.settings import Home
    from ctr_dagster.warehouse import Warehouse

#: Test rows handed to a plugin's export (trace + probes).
EXAMPLE_ROWS = 256
CHAMPION = "champion"


class ExportCheckError(NotExportable):
    """The written bundle does not score as the model does (beyond `PARITY_TOLERANCE`): not kept."""


@dataclass
class ExportResult:
    """One model's export: where the bundle is, or why there is none."""

    name: str
    plugin: str | None = None
    directory: Path | None = None
    kind: str | None = None
    strategy: str | None = None
    max_gap: float | None = None
    checked_rows: int = 0
    seconds: float = 0.0
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def as_row(self) -> dict[str, Any]:
        return {
            "model": self.name,
            "plugin": self.plugin,
            "status": "exported" if self.ok else "not exported",
            "bundle": str(self.directory) if self.directory else None,
            "kind": self.kind,
            "strategy": self.strategy,
            "max_gap": self.max_gap,
            "checked_rows": self.checked_rows,
            "seconds": round(self.seconds, 2),
            "reason": self.error,
        }


def exporter_for(model: Any) -> Callable[[Path, pa.Table], dict[str, Any]]:
    """The plugin's export (method, or ``<package>.serving.export``); `NotExportable` when it has none."""
    method = getattr(model, "export", None)
    if callable(method):
        return method
    package = type(model).__module__.split(".")[0]
    try:
        module = importlib.import_module(f"{package}.serving")
    except ModuleNotFoundError as exc:
        if exc.name != f"{package}.serving":
            raise
        module = None
    function = getattr(module, "export", None)
    if not callable(function):
        raise NotExportable(
            f"{getattr(model, 'name', type(model).__name__)} does not opt in to export: its class has no "
            f"export(directory, example) method and there is no {package}.serving.export(model, directory, "
            "example) function"
        )
    return lambda directory, example: function(model, directory, example)


def check_bundle(directory: Path, model: Any, example: pa.Table) -> tuple[float, int]:
    """(largest |bundle - predict|, rows compared) over the probes; `ExportCheckError` beyond tolerance."""
    import numpy as np

    from ctr_dagster.serving.convert import rows_from_table
    from ctr_dagster.serving.probes import probe_tables

    bundle = runtime.load(directory)
    worst, rows = 0.0, 0
    for name, table in probe_tables(example).items():
        expected = np.asarray(model.predict(table), dtype=np.float64)
        got = bundle.score_rows(rows_from_table(table))
        gap = float(np.max(np.abs(got - expected), initial=0.0))
        if not gap <= PARITY_TOLERANCE:
            raise ExportCheckError(
                f"the bundle's scores differ from the model's predict by {gap:.2e} on the {name} probe "
                f"(tolerance {PARITY_TOLERANCE:g}): bundle not kept"
            )
        worst, rows = max(worst, gap), rows + table.num_rows
    return worst, rows


def write_bundle(
    model: Any,
    out: Path,
    *,
    name: str,
    example: pa.Table,
    vocabularies: dict[str, pa.Table],
    source: dict[str, Any] | None = None,
    plugin: dict[str, Any] | None = None,
    force: bool = False,
) -> ExportResult:
    """Write `model` as a bundle at `out` (see the module docstring) and return what was written.

    `vocabularies`: the VOCAB tables (key, index, version) of user, item, category, device, region and
    age group; `example`: training rows (labels are dropped here); `source` / `plugin`: provenance
    for the manifest. Raises `NotExportable` (and `ExportCheckError`) with the reason."""
    from ctr_dagster.dataset import sequence_capacity
    from ctr_dagster.modeling import features_only

    started = time.perf_counter()
    task = getattr(model, "task", "ctr")
    if task != "ctr":
        raise NotExportable(
            f"{name} is an {task!r} model: a bundle serves click probabilities of one user's candidates; "
            "serving per-arm effects is not supported"
        )
    exporter = exporter_for(model)
    example = features_only(example)
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not force:
        raise FileExistsError(f"{out} exists and is not empty (pass --force to replace it)")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-bundle-", dir=out.parent))
    try:
        description = exporter(tmp / MODEL_DIR, example)
        kind = (description or {}).get("kind")
        if kind not in runtime.MODEL_KINDS:
            raise NotExportable(
                f"{name}: its export returned kind {kind!r}; the runtime runs {sorted(runtime.MODEL_KINDS)}"
            )
        vocab_files = write_vocabularies(tmp, vocabularies)
        copy_runtime(tmp)
        write_manifest(
            tmp,
            model={**description, "name": name, "plugin": getattr(model, "name", None), "task": task},
            source=source or {},
            request={"history_capacity": sequence_capacity(example), "vocabularies": vocab_files},
            plugin=plugin or {},
        )
        gap, rows = check_bundle(tmp, model, example)
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return ExportResult(
        name,
        getattr(model, "name", None),
        out,
        kind,
        description.get("strategy"),
        gap,
        rows,
        time.perf_counter() - started,
    )


def resolve(home: Home, which: str) -> tuple[str, str, Path, dict[str, Any]]:
    """(entry name, plugin, artifact folder, provenance) of a model name or ``champion``."""
    from ctr_dagster.champion import ChampionStore
    from ctr_dagster.modeling import read_status, status_path

    if which == CHAMPION:
        entry = ChampionStore(home.champion).current()
        if entry is None:
            raise NotExportable("there is no champion yet (materialize `evaluation` and `champion` first)")
        name, plugin, artifact = entry["name"], entry.get("plugin") or entry["name"], entry.get("artifact")
        source = {
            "selected_as": "champion",
            "promoted_at": entry.get("promoted_at"),
            "metrics": entry.get("metrics"),
        }
    else:
        status = read_status(home, which)
        if status is None:
            raise NotExportable(f"{which} has never been trained here (no {status_path(home, which)})")
        if status.get("status") != "ok":
            raise NotExportable(
                f"{which}'s latest training failed ({status.get('error')}); retrain it, then export"
            )
        name, plugin, artifact = which, status.get("plugin") or which, status.get("artifact")
        source = {"selected_as": "latest", "trained_at": status.get("at"), "metrics": status.get("metrics")}
    if not artifact or not Path(artifact).is_dir():
        raise NotExportable(f"{name}: its artifact {artifact} is missing")
    source.update({"artifact": str(artifact), "artifact_sha16": Path(artifact).name})
    return name, plugin, Path(artifact), source


def example_rows(warehouse: Warehouse, rows: int = EXAMPLE_ROWS) -> pa.Table:
    """The first `rows` test rows of the training dataset (valid, then train, when it has none)."""
    from ctr_dagster.modeling import Splits

    if not warehouse.exists("training_dataset"):
        raise NotExportable(
            "no training_dataset: materialize it first (the export is traced and checked on its rows)"
        )
    splits = Splits.read(warehouse)
    part = next((p for p in (splits.test, splits.valid, splits.train) if p.num_rows), splits.test)
    return part.slice(0, rows)


def export_model(
    home: Home,
    warehouse: Warehouse,
    which: str,
    out: Path,
    *,
    registry: Registry | None = None,
    force: bool = False,
) -> ExportResult:
    """Export the latest good artifact of model `which` (or the champion) to `out`."""
    from ctr_dagster import vocab
    from ctr_dagster.dataset import VOCAB_FIELDS
    from ctr_dagster.registry import discover

    name, plugin_name, artifact, source = resolve(home, which)
    registry = registry or discover(["model"])
    try:
        info = registry.get("model", plugin_name)
    except KeyError as exc:
        raise NotExportable(f"{name}: {exc.args[0]}") from exc
    model = info.cls.load(artifact)
    return write_bundle(
        model,
        out,
        name=name,
        example=example_rows(warehouse),
        vocabularies={field: vocab.load(warehouse, field) for field in VOCAB_FIELDS},
        source=source,
        plugin={"name": info.name, "dist": info.dist, "version": info.version},
        force=force,
    )


def export_all(
    home: Home, warehouse: Warehouse, out_root: Path, *, force: bool = False
) -> list[ExportResult]:
    """Every installed model plugin's entry and every trained entry, each to ``out_root/<name>``;
    the ones that cannot be exported come back with their reason."""
    from ctr_dagster.registry import discover

    registry = discover(["model"])
    trained = sorted(p.parent.name for p in home.models.glob("*/status.json"))
    names = sorted(set(trained) | set(registry.names("model")))
    results = []
    for name in names:
        try:
            results.append(
                export_model(home, warehouse, name, Path(out_root) / name, registry=registry, force=force)
            )
        except (NotExportable, FileExistsError) as exc:
            results.append(ExportResult(name, error=str(exc)))
        except Exception as exc:  # noqa: BLE001 - one model's failure is reported, the others still export
            results.append(ExportResult(name, error=f"{type(exc).__name__}: {exc}"))
    return results
