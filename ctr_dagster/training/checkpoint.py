"""Per-epoch training checkpoints: pure state dicts, written atomically, read with `weights_only=True`.

A checkpoint holds only tensors and plain values (model/optimizer/scheduler/scaler state dicts, the
torch RNG state and a JSON string of the loop's bookkeeping), so loading it never unpickles an
arbitrary object. The file is replaced atomically (tmp + rename): a crash while writing leaves the
previous epoch's checkpoint intact.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

FILE = "last.pt"


def path_in(directory: Path) -> Path:
    return Path(directory) / FILE


def save(directory: Path, state: dict[str, Any], meta: dict[str, Any]) -> Path:
    """Write `state` (tensors / state dicts) + `meta` (JSON-able) as the directory's checkpoint."""
    import torch

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    target = path_in(directory)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    torch.save({**state, "meta_json": json.dumps(meta, sort_keys=True)}, tmp)
    os.replace(tmp, target)
    return target


def load(directory: Path) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """(state, meta) of the directory's checkpoint, or None when there is none or it is unreadable."""
    import torch

    target = path_in(directory)
    if not target.is_file():
        return None
    try:
        state = torch.load(target, map_location="cpu", weights_only=True)
        meta = json.loads(state.pop("meta_json"))
    except Exception:  # a truncated or foreign file: start afresh rather than fail the run
        return None
    return state, meta
