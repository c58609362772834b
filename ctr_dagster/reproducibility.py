"""The reproducibility record of a trained model: what it would take to train it again.

Each model training writes one JSON record next to its artifacts (``$CTR_HOME/records/<model>/``):
the seed, the plugin's config, hashes of the training data and of the plugin's own code, the
library versions and the hardware. Two records with equal data hash, code hash, config, seed and
library versions describe the same computation; `ctr_dagster.modeling` re-runs are tested to
reproduce the metrics within `METRIC_TOLERANCE` on the same machine.

Nothing heavy is imported: versions come from package metadata, not from importing the libraries
(torch is asked for its CUDA device only when the process has already imported it).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import importlib.metadata
import json
import os
import platform
import sys
from pathlib import Path
from typing import Any

from ctr_dagster import atomic

#: Same machine, same record: metrics agree to this absolute tolerance (CPU training is
#: deterministic here; the tolerance absorbs float32 summation order in scoring).
METRIC_TOLERANCE = 1e-6

#: Libraries whose versions change what a model computes (reported when installed).
LIBRARIES = (
    "ctr-dagster",
    "numpy",
    "pyarrow",
    "scikit-learn",
    "lightgbm",
    "torch",
    "dagster",
    "duckdb",
    "great-expectations",
)


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def code_sha256(plugin_class: type) -> tuple[str, str]:
    """(sha256, root) of every ``.py`` file of the package that defines the plugin class.

    The whole top-level package counts (not just the class's module): a change in a helper module
    changes what the model computes.
    """
    top = plugin_class.__module__.split(".")[0]
    module = sys.modules[top]
    files = getattr(module, "__path__", None)
    root = Path(list(files)[0]) if files else Path(module.__file__ or "")
    paths = sorted(root.rglob("*.py")) if root.is_dir() else [root]
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.relative_to(root.parent).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest(), str(root)


def library_versions(extra: tuple[str, ...] = ()) -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in LIBRARIES + extra:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def hardware() -> dict[str, Any]:
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor() or _cpu_model(),
        "cpu_count": os.cpu_count(),
    }
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        info["cuda_devices"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return info


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def build_record(
    *,
    model: str,
    distribution: str | None,
    plugin_class: type,
    config: dict[str, Any],
    seed: int,
    device: str,
    data_path: Path | str,
    data_rows: dict[str, int],
    artifact: Path,
    metrics: dict[str, Any],
    fit_seconds: float,
    data_sha256: str | None = None,
) -> dict[str, Any]:
    """The reproducibility record of one training; `data_sha256`: the training table's content hash
    when already known (e.g. from an object-store warehouse), else hashed from the file `data_path`."""
    code_hash, code_root = code_sha256(plugin_class)
    return {
        "model": model,
        "distribution": distribution,
        "plugin_class": f"{plugin_class.__module__}:{plugin_class.__qualname__}",
        "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="microseconds"),
        "seed": seed,
        "device": device,
        "config": config,
        "data": {
            "path": str(data_path),
            "sha256": data_sha256 or file_sha256(Path(data_path)),
            "rows": data_rows,
        },
        "code": {"sha256": code_hash, "root": code_root},
        "libraries": library_versions((distribution,) if distribution else ()),
        "hardware": hardware(),
        "artifact": str(artifact),
        "metrics": metrics,
        "fit_seconds": round(fit_seconds, 3),
        "metric_tolerance": METRIC_TOLERANCE,
    }


def write_record(record: dict[str, Any], root: Path) -> Path:
    """Atomically write the record as ``<root>/<model>/<timestamp>-<artifact id>.json``."""
    stamp = record["created_at"].replace(":", "").replace("+00:00", "Z")
    path = root / record["model"] / f"{stamp}-{Path(record['artifact']).name}.json"
    return atomic.write_json(path, record, indent=2, sort_keys=True)


def same_computation(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """What differs between two records in the inputs of the computation (empty: the same)."""
    differences = []
    for key, get in {
        "data": lambda r: r["data"]["sha256"],
        "code": lambda r: r["code"]["sha256"],
        "config": lambda r: json.dumps(r["config"], sort_keys=True),
        "seed": lambda r: r["seed"],
        "libraries": lambda r: json.dumps(r["libraries"], sort_keys=True),
    }.items():
        if get(a) != get(b):
            differences.append(key)
    return differences
