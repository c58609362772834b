"""Does each paper's model capture the mechanism it claims? One world per mechanism, >= 3 seeds.

For each mechanism model (QIN, TIN, AW-MoE) the synthetic world is built with every knob at 0 except
the sequence and the knob(s) of that model's mechanism (issue 17, item 4):

* qin:   `interaction` at 3 + `multimodal` (+ `sequence`): 3-way context interactions and the colour /
  material match that only the item's tags and multimodal vector show;
* tin:   `target_time` (+ `sequence` at 3, `temporal`, which it modifies): the gap decay depends on
  the target's category, so time must be read relative to the target;
* awmoe: `behaviour_segment` at 3 (+ `sequence`, and `long_tail` for the population shape): the
  price response depends on the premium share of the user's remembered clicks.

On each world and seed the model, DIN (its defaults) and LightGBM (reference) are trained on the same
train/valid rows (item tags and encoder-like item vectors from `testing.synthetic_item_inputs`: what
the upstream assets hand a model), and scored on the same test rows. Reported per world: each model's
test AUC per seed, the mean and a 95 % t-interval over seeds, the paired DeLong difference to DIN per
seed, GAUC (and for awmoe AUC/GAUC on long-tail users: <= 3 behaviours in the row's history), and the
mechanism-attribution share (`ctr_dagster.mechanisms`) of the world's own component, per model.

    .venv/bin/python benchmarks/bench_mechanisms.py [--profile small] [--seeds 0 1 2] [--worlds qin tin awmoe]
        [--override din:batch_size=256 ...]

Writes benchmarks/results/mechanisms.json (and prints a table). Selection: every model trains with
its defaults (or the `--override` settings, recorded in the result) and early stopping on the
validation split; nothing is chosen on test.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_result  # noqa: E402

#: Every knob of `Signals` switched off, then the world's own turned on.
#: Strengths: `target_time` changes the sequence term, so the TIN world runs the sequence at 3 (at 1
#: the component is worth only 0.005-0.010 AUC even to the oracle: the TIN helper's runs); the
#: behaviour-segment response at 3 (its default strength is small next to the affinity term); the
#: interaction terms at 3 (at 1, on `small`, QIN trails DIN by 0.004 AUC: plugins/ctr-qin/README.md,
#: measured with plugins/ctr-qin/scripts/qin_vs_din.py).
WORLD_KNOBS: dict[str, dict[str, float]] = {
    "qin": {"sequence": 1.0, "interaction": 3.0, "multimodal": 1.0},
    "tin": {"sequence": 3.0, "temporal": 1.0, "target_time": 1.0},
    "awmoe": {"sequence": 1.0, "behaviour_segment": 3.0, "long_tail": 1.0},
}
#: The click-logit component(s) each world plants for its model (`schemas.CLICK_COMPONENTS`).
OWN_COMPONENTS: dict[str, tuple[str, ...]] = {
    "qin": ("interaction", "multimodal"),
    "tin": ("target_time",),
    "awmoe": ("behaviour_segment",),
}
REFERENCES = ("din", "lightgbm")
LONG_TAIL_MAX_BEHAVIOURS = 3


def signals_for(world: str):
    import dataclasses

    from ctr_dagster.datagen import Signals

    off = {f.name: 0.0 for f in dataclasses.fields(Signals)}
    return Signals(**{**off, **WORLD_KNOBS[world]})


def t_interval(values: list[float]) -> list[float] | None:
    """95 % t-interval of the mean over seeds (None with one seed)."""
    from scipy import stats

    if len(values) < 2:
        return None
    mean, sem = float(np.mean(values)), float(stats.sem(values))
    half = float(stats.t.ppf(0.975, len(values) - 1)) * sem
    return [round(mean - half, 4), round(mean + half, 4)]


def oracle_components(config, test_ids) -> dict[str, np.ndarray]:
    """logit_<component> columns of the world's oracle, aligned with the test rows' impression ids."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from ctr_dagster.datagen import build_world
    from ctr_dagster.schemas import CLICK_COMPONENTS

    world = build_world(config)
    oracle = pa.concat_tables([world.day(d).oracle for d in world.dates()[-1:]])
    where = pc.index_in(test_ids, value_set=oracle.column("impression_id"))
    if where.null_count:
        raise RuntimeError("test rows without an oracle row")
    return {c: pc.take(oracle.column(f"logit_{c}"), where).to_numpy() for c in CLICK_COMPONENTS}


