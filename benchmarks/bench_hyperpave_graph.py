"""Does HyperPAVE's graph matter? Extractors on synthetic worlds with and without the `neighbourhood`
knob (attribute values only the co-view neighbourhood reveals), over seeds, plus each departure from
the official code as a variant.

    python benchmarks/bench_hyperpave_graph.py [profile] [--seeds 0 1 2] [--variants]
        [--neighbourhood 1.0 0.0] [--widget-share 0.3 0.6 0.9]

`--widget-share` sets `WorldConfig.line_widget_share`, the share of slates with a "more from this
line" widget (default: the profile's, 0.3): how much of an item's co-view neighbourhood is its
product line. It changes the interactions only; the catalogue, titles and truth stay the same, so
the text-only figures do not move and the graph's gain is read as a dose-response.

Per seed s the world is `profile(profile, seed=s)` and every extractor is fitted with seed s on the
structured catalogue, with the train-period interactions (the first `TRAIN_SHARE` of the days) and
the published taxonomy, exactly what the `item_attributes` stage offers; it is scored against the
oracle (`extraction_scoring`, complete truth). Writes benchmarks/results/hyperpave_graph_<profile>.json
with per-seed rows, mean ± sd per extractor and slice, and HyperPAVE minus the text-only ablation
per seed and slice. No Dagster: the world is built directly (`ctr_dagster.datagen`).

Besides overall / seen / unseen, the oracle marks the slots whose value neither the item's title nor
its image states ("hidden": no text can find them; at `neighbourhood` > 0 the material / style ones
are shared with the item's product line, `hidden_shared`, which only the neighbourhood reveals), and
their unseen-value parts. Those are the slices where a graph can add what text cannot.
"""

import argparse
import dataclasses
import json
import statistics
import time

from common import write_result

TRAIN_SHARE = 0.7
#: `--config` overrides of the `hyperpave` entry (development: try a setting without editing defaults)
HYPERPAVE_CONFIG: dict = {}
#: HyperPAVE variants, one per departure from the official code (plugin README, "Faithful, or said")
VARIANTS = {
    "hyperpave_dot": {"score": "dot"},
    "hyperpave_logit0": {"decision": "logit"},
    "hyperpave_user_fusion": {"fusion": "user"},
    "hyperpave_no_neighbour_text": {"neighbour_text": False},
}


