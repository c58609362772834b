"""How far apart are full retrains of one model on the same data? The noise a warm-start verdict sits in.

The warm-start audit (`ctr_dagster.warm_start_audit`) and `bench_nightly.py` judge a warm start against
the DeLong interval of one full retrain's validation AUC. That interval covers the sampling of the
validation rows, not the randomness of training (initialisation, batch order): two full retrains with
different seeds can differ by more than it allows. This script retrains the named models from scratch
with several seeds on a copy of a kept project home (`bench_nightly.py --keep DIR` leaves them; the
home itself is not touched) and reports their validation AUCs, their spread, and where the home's
own model and its warm-start audit (when it has one) fall among them.

    .venv/bin/python benchmarks/bench_retrain_spread.py --home /tmp/bn/audit/home \\
        --models din_student din_student_distilled --seeds 1 2 3
"""

import argparse
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import write_result


def retrain(home, name: str, seed: int) -> float | None:
    """Validation AUC of `name` trained from scratch with `seed` in `home` (a model plugin, or a
    distilled student `<student>_distilled` with its teacher's artifact in the home)."""
    from ctr_dagster import distillation
    from ctr_dagster.modeling import train_and_store
    from ctr_dagster.registry import default_registry
    from ctr_dagster.warehouse import Warehouse

    registry = default_registry()
    wh = Warehouse(home.warehouse)
    pairs = {distillation.entry_name(s.name): (s, t) for s, t in distillation.students(registry)}
    quiet = {"log": lambda line: None, "seed": seed}
    if name in pairs:
        student, teacher = pairs[name]
        weights = distillation.DistillationWeights()
        result = distillation.distill_and_store(student, teacher, {}, weights, wh, home, **quiet)
    else:
        result = train_and_store(registry.get("model", name), {}, wh, home, skip_unchanged=False, **quiet)
    return result.scores.get("valid_auc")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--home", type=Path, required=True, help="a kept CTR_HOME (not modified)")
    parser.add_argument("--models", nargs="+", required=True)
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    parser.add_argument("--name", default="retrain_spread")
    args = parser.parse_args()

    from ctr_dagster.modeling import read_status
    from ctr_dagster.settings import Home

    source = Home(args.home)
    scratch = Path(tempfile.mkdtemp(prefix="retrain_spread-"))
    figures: dict[str, object] = {"home": str(args.home), "seeds": args.seeds, "models": {}}
    try:
        for name in args.models:
            status = read_status(source, name) or {}
            aucs = {}
            for seed in args.seeds:
                copy = scratch / f"{name}-{seed}"
                # the tables and statuses; artifacts are named by absolute path and stay where they are
                shutil.copytree(
                    source.root, copy, ignore=shutil.ignore_patterns("work", "artifacts", "mlruns")
                )
                aucs[seed] = retrain(Home(copy), name, seed)
                print(f"{name} seed {seed}: valid AUC {aucs[seed]}", flush=True)
                shutil.rmtree(copy, ignore_errors=True)
            values = [v for v in aucs.values() if v is not None]
            audit = status.get("warm_start_audit") or {}
            own = (status.get("metrics") or {}).get("valid_auc")
            figures["models"][name] = {
                "valid_auc_by_seed": aucs,
                "home_model_valid_auc": own,
                "home_model_seed": "the home's own (run seed)",
                "mean": statistics.fmean(values) if values else None,
                "sd": statistics.stdev(values) if len(values) > 1 else None,
                "range": [min(values), max(values)] if values else None,
                "warm_start_audit": audit or None,
            }
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    write_result(args.name, figures)


if __name__ == "__main__":
    main()
