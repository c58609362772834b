"""Writing a serving bundle's shared parts: the manifest (sha256 of every file, versions, provenance),
the id vocabularies as JSON, and the runtime copied in as ``score.py``.

Reading and checking a bundle is the runtime's job (`ctr_dagster.serving.runtime.verify`): the one
reader ships inside every bundle, so the checks a serving host runs are the ones tested here. What a
model writes into ``model/`` is its own export's (`ctr_dagster.serving.export`).
"""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import json
import platform
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ctr_dagster.atomic import write_json
from ctr_dagster.serving import runtime

if TYPE_CHECKING:
    import pyarrow as pa

MODEL_DIR = "model"
VOCAB_DIR = "vocab"


class NotExportable(Exception):
    """A model that cannot be written as a bundle, with the reason (said by `ctr export`, never skipped)."""


def version_of(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


#: Libraries a bundle's model kind needs at serving time (their versions go into the manifest, and the
#: runtime warns when it runs on another major.minor).
RUNTIME_LIBRARIES: dict[str, tuple[str, ...]] = {
    "torch_export": ("numpy", "torch", "onnxruntime"),
    "lightgbm": ("numpy", "lightgbm"),
}


def write_vocabularies(directory: Path, tables: dict[str, pa.Table]) -> dict[str, str]:
    """Each vocabulary (VOCAB schema: key, index, version) as ``vocab/<name>.json`` ({key: index});
    returns name -> path in the bundle. JSON, not pickles, so any runtime can read it."""
    folder = Path(directory) / VOCAB_DIR
    folder.mkdir(parents=True, exist_ok=True)
    files = {}
    for name in runtime.VOCABULARIES:
        table = tables.get(name)
        mapping: dict[str, int] = {}
        if table is not None and table.num_rows:
            keys = table.column("key").to_pylist()
            indices = table.column("index").to_pylist()
            mapping = {str(k): int(i) for k, i in zip(keys, indices, strict=True) if k is not None}
        path = folder / f"{name}.json"
        path.write_text(json.dumps(mapping, sort_keys=True, separators=(",", ":")), encoding="utf-8")
        files[name] = path.relative_to(directory).as_posix()
    return files


def copy_runtime(directory: Path) -> str:
    """The runtime module, copied as the bundle's ``score.py`` (its own command line and loader)."""
    target = Path(directory) / runtime.RUNTIME_FILE
    shutil.copyfile(Path(runtime.__file__), target)
    return target.name


def write_manifest(
    directory: Path,
    *,
    model: dict[str, Any],
    source: dict[str, Any],
    request: dict[str, Any],
    plugin: dict[str, Any],
) -> dict[str, Any]:
    """Write ``manifest.json`` last, with the sha256 of every other file of `directory`.

    `model`: the runtime description the model's export returned (kind and its files, relative to
    ``model/``), plus name and task; `source`: where it came from (artifact, metrics); `request`:
    the request conventions (vocabulary files, history capacity); `plugin`: distribution and version.
    """
    directory = Path(directory)
    kind = model.get("kind")
    manifest = {
        "format": runtime.BUNDLE_FORMAT,
        "format_version": runtime.FORMAT_VERSION,
        "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "model": {**model, "directory": MODEL_DIR},
        "source": source,
        "request": request,
        "versions": {
            "python": platform.python_version(),
            "ctr-dagster": version_of("ctr-dagster"),
            "plugin": plugin,
            "runtime": {lib: version_of(lib) for lib in RUNTIME_LIBRARIES.get(str(kind), ("numpy",))},
        },
        "files": {name: runtime.sha256_file(directory / name) for name in runtime.bundle_files(directory)},
    }
    write_json(directory / runtime.MANIFEST_FILE, manifest, indent=2, sort_keys=True)
    return manifest
