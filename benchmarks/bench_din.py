"""DIN: training throughput and AUC against a peer library (torch-rechub), and 1,000-candidate latency.

One command (defaults: `large` profile, the most recent 500k train rows, 1 epoch, 2 threads):

    .venv/bin/python benchmarks/bench_din.py                       # full run, minutes on 2 cores
    .venv/bin/python benchmarks/bench_din.py --profile small --max-train-rows 100000   # quick check

Steps, each timed apart so data work never counts as training:

1. build or reuse the profile's TRAINING table (`din_data.build_training`, cached in benchmarks/.data);
2. train OUR DIN through the plugin contract only (entry point `din` from the registry,
   `fit(train, valid, FitContext(...))`, `predict`), so it measures whatever the plugin does inside;
   samples/s = train rows x epochs / fit seconds; test AUC from `predict`; torch's one-time import
   of its optimizer machinery happens before either side's timer (the peer builds its optimizer
   before timing, so we build a throwaway one);
3. export the same rows to NumPy and run `peer_din_rechub.py` in `benchmarks/.peer-venv`
   (`benchmarks/peer_env.sh`) with the same threads, batch size, epochs, lr, embedding and MLP dims;
   its test scores come back and are scored by the same AUC function as ours;
4. latency: one user (full history) x 1,000 different items as one Arrow table, `predict` with
   `torch.set_num_threads(1)`, repeated after warm-up -> p50/p99 ms;
5. optional `--profile-ours`: cProfile of `predict` on the latency table and a torch-profiler op table
   of a short fit, written to benchmarks/results/din_profile.txt, to say where the time goes.

Both sides also report samples per CPU-second (`time.process_time`): on a machine shared with other
work the wall-clock rate mostly measures the contention (with 2 threads, OpenMP oversubscription can
slow a step tenfold), while CPU time stays close to the quiet-machine cost, at 1 thread especially.
The load average is recorded before and after each phase; compare runs at similar load only.

Writes benchmarks/results/din.json (see `common.write_result`). Our hyper-parameters are the plugin's
defaults (override with `--set key=value`); the peer copies them, as far as it has the same knobs.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import din_data
import numpy as np
import pyarrow as pa
from common import RESULTS, write_result

HERE = Path(__file__).resolve().parent
PEER_PY = HERE / ".peer-venv" / "bin" / "python"
PEER_SCRIPT = HERE / "peer_din_rechub.py"

#: Names our plugin's Config may use for each knob the peer must copy (first one present wins).
ALIASES: dict[str, tuple[str, ...]] = {
    "epochs": ("epochs", "n_epochs", "max_epochs"),
    "batch_size": ("batch_size",),
    "embed_dim": ("embedding_dim", "embed_dim", "emb_dim", "dim"),
    "attention_units": (
        "attention_units",
        "attention_hidden",
        "attention_dims",
        "att_units",
        "attention_mlp",
    ),
    "tower_units": ("tower_units", "mlp_units", "dnn_hidden_units", "hidden_units", "tower"),
    "lr": ("lr", "learning_rate"),
    "weight_decay": ("weight_decay", "l2"),
    "threads": ("num_threads", "threads"),
}
#: What the peer gets when our Config has no such knob (MODELS.md §7 CPU scale-down, CTRTrainer defaults).
FALLBACK = {"embed_dim": 8, "attention_units": [32], "tower_units": [64, 32], "lr": 1e-3, "weight_decay": 0.0}


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _field(config: object, knob: str) -> str | None:
    names = {f.name for f in dataclasses.fields(config)}
    return next((a for a in ALIASES[knob] if a in names), None)


def our_config(info, args) -> tuple[object, dict]:
    """The plugin's Config: defaults, then --epochs/--batch-size, then --set overrides."""
    from ctr_dagster.contracts import config_from_dict, config_to_dict
    from ctr_dagster.settings import parse_assignments

    defaults = info.cls.Config()
    values: dict = {}
    for knob, wanted in (("epochs", args.epochs), ("batch_size", args.batch_size), ("threads", args.threads)):
        name = _field(defaults, knob)
        if name is not None and wanted is not None:
            values[name] = wanted
    values.update(parse_assignments(args.set))
    config = config_from_dict(info.cls, values)
    return config, config_to_dict(config)


