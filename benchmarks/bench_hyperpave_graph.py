"""Does HyperPAVE's graph matter? Extractors on synthetic worlds with and without the `neighbourhood`
knob (attribute values only the co-view neighbourhood reveals), over seeds, plus each departure from
the official code as a variant.

    python benchmarks/bench_hyperpave_graph.py [profile] [--seeds 0 1 2] [--variants]

Per seed s the world is `profile(profile, seed=s)` and every extractor is fitted with seed s on the
structured catalogue, with the train-period interactions (the first `TRAIN_SHARE` of the days) and
the published taxonomy, exactly what the `item_attributes` stage offers; it is scored against the
oracle (`extraction_scoring`, complete truth). Writes benchmarks/results/hyperpave_graph_<profile>.json
with per-seed rows, mean ± sd per extractor and slice, and HyperPAVE minus the text-only ablation
per seed. No Dagster: the world is built directly (`ctr_dagster.datagen`).
"""

import argparse
import dataclasses
import statistics
import time

from common import write_result

TRAIN_SHARE = 0.7
#: HyperPAVE variants, one per departure from the official code (plugin README, "Faithful, or said")
VARIANTS = {
    "hyperpave_dot": {"score": "dot"},
    "hyperpave_logit0": {"decision": "logit"},
    "hyperpave_user_fusion": {"fusion": "user"},
    "hyperpave_no_neighbour_text": {"neighbour_text": False},
}


def world_inputs(profile_name: str, seed: int, neighbourhood: float):
    import pyarrow as pa
    import pyarrow.compute as pc

    from ctr_dagster.attributes import extractor_inputs
    from ctr_dagster.datagen import build_world, profile
    from ctr_dagster.datagen.config import Signals
    from ctr_dagster.datagen.vocab import ATTRIBUTES, all_values

    config = profile(profile_name, seed=seed)
    config = dataclasses.replace(
        config, signals=dataclasses.replace(config.signals, neighbourhood=neighbourhood)
    )
    assert isinstance(config.signals, Signals)
    world = build_world(config)
    keys = world.dates()
    train_days = keys[: max(1, int(round(TRAIN_SHARE * len(keys))))]
    impressions = pa.concat_tables(
        [
            world.day(d).impressions.select(["user_id", "item_id", "ts", "click", "conversion"])
            for d in train_days
        ]
    )
    valid = None  # raw days carry planted corrupt rows; the stage sees the cleaned train split
    for column in impressions.column_names:
        ok = pc.is_valid(impressions.column(column))
        valid = ok if valid is None else pc.and_(valid, ok)
    impressions = impressions.filter(valid)
    pairs = [(a, v) for a in ATTRIBUTES for v in all_values(a)]
    taxonomy = pa.table({"attribute": [a for a, _ in pairs], "value": [v for _, v in pairs]})
    attributes = world.item_attributes()
    inputs = extractor_inputs(attributes, taxonomy, None)
    inputs["interactions"] = impressions
    return world.items(), attributes, world.oracle_item_attributes(), inputs


def run_seed(profile_name: str, seed: int, neighbourhood: float, variants: bool) -> dict:
    import pyarrow.compute as pc

    from ctr_dagster import extraction, extraction_scoring
    from ctr_dagster.contracts import FitContext
    from ctr_dagster.registry import default_registry

    started = time.perf_counter()
    items, attributes, oracle, inputs = world_inputs(profile_name, seed, neighbourhood)
    build_s = time.perf_counter() - started
    plugins = {p.name: p for p in default_registry().good("extractor")}
    todo = {name: (name, {}) for name in ("hyperpave", "hyperpave_text", "title_match") if name in plugins}
    if variants:
        todo |= {label: ("hyperpave", config) for label, config in VARIANTS.items()}
    predictions, fit_s = {}, {}
    for label, (name, config) in todo.items():
        ctx = FitContext(seed=seed, inputs=dict(inputs), log=lambda _m: None)
        run = extraction.run_extractor(label, plugins[name].instantiate(config), items, attributes, ctx)
        if not run.ok:
            raise RuntimeError(f"{label}: {run.error}")
        predictions[label], fit_s[label] = run.predictions, run.fit_seconds
        print(f"  seed {seed} neighbourhood {neighbourhood} {label}: fit {run.fit_seconds:.1f} s", flush=True)
    truth = oracle.filter(pc.invert(oracle.column("in_catalogue"))).select(["item_id", "attribute", "value"])
    scores = extraction_scoring.score_extractors(
        predictions, truth, attributes, complete=True, baselines=["hyperpave_text", "title_match"], seed=seed
    )
    return {
        "seed": seed,
        "neighbourhood": neighbourhood,
        "world_build_s": round(build_s, 1),
        "fit_s": {k: round(v, 2) for k, v in fit_s.items()},
        "rows": scores.rows,
        "vs_baseline": scores.comparisons,
    }


def summarize(per_seed: list[dict]) -> dict:
    out: dict = {}
    names = sorted({r["extractor"] for s in per_seed for r in s["rows"]})
    for name in names:
        for slice_name in ("overall", "seen", "unseen"):
            values = [
                next(r["f1"] for r in s["rows"] if r["extractor"] == name and r["slice"] == slice_name)
                for s in per_seed
            ]
            out[f"{name}/{slice_name}"] = {
                "mean": round(statistics.mean(values), 4),
                "sd": round(statistics.stdev(values), 4) if len(values) > 1 else 0.0,
                "per_seed": values,
            }
    graph_gain = [
        out["hyperpave/unseen"]["per_seed"][k] - out["hyperpave_text/unseen"]["per_seed"][k]
        for k in range(len(per_seed))
    ]
    out["hyperpave_minus_text/unseen"] = {
        "mean": round(statistics.mean(graph_gain), 4),
        "sd": round(statistics.stdev(graph_gain), 4) if len(graph_gain) > 1 else 0.0,
        "per_seed": [round(g, 4) for g in graph_gain],
    }
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("profile", nargs="?", default="small")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--variants", action="store_true", help="also the departures from the code")
    parser.add_argument("--neighbourhood", type=float, nargs="+", default=[1.0, 0.0])
    args = parser.parse_args()
    figures: dict = {"profile": args.profile, "seeds": args.seeds, "worlds": {}}
    for strength in args.neighbourhood:
        per_seed = [run_seed(args.profile, s, strength, args.variants) for s in args.seeds]
        summary = summarize(per_seed)
        figures["worlds"][f"neighbourhood={strength}"] = {"summary": summary, "seeds": per_seed}
        for key, value in summary.items():
            if key.endswith("/unseen") or key.endswith("/overall"):
                print(f"neighbourhood={strength} {key}: {value['mean']:.4f} ± {value['sd']:.4f}", flush=True)
    write_result(f"hyperpave_graph_{args.profile}", figures)


if __name__ == "__main__":
    main()
