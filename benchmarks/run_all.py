"""Run every benchmark (each writes benchmarks/results/<name>.json). Slow: minutes on 2 cores."""

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

for script, args in [
    ("bench_load.py", []),
    ("bench_generator.py", []),
    ("bench_ingest.py", []),
    ("bench_graph.py", ["small"]),
    ("bench_din.py", []),
    ("bench_encoders.py", []),
    ("bench_extraction.py", ["small"]),
]:
    print(f"== {script} {' '.join(args)}", flush=True)
    subprocess.run([sys.executable, str(HERE / script), *args], cwd=HERE.parent, check=True)