def run_world(
    world: str,
    profile: str,
    seed: int,
    models: list[str],
    threads: int,
    n_users: int | None,
    model_settings: dict[str, dict] | None = None,
) -> dict:
    import pyarrow.compute as pc

    from ctr_dagster import mechanisms
    from ctr_dagster.contracts import FitContext
    from ctr_dagster.datagen import profile as world_profile
    from ctr_dagster.metrics import auc, gauc
    from ctr_dagster.modeling import features_only
    from ctr_dagster.registry import default_registry
    from ctr_dagster.significance import paired_comparison
    from ctr_dagster.testing import synthetic_item_inputs, synthetic_training_table, training_cardinalities

    overrides = {"seed": seed, "signals": signals_for(world), **({"n_users": n_users} if n_users else {})}
    table = synthetic_training_table(profile, **overrides)
    inputs = synthetic_item_inputs(profile, **overrides)
    train, valid, test = (
        table.filter(pc.equal(table.column("split"), s)) for s in ("train", "valid", "test")
    )
    labels = test.column("label").to_numpy()
    users = test.column("user_id").to_numpy(zero_copy_only=False)
    history = np.array([len(h) for h in test.column("hist_item_idx").to_pylist()])
    tail = history <= LONG_TAIL_MAX_BEHAVIOURS
    config = world_profile(profile, corruption_rate=0.0, **overrides)
    components = oracle_components(config, test.column("impression_id"))
    registry = default_registry()
    scores: dict[str, np.ndarray] = {}
    out: dict = {
        "world": world,
        "seed": seed,
        "rows": {"train": train.num_rows, "test": test.num_rows},
        "models": {},
    }
    for name in models:
        plugin = registry.get("model", name)
        defaults = plugin.cls.Config()
        settings = dict((model_settings or {}).get(name, {}))
        if hasattr(defaults, "num_threads"):
            settings.setdefault("num_threads", threads)
        model = plugin.cls(plugin.cls.Config(**settings))
        ctx = FitContext(
            seed=seed, cardinalities=training_cardinalities(table), inputs=dict(inputs), log=lambda s: None
        )
        started = time.perf_counter()
        model.fit(train, valid, ctx)
        fit_s = time.perf_counter() - started
        p = np.asarray(model.predict(features_only(test)))
        scores[name] = p
        out["models"][name] = {
            "auc": round(float(auc(labels, p)), 4),
            "gauc": round(float(gauc(users, labels, p)[0]), 4),
            "long_tail_auc": round(float(auc(labels[tail], p[tail])), 4),
            "long_tail_gauc": round(float(gauc(users[tail], labels[tail], p[tail])[0] or float("nan")), 4),
            "fit_s": round(fit_s, 1),
        }
        print(f"  {world} seed {seed} {name}: AUC {out['models'][name]['auc']} ({fit_s:.0f} s)", flush=True)
    report = mechanisms.attribution(labels, components, scores)
    out["worth"] = {r["component"]: r["worth"] for r in report["components"]}
    for name in models:
        out["models"][name]["captured"] = {
            c: report["models"][name][c]["captured"] for c in OWN_COMPONENTS[world]
        }
        out["models"][name]["loading"] = {
            c: report["models"][name][c]["loading"] for c in OWN_COMPONENTS[world]
        }
        if name != "din" and "din" in scores:
            cmp = paired_comparison(labels, scores[name], scores["din"])
            out["models"][name]["vs_din"] = {
                "delta": round(cmp.delta, 4),
                "ci": [round(cmp.low, 4), round(cmp.high, 4)],
                "p": round(cmp.p_value, 4),
            }
    out["long_tail_share"] = round(float(tail.mean()), 3)
    return out


