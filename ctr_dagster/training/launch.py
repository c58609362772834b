"""Multi-process training entry: ``python -m ctr_dagster.training.launch`` under ``torchrun``.

    torchrun --standalone --nproc_per_node 2 -m ctr_dagster.training.launch --model din \\
        --home .ctr_home [--warehouse s3://bucket/prefix] [--config '{"epochs": 3}'] [--seed 0] \\
        [--init-from DIR] [--run-id ID]

Every rank reads the warehouse's training dataset and fits the named model plugin; the trainer
sees WORLD_SIZE > 1 and trains with DDP (`ctr_dagster.training.ddp`). Rank 0 does it through
`ctr_dagster.modeling.train_and_store` (scores, artifact, predictions, record, status), the other
ranks only take part in the fit. When the model asset launches this through Dagster Pipes
(`dg.PipesSubprocessClient`), rank 0 alone opens Pipes, forwards its log lines and reports the
materialization (if every rank reported, Dagster would fail the step with "Multiple materialize
results").

`processes(gpus)` decides how many processes the asset starts: ``CTR_DDP_PROCS=N`` forces N CPU
processes (gloo; how the path is tested without a GPU), ``gpus >= 2`` with that many CUDA devices
gives one process per GPU (NCCL); anything else trains in the asset's own process.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ctr_dagster.settings import Home

PROCS_ENV = "CTR_DDP_PROCS"


def processes(gpus: int, log: Callable[[str], None] = print) -> tuple[int, bool]:
    """(number of training processes, force CPU) for a run that asked for `gpus` GPUs (0 = auto)."""
    forced = os.environ.get(PROCS_ENV, "").strip()
    if forced:
        n = int(forced)
        if n >= 2:
            log(f"{PROCS_ENV}={n}: training with {n} CPU processes (DDP, gloo)")
            return n, True
    if gpus < 2:
        return 1, False
    from ctr_dagster.training.device import device_name

    available = 0
    if device_name() != "cpu":
        import torch

        available = torch.cuda.device_count()
    if available < 2:
        log(f"gpus={gpus} requested but {available} CUDA device(s) available: training in-process")
        return 1, False
    n = min(gpus, available)
    log(f"training on {n} GPUs (DDP, NCCL)")
    return n, False


def command(
    model: str,
    config: dict[str, Any],
    nproc: int,
    home: Path,
    *,
    seed: int = 0,
    init_from: Path | None = None,
    run_id: str | None = None,
    warehouse: str | None = None,
) -> list[str]:
    """The torchrun command line (``python -m torch.distributed.run``: no PATH lookup needed)."""
    args = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nnodes=1",
        f"--nproc_per_node={nproc}",
        "-m",
        "ctr_dagster.training.launch",
        "--model",
        model,
        "--config",
        json.dumps(config),
        "--seed",
        str(seed),
        "--home",
        str(home),
    ]
    if warehouse:
        args += ["--warehouse", warehouse]
    if init_from is not None:
        args += ["--init-from", str(init_from)]
    if run_id:
        args += ["--run-id", run_id]
    return args


def record_failure(home: Home, name: str, run_id: str | None, exc: BaseException) -> None:
    """Mark the model failed when the torchrun subprocess died before rank 0 could say so itself."""
    from ctr_dagster.modeling import read_status, write_status

    status = read_status(home, name) or {}
    if status.get("status") == "failed" and status.get("run_id") == run_id:
        return  # rank 0's train_and_store already recorded the real error
    write_status(home, name, {"status": "failed", "error": f"{type(exc).__name__}: {exc}", "run_id": run_id})


def training_metadata(artifact: Path) -> dict[str, Any]:
    """The trainer's summary from a TorchModel artifact's model.json, as flat asset metadata."""
    path = Path(artifact) / "model.json"
    if not path.is_file():
        return {}
    training = json.loads(path.read_text(encoding="utf-8")).get("training") or {}
    keys = ("world_size", "rank_weight_spread", "samples_per_s", "best_epoch", "epochs_run", "device", "amp")
    return {f"training/{k}": training[k] for k in keys if training.get(k) is not None}


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m ctr_dagster.training.launch", description=__doc__)
    parser.add_argument("--model", required=True, help="registered model plugin name")
    parser.add_argument("--config", default="{}", help="the plugin's config values as JSON")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--home", required=True, type=Path, help="the project home (Settings.home)")
    parser.add_argument(
        "--warehouse",
        default=None,
        help="where the tables live (Home.warehouse_uri); default <home>/warehouse",
    )
    parser.add_argument("--init-from", default=None, help="warm-start artifact folder")
    parser.add_argument("--run-id", default=None)
    return parser.parse_args(argv)


def _other_rank(plugin: Any, values: dict[str, Any], args: argparse.Namespace) -> None:
    """A non-zero rank: the same FitContext and splits as rank 0's train_and_store, fit only."""
    import pyarrow.compute as pc

    from ctr_dagster.contracts import FitContext, config_from_dict
    from ctr_dagster.modeling import cardinalities, prepare_inputs
    from ctr_dagster.training.device import device_name

    home = Home(args.home, args.warehouse)
    warehouse = home.open_warehouse()
    dataset = warehouse.read("training_dataset")
    train, valid = (dataset.filter(pc.equal(dataset.column("split"), s)) for s in ("train", "valid"))
    quiet = lambda message: None  # noqa: E731 - rank 0 logs for everyone
    ctx = FitContext(
        seed=args.seed,
        device=device_name(),
        workdir=home.work / plugin.name,
        cardinalities=cardinalities(warehouse),
        log=quiet,
        init_from=Path(args.init_from) if args.init_from else None,
        inputs=prepare_inputs(plugin, warehouse, quiet),
    )
    plugin.cls(config_from_dict(plugin.cls, values)).fit(train, valid, ctx)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    from ctr_dagster.registry import default_registry

    plugin = default_registry().get("model", args.model)
    values = json.loads(args.config)
    if int(os.environ.get("RANK", "0")) != 0:
        _other_rank(plugin, values, args)
        return 0

    from ctr_dagster.modeling import train_and_store

    home = Home(args.home, args.warehouse)

    def run(log: Callable[[str], None]) -> dict[str, Any]:
        result = train_and_store(
            plugin,
            values,
            home.open_warehouse(),
            home,
            seed=args.seed,
            init_from=Path(args.init_from) if args.init_from else None,
            log=log,
            run_id=args.run_id,
            # the other ranks fit in any case (they wait for rank 0 in every collective)
            skip_unchanged=False,
        )
        return {**result.metadata(), **training_metadata(result.artifact_dir)}

    from dagster_pipes import PipesEnvVarParamsLoader, open_dagster_pipes

    if PipesEnvVarParamsLoader().is_dagster_pipes_process():
        with open_dagster_pipes() as pipes:
            metadata = run(pipes.log.info)
            # the artifact's content hash is the data version, as in-process (assets.models)
            pipes.report_asset_materialization(
                metadata=metadata, data_version=Path(metadata["artifact"]).name
            )
    else:
        metadata = run(lambda message: print(message, flush=True))
        print(json.dumps(metadata, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
