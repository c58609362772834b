"""AW-MoE vs its uniform-gate ablation vs DIN on the behaviour-segment world (README "Measured").

Usage: .venv/bin/python plugins/ctr-awmoe/scripts/awmoe_vs_din.py [--seeds 0 1 2] [--profile tiny]
       [--models awmoe uniform din] [--set key=value ...] (AW-MoE config overrides, JSON values)

The world: every `Signals` knob at 0 except ``behaviour_segment`` (and the ones given with --signal).
Prints test AUC / GAUC overall and on long-tail rows (history <= 3 behaviours,
`ctr_awmoe.slices.long_tail_metrics`), training seconds and the per-epoch contrastive loss.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pyarrow.compute as pc
import torch
from ctr_dagster.contracts import FitContext
from ctr_dagster.datagen import Signals
from ctr_dagster.settings import parse_assignments
from ctr_dagster.testing import synthetic_training_table, training_cardinalities
from ctr_din.model import DinConfig, DinModel

from ctr_awmoe.model import AwMoeConfig, AwMoeModel
from ctr_awmoe.slices import long_tail_metrics

#: The behaviour-segment world of the tests and the README (knobs not named here are 0).
WORLD = {"behaviour_segment": 3.0, "long_tail": 1.0}


def world(seed: int, profile: str = "tiny", **signals: float):
    knobs = dict.fromkeys(Signals.__dataclass_fields__, 0.0)
    knobs.update(signals)
    return synthetic_training_table(profile, seed=seed, signals=Signals(**knobs))


def splits(table):
    column = table.column("split")
    return [table.filter(pc.equal(column, s)) for s in ("train", "valid", "test")]


def run(name: str, table, seed: int, common: dict, overrides: dict) -> dict:
    train, valid, test = splits(table)
    ctx = FitContext(seed=seed, cardinalities=training_cardinalities(table), log=lambda s: None)
    if name == "din":
        model = DinModel(DinConfig(**common))
    else:
        gate = "uniform" if name == "uniform" else "attention"
        model = AwMoeModel(AwMoeConfig(**common, gate=gate, **overrides))
    started = time.perf_counter()
    model.fit(train, valid, ctx)
    seconds = time.perf_counter() - started
    out = long_tail_metrics(test, model.predict(test))
    out["seconds"] = seconds
    out["epochs"] = len(model.summary["history"])
    out["valid_auc"] = max(r["valid_auc"] for r in model.summary["history"])
    out["cl_loss"] = [r.get("cl_loss") for r in model.summary["history"]]
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--profile", default="tiny")
    parser.add_argument("--models", nargs="+", default=["awmoe", "uniform", "din"])
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--schedule", default="cosine", help="lr_schedule of every model")
    parser.add_argument("--patience", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--set", nargs="*", default=[], help="AW-MoE overrides key=json")
    parser.add_argument("--signal", nargs="*", default=[], help="world knobs key=value (default: WORLD)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    overrides = parse_assignments(args.set)
    knobs = dict(WORLD)
    knobs.update({k: float(v) for k, v in (s.split("=", 1) for s in args.signal)})
    common = {
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "lr_schedule": args.schedule,
        "patience": args.patience,
        "num_threads": 1,
        "log_every": 0,
    }
    print("world", args.profile, knobs, "overrides", overrides, flush=True)
    results: dict[str, list[dict]] = {m: [] for m in args.models}
    for seed in args.seeds:
        table = world(seed, args.profile, **knobs)
        for name in args.models:
            r = run(name, table, seed, common, overrides)
            results[name].append(r)
            cl = [round(x, 3) for x in r["cl_loss"] if x is not None]
            print(
                f"seed {seed} {name:8s} valid {r['valid_auc']:.4f} | test auc {r['auc']:.4f} "
                f"gauc {r['gauc']:.4f} | long-tail "
                f"({r['long_tail_rows']} rows) auc {r['long_tail_auc']:.4f} gauc {r['long_tail_gauc']:.4f}"
                f" | {r['seconds']:.1f} s, {r['epochs']} epochs, cl {cl}",
                flush=True,
            )
    print("means over world seeds", args.seeds)
    for key in ("valid_auc", "auc", "gauc", "long_tail_auc", "long_tail_gauc", "seconds"):
        means = {m: float(np.mean([r[key] for r in rs])) for m, rs in results.items()}
        print(f"  {key}:", {m: round(v, 4) for m, v in means.items()})
    base = args.models[0]
    for other in args.models[1:]:
        for key in ("auc", "gauc", "long_tail_auc", "long_tail_gauc"):
            d = [a[key] - b[key] for a, b in zip(results[base], results[other], strict=True)]
            print(f"  {base} - {other} {key}: per seed {np.round(d, 4).tolist()} mean {np.mean(d):+.4f}")


if __name__ == "__main__":
    main()
