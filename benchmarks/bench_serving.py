"""Serving latency through the bundle (issue 18, item 6): 1,000 candidates for one user, one thread.

For every installed CTR model plugin: train it on the profile's synthetic world (`--epochs` for the
torch models: latency does not depend on how well it learned), export it as a serving bundle
(`ctr_dagster.serving.export.write_bundle`: the bundle is kept only if it scores the probe rows as the
model does), load the bundle with its own runtime on one intra-op thread, and time
`bundle.score(request)` for one request -- one user's history, 1,000 candidates, parsed from the
JSON-ready dict (vocabulary lookups, feature encoding, the network or trees) -- after a warm-up.
p50 / p99 over `--repeats` requests; beside it the model's own `predict` on the same 1,000 rows
(`model_cost`'s measurement). With `--home`, the models are exported from that project home instead
(`ctr export --model all` semantics: each one's latest good artifact).

    .venv/bin/python benchmarks/bench_serving.py [--profile tiny] [--repeats 50] [--home .ctr_home]

Writes benchmarks/results/serving.json. A model that cannot be exported is listed with its reason.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_result  # noqa: E402

CANDIDATES = 1000
WARMUP = 5


def percentiles(times: list[float]) -> dict[str, float]:
    times = sorted(times)
    return {
        "p50": round(statistics.median(times), 3),
        "p99": round(times[min(len(times) - 1, int(round(0.99 * (len(times) - 1))))], 3),
    }


def timed(fn, repeats: int) -> dict[str, float]:
    for _ in range(WARMUP):
        fn()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append((time.perf_counter() - started) * 1000.0)
    return percentiles(times)


def one_request(test, bundle_dir: Path):
    """(request dict, the 1,000 rows it stands for): row 0's user with 1,000 candidates."""
    from ctr_dagster.distillation import one_user_candidates
    from ctr_dagster.serving.convert import inverse_vocabularies, requests_from_table

    rows = one_user_candidates(test, CANDIDATES)
    requests = requests_from_table(rows, inverse_vocabularies(bundle_dir))
    assert len(requests) == 1, f"expected one request, got {len(requests)}"
    return requests[0][0], rows


def bench_bundle(model: Any, bundle_dir: Path, test, repeats: int) -> dict[str, Any]:
    import torch

    from ctr_dagster.distillation import scoring_latency_ms
    from ctr_dagster.modeling import features_only
    from ctr_dagster.serving import runtime

    bundle = runtime.load(bundle_dir, threads=1)
    request, rows = one_request(test, bundle_dir)
    scores = bundle.score(request)
    expected = model.predict(features_only(rows))
    size = sum(p.stat().st_size for p in bundle_dir.rglob("*") if p.is_file())
    out = {
        "kind": bundle.manifest["model"]["kind"],
        "strategy": bundle.manifest["model"].get("strategy"),
        "bundle_bytes": size,
        "max_gap_vs_predict": float(np.max(np.abs(scores - expected))),
        "bundle_ms": timed(lambda: bundle.score(request), repeats),
    }
    torch.set_num_threads(1)
    if hasattr(model, "config") and hasattr(model.config, "num_threads"):
        model.config.num_threads = 1  # LightGBM: predict on one thread too
    out["predict_ms"] = {
        k: v for k, v in scoring_latency_ms(model, features_only(rows), repeats).items() if k != "candidates"
    }
    return out


def trained_models(profile: str, epochs: int, log) -> tuple[dict[str, Any], Any, Any]:
    """({name: fitted model or error text}, the world's TRAINING table, its vocabularies)."""
    import pyarrow.compute as pc

    from ctr_dagster.contracts import FitContext, config_from_dict
    from ctr_dagster.registry import discover
    from ctr_dagster.serving.convert import vocabularies_from_table
    from ctr_dagster.testing import make_fit_inputs, synthetic_training_table, training_cardinalities

    table = synthetic_training_table(profile)
    train = table.filter(pc.equal(table.column("split"), "train"))
    valid = table.filter(pc.equal(table.column("split"), "valid"))
    inputs = make_fit_inputs({"item_embeddings", "item_tags"}, table)
    models: dict[str, Any] = {}
    for info in discover(["model"]).good("model"):
        if getattr(info.cls, "task", "ctr") != "ctr":
            models[info.name] = f"an {info.cls.task!r} model: bundles serve click probabilities"
            continue
        values = {}
        fields = set(info.default_config())
        if "epochs" in fields:
            values["epochs"] = epochs
        if "num_threads" in fields:
            values["num_threads"] = 1
        started = time.perf_counter()
        try:
            model = info.cls(config_from_dict(info.cls, values))
            ctx = FitContext(
                cardinalities=training_cardinalities(table), log=lambda line: None, inputs=dict(inputs)
            )
            models[info.name] = model.fit(train, valid, ctx)
            log(f"{info.name}: trained in {time.perf_counter() - started:.1f} s")
        except Exception as exc:  # noqa: BLE001 - reported in the results
            models[info.name] = f"training failed: {type(exc).__name__}: {exc}"
    return models, table, vocabularies_from_table(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="tiny")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument(
        "--home", type=Path, default=None, help="export the models trained in this project home"
    )
    args = parser.parse_args()

    import pyarrow.compute as pc

    from ctr_dagster.serving.bundle import NotExportable
    from ctr_dagster.serving.export import write_bundle

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    figures: dict[str, Any] = {
        "profile": args.profile,
        "candidates": CANDIDATES,
        "threads": 1,
        "repeats": args.repeats,
    }
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        if args.home is not None:
            from ctr_dagster.registry import discover
            from ctr_dagster.serving.export import example_rows, export_all, resolve
            from ctr_dagster.settings import Home
            from ctr_dagster.warehouse import Warehouse

            home = Home(args.home)
            warehouse = Warehouse(home.warehouse)
            test = example_rows(warehouse, rows=10_000)
            registry = discover(["model"])
            figures["source"] = f"project home {args.home}"
            for result in export_all(home, warehouse, Path(tmp)):
                if not result.ok:
                    results[result.name] = {"exported": False, "reason": result.error}
                    continue
                _, plugin, artifact, _ = resolve(home, result.name)
                model = registry.get("model", plugin).cls.load(artifact)
                results[result.name] = {
                    "exported": True,
                    "export_s": round(result.seconds, 2),
                    **bench_bundle(model, Path(result.directory), test, args.repeats),
                }
        else:
            models, table, vocabularies = trained_models(args.profile, args.epochs, log)
            test = table.filter(pc.equal(table.column("split"), "test"))
            figures["source"] = (
                f"synthetic {args.profile} world, {table.num_rows} rows, torch epochs={args.epochs}"
            )
            for name, model in models.items():
                if isinstance(model, str):
                    results[name] = {"exported": False, "reason": model}
                    continue
                started = time.perf_counter()
                try:
                    write_bundle(
                        model,
                        Path(tmp) / name,
                        name=name,
                        example=test.slice(0, 256),
                        vocabularies=vocabularies,
                    )
                except NotExportable as exc:
                    results[name] = {"exported": False, "reason": str(exc)}
                    log(f"{name}: not exported: {exc}")
                    continue
                exported = time.perf_counter() - started
                results[name] = {
                    "exported": True,
                    "export_s": round(exported, 2),
                    **bench_bundle(model, Path(tmp) / name, test, args.repeats),
                }
                log(f"{name}: {results[name]}")
    figures["models"] = results
    write_result("serving", figures)


if __name__ == "__main__":
    main()
