"""Attribute extraction on a profile (default small): HyperPAVE's hypergraph build time, per-extractor fit time and
P/R/F1 (overall / seen / unseen values) over 3 seeds, every installed extractor (its graph ablation
`hyperpave_text` included), downstream AUC. `bench_hyperpave_graph.py` asks whether the graph matters.

    python benchmarks/bench_extraction.py [profile] [--warehouse DIR]

With `--warehouse` (e.g. `.ctr_home/warehouse` after `ctr demo`) the catalogue and training dataset
are read from there; otherwise they are materialized first in a throw-away CTR_HOME (timed apart).
Writes benchmarks/results/extraction_<profile>.json.
"""

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from common import write_result

ROOT = Path(__file__).resolve().parents[1]
SEEDS = (0, 1, 2)


def _upstream(profile: str, home: str) -> float:
    """Materialize catalogue, days and training dataset into `home`; returns seconds."""
    import dagster as dg

    from ctr_dagster.code_location import load_code_location
    from ctr_dagster.settings import Settings

    settings = Settings(profile=profile, home=Path(home))
    definitions = load_code_location(ROOT, "definitions")
    raw, schedules = load_code_location(ROOT, "raw"), load_code_location(ROOT, "schedules")
    resources = load_code_location(ROOT, "resources")
    defs = definitions.build_definitions(settings)
    started = time.perf_counter()
    assets, instance = list(defs.assets), dg.DagsterInstance.ephemeral()
    kwargs = {"instance": instance, "resources": dict(defs.resources)}
    dg.materialize(assets, selection=list(raw.CATALOGUE_TABLES), **kwargs)
    for day in resources.daily_partitions(settings).get_partition_keys():
        dg.materialize(assets, selection=schedules.DAY_ASSETS, partition_key=day, **kwargs)
    dg.materialize(assets, selection=["training_dataset"], **kwargs)
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


def _hypergraph_figures(items, fit_attributes, inputs) -> dict[str, object]:
    """HyperPAVE's hypergraph (its plugin's module) build time and counts; {} without the plugin."""
    try:
        from ctr_hyperpave import hypergraph
    except ImportError:
        return {}
    started = time.perf_counter()
    graph = hypergraph.build_hypergraph(items, fit_attributes, inputs["interactions"], inputs["candidates"])
    arrays_s = time.perf_counter() - started
    counts = hypergraph.graph_counts(graph.to_networkx())
    return {
        "hypergraph": counts,
        "hypergraph_arrays_s": arrays_s,
        "hypergraph_with_networkx_s": time.perf_counter() - started,
    }


def run(root: Path) -> dict[str, object]:
    from ctr_dagster import extraction
    from ctr_dagster.attributes import extractor_inputs
    from ctr_dagster.contracts import FitContext
    from ctr_dagster.registry import default_registry
    from ctr_dagster.warehouse import Warehouse

    wh = Warehouse(root)
    items, attributes = wh.read("raw_items"), wh.read("raw_item_attributes")
    oracle, training = wh.read("oracle_item_attributes"), wh.read("training_dataset")
    setup = extraction.evaluation_setup(attributes, oracle)
    # what the item_attributes stage offers: catalogue + published taxonomy, train-split interactions
    inputs = extractor_inputs(setup.fit_attributes, wh.read("raw_attribute_taxonomy"), training)
    graph_figures = _hypergraph_figures(items, setup.fit_attributes, inputs)

    plugins = {p.name: p for p in default_registry().good("extractor")}
    variants = {name: (name, {}) for name in plugins}  # hyperpave_text is the graph ablation
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
        **graph_figures,
        "extractors": results,
        "downstream": downstream,
        "auc_gain": downstream.get("auc_enriched", float("nan"))
        - downstream.get("auc_catalogue", float("nan")),
    }


if __name__ == "__main__":
    main()
