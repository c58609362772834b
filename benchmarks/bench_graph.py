"""End-to-end data-graph time on a profile (default small), in a throw-away home and Dagster instance."""

import sys
import tempfile
import time
from pathlib import Path

from common import write_result

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    profile = sys.argv[1] if len(sys.argv) > 1 else "small"
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        from ctr_dagster.code_location import load_code_location
        from ctr_dagster.settings import Settings

        settings = Settings(profile=profile, home=Path(tmp) / "ctr", dagster_home=Path(tmp) / "dagster")
        run = load_code_location(ROOT, "run")
        timings = run.materialize_all(settings, log=lambda s: print(s, flush=True))
        total = time.perf_counter() - started
        write_result(
            f"graph_{profile}",
            {"total_s_incl_imports": total, "steps_s": timings, "summary": run.summary(settings)},
        )


if __name__ == "__main__":
    main()
