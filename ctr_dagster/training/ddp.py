"""Distributed data parallel under `torchrun`: process group, device per rank, sharding, reductions.

The trainer calls `setup()`; with WORLD_SIZE <= 1 (a plain process) everything here is a no-op, so
the same code runs single-process and under ``torchrun --nproc_per_node N`` without changes. The
backend is NCCL on CUDA and gloo on CPU (how the DDP path is tested without a GPU).

Sharding: every rank computes the same epoch permutation (`batching.epoch_order`); global batch i
is rows ``order[i*B:(i+1)*B]`` and rank r trains on every world-th row of it, so a DDP step
averages gradients over the same global batch a single process would use (up to per-rank
BatchNorm statistics and float summation order).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch


@dataclass
class DistEnv:
    world_size: int = 1
    rank: int = 0
    local_rank: int = 0
    owns_group: bool = False  # this process initialized the group (and tears it down)

    @property
    def active(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def env_world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def setup(device: torch.device) -> tuple[DistEnv, torch.device]:
    """Join the torchrun process group when WORLD_SIZE > 1; returns (env, this rank's device)."""
    import torch
    import torch.distributed as dist

    world = env_world_size()
    if world <= 1:
        return DistEnv(), device
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    owns = False
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
        owns = True
    return DistEnv(world, rank, local_rank, owns), device


def teardown(env: DistEnv) -> None:
    import torch.distributed as dist

    if env.active and env.owns_group and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def shard(rows: np.ndarray, env: DistEnv) -> np.ndarray:
    """This rank's rows of one global batch."""
    return rows[env.rank :: env.world_size] if env.active else rows


def all_mean(value: torch.Tensor, env: DistEnv) -> torch.Tensor:
    """Mean of a scalar over ranks (the value itself when single-process)."""
    import torch.distributed as dist

    if not env.active:
        return value
    value = value.detach().clone()
    dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value / env.world_size


def broadcast_floats(values: list[float], env: DistEnv, device: Any) -> list[float]:
    """Rank 0's `values` on every rank (used for the validation metrics only rank 0 computes)."""
    import torch
    import torch.distributed as dist

    if not env.active:
        return values
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.broadcast(tensor, src=0)
    return tensor.tolist()


def weight_spread(module: torch.nn.Module, env: DistEnv, device: Any) -> float:
    """max - min over ranks of a weights checksum: 0.0 when every rank holds the same weights."""
    import torch
    import torch.distributed as dist

    if not env.active:
        return 0.0
    with torch.no_grad():
        checksum = sum(
            float(p.double().sum()) + 1e-3 * float(p.double().abs().sum()) for p in module.parameters()
        )
    high = torch.tensor([checksum], dtype=torch.float64, device=device)
    low = high.clone()
    dist.all_reduce(high, op=dist.ReduceOp.MAX)
    dist.all_reduce(low, op=dist.ReduceOp.MIN)
    return float(high - low)


def barrier(env: DistEnv) -> None:
    import torch.distributed as dist

    if env.active:
        dist.barrier()
