"""Load the project's `assets/` code location from its folder, without touching `sys.path`.

`assets/` is not an installed package (Dagster loads it through `workspace.yaml`). The CLI and the
benchmarks import it from a project folder by file location (`importlib.util`), registering the
package under its own name so its ``from assets.x import y`` imports resolve inside that folder.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

PACKAGE = "assets"


def load_code_location(project: Path, module: str = "definitions") -> ModuleType:
    """``assets.<module>`` of the project at `project` (a folder holding ``assets/__init__.py``)."""
    folder = (Path(project) / PACKAGE).resolve()
    init = folder / "__init__.py"
    if not init.is_file():
        raise FileNotFoundError(f"{Path(project).resolve()} has no {PACKAGE}/__init__.py")
    loaded = sys.modules.get(PACKAGE)
    if loaded is None:
        spec = importlib.util.spec_from_file_location(PACKAGE, init, submodule_search_locations=[str(folder)])
        assert spec is not None and spec.loader is not None
        package = importlib.util.module_from_spec(spec)
        sys.modules[PACKAGE] = package
        try:
            spec.loader.exec_module(package)
        except BaseException:
            del sys.modules[PACKAGE]
            raise
    elif [str(Path(p).resolve()) for p in getattr(loaded, "__path__", [])] != [str(folder)]:
        raise ImportError(
            f"another '{PACKAGE}' package is already imported ({getattr(loaded, '__path__', loaded)}); "
            f"cannot load {folder} in the same process"
        )
    return importlib.import_module(f"{PACKAGE}.{module}")
