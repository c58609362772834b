"""The ECUP network (MODELS.md section 5): TENet (Treatment-Aware Unit + Treatment-Enhanced Gate) and
ECENet (per-(task, arm) towers in the entire exposure space, scaled by the Task-Enhanced Network).

Shapes: B rows, F fields, d embedding width, A = K + 1 arms (0 = control), T tasks (1 = click only,
2 = click and conversion), h_l the tower widths. Every formula the sources leave open is a [choice]
listed in the `ctr_ecup.model` docstring; this module implements exactly those choices.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class FieldEmbedding(nn.Module):
    """One d-vector per field: categorical = a table row (one concatenated table, per-field offsets);
    numeric = value x learned vector + learned bias vector (the AutoInt / FuxiCTR numeric embedding)."""

    def __init__(self, cat_sizes: list[int], n_numeric: int, d: int, init_std: float):
        super().__init__()
        self.n_categorical = len(cat_sizes)
        self.n_numeric = n_numeric
        offsets = [0]
        for size in cat_sizes[:-1]:
            offsets.append(offsets[-1] + size)
        self.register_buffer("offsets", torch.tensor(offsets, dtype=torch.long), persistent=False)
        self.table = nn.Embedding(max(sum(cat_sizes), 1), d)
        self.num_weight = nn.Parameter(torch.empty(n_numeric, d))
        self.num_bias = nn.Parameter(torch.zeros(n_numeric, d))
        nn.init.normal_(self.table.weight, std=init_std)
        nn.init.normal_(self.num_weight, std=init_std)

    def forward(self, cat: torch.Tensor, num: torch.Tensor) -> torch.Tensor:
        parts = []
        if self.n_categorical:
            parts.append(self.table(cat + self.offsets))
        if self.n_numeric:
            parts.append(num.unsqueeze(-1) * self.num_weight + self.num_bias)
        return torch.cat(parts, dim=1)  # (B, F, d)


class MultiHeadAttention(nn.Module):
    """Multi-head scaled dot-product attention written with plain matmuls (nn.MultiheadAttention's
    CPU flash kernel is several times slower on a few tokens): ``out = W_o concat_h softmax(q_h k_h^T /
    sqrt(d_h)) v_h`` with q = W_q query, k = W_k kv, v = W_v kv (biases on every projection)."""

    def __init__(self, d: int, heads: int):
        super().__init__()
        if d % heads:
            raise ValueError(f"embedding width {d} is not a multiple of the {heads} heads")
        self.heads = heads
        self.q = nn.Linear(d, d)
        self.kv = nn.Linear(d, 2 * d)
        self.out = nn.Linear(d, d)

    def forward(self, query: torch.Tensor, kv: torch.Tensor) -> torch.Tensor:
        """query (B, Lq, d) or (Lq, d) (one query set shared by the rows), kv (B, L, d) -> (B, Lq, d)."""
        b, length, d = kv.shape
        lq = query.shape[-2]
        dh = d // self.heads
        q = self.q(query).view(-1, lq, self.heads, dh).transpose(-3, -2)  # (B or 1, h, Lq, dh)
        k, v = self.kv(kv).view(b, length, 2, self.heads, dh).permute(2, 0, 3, 1, 4)  # (B, h, L, dh)
        weights = torch.softmax((q / math.sqrt(dh)) @ k.transpose(-1, -2), dim=-1)  # (B, h, Lq, L)
        mixed = weights @ v  # (B, h, Lq, dh)
        return self.out(mixed.transpose(1, 2).reshape(b, lq, d))


class ArmTowers(nn.Module):
    """ECENet's towers: one MLP per (task, arm), stored as batched weights ``(T, A, in, out)``.

    A batch is split by arm (index_select), each arm's rows go through their arm's weights for every
    task at once (one einsum per layer), and the logits are scattered back: the compute equals one
    tower per row and task, whatever the number of arms. `scales[l]` (T, B, h_l), when given,
    multiplies the hidden units of layer l after the ReLU (TAENet's dynamic parameter selection).
    """

    def __init__(self, n_tasks: int, n_arms: int, in_dim: int, units: list[int], dropout: float):
        super().__init__()
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        sizes = [in_dim, *units, 1]
        for fan_in, fan_out in zip(sizes[:-1], sizes[1:], strict=True):
            bound = 1.0 / math.sqrt(fan_in)  # nn.Linear's default range
            # every arm's tower starts from the same weights [choice]: the arms differ at initialisation
            # only through the (small) treatment embedding, so an effect is learned, not init noise
            w = torch.empty(n_tasks, 1, fan_in, fan_out).uniform_(-bound, bound)
            b = torch.empty(n_tasks, 1, fan_out).uniform_(-bound, bound)
            self.weights.append(nn.Parameter(w.expand(-1, n_arms, -1, -1).clone()))
            self.biases.append(nn.Parameter(b.expand(-1, n_arms, -1).clone()))
        self.dropout = nn.Dropout(dropout) if dropout > 0 else None

    def _run(self, x: torch.Tensor, arm: int, scales: list[torch.Tensor] | None) -> torch.Tensor:
        h = x.unsqueeze(0).expand(self.weights[0].shape[0], -1, -1)  # (T, n, in)
        last = len(self.weights) - 1
        for layer, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            h = torch.baddbmm(b[:, arm].unsqueeze(1), h, w[:, arm])
            if layer == last:
                break
            h = F.relu(h)
            if scales is not None:
                h = h * scales[layer]
            if self.dropout is not None:
                h = self.dropout(h)
        return h.squeeze(-1)  # (T, n)

    def forward(self, x: torch.Tensor, arm: torch.Tensor, scales: list[torch.Tensor] | None) -> torch.Tensor:
        """Logits (T, B): row i through the towers of arm ``arm[i]``."""
        present = torch.unique(arm).tolist()
        if len(present) == 1:
            return self._run(x, int(present[0]), scales)
        out = x.new_zeros(self.weights[0].shape[0], x.shape[0])
        for a in present:
            idx = (arm == a).nonzero().squeeze(1)
            part = None if scales is None else [s.index_select(1, idx) for s in scales]
            out = out.index_copy(1, idx, self._run(x.index_select(0, idx), int(a), part))
        return out


class EcupNet(nn.Module):
    """ECUP: field embeddings -> TENet (TAU + bit-level gate) -> TAENet-scaled per-(task, arm) towers."""

    def __init__(
        self,
        cat_sizes: list[int],
        n_numeric: int,
        n_arms: int,
        n_tasks: int,
        d: int = 16,
        heads: int = 2,
        tower_units: list[int] | None = None,
        treatment_gate: bool = True,
        task_prior: bool = True,
        dropout: float = 0.0,
        init_std: float = 0.05,
    ):
        super().__init__()
        units = list(tower_units or [64, 32])
        self.n_fields = len(cat_sizes) + n_numeric
        self.n_arms = n_arms
        self.n_tasks = n_tasks
        self.treatment_gate = treatment_gate
        self.task_prior = task_prior
        self.embedding = FieldEmbedding(cat_sizes, n_numeric, d, init_std)
        self.arm_embedding = nn.Embedding(n_arms, d)
        nn.init.normal_(self.arm_embedding.weight, std=init_std)
        if treatment_gate:
            # Treatment-Aware Unit: self-attention across fields, a treatment MLP, concat -> tanh(Linear)
            self.field_attention = MultiHeadAttention(d, heads)
            self.treatment_mlp = nn.Sequential(nn.Linear(d, d), nn.ReLU())
            self.tau_fuse = nn.Linear(2 * d, d)
            # Treatment-Enhanced Gate: bit-level W_b = sigmoid(Linear([E; E_TAU])), shared by the fields
            self.gate = nn.Linear(2 * d, d)
        tokens = self.n_fields + (1 if treatment_gate else 0)
        if task_prior:
            # Task-Enhanced Network: task embedding (query) x treatment-enhanced tokens (key/value)
            self.task_embedding = nn.Parameter(torch.empty(n_tasks, d).normal_(std=init_std))
            self.task_attention = MultiHeadAttention(d, heads)
            self.task_scales = nn.ModuleList(nn.Linear(d, h) for h in units)
        self.towers = ArmTowers(n_tasks, n_arms, tokens * d, units, dropout)

    def field_attention_context(self, E: torch.Tensor) -> torch.Tensor | None:
        """TAU's self-attention across fields, E_att = E + MHSA(E) (the residual is a [choice]); it does
        not depend on the arm, so counterfactual scoring computes it once for every arm. None without
        the gate."""
        if not self.treatment_gate:
            return None
        return E + self.field_attention(E, E)

    def treatment_enhance(
        self, E: torch.Tensor, arm: torch.Tensor, E_att: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """TENet: {"E", "e_t", "E_att", "E_tau", "W_b", "E_r", "tokens"}; without the gate E_r = E,
        tokens = E (the treatment then enters only through the per-arm towers).

        Both Linear layers of concatenations are applied as the sum of their two halves,
        ``W [a; b] + c = W_a a + W_b b + c`` (same parameters, same function): the treatment half of
        the TAU fusion is then computed once per row instead of once per field."""
        e_t = self.arm_embedding(arm)  # (B, d)
        if not self.treatment_gate:
            return {"E": E, "e_t": e_t, "E_r": E, "tokens": E}
        if E_att is None:
            E_att = self.field_attention_context(E)
        d = E.shape[-1]
        h_t = self.treatment_mlp(e_t)  # (B, d)
        w_f, w_g = self.tau_fuse.weight, self.gate.weight
        # E_TAU = tanh(W_f [E_att; h_t] + b_f), h_t broadcast to every field
        E_tau = torch.tanh(
            F.linear(E_att, w_f[:, :d], self.tau_fuse.bias) + F.linear(h_t, w_f[:, d:]).unsqueeze(1)
        )
        # bit-level gate W_b = sigmoid(W_g [E; E_TAU] + b_g) in (0, 1)^{F x d}
        W_b = torch.sigmoid(F.linear(E, w_g[:, :d], self.gate.bias) + F.linear(E_tau, w_g[:, d:]))
        E_r = E_tau + W_b * (E - E_tau)  # = W_b * E + (1 - W_b) * E_TAU
        tokens = torch.cat([E_r, e_t.unsqueeze(1)], dim=1)  # append the treatment embedding
        return {"E": E, "e_t": e_t, "E_att": E_att, "E_tau": E_tau, "W_b": W_b, "E_r": E_r, "tokens": tokens}

    def task_scaling(self, tokens: torch.Tensor) -> list[torch.Tensor] | None:
        """TAENet: per task, attention of its embedding over the tokens -> 2*sigmoid(Linear) per layer
        (T, B, h_l); None when `task_prior` is off."""
        if not self.task_prior:
            return None
        z = self.task_attention(self.task_embedding, tokens)  # (B, T, d)
        return [2.0 * torch.sigmoid(lin(z)).transpose(0, 1) for lin in self.task_scales]

    def forward(self, cat: torch.Tensor, num: torch.Tensor, arm: torch.Tensor) -> torch.Tensor:
        """Logits (T, B) under arm ``arm[i]`` for row i: row 0 = click (CTR), row 1 = CVR given click."""
        tokens = self.treatment_enhance(self.embedding(cat, num), arm)["tokens"]
        return self.towers(tokens.flatten(1), arm, self.task_scaling(tokens))

    def forward_all_arms(self, cat: torch.Tensor, num: torch.Tensor) -> torch.Tensor:
        """Logits (T, B, A): every row under every arm a = 0..K (counterfactual scoring). The same
        numbers as `forward` with ``arm`` = a for each a; the field embeddings and the field
        self-attention, which do not depend on the arm, are computed once."""
        E = self.embedding(cat, num)
        E_att = self.field_attention_context(E)
        out = []
        for a in range(self.n_arms):
            arm = torch.full((E.shape[0],), a, dtype=torch.long, device=E.device)
            tokens = self.treatment_enhance(E, arm, E_att)["tokens"]
            out.append(self.towers(tokens.flatten(1), arm, self.task_scaling(tokens)))
        return torch.stack(out, dim=-1)


def entire_space(logits: torch.Tensor) -> torch.Tensor:
    """(T, B) logits -> (T, B) exposure-space probabilities: p_ctr and p_ctcvr = p_ctr * p_cvr."""
    p = torch.sigmoid(logits)
    if logits.shape[0] == 1:
        return p
    return torch.stack([p[0], p[0] * p[1]])


def chain_loss(
    logits: torch.Tensor, click: torch.Tensor, conversion: torch.Tensor | None
) -> tuple[torch.Tensor, ...]:
    """(BCE(p_ctr, click), BCE(p_ctcvr, conversion) or None), means over rows; log p_ctcvr is
    logsigmoid(ctr) + logsigmoid(cvr), computed in log space for stability."""
    click_loss = F.binary_cross_entropy_with_logits(logits[0], click)
    if conversion is None or logits.shape[0] == 1:
        return click_loss, None
    log_p = F.logsigmoid(logits[0]) + F.logsigmoid(logits[1])
    log_not_p = torch.log1p(-torch.exp(log_p).clamp(max=1.0 - 1e-7))
    conv_loss = -(conversion * log_p + (1.0 - conversion) * log_not_p).mean()
    return click_loss, conv_loss