def world_inputs(profile_name: str, seed: int, neighbourhood: float, widget_share: float | None = None):
    import pyarrow as pa
    import pyarrow.compute as pc

    from ctr_dagster.attributes import extractor_inputs
    from ctr_dagster.datagen import build_world, profile
    from ctr_dagster.datagen.config import Signals
    from ctr_dagster.datagen.vocab import ATTRIBUTES, all_values

    config = profile(profile_name, seed=seed)
    widgets = {} if widget_share is None else {"line_widget_share": widget_share}
    config = dataclasses.replace(
        config, signals=dataclasses.replace(config.signals, neighbourhood=neighbourhood), **widgets
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
    return world.items(), attributes, world.oracle_item_attributes(), inputs, hidden_slots(world)


def hidden_slots(world) -> dict:
    """Marked slices for the scoring: "hidden" = (item, attribute) slots whose value neither title
    nor image states (oracle flags); "hidden_shared" = those of them on an attribute the item's
    product line shares (the `neighbourhood` knob), i.e. values a line mate may state; "stated" =
    the others (title or image states the value: where text alone can find it)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    from ctr_dagster.datagen.catalogue import LINE_ATTRIBUTES

    oracle = world.oracle_item_attributes()
    silent = pc.invert(pc.or_(oracle.column("in_title"), oracle.column("in_image")))
    hidden = oracle.filter(silent).select(["item_id", "attribute"])
    in_line = world.catalogue.line >= 0
    number = np.array([int(i[1:]) for i in hidden.column("item_id").to_pylist()], dtype=np.int64)
    shared = np.isin(hidden.column("attribute").to_numpy(zero_copy_only=False), LINE_ATTRIBUTES)
    shared &= in_line[number] if len(number) else shared
    stated = oracle.filter(pc.invert(silent)).select(["item_id", "attribute"])
    return {"hidden": hidden, "hidden_shared": hidden.filter(pa.array(shared)), "stated": stated}


def run_seed(
    profile_name: str, seed: int, neighbourhood: float, variants: bool, widget_share: float | None = None
) -> dict:
    import pyarrow.compute as pc

    from ctr_dagster import extraction, extraction_scoring
    from ctr_dagster.contracts import FitContext
    from ctr_dagster.registry import default_registry

    started = time.perf_counter()
    items, attributes, oracle, inputs, marked = world_inputs(profile_name, seed, neighbourhood, widget_share)
    build_s = time.perf_counter() - started
    plugins = {p.name: p for p in default_registry().good("extractor")}
    todo = {name: (name, {}) for name in ("hyperpave", "hyperpave_text", "title_match") if name in plugins}
    if HYPERPAVE_CONFIG:
        todo["hyperpave"] = ("hyperpave", dict(HYPERPAVE_CONFIG))
    if variants:
        todo |= {label: ("hyperpave", config) for label, config in VARIANTS.items()}
    predictions, fit_s, fitted = {}, {}, {}
    for label, (name, config) in todo.items():
        ctx = FitContext(seed=seed, inputs=dict(inputs), log=lambda _m: None)
        extractor = plugins[name].instantiate(config)
        run = extraction.run_extractor(label, extractor, items, attributes, ctx)
        if not run.ok:
            raise RuntimeError(f"{label}: {run.error}")
        predictions[label], fit_s[label] = run.predictions, run.fit_seconds
        # the fit's own validation figures (steps, thresholds, chosen neighbourhood weight)
        fitted[label] = {k: v for k, v in getattr(extractor, "summary", {}).items() if k != "valid_avs"}
        print(f"  seed {seed} neighbourhood {neighbourhood} {label}: fit {run.fit_seconds:.1f} s", flush=True)
    truth = oracle.filter(pc.invert(oracle.column("in_catalogue"))).select(["item_id", "attribute", "value"])
    scores = extraction_scoring.score_extractors(
        predictions,
        truth,
        attributes,
        complete=True,
        baselines=["hyperpave_text", "title_match"],
        seed=seed,
        marked=marked,
    )
    return {
        "seed": seed,
        "neighbourhood": neighbourhood,
        "line_widget_share": widget_share,
        "world_build_s": round(build_s, 1),
        "fit_s": {k: round(v, 2) for k, v in fit_s.items()},
        "fitted": fitted,
        "rows": scores.rows,
        "vs_baseline": scores.comparisons,
    }


SLICES = (
    "overall",
    "seen",
    "unseen",
    "stated",
    "stated_unseen",
    "hidden",
    "hidden_unseen",
    "hidden_shared",
    "hidden_shared_unseen",
)


def _spread(values: list[float]) -> dict:
    return {
        "mean": round(statistics.mean(values), 4),
        "sd": round(statistics.stdev(values), 4) if len(values) > 1 else 0.0,
        "per_seed": [round(v, 4) for v in values],
    }


def summarize(per_seed: list[dict]) -> dict:
    """mean ± sd over seeds of F1 (and of precision / recall / true count) per extractor and slice,
    and of the paired hyperpave − hyperpave_text F1 difference per slice (plus on how many seeds
    it is > 0): the issue's test is that difference against its own spread."""
    out: dict = {}
    names = sorted({r["extractor"] for s in per_seed for r in s["rows"]})
    for name in names:
        for slice_name in SLICES:
            rows = [
                next((r for r in s["rows"] if r["extractor"] == name and r["slice"] == slice_name), None)
                for s in per_seed
            ]
            if any(r is None for r in rows):
                continue
            out[f"{name}/{slice_name}"] = {
                **_spread([r["f1"] for r in rows]),
                "precision": _spread([r["precision"] for r in rows])["mean"],
                "recall": _spread([r["recall"] for r in rows])["mean"],
                "true": [r["true"] for r in rows],
            }
    for slice_name in SLICES:
        a, b = out.get(f"hyperpave/{slice_name}"), out.get(f"hyperpave_text/{slice_name}")
        if a is None or b is None:
            continue
        gain = [x - y for x, y in zip(a["per_seed"], b["per_seed"], strict=True)]
        out[f"hyperpave_minus_text/{slice_name}"] = {
            **_spread(gain),
            "positive_seeds": sum(g > 0 for g in gain),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("profile", nargs="?", default="small")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--variants", action="store_true", help="also the departures from the code")
    parser.add_argument("--neighbourhood", type=float, nargs="+", default=[1.0, 0.0])
    parser.add_argument(
        "--widget-share",
        type=float,
        nargs="+",
        default=[None],
        help="WorldConfig.line_widget_share values (default: the profile's)",
    )
    parser.add_argument("--name", default="", help="suffix of the result file (keeps other runs)")
    parser.add_argument("--config", default="{}", help="JSON overrides of the hyperpave config")
    args = parser.parse_args()
    HYPERPAVE_CONFIG.update(json.loads(args.config))
    figures: dict = {"profile": args.profile, "seeds": args.seeds, "config": HYPERPAVE_CONFIG, "worlds": {}}
    for strength in args.neighbourhood:
        for share in args.widget_share:
            per_seed = [run_seed(args.profile, s, strength, args.variants, share) for s in args.seeds]
            summary = summarize(per_seed)
            world = f"neighbourhood={strength}" + ("" if share is None else f" line_widget_share={share}")
            figures["worlds"][world] = {"summary": summary, "seeds": per_seed}
            for key, value in summary.items():
                print(f"{world} {key}: {value['mean']:.4f} ± {value['sd']:.4f}", flush=True)
    write_result(f"hyperpave_graph_{args.profile}{'_' + args.name if args.name else ''}", figures)


if __name__ == "__main__":
    main()
