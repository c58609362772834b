"""QIN vs its MLP ablation vs DIN on a world of chosen signal knobs (README "Measured").

Usage: .venv/bin/python plugins/ctr-qin/scripts/qin_vs_din.py [--seeds 0 1 2] [--profile tiny]
       [--signal interaction=5 ...] [--models qin mlp din] [--set key=value ...] (QIN and DIN
       config overrides, JSON values, e.g. --set epochs=10 --set patience=3)
       [--qin-set key=value ...] (QIN only, e.g. --qin-set mba_l2=0) [--default-world]

The world: every `Signals` knob at 0 except the ones given with --signal (default ``interaction=5``,
the world of tests/test_qin_ablation.py); with --default-world every knob at its default (the demo's
world; --signal then overrides single knobs). Every model gets the world's item tags and encoder-like item
vectors (`testing.synthetic_item_inputs`): QIN uses both, DIN only with --set use_item_embeddings=true.
Prints per seed the test AUC of each model on the same test rows (and its best validation AUC, the
one to choose settings on), the training seconds and epochs,
then the mean per model and the mean paired difference of QIN to each other model.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import numpy as np
import pyarrow.compute as pc
import torch
from ctr_dagster.contracts import FitContext
from ctr_dagster.datagen import Signals, profile
from ctr_dagster.metrics import auc
from ctr_dagster.settings import parse_assignments
from ctr_dagster.testing import synthetic_item_inputs, synthetic_training_table, training_cardinalities
from ctr_din.model import DinConfig, DinModel

from ctr_qin.model import QinConfig, QinModel


def world(seed: int, signals: dict[str, float], base: Signals | None = None) -> dict:
    """Overrides of the world: `signals` on top of `base` (None: every knob at 0)."""
    if base is not None:
        return {"seed": seed, "signals": dataclasses.replace(base, **signals)}
    knobs = {f.name: 0.0 for f in dataclasses.fields(Signals)}
    knobs.update(signals)
    return {"seed": seed, "signals": Signals(**knobs)}


def fields_of(config_type: type, overrides: dict) -> dict:
    names = {f.name for f in dataclasses.fields(config_type)}
    return {k: v for k, v in overrides.items() if k in names}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--profile", default="tiny")
    parser.add_argument("--signal", action="append", default=[], help="knob=value (others are 0)")
    parser.add_argument("--models", nargs="+", default=["qin", "mlp", "din"])
    parser.add_argument("--set", action="append", default=[], help="config key=JSON value")
    parser.add_argument("--qin-set", action="append", default=[], help="QIN-only config key=JSON value")
    parser.add_argument("--default-world", action="store_true", help="every knob at its default")
    args = parser.parse_args()
    signals = {k: float(v) for k, v in (s.split("=", 1) for s in args.signal)}
    if not signals and not args.default_world:
        signals = {"interaction": 5.0}
    qin_only = parse_assignments(args.qin_set, "--qin-set")
    overrides = {"num_threads": 1, "log_every": 0}
    overrides.update(parse_assignments(args.set))
    torch.set_num_threads(1)
    results: dict[str, list[float]] = {m: [] for m in args.models}
    for seed in args.seeds:
        base = profile(args.profile, seed=seed).signals if args.default_world else None
        overrides_world = world(seed, signals, base)
        table = synthetic_training_table(args.profile, **overrides_world)
        split = table.column("split")
        train, valid, test = (table.filter(pc.equal(split, s)) for s in ("train", "valid", "test"))
        ctx = FitContext(
            seed=seed,
            cardinalities=training_cardinalities(table),
            log=lambda s: None,
            inputs=synthetic_item_inputs(args.profile, **overrides_world),
        )
        labels = test.column("label").to_numpy()
        line = [f"seed {seed} ({train.num_rows} train / {test.num_rows} test rows)"]
        for name in args.models:
            if name == "din":
                model = DinModel(DinConfig(**fields_of(DinConfig, overrides)))
            else:
                layers = "mlp" if name == "mlp" else "quadratic"
                settings = {**fields_of(QinConfig, overrides), **qin_only, "interaction_layers": layers}
                model = QinModel(QinConfig(**settings))
            started = time.perf_counter()
            model.fit(train, valid, ctx)
            seconds = time.perf_counter() - started
            value = auc(labels, model.predict(test))
            results[name].append(value)
            history = model.summary["history"]
            valid_auc = max((r.get("valid_auc", float("nan")) for r in history), default=float("nan"))
            line.append(f"{name} {value:.4f} (valid {valid_auc:.4f}, {seconds:.0f} s, {len(history)} epochs)")
        print("  ".join(line), flush=True)
    print("mean test AUC:", {m: round(float(np.mean(v)), 4) for m, v in results.items()})
    if "qin" in results:
        for other in (m for m in args.models if m != "qin"):
            diffs = np.array(results["qin"]) - np.array(results[other])
            print(f"qin - {other}: per seed {diffs.round(4).tolist()}, mean {diffs.mean():+.4f}")


if __name__ == "__main__":
    main()
