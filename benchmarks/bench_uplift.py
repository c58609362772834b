"""Uplift on the coupon experiment: ECUP, the S- and T-learner and the oracle, per arm and chain stage,
over >= 3 world seeds (issue 19).

For each seed the synthetic world (`--profile`, default small; its coupon arms: 1 and 2 with click and
conversion effects that differ by user, 3 a placebo) is built in memory as the TRAINING table the
lineage would produce (`testing.synthetic_training_table`: last day test, the one before valid), every
uplift plugin is fitted with its defaults on train/valid, and `ctr_dagster.uplift.evaluate_uplift`
scores each on the test rows per arm x stage: normalised AUUC and Qini coefficient with 95 %
bootstrap intervals, the oracle's true effects as the ceiling. Reported: per model x arm x stage the
mean over seeds with a 95 % t-interval, the per-seed values, and how often the zero-effect arm's
interval contained 0.

    .venv/bin/python benchmarks/bench_uplift.py [--profile small] [--seeds 0 1 2] [--models ecup s_learner t_learner]

Writes benchmarks/results/uplift.json and prints a table. Nothing is chosen on test.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_result  # noqa: E402


def t_interval(values: list[float]) -> list[float] | None:
    from scipy import stats

    if len(values) < 2:
        return None
    mean, sd = float(np.mean(values)), float(np.std(values, ddof=1))
    half = float(stats.t.ppf(0.975, len(values) - 1)) * sd / np.sqrt(len(values))
    return [mean - half, mean + half]


def run_seed(profile: str, seed: int, names: list[str]) -> dict:
    import pyarrow as pa
    import pyarrow.compute as pc

    from ctr_dagster.contracts import FitContext
    from ctr_dagster.datagen import build_world
    from ctr_dagster.datagen import profile as world_profile
    from ctr_dagster.registry import default_registry
    from ctr_dagster.testing import synthetic_training_table, training_cardinalities
    from ctr_dagster.uplift.evaluate import evaluate_uplift, oracle_for

    table = synthetic_training_table(profile, seed=seed)
    train, valid, test = (
        table.filter(pc.equal(table.column("split"), s)) for s in ("train", "valid", "test")
    )
    world = build_world(world_profile(profile, corruption_rate=0.0, seed=seed))
    oracle_table = pa.concat_tables([world.day(d).oracle for d in world.dates()[-1:]])
    registry = default_registry()
    models, seconds = {}, {}
    for name in names:
        plugin = registry.get("model", name)
        started = time.perf_counter()
        ctx = FitContext(seed=seed, cardinalities=training_cardinalities(table), log=lambda s: None)
        models[name] = plugin.cls(plugin.cls.Config()).fit(train, valid, ctx)
        seconds[name] = round(time.perf_counter() - started, 1)
        print(f"seed {seed}: {name} fitted in {seconds[name]} s", flush=True)
    report = evaluate_uplift(
        models, test, oracle_for(test, oracle_table), seed=seed, cluster_column="user_id"
    )
    return {
        "seed": seed,
        "rows": {"train": train.num_rows, "test": test.num_rows},
        "fit_seconds": seconds,
        "report": report.as_json(),
    }


def summarise(runs: list[dict]) -> list[dict]:
    cells: dict[tuple[str, int, str], dict[str, list]] = {}
    for run in runs:
        for r in run["report"]["rows"]:
            cell = cells.setdefault(
                (r["model"], r["arm"], r["stage"]), {"auuc": [], "qini": [], "zero": [], "covers0": []}
            )
            for metric in ("auuc", "qini"):
                if r[metric] is not None:
                    cell[metric].append(r[metric])
            cell["zero"].append(r["zero_effect_arm"])
            if r["zero_effect_arm"] and r["auuc_low"] is not None:
                cell["covers0"].append(r["auuc_low"] <= 0 <= r["auuc_high"])
    rows = []
    for (model, arm, stage), c in sorted(
        cells.items(), key=lambda kv: (kv[0][2], kv[0][1], kv[0][0] == "oracle", kv[0][0])
    ):
        rows.append(
            {
                "stage": stage,
                "arm": arm,
                "model": model,
                "zero_effect_arm": all(c["zero"]),
                "auuc_mean": float(np.mean(c["auuc"])) if c["auuc"] else None,
                "auuc_t95": t_interval(c["auuc"]),
                "auuc_per_seed": c["auuc"],
                "qini_mean": float(np.mean(c["qini"])) if c["qini"] else None,
                "qini_t95": t_interval(c["qini"]),
                "zero_arm_interval_contains_0": f"{sum(c['covers0'])}/{len(c['covers0'])}"
                if c["covers0"]
                else None,
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="small")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--models", nargs="+", default=["ecup", "s_learner", "t_learner"])
    args = parser.parse_args()
    runs = [run_seed(args.profile, seed, args.models) for seed in args.seeds]
    rows = summarise(runs)
    for r in rows:
        ci = r["auuc_t95"]
        print(
            f"{r['stage']:<10} arm {r['arm']} {r['model']:<10} AUUC {r['auuc_mean']:+.4f}"
            + (f" [{ci[0]:+.4f}, {ci[1]:+.4f}]" if ci else "")
            + f"  Qini {r['qini_mean']:+.4f}"
            + (
                f"  zero-effect arm, interval contains 0: {r['zero_arm_interval_contains_0']}"
                if r["zero_effect_arm"]
                else ""
            )
        )
    write_result("uplift", {"profile": args.profile, "seeds": args.seeds, "summary": rows, "runs": runs})


if __name__ == "__main__":
    main()