def peer_spec(config: object, args, cardinalities: dict[str, int]) -> dict:
    """Hyper-parameters for the peer: ours where our Config has the knob, else the fallback."""
    spec: dict = {"seed": args.seed, "cardinalities": cardinalities, "copied_from_ours": []}
    for knob in ("epochs", "batch_size", "embed_dim", "attention_units", "tower_units", "lr", "weight_decay"):
        name = _field(config, knob)
        if name is not None:
            value = getattr(config, name)
            spec[knob] = list(value) if isinstance(value, tuple | list) else value
            spec["copied_from_ours"].append(f"{knob}<-{name}")
        else:
            spec[knob] = {"epochs": args.epochs, "batch_size": args.batch_size or 1024}.get(
                knob, FALLBACK.get(knob)
            )
    return spec


def train_ours(info, config, train: pa.Table, valid: pa.Table, test: pa.Table, meta: dict, args) -> tuple:
    import torch

    from ctr_dagster.contracts import FitContext
    from ctr_dagster.metrics import auc, gauc

    torch.set_num_threads(args.threads)
    log_lines: list[str] = []
    t0 = time.perf_counter()

    def log(line: str) -> None:
        log_lines.append(f"{time.perf_counter() - t0:7.1f}s {line}")
        if args.verbose:
            print(log_lines[-1], flush=True)

    model = info.cls(config)
    card = {k: v for k, v in meta["cardinalities"].items()}
    # Equal footing: torch imports torch._dynamo (0.8-1.4 s here, once per process) when the first
    # optimizer is built. The peer builds its optimizer before its timer starts (CTRTrainer's
    # constructor; the tensor mode likewise), so that one-time import is paid here before ours.
    torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))])
    with tempfile.TemporaryDirectory() as tmp:
        ctx = FitContext(seed=args.seed, cardinalities=card, log=log, workdir=Path(tmp))
        load_before = _load()
        started, cpu_started = time.perf_counter(), time.process_time()
        model.fit(train, valid, ctx)
        fit_s, cpu_s = time.perf_counter() - started, time.process_time() - cpu_started
    epochs = getattr(config, _field(config, "epochs") or "", None) or args.epochs
    started = time.perf_counter()
    from ctr_dagster.modeling import features_only

    scores = np.asarray(model.predict(features_only(test)), dtype=np.float64)  # predict never sees a label
    predict_s = time.perf_counter() - started
    labels = test.column("label").to_numpy()
    figures = {
        "fit_s": round(fit_s, 2),
        "samples_per_s": round(train.num_rows * epochs / fit_s, 1),
        "fit_cpu_s": round(cpu_s, 2),
        "samples_per_cpu_s": round(train.num_rows * epochs / cpu_s, 1),
        "epochs": epochs,
        "test_auc": auc(labels, scores),
        "test_gauc": gauc(test.column("user_idx").to_numpy(), labels, scores)[0],
        "test_predict_rows_per_s": round(test.num_rows / predict_s, 1),
        "load_before_fit": load_before,
        "load_after_fit": _load(),
        "fit_log_tail": log_lines[-8:],
        "torch_optimizer_import_before_timer": True,  # as the peer's; see train_ours
    }
    return model, figures


def candidates_table(test: pa.Table, n: int = 1000) -> pa.Table:
    """One user (the first test row with the longest history) x `n` distinct items of the test day.

    User/context columns are that row's; item columns (id, category, price, age, position, newness)
    come from each item's own first test row. The user's history is the same on every row.
    """
    import pyarrow.compute as pc

    lengths = pc.list_value_length(test.column("hist_item_idx")).to_numpy()
    anchor = int(np.argmax(lengths))
    _, first = np.unique(test.column("item_idx").to_numpy(), return_index=True)
    if len(first) < n:
        raise ValueError(f"the test split has only {len(first)} distinct items, need {n}")
    items = test.take(np.sort(first)[:n])
    item_side = {"item_id", "item_idx", "category_idx", "price", "item_age_days", "position", "is_new_item"}
    user = test.slice(anchor, 1).take(np.zeros(n, dtype=np.int64))
    columns = [items.column(c) if c in item_side else user.column(c) for c in test.column_names]
    from ctr_dagster.modeling import features_only

    return features_only(pa.Table.from_arrays(columns, schema=test.schema))  # as serving sees it: no label


