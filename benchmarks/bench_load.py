"""Code-location load time: a fresh interpreter importing the definitions (what `dagster dev` does).

Reports the wall time of the whole process (interpreter start included) and the time spent in the
import itself, next to `import dagster` alone, which is the floor no code location can go below.
"""

import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from common import write_result

ROOT = Path(__file__).resolve().parents[1]
PROBE = (
    "import time, json; t = time.perf_counter(); import {module}; print(json.dumps(time.perf_counter() - t))"
)


def _measure(module: str, repeats: int) -> tuple[list[float], list[float]]:
    walls, imports = [], []
    for _ in range(repeats):
        started = time.perf_counter()
        out = subprocess.run(
            [sys.executable, "-c", PROBE.format(module=module)],
            cwd=ROOT,
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        walls.append(time.perf_counter() - started)
        imports.append(json.loads(out.strip().splitlines()[-1]))
    return walls, imports


def main(repeats: int = 7) -> None:
    walls, imports = _measure("assets.definitions", repeats)
    base_walls, base_imports = _measure("dagster", repeats)
    write_result(
        "load",
        {
            "process_wall_s_median": statistics.median(walls),
            "definitions_import_s_median": statistics.median(imports),
            "dagster_alone_process_wall_s_median": statistics.median(base_walls),
            "dagster_alone_import_s_median": statistics.median(base_imports),
            "goal_s": 2.0,
        },
    )


if __name__ == "__main__":
    main()
