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

A torch model's bundle holds its network as a torch.export program and, where the export could
convert it, as ONNX; ``bundle_ms`` is what the runtime's default ("auto": the engine the export timed
faster, ``engine``) gives, and ``bundle_onnx_ms`` / ``bundle_torch_ms`` the same bundle with each engine.
A bundle with a one-request program (SUAN / LightSUAN: the history encoded once per request) serves
the request with it; its general program (every row at full length) is timed beside it
(``bundle_general_ms``). ``bundle_columns_ms`` is the same request with its candidates as one list
per field (the runtime's columnar form: less to parse). `--pair STUDENT TEACHER` also times those
two bundles in alternating blocks (`interleaved`), the fair ground for a speed-up ratio on a shared
machine: `figures.pair`. `--with-suan` adds the opt-in suan / lightsuan, imported from
plugins/ctr-suan when the plugin is not installed; `--models` keeps only the named models (training
every plugin takes a while on a shared machine).

    .venv/bin/python benchmarks/bench_serving.py [--profile tiny] [--repeats 50] [--home .ctr_home]
    .venv/bin/python benchmarks/bench_serving.py --with-suan --models suan lightsuan --repeats 200
    .venv/bin/python benchmarks/bench_serving.py --with-suan --models suan lightsuan --override suan:grade=5
        --pair lightsuan suan      # also the two bundles timed in alternation: the speed-up goal

Writes benchmarks/results/serving.json (`--out NAME`: NAME.json). A model that cannot be exported is
listed with its reason. `--with-suan` applies to the models trained here, not to `--home`.
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

ROOT = Path(__file__).resolve().parents[1]
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
    """(request dict, the 1,000 rows it stands for): the user with the longest history among the test
    rows (row 0's may have none, which flatters a model that trims empty history) and 1,000 candidates."""
    import pyarrow.compute as pc

    from ctr_dagster.distillation import one_user_candidates
    from ctr_dagster.serving.convert import inverse_vocabularies, requests_from_table

    lengths = pc.fill_null(pc.list_value_length(test.column("hist_item_idx")), 0).to_numpy()
    first = int(np.argmax(lengths))
    order = np.r_[first, np.delete(np.arange(test.num_rows), first)]
    rows = one_user_candidates(test.take(order), CANDIDATES)
    requests = requests_from_table(rows, inverse_vocabularies(bundle_dir))
    assert len(requests) == 1, f"expected one request, got {len(requests)}"
    return requests[0][0], rows


def bench_bundle(model: Any, bundle_dir: Path, test, repeats: int) -> dict[str, Any]:
    import torch

    from ctr_dagster.distillation import scoring_latency_ms
    from ctr_dagster.modeling import features_only
    from ctr_dagster.serving import runtime
    from ctr_dagster.serving.convert import columnar_request

    bundle = runtime.load(bundle_dir, threads=1)
    request, rows = one_request(test, bundle_dir)
    scores = bundle.score(request)
    expected = model.predict(features_only(rows))
    size = sum(p.stat().st_size for p in bundle_dir.rglob("*") if p.is_file())
    out = {
        "kind": bundle.manifest["model"]["kind"],
        "strategy": bundle.manifest["model"].get("strategy"),
        "bundle_bytes": size,
        "history_length": len(request["user"].get("history") or []),
        "max_gap_vs_predict": float(np.max(np.abs(scores - expected))),
        "bundle_ms": timed(lambda: bundle.score(request), repeats),
    }
    # the same request with one list per field (the runtime's columnar form): less to parse
    columns = columnar_request(request)
    out["max_gap_columns_vs_rows"] = float(np.max(np.abs(bundle.score(columns) - scores)))
    out["bundle_columns_ms"] = timed(lambda: bundle.score(columns), repeats)
    engine = bundle.model
    if getattr(engine, "engine", None):
        out["engine"] = engine.engine  # what ran bundle_ms: "onnx" (ONNX Runtime) or "torch"
        out["onnx_rejected"] = bundle.manifest["model"].get("onnx_rejected")
    if getattr(engine, "request_program", None) is not None:
        out["programs"] = {"request": "one-request program (history encoded once)"}
        engine.use_request_program = False
        general = bundle.score(request)
        out["max_gap_general_vs_predict"] = float(np.max(np.abs(general - expected)))
        out["bundle_general_ms"] = timed(lambda: bundle.score(request), repeats)
        engine.use_request_program = True
    if bundle.manifest["model"].get("onnx"):  # the same bundle with each engine running the network
        out["export_timing_ms"] = bundle.manifest["model"]["onnx"].get("timing_ms")
        for name in ("onnx", "torch"):
            forced = runtime.load(bundle_dir, threads=1, engine=name)
            out[f"max_gap_{name}_vs_predict"] = float(np.max(np.abs(forced.score(request) - expected)))
            out[f"bundle_{name}_ms"] = timed(lambda forced=forced: forced.score(request), repeats)
    torch.set_num_threads(1)
    if hasattr(model, "config") and hasattr(model.config, "num_threads"):
        model.config.num_threads = 1  # LightGBM: predict on one thread too
    out["predict_ms"] = {
        k: v for k, v in scoring_latency_ms(model, features_only(rows), repeats).items() if k != "candidates"
    }
    return out


#: `interleaved`: requests per block of one model, of which the first few warm it up again (its
#: weights back in the CPU caches after the other model's block) and are not timed.
BLOCK, BLOCK_WARMUP = 25, 5


def interleaved(pair: list[str], directories: dict[str, Path], test, repeats: int) -> dict[str, Any]:
    """A student's and its teacher's bundles timed in alternating blocks (`BLOCK` requests of one,
    then of the other, the first `BLOCK_WARMUP` of each block untimed), on the same request in both
    forms: a slow spell of a shared machine falls on both, so the ratio holds. Blocks, not single
    requests: alternating every request makes the small model pay for the large one's cache
    footprint (LightSUAN p50 2.1 -> 3.2 ms), which a server running one model does not. p50 / p99 per
    model over `repeats` timed requests each, their ratios, and the median of the per-block ratios of
    the medians."""
    from ctr_dagster.serving import runtime
    from ctr_dagster.serving.convert import columnar_request

    missing = [name for name in pair if name not in directories]
    if missing:
        return {"skipped": f"not exported: {', '.join(missing)}"}
    student, teacher = pair
    bundles = {name: runtime.load(directories[name], threads=1) for name in pair}
    out: dict[str, Any] = {
        "student": student,
        "teacher": teacher,
        "block": BLOCK,
        "block_warmup": BLOCK_WARMUP,
    }
    timed_per_block = BLOCK - BLOCK_WARMUP
    blocks = max(1, -(-repeats // timed_per_block))
    for form in ("rows", "columns"):
        calls = {}
        for name in pair:
            request, _ = one_request(test, directories[name])
            request = columnar_request(request) if form == "columns" else request
            calls[name] = lambda b=bundles[name], r=request: b.score(r)
        times: dict[str, list[float]] = {name: [] for name in pair}
        block_ratios = []
        for i in range(blocks):
            medians = {}
            for name in pair if i % 2 == 0 else pair[::-1]:
                block = []
                for j in range(BLOCK):
                    started = time.perf_counter()
                    calls[name]()
                    if j >= BLOCK_WARMUP:
                        block.append((time.perf_counter() - started) * 1000.0)
                times[name] += block
                medians[name] = statistics.median(block)
            block_ratios.append(medians[teacher] / medians[student])
        s, t = percentiles(times[student]), percentiles(times[teacher])
        out[form] = {
            student: s,
            teacher: t,
            "teacher_over_student_p50": round(t["p50"] / s["p50"], 2),
            "teacher_over_student_p99": round(t["p99"] / s["p99"], 2),
            "median_block_ratio": round(statistics.median(block_ratios), 2),
            "block_ratio_range": [round(min(block_ratios), 2), round(max(block_ratios), 2)],
        }
    return out


def suan_classes() -> list[type]:
    """SuanModel and LightSuanModel: the installed plugin's, else imported from plugins/ctr-suan."""
    try:
        from ctr_suan.model import LightSuanModel, SuanModel
    except ImportError:
        sys.path.insert(0, str(ROOT / "plugins" / "ctr-suan"))
        from ctr_suan.model import LightSuanModel, SuanModel
    return [SuanModel, LightSuanModel]


def trained_models(
    profile: str,
    epochs: int,
    log,
    with_suan: bool = False,
    only: list[str] | None = None,
    overrides: dict[str, dict[str, Any]] | None = None,
) -> tuple[dict[str, Any], Any, Any]:
    """({name: fitted model or error text}, the world's TRAINING table, its vocabularies).
    `overrides`: per model, config fields set on top of the epochs / threads set here."""
    import pyarrow.compute as pc

    from ctr_dagster.contracts import FitContext, config_from_dict, config_to_dict
    from ctr_dagster.registry import discover
    from ctr_dagster.serving.convert import vocabularies_from_table
    from ctr_dagster.testing import make_fit_inputs, synthetic_training_table, training_cardinalities

    table = synthetic_training_table(profile)
    train = table.filter(pc.equal(table.column("split"), "train"))
    valid = table.filter(pc.equal(table.column("split"), "valid"))
    inputs = make_fit_inputs({"item_embeddings", "item_tags"}, table)
    plugins = {info.name: info.cls for info in discover(["model"]).good("model")}
    if with_suan:
        for cls in suan_classes():
            plugins.setdefault(cls.name, cls)
    models: dict[str, Any] = {}
    for name, cls in plugins.items():
        if only and name not in only:
            continue
        if getattr(cls, "task", "ctr") != "ctr":
            models[name] = f"an {cls.task!r} model: bundles serve click probabilities"
            continue
        values = {}
        fields = set(config_to_dict(cls.Config()))
        if "epochs" in fields:
            values["epochs"] = epochs
        if "num_threads" in fields:
            values["num_threads"] = 1
        values.update((overrides or {}).get(name, {}))
        started = time.perf_counter()
        try:
            model = cls(config_from_dict(cls, values))
            ctx = FitContext(
                cardinalities=training_cardinalities(table), log=lambda line: None, inputs=dict(inputs)
            )
            models[name] = model.fit(train, valid, ctx)
            log(f"{name}: trained in {time.perf_counter() - started:.1f} s")
        except Exception as exc:  # noqa: BLE001 - reported in the results
            models[name] = f"training failed: {type(exc).__name__}: {exc}"
    return models, table, vocabularies_from_table(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="tiny")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument(
        "--home", type=Path, default=None, help="export the models trained in this project home"
    )
    parser.add_argument(
        "--with-suan",
        action="store_true",
        help="add the opt-in suan / lightsuan (from plugins/ctr-suan when not installed)",
    )
    parser.add_argument("--models", nargs="+", default=None, help="only these models (default: all)")
    parser.add_argument(
        "--override",
        action="append",
        default=[],
        metavar="MODEL:KEY=JSON",
        help="a config field of one trained model, e.g. suan:grade=5 (repeatable)",
    )
    parser.add_argument(
        "--pair",
        nargs=2,
        metavar=("STUDENT", "TEACHER"),
        help="also time these two bundles in alternation (e.g. lightsuan suan): the speed-up goal",
    )
    parser.add_argument(
        "--out", default="serving", help="result name: benchmarks/results/NAME.json (default: serving)"
    )
    args = parser.parse_args()
    from ctr_dagster.settings import parse_model_assignments

    try:
        overrides = parse_model_assignments(args.override)
    except ValueError as exc:
        parser.error(str(exc))

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
        "overrides": overrides,
    }
    results: dict[str, Any] = {}
    directories: dict[str, Path] = {}
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
                if args.models and result.name not in args.models:
                    continue
                if not result.ok:
                    results[result.name] = {"exported": False, "reason": result.error}
                    continue
                directories[result.name] = Path(result.directory)
                _, plugin, artifact, _ = resolve(home, result.name)
                model = registry.get("model", plugin).cls.load(artifact)
                results[result.name] = {
                    "exported": True,
                    "export_s": round(result.seconds, 2),
                    **bench_bundle(model, Path(result.directory), test, args.repeats),
                }
        else:
            models, table, vocabularies = trained_models(
                args.profile,
                args.epochs,
                log,
                with_suan=args.with_suan,
                only=args.models,
                overrides=overrides,
            )
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
                directories[name] = Path(tmp) / name
                results[name] = {
                    "exported": True,
                    "export_s": round(exported, 2),
                    **bench_bundle(model, Path(tmp) / name, test, args.repeats),
                }
                log(f"{name}: {results[name]}")
        if args.pair:
            figures["pair"] = interleaved(args.pair, directories, test, args.repeats)
            log(f"pair: {figures['pair']}")
    figures["models"] = results
    write_result(args.out, figures)


if __name__ == "__main__":
    main()
