"""Where the project keeps its state, resolved from the environment with sensible local defaults."""

from __future__ import annotations

import os
from pathlib import Path


def ctr_home() -> Path:
    """Root of all generated state (warehouse, vocabularies, artifacts). Default: ./.ctr_home."""
    return Path(os.environ.get("CTR_HOME", ".ctr_home")).resolve()


def warehouse_root() -> Path:
    return ctr_home() / "warehouse"
