"""The versioned JSON description of a saved artifact (``model.json``; an encoder's ``encoder.json``).

A plugin's `save` writes its weights in a safe format (safetensors, LightGBM text, ...) and one small
JSON document beside them: what kind of artifact it is (the plugin's name), the version of its own
layout, and its fields (config, feature layout, training summary, ...). `load` reads it back through
`read_meta`, which refuses a document of another kind or of a version the code does not read, with
an error naming the file -- better than misreading weights. Plugins may use this engine helper (they
depend on the engine's package); the format version is the plugin's own.

The write is atomic (`ctr_dagster.atomic`): a reader never sees half a document. Documents written
before the "kind" field existed are accepted on their version alone (the torch base's older "plugin"
field counts as their kind).
"""

from __future__ import annotations

import json
from collections.abc import Collection
from pathlib import Path
from typing import Any

from ctr_dagster.atomic import write_json

META_FILE = "model.json"
RESERVED = ("kind", "format_version")


class ArtifactMetaError(ValueError):
    """An artifact's JSON description is missing, unreadable, of another kind or of an unknown version."""


def write_meta(
    directory: Path, kind: str, format_version: int, *, filename: str = META_FILE, **fields: Any
) -> Path:
    """Write ``{"kind": kind, "format_version": format_version, **fields}`` to ``directory/filename``."""
    document = {"kind": kind, "format_version": format_version, **fields}
    return write_json(Path(directory) / filename, document, sort_keys=True, indent=1)


def read_meta(
    directory: Path,
    kind: str,
    supported_versions: int | Collection[int],
    *,
    filename: str = META_FILE,
) -> dict[str, Any]:
    """The fields `write_meta` stored in ``directory/filename`` (without "kind" / "format_version").

    Raises `ArtifactMetaError` naming the file when it is missing or not a JSON object, describes
    another kind of artifact, or has a format version outside `supported_versions`.
    """
    path = Path(directory) / filename
    versions = {supported_versions} if isinstance(supported_versions, int) else set(supported_versions)
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ArtifactMetaError(f"{path}: no such file (is {directory} a saved {kind!r} artifact?)") from exc
    except (OSError, ValueError) as exc:
        raise ArtifactMetaError(f"{path}: unreadable artifact description ({exc})") from exc
    if not isinstance(document, dict):
        raise ArtifactMetaError(f"{path}: expected a JSON object, got {type(document).__name__}")
    found = document.get("kind", document.get("plugin"))
    if found is not None and found != kind:
        raise ArtifactMetaError(f"{path} describes a {found!r} artifact, not a {kind!r} one")
    version = document.get("format_version")
    if version not in versions:
        raise ArtifactMetaError(
            f"{path}: unsupported model format {version!r} for {kind!r} "
            f"(this code reads format version {', '.join(map(str, sorted(versions)))})"
        )
    return {k: v for k, v in document.items() if k not in RESERVED}