def summarise(runs: list[dict], world: str) -> dict:
    per_model: dict[str, dict] = {}
    names = runs[0]["models"].keys()
    for name in names:
        aucs = [r["models"][name]["auc"] for r in runs]
        entry = {
            "auc_mean": round(float(np.mean(aucs)), 4),
            "auc_ci": t_interval(aucs),
            "gauc_mean": round(float(np.mean([r["models"][name]["gauc"] for r in runs])), 4),
            "long_tail_auc_mean": round(
                float(np.mean([r["models"][name]["long_tail_auc"] for r in runs])), 4
            ),
            "long_tail_gauc_mean": round(
                float(np.nanmean([r["models"][name]["long_tail_gauc"] for r in runs])), 4
            ),
            "loading_mean": {
                c: round(float(np.mean([r["models"][name]["loading"][c] or 0.0 for r in runs])), 3)
                for c in OWN_COMPONENTS[world]
            },
            "captured_mean": {
                c: round(float(np.mean([r["models"][name]["captured"][c] or 0.0 for r in runs])), 3)
                for c in OWN_COMPONENTS[world]
            },
        }
        if name != "din" and "vs_din" in runs[0]["models"][name]:
            deltas = [r["models"][name]["vs_din"]["delta"] for r in runs]
            entry["vs_din_delta_mean"] = round(float(np.mean(deltas)), 4)
            entry["vs_din_delta_ci"] = t_interval(deltas)
            entry["vs_din_wins"] = f"{sum(d > 0 for d in deltas)}/{len(deltas)}"
            entry["vs_din_significant"] = (
                f"{sum(r['models'][name]['vs_din']['ci'][0] > 0 for r in runs)}/{len(runs)}"
            )
        per_model[name] = entry
    return per_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="small")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--worlds", nargs="+", default=list(WORLD_KNOBS), choices=list(WORLD_KNOBS))
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--n-users", type=int, default=None, help="override the profile's n_users")
    parser.add_argument("--name", default="mechanisms")
    parser.add_argument(
        "--override",
        action="append",
        default=[],
        metavar="MODEL:KEY=JSON",
        help="a config field of one model, e.g. din:batch_size=256 (repeatable; default: shipped settings)",
    )
    args = parser.parse_args()
    from ctr_dagster.settings import parse_model_assignments  # after the path set-up above

    try:
        model_settings = parse_model_assignments(args.override)
    except ValueError as exc:
        parser.error(str(exc))
    import torch

    torch.set_num_threads(args.threads)
    figures: dict = {"profile": args.profile, "seeds": args.seeds, "overrides": model_settings, "worlds": {}}
    for world in args.worlds:
        runs = [
            run_world(
                world, args.profile, s, [world, *REFERENCES], args.threads, args.n_users, model_settings
            )
            for s in args.seeds
        ]
        figures["worlds"][world] = {
            "knobs": WORLD_KNOBS[world],
            "runs": runs,
            "summary": summarise(runs, world),
        }
        for name, s in figures["worlds"][world]["summary"].items():
            print(
                f"{world:6s} {name:9s} AUC {s['auc_mean']} {s['auc_ci']} captured {s['captured_mean']} loading {s['loading_mean']}"
                + (
                    f" vs DIN {s['vs_din_delta_mean']:+.4f} {s['vs_din_delta_ci']} wins {s['vs_din_wins']}"
                    if "vs_din_delta_mean" in s
                    else ""
                ),
                flush=True,
            )
    write_result(args.name, figures)


if __name__ == "__main__":
    main()
