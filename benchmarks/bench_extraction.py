"""Attribute extraction on a profile (default small): hypergraph build time, per-extractor fit time and
P/R/F1 (overall / seen / unseen values) over 3 seeds, HyperPAVE's graph ablation, downstream AUC.

    python benchmarks/bench_extraction.py [profile] [--warehouse DIR]

With `--warehouse` (e.g. `.ctr_home/warehouse` after `ctr demo`) the catalogue and training dataset
are read from there; otherwise they are materialized first in a throw-away CTR_HOME (timed apart).
Writes benchmarks/results/extraction_<profile>.json.
"""

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from common import write_result

ROOT = Path(__file__).resolve().parents[1]
SEEDS = (0, 1, 2)


def _upstream(profile: str, home: str) -> float:
    """Materialize catalogue, days and training dataset into `home`; returns seconds."""
    os.environ.update({"CTR_PROFILE": profile, "CTR_HOME": home, "CTR_SOURCE": "synthetic"})
    sys.path.insert(0, str(ROOT))
    import dagster as dg

    from assets.clean import clean_day
    from assets.features import training_dataset
    from assets.raw import raw_catalogue, raw_day
    from assets.resources import WarehouseResource, daily_partitions

    started = time.perf_counter()
    assets = [raw_catalogue, raw_day, clean_day, training_dataset]
    instance, resources = dg.DagsterInstance.ephemeral(), {"warehouse": WarehouseResource()}
    dg.materialize(assets, selection=list(raw_catalogue.keys), instance=instance, resources=resources)
    for day in daily_partitions().get_partition_keys():
        keys = [*raw_day.keys, *clean_day.keys]
        dg.materialize(assets, selection=keys, partition_key=day, instance=instance, resources=resources)
    dg.materialize(assets, selection=["training_dataset"], instance=instance, resources=resources)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("profile", nargs="?", default="small")
    parser.add_argument("--warehouse", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        upstream_s = None
        if args.warehouse is None:
            upstream_s = _upstream(args.profile, f"{tmp}/ctr")
            root = Path(f"{tmp}/ctr/warehouse")
        else:
            root = args.warehouse.resolve()
        figures = run(root)
        figures["profile"] = args.profile
        figures["upstream_materialize_s"] = upstream_s
        write_result(f"extraction_{args.profile}", figures)


def run(root: Path) -> dict[str, object]:
    from ctr_dagster import extraction, hypergraph
    from ctr_dagster.contracts import FitContext
    from ctr_dagster.registry import default_registry
    from ctr_dagster.sources import SourceSettings
    from ctr_dagster.warehouse import Warehouse

    wh = Warehouse(root)
    items, attributes = wh.read("raw_items"), wh.read("raw_item_attributes")
    oracle, training = wh.read("oracle_item_attributes"), wh.read("training_dataset")
    setup = extraction.evaluation_setup(attributes, oracle)
    inputs = {
        # the synthetic world's published value taxonomy, as the item_attributes asset uses
        "candidates": extraction.taxonomy(attributes, SourceSettings(kind="synthetic").attribute_taxonomy()),
        "interactions": extraction.interactions_from_training(training),
    }
    started = time.perf_counter()
    graph = hypergraph.build_hypergraph(
        items, setup.fit_attributes, inputs["interactions"], inputs["candidates"]
    )
    arrays_s = time.perf_counter() - started
    counts = hypergraph.graph_counts(graph.to_networkx())
    build_s = time.perf_counter() - started

    plugins = {p.name: p for p in default_registry().good("extractor")}
    variants = {name: (name, {}) for name in plugins}
    if "hyperpave" in plugins:
        variants["hyperpave_text_only"] = ("hyperpave", {"use_graph": False})
    results: dict[str, dict[str, object]] = {}
    enrich_runs = []
    for label, (name, config) in variants.items():
        per_seed = []
        for seed in SEEDS:
            ctx = FitContext(seed=seed, inputs=dict(inputs), log=lambda _m: None)
            run = extraction.run_extractor(
                label, plugins[name].instantiate(config), items, setup.fit_attributes, ctx
            )
            if not run.ok:
                raise RuntimeError(f"{label}: {run.error}")
            rows = extraction.evaluate(label, run.predictions, setup.truth, setup.fit_attributes)
            per_seed.append({"seed": seed, "fit_s": run.fit_seconds, "rows": rows, "summary": run.summary})
            if seed == 0 and label in plugins:
                enrich_runs.append(run)
        mean = {
            f"{r['slice']}_{m}": statistics.mean(s["rows"][k][m] for s in per_seed)
            for k, r in enumerate(per_seed[0]["rows"])
            for m in ("precision", "recall", "f1")
        }
        results[label] = {
            "mean": mean,
            "fit_s_mean": statistics.mean(s["fit_s"] for s in per_seed),
            "seeds": per_seed,
        }
        print(label, {k: round(v, 4) for k, v in mean.items()}, flush=True)
    enriched = extraction.enrich(attributes, enrich_runs)
    downstream = extraction.downstream_auc(training, {"catalogue": attributes, "enriched": enriched})
    return {
        "hypergraph": counts,
        "hypergraph_arrays_s": arrays_s,
        "hypergraph_with_networkx_s": build_s,
        "extractors": results,
        "downstream": downstream,
        "auc_gain": downstream.get("auc_enriched", float("nan"))
        - downstream.get("auc_catalogue", float("nan")),
    }


if __name__ == "__main__":
    main()