def latency(model, table: pa.Table, reps: int, warmup: int = 20) -> dict:
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for _ in range(warmup):
            model.predict(table)
        times, cpu_times = [], []
        for _ in range(reps):
            started, cpu_started = time.perf_counter(), time.process_time()
            model.predict(table)
            times.append((time.perf_counter() - started) * 1000)
            cpu_times.append((time.process_time() - cpu_started) * 1000)
    finally:
        torch.set_num_threads(previous)
    ms, cpu_ms = np.array(times), np.array(cpu_times)
    return {
        "candidates": table.num_rows,
        "history_len": len(table.column("hist_item_idx")[0]),
        "reps": reps,
        "p50_ms": round(float(np.percentile(ms, 50)), 3),
        "p99_ms": round(float(np.percentile(ms, 99)), 3),
        "mean_ms": round(float(ms.mean()), 3),
        # CPU time of the call: what a quiet machine would show (the wall time includes waiting for
        # a core when other processes share the machine).
        "cpu_p50_ms": round(float(np.percentile(cpu_ms, 50)), 3),
        "cpu_p99_ms": round(float(np.percentile(cpu_ms, 99)), 3),
        "torch_threads": 1,
    }


def run_peer(
    train: pa.Table, valid: pa.Table, test: pa.Table, spec: dict, meta: dict, args, modes: str
) -> dict:
    """Export the rows, run the peer script in its venv, score its test predictions like ours."""
    from ctr_dagster.metrics import auc, gauc

    if not PEER_PY.exists():  # first run: make the pinned peer venv (pip dry-run checked, CPU torch only)
        print(f"peer venv missing: running {HERE / 'peer_env.sh'}", flush=True)
        subprocess.run(["bash", str(HERE / "peer_env.sh")], check=True)
    with tempfile.TemporaryDirectory(dir=din_data.DATA) as tmp:
        folder = Path(tmp)
        started = time.perf_counter()
        edges = din_data.bucket_edges(train)
        for name, table in (("train", train), ("valid", valid), ("test", test)):
            din_data.export_npz(table, folder / f"{name}.npz", meta["max_seq_len"], edges)
        spec = {
            **spec,
            "cardinalities": {
                **spec["cardinalities"],
                **{f"{b}_bucket": din_data.N_BUCKETS + 1 for b in din_data.BUCKETED},
            },
        }
        (folder / "spec.json").write_text(json.dumps(spec))
        export_s = time.perf_counter() - started
        threads = str(args.threads)
        env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, "TQDM_DISABLE": "1"}
        load_before = _load()
        command = [str(PEER_PY), str(PEER_SCRIPT), str(folder), "--threads", threads, "--modes", modes]
        command += ["--out", str(folder / "result.json")]
        done = subprocess.run(command, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"peer script failed ({done.returncode}):\n{done.stderr[-4000:]}")
        result = json.loads((folder / "result.json").read_text())
        labels, users = test.column("label").to_numpy(), test.column("user_idx").to_numpy()
        for mode in modes.split(","):
            scores = np.load(folder / f"test_scores_{mode}.npy").astype(np.float64)
            result[mode]["test_auc_own"] = result[mode].pop("test_auc")
            result[mode]["test_auc"] = auc(labels, scores)
            result[mode]["test_gauc"] = gauc(users, labels, scores)[0]
    result.update(export_s=round(export_s, 1), load_before=load_before, load_after=_load())
    return result


def profile_ours(info, config, model, train: pa.Table, valid: pa.Table, cand: pa.Table, meta, args) -> Path:
    """Where our time goes: cProfile of predict (1 thread) and torch-profiler ops of a short fit."""
    import cProfile
    import io
    import pstats

    import torch
    from torch.profiler import ProfilerActivity, profile

    from ctr_dagster.contracts import FitContext

    out = io.StringIO()
    torch.set_num_threads(1)
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(50):
        model.predict(cand)
    prof.disable()
    out.write("== cProfile: 50 x predict(1,000 candidates), 1 thread, by cumulative time\n")
    pstats.Stats(prof, stream=out).sort_stats("cumulative").print_stats(30)
    with profile(activities=[ProfilerActivity.CPU]) as tp:
        for _ in range(20):
            model.predict(cand)
    out.write("\n== torch.profiler: 20 x predict(1,000 candidates), 1 thread\n")
    out.write(tp.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))
    torch.set_num_threads(args.threads)
    rows = min(train.num_rows, args.profile_rows)
    small = train.slice(train.num_rows - rows)
    fresh = info.cls(config)
    ctx = FitContext(seed=args.seed, cardinalities=dict(meta["cardinalities"]), log=lambda s: None)
    prof = cProfile.Profile()
    with profile(activities=[ProfilerActivity.CPU]) as tp:
        prof.enable()
        fresh.fit(small, valid.slice(0, min(valid.num_rows, 20_000)), ctx)
        prof.disable()
    out.write(f"\n== torch.profiler: fit on {rows} rows, {args.threads} threads\n")
    out.write(tp.key_averages().table(sort_by="self_cpu_time_total", row_limit=30))
    out.write(f"\n== cProfile: fit on {rows} rows, by total (self) time\n")
    pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(25)
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / "din_profile.txt"
    path.write_text(out.getvalue())
    return path


