"""The trainer's optimisers and learning-rate schedule.

Adam everywhere. On CPU in a single process the large embedding tables (>= `SPARSE_MIN_ROWS` rows)
get sparse gradients and a lazy Adam (`lazy_adam.LazyAdam`, the update of `torch.optim.SparseAdam` /
TF's LazyAdam: only the rows a batch touches move), the other weights dense Adam; a dense Adam step
over 100k-row tables would otherwise cost more than the forward and backward passes. On CUDA and
under DDP every weight gets dense Adam (NCCL has no sparse all-reduce).

`weight_decay` goes to the network's dense weights only, never to an embedding table, whatever the
device: a decay in the optimiser would shrink every row on the dense (GPU) path and none on the lazy
(CPU) one. Embedding tables are regularized by the mini-batch-aware L2 in the loss (`mba_l2`,
`regularization`), which both paths apply identically. With zero gradient and zero moments a dense
Adam step leaves a row where it is, so a row never present in a batch stays put on both paths.

Schedules (`TrainerConfig.lr_schedule`): "cosine" is a function of the global step only (so a
resumed run continues it exactly), "plateau" multiplies by `lr_decay` after every epoch without a
better monitor (FuxiCTR's rule), "constant" never changes.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from ctr_dagster.training.config import TrainerConfig

if TYPE_CHECKING:
    import torch

#: Embedding tables with at least this many rows get sparse gradients + lazy Adam on CPU; smaller ones
#: (devices, hours, categories) stay dense: a sparse update's fixed cost exceeds a dense one there.
SPARSE_MIN_ROWS = 1000


def sparse_embeddings(module: torch.nn.Module) -> list[Any]:
    """Switch the large trainable embedding tables to sparse gradients; returns them (to switch back)."""
    from torch import nn

    tables = [
        m
        for m in module.modules()
        if isinstance(m, nn.Embedding)
        and m.weight.requires_grad
        and m.max_norm is None
        and not m.sparse
        and m.num_embeddings >= SPARSE_MIN_ROWS
    ]
    for table in tables:
        table.sparse = True
    return tables


def embedding_weights(module: torch.nn.Module) -> list[Any]:
    """Every embedding table's weight (`nn.Embedding` and subclasses): exempt from `weight_decay`."""
    from torch import nn

    return [m.weight for m in module.modules() if isinstance(m, nn.Embedding)]


def make_optimizers(
    params: list[Any], sparse_tables: list[Any], config: TrainerConfig, no_decay: list[Any] = ()
) -> list[torch.optim.Optimizer]:
    """Dense Adam over `params` except the sparse tables' weights, plus one LazyAdam over those.

    `no_decay` (the embedding tables' weights) get no `weight_decay` on the dense path either.
    """

    sparse_ids = {id(t.weight) for t in sparse_tables}
    dense = [p for p in params if id(p) not in sparse_ids]
    optimizers: list[torch.optim.Optimizer] = [dense_adam(dense, config, no_decay)]
    if sparse_tables:
        from ctr_dagster.training.lazy_adam import LazyAdam

        optimizers.append(LazyAdam([t.weight for t in sparse_tables], lr=config.lr))
    return optimizers


def dense_adam(params: list[Any], config: TrainerConfig, no_decay: list[Any] = ()) -> torch.optim.Optimizer:
    """Adam with the fused kernel (one pass over all weights per step) where torch has one for
    these tensors (float32/16 on CPU or CUDA), else the multi-tensor (foreach) form. Same update.

    Two parameter groups: `weight_decay` for the network's weights, none for those in `no_decay`."""
    import torch

    exempt = {id(p) for p in no_decay}
    decayed = [p for p in params if id(p) not in exempt]
    plain = [p for p in params if id(p) in exempt]
    groups: list[Any] = [
        {"params": group, "weight_decay": wd}
        for group, wd in ((decayed, config.weight_decay), (plain, 0.0))
        if group
    ]
    fusable = bool(params) and all(
        p.device.type in ("cpu", "cuda") and p.dtype in (torch.float32, torch.float16, torch.bfloat16)
        for p in params
    )
    if fusable:
        try:
            return torch.optim.Adam(groups, lr=config.lr, fused=True)
        except (RuntimeError, ValueError):  # a torch build without the fused kernel for this device
            pass
    return torch.optim.Adam(groups or params, lr=config.lr, foreach=bool(params))


def set_lr(optimizers: list[Any], value: float) -> None:
    for opt in optimizers:
        for group in opt.param_groups:
            group["lr"] = value


def cosine_lr(config: TrainerConfig, epoch: int, batch: int, steps: int) -> float:
    """Cosine decay from `lr` to `min_lr` over all epochs, at 1-based (epoch, batch) of `steps` per epoch."""
    t = ((epoch - 1) * steps + batch - 1) / max(1, config.epochs * steps)
    return config.min_lr + (config.lr - config.min_lr) * 0.5 * (1 + math.cos(math.pi * t))


def plateau_lr(config: TrainerConfig, lr: float) -> float:
    """The learning rate after an epoch that did not improve the monitor."""
    return max(lr * config.lr_decay, config.min_lr)


def clip_grad_norm(params: list[Any], max_norm: float) -> float:
    """Global-norm gradient clipping over dense and sparse gradients (sparse ones coalesced in place).

    Multi-tensor (foreach) norms and scaling: a handful of kernels per step instead of three per
    weight. Returns the total norm before clipping.
    """
    import torch

    grads = []
    for p in params:
        if p.grad is None:
            continue
        if p.grad.is_sparse:
            p.grad = coalesce(p.grad)
            grads.append(p.grad._values())
        else:
            grads.append(p.grad)
    if not grads:
        return 0.0
    total = float(torch.nn.utils.get_total_norm(grads, norm_type=2.0, foreach=True))
    if math.isfinite(total) and total > max_norm:
        torch._foreach_mul_(grads, max_norm / (total + 1e-6))
    return total


def coalesce(grad: Any) -> Any:
    """A sparse gradient with unique, sorted row indices (itself when it already is)."""
    return grad if grad.is_coalesced() else grad.coalesce()
