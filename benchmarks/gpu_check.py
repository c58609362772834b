"""GPU check of the torch trainer: DIN for one epoch on `small`, fp32 vs AMP, then torchrun over all GPUs.

    .venv/bin/python benchmarks/gpu_check.py [--max-train-rows N] [--epochs 1] [--skip-ddp]

On a machine without CUDA it prints why and exits 0 (nothing to check). With CUDA it:

1. builds (or reuses, `din_data.build_training`) the `small` profile's TRAINING table;
2. trains the `din` plugin for `--epochs` with AMP off, then on (bf16 where supported, else fp16 +
   GradScaler), and records samples/s of each (the trainer's own measure: train rows / loop
   seconds, data conversion and validation excluded), valid/test AUC and peak GPU memory;
3. with 2+ GPUs, writes the table into a temporary CTR_HOME warehouse and runs
   ``torchrun --standalone --nproc_per_node=<gpus> -m ctr_dagster.training.launch --model din``,
   recording its exit code, wall time and the metadata rank 0 prints (world size, rank weight spread);
4. writes benchmarks/results/gpu_check.json (and prints it).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def _train(train, valid, test, cardinalities, amp: bool, epochs: int) -> dict:
    import torch
    from ctr_din.model import DinConfig, DinModel

    from ctr_dagster.contracts import FitContext
    from ctr_dagster.metrics import auc

    torch.cuda.reset_peak_memory_stats()
    model = DinModel(DinConfig(epochs=epochs, amp=amp, batch_size=4096, patience=0, log_every=0))
    started = time.perf_counter()
    model.fit(train, valid, FitContext(seed=0, device="cuda", cardinalities=cardinalities, log=print))
    fit_s = time.perf_counter() - started
    from ctr_dagster.modeling import features_only

    test_auc = auc(test.column("label").to_numpy(), model.predict(features_only(test)))
    return {
        "amp": model.summary["amp"],
        "samples_per_s": round(model.summary["samples_per_s"], 1),
        "fit_s": round(fit_s, 2),
        "valid_auc": model.summary["best_valid_auc"],
        "test_auc": test_auc,
        "peak_gpu_mem_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1),
    }


def _ddp(table_path: Path, gpus: int, epochs: int) -> dict:
    import pyarrow.parquet as pq

    from ctr_dagster.training.launch import command
    from ctr_dagster.warehouse import Warehouse

    with tempfile.TemporaryDirectory(prefix="ctr-gpu-check-") as home:
        Warehouse(Path(home) / "warehouse").write("training_dataset", pq.read_table(table_path))
        cmd = command("din", {"epochs": epochs, "batch_size": 4096, "log_every": 0}, gpus, Path(home))
        started = time.perf_counter()
        done = subprocess.run(cmd, capture_output=True, text=True)
        wall = time.perf_counter() - started
    metadata = {}
    for line in reversed(done.stdout.splitlines()):
        if line.startswith("{"):
            try:
                metadata = json.loads(line)
                break
            except json.JSONDecodeError:
                continue
    return {
        "command": " ".join(cmd[cmd.index("-m") + 1 :]),
        "returncode": done.returncode,
        "wall_s": round(wall, 1),
        "metadata": metadata,
        "stderr_tail": done.stderr[-2000:] if done.returncode else "",
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--profile", default="small")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--max-train-rows", type=int, default=None)
    parser.add_argument("--skip-ddp", action="store_true")
    args = parser.parse_args()

    import torch
    from common import write_result

    if not torch.cuda.is_available():
        print(
            "gpu_check: no CUDA device on this machine (torch.cuda.is_available() is False); nothing to check."
        )
        return 0
    from din_data import build_training, cardinalities, load_splits

    path, meta = build_training(args.profile)
    train, valid, test = load_splits(path, args.max_train_rows, None)
    cards = cardinalities(meta, [train, valid, test])
    gpus = torch.cuda.device_count()
    figures: dict = {
        "device": torch.cuda.get_device_name(0),
        "gpus": gpus,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "bf16": torch.cuda.is_bf16_supported(),
        "profile": args.profile,
        "train_rows": train.num_rows,
        "epochs": args.epochs,
    }
    figures["fp32"] = _train(train, valid, test, cards, amp=False, epochs=args.epochs)
    figures["amp"] = _train(train, valid, test, cards, amp=True, epochs=args.epochs)
    figures["amp_speedup"] = round(
        figures["amp"]["samples_per_s"] / max(figures["fp32"]["samples_per_s"], 1e-9), 2
    )
    if gpus >= 2 and not args.skip_ddp:
        figures["ddp"] = _ddp(path, gpus, args.epochs)
    else:
        figures["ddp"] = (
            f"skipped ({gpus} GPU{'s' if gpus != 1 else ''}; needs 2+)" if not args.skip_ddp else "skipped"
        )
    write_result("gpu_check", figures)
    ddp = figures["ddp"]
    return 1 if isinstance(ddp, dict) and ddp["returncode"] != 0 else 0


if __name__ == "__main__":
    sys.exit(main())
