"""`LazyAdam`: Adam for embedding tables with sparse gradients -- only the rows a batch touches move.

Same update as `torch.optim.SparseAdam` (and TensorFlow's LazyAdam): for the rows r present in the
gradient, ``m_r = b1 m_r + (1-b1) g_r``, ``v_r = b2 v_r + (1-b2) g_r^2`` and
``w_r -= lr / (1-b1^t) * m_r / (sqrt(v_r / (1-b2^t)) + eps)``; other rows and their moments are left
alone. Written with dense row gathers/scatters (index_select / index_copy_) instead of
sparse-tensor arithmetic, which makes a step several times cheaper on CPU.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from ctr_dagster.training.optim import coalesce


class LazyAdam(torch.optim.Optimizer):
    """Row-wise (lazy) Adam for parameters whose gradients are sparse (nn.Embedding(sparse=True))."""

    def __init__(
        self, params: Any, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8
    ):
        if lr <= 0 or eps <= 0 or not (0 <= betas[0] < 1 and 0 <= betas[1] < 1):
            raise ValueError(f"invalid LazyAdam settings lr={lr} betas={betas} eps={eps}")
        super().__init__(params, {"lr": lr, "betas": tuple(betas), "eps": eps})

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                if not grad.is_sparse:
                    raise RuntimeError("LazyAdam expects sparse gradients (nn.Embedding(sparse=True))")
                grad = coalesce(grad)
                rows, values = grad._indices()[0], grad._values()
                state = self.state[p]
                if not state:
                    state["step"] = torch.zeros((), dtype=torch.float64)
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["step"] += 1
                step = float(state["step"])
                exp_avg = state["exp_avg"].index_select(0, rows).lerp_(values, 1 - beta1)
                exp_avg_sq = state["exp_avg_sq"].index_select(0, rows).mul_(beta2)
                exp_avg_sq.addcmul_(values, values, value=1 - beta2)
                state["exp_avg"].index_copy_(0, rows, exp_avg)
                state["exp_avg_sq"].index_copy_(0, rows, exp_avg_sq)
                denom = exp_avg_sq.sqrt_().div_(math.sqrt(1 - beta2**step)).add_(group["eps"])
                # rows are unique (coalesced): gather, update, write back -- 3x cheaper than index_add_
                updated = p.index_select(0, rows).add_(
                    exp_avg.div_(denom), alpha=-group["lr"] / (1 - beta1**step)
                )
                p.index_copy_(0, rows, updated)
        return loss
