"""End-to-end data-graph time on a profile (default small), in a throw-away CTR_HOME/DAGSTER_HOME."""

import os
import sys
import tempfile
import time
from pathlib import Path

from common import write_result

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    profile = sys.argv[1] if len(sys.argv) > 1 else "small"
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.update(
            {"CTR_PROFILE": profile, "CTR_HOME": f"{tmp}/ctr", "DAGSTER_HOME": f"{tmp}/dagster"}
        )
        sys.path.insert(0, str(ROOT))
        started = time.perf_counter()
        from assets.run import materialize_all, summary

        timings = materialize_all(log=lambda s: print(s, flush=True))
        total = time.perf_counter() - started
        write_result(
            f"graph_{profile}", {"total_s_incl_imports": total, "steps_s": timings, "summary": summary()}
        )


if __name__ == "__main__":
    main()