def versions(info) -> dict:
    from importlib.metadata import PackageNotFoundError, version

    import torch

    out = {"torch": torch.__version__, "model_dist": info.dist, "model_version": info.version}
    for dist in ("ctr-dagster", "pyarrow", "numpy"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = None
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="large", help="datagen profile (tiny/small/large)")
    parser.add_argument(
        "--max-train-rows", type=int, default=500_000, help="most recent N train rows (0 = all)"
    )
    parser.add_argument(
        "--max-eval-rows", type=int, default=200_000, help="evenly spaced valid/test rows (0 = all)"
    )
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=None, help="default: our plugin's default")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", default="din", help="model entry point to benchmark (din)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="our Config override")
    parser.add_argument("--skip-peer", action="store_true")
    parser.add_argument("--peer-modes", default="documented,tensor", help="documented and/or tensor")
    parser.add_argument("--latency-reps", type=int, default=200)
    parser.add_argument("--profile-ours", action="store_true", help="write results/din_profile.txt")
    parser.add_argument("--profile-rows", type=int, default=100_000)
    parser.add_argument("--name", default="din", help="result file name (results/<name>.json)")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args()

    from ctr_dagster.registry import default_registry

    load_start = _load()
    info = default_registry().get("model", args.model)
    started = time.perf_counter()
    path, meta = din_data.build_training(args.profile)
    dataset_s = time.perf_counter() - started
    train, valid, test = din_data.load_splits(path, args.max_train_rows or None, args.max_eval_rows or None)
    print(f"data: {train.num_rows} train / {valid.num_rows} valid / {test.num_rows} test rows", flush=True)

    config, config_dict = our_config(info, args)
    spec = peer_spec(config, args, din_data.cardinalities(meta, [train, valid, test]))
    model, ours = train_ours(info, config, train, valid, test, meta, args)
    print("ours:", json.dumps({k: v for k, v in ours.items() if k != "fit_log_tail"}), flush=True)
    cand = candidates_table(test)
    lat = latency(model, cand, args.latency_reps)
    print("latency:", json.dumps(lat), flush=True)

    peer = None if args.skip_peer else run_peer(train, valid, test, spec, meta, args, args.peer_modes)
    figures: dict = {
        "model": args.model,
        "profile": args.profile,
        "dataset": {
            "path": str(path.relative_to(HERE.parent)),
            "reused": meta["reused"],
            "seconds": round(dataset_s, 1),
            "generation_s": meta.get("generation_s"),
            "build_s": meta.get("build_s"),
            "rows_total": meta["rows"],
        },
        "rows": {"train": train.num_rows, "valid": valid.num_rows, "test": test.num_rows},
        "threads": args.threads,
        "our_config": config_dict,
        "ours": ours,
        "latency_1000_candidates": lat,
        "load_start": load_start,
        "versions": versions(info),
    }
    if peer is not None:
        figures["peer"] = peer
        for mode in args.peer_modes.split(","):
            figures[f"ratio_vs_peer_{mode}"] = round(ours["samples_per_s"] / peer[mode]["samples_per_s"], 2)
            figures[f"cpu_ratio_vs_peer_{mode}"] = round(
                ours["samples_per_cpu_s"] / peer[mode]["samples_per_cpu_s"], 2
            )
            figures[f"auc_delta_vs_peer_{mode}"] = round(
                (ours["test_auc"] or 0) - (peer[mode]["test_auc"] or 0), 4
            )
        figures["goals"] = {
            "throughput_5x_at_equal_auc": {
                mode: figures[f"ratio_vs_peer_{mode}"] >= 5 and figures[f"auc_delta_vs_peer_{mode}"] >= 0
                for mode in args.peer_modes.split(",")
            },
            "latency_p50_10ms": lat["p50_ms"] <= 10,
        }
    else:
        figures["goals"] = {"latency_p50_10ms": lat["p50_ms"] <= 10}
    if args.profile_ours:
        figures["profile_file"] = str(profile_ours(info, config, model, train, valid, cand, meta, args))
    figures["load_end"] = _load()
    write_result(args.name, figures)


if __name__ == "__main__":
    sys.exit(main())
