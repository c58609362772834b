"""Code-location load time: a fresh interpreter importing the definitions (what `dagster dev` does)."""

import statistics
import subprocess
import sys
import time
from pathlib import Path

from common import write_result

ROOT = Path(__file__).resolve().parents[1]


def main(repeats: int = 5) -> None:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import assets.definitions"], cwd=ROOT, check=True)
        times.append(time.perf_counter() - started)
    base = []
    for _ in range(repeats):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import dagster"], cwd=ROOT, check=True)
        base.append(time.perf_counter() - started)
    write_result("load", {
        "code_location_load_s_median": statistics.median(times),
        "code_location_load_s_all": times,
        "import_dagster_alone_s_median": statistics.median(base),
        "goal_s": 2.0,
    })


if __name__ == "__main__":
    main()
