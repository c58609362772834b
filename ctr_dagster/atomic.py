"""Atomic small-file writes: a reader (another Dagster run, the CLI) sees the old file or the new one,
never half of one. The temporary file sits in the target's folder so the rename stays on one disk."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


def write_text(path: Path, text: str) -> Path:
    """Write `text` to `path` through a temporary file and an atomic rename; creates the folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json(path: Path, value: Any, **dumps: Any) -> Path:
    """`write_text` of `json.dumps(value, **dumps)`."""
    return write_text(path, json.dumps(value, **dumps))
