"""AW-MoE's torch modules: the attention-weighted gate, K expert towers and the contrastive branch.

AW-MoE, Zhang et al., "Attention Weighted Mixture of Experts with Contrastive Learning for
Personalized Ranking in E-commerce", ICDE'23, arXiv 2306.05011 (JD). **No official or third-party
code exists** and only the abstract was available when this was written (MODELS.md section 4): the
mechanisms are the abstract's, their exact form is a design, and every choice is listed in
`ctr_awmoe.model` and the README.

Reused from `ctr_din.modules` (imported, not copied): DIN's embedding layout, item token and
one-lookup-per-table token gathering (`DinNet`, subclassed), the local activation unit
(`ActivationUnit`, on [e_j, q, e_j - q, e_j * q] with its algebraic first-layer split), Dice, the MLP
and `real_slots`. Every per-behaviour computation runs on the real (non-padded) behaviours only.

* **Gate network** (`AttentionGate`): for the target token q and each real behaviour e_j, an
  activation unit scores the behaviour, r_j = MLP_a([e_j, q, e_j - q, e_j * q]); by default
  (``gate_attention="shared"``) these are the raw scores of the activation unit that pools the
  experts' interest, with ``"own"`` the gate has a unit of its own. The gate weights are
  a_j = masked softmax_j(r_j) (``gate_softmax=True``, default) or a_j = r_j (DIN's unnormalised
  weights). A gate unit maps each behaviour to a K-vector, g_j = MLP_g(e_j). Gate logits
  s = b + sum_j a_j g_j and G = softmax(s): with normalised weights s is b plus an
  attention-weighted MEAN of the per-behaviour gate vectors. b is a learned K-vector: the gate of a
  row without history is softmax(b) (the learned default gate), and b is every row's gate bias.
* **Experts** (`ExpertTowers`): K towers f_k, each an MLP over [context field embeddings, target
  token, DIN-pooled interest, dense features] (DIN's tower input) -> one logit; the K towers are
  evaluated together (one matrix product per layer, batched per expert after the first), which is
  exactly K independent MLPs (tested). Output logit y = sum_k G_k f_k (mixed in logit space).
* **Contrastive branch** (training only, ``gate="attention"``, ``cl_weight > 0``): two views of the
  behaviour sequence, each real behaviour dropped independently with probability rho
  (``mask_rate``) in each view; the gates of the views are G' and G''; InfoNCE on (G', G'') with
  cosine similarity / tau and the other rows of the batch as negatives (symmetric: both directions
  averaged), over the rows with >= ``cl_min_behaviours`` behaviours whose two views each keep one.
  Because r_j and g_j depend only on (e_j, q), the gate logits of a masked view are
  b + sum_j a'_j g_j with the SAME r_j and g_j (a'_j: the weights renormalised over the kept
  behaviours, or a_j m_j when unnormalised): the two views cost one masked sum, and each equals
  what a forward pass over the masked sequence computes (tested; up to Dice's batch statistics in
  training, which are the full sequences'). The module returns ``{"logit", "aux_loss"}`` with
  aux_loss = cl_weight * InfoNCE, which the trainer adds to the BCE. No masking at scoring time.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from ctr_dagster.training.spec import FeatureSpec
from ctr_din.modules import MLP, ActivationUnit, DinNet, activation
from torch import nn

GATES = ("attention", "uniform")


class ExpertTowers(nn.Module):
    """K MLPs of the same widths over the same input, evaluated together: (B, in) -> (B, K) logits.

    Layer 1 is one Linear(in, K * h1) (each expert's block initialised as its own Linear); deeper
    layers are per-expert weights (K, h_in, h_out) applied with one batched product. The
    activation acts on the (B, K * h) concatenation channel by channel (Dice's BatchNorm is per
    channel), so the result is exactly K independent MLPs (the tests rebuild each one).
    """

    def __init__(self, in_dim: int, units: list[int], experts: int, act: str, dropout: float = 0.0):
        super().__init__()
        self.experts, self.units = experts, list(units)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        widths = [in_dim, *self.units]
        self.first: nn.Linear | None = None
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        self.acts = nn.ModuleList()
        if self.units:
            self.first = nn.Linear(in_dim, experts * self.units[0])
            with torch.no_grad():
                for k in range(experts):  # each expert's block as a fresh Linear(in, h1): xavier
                    nn.init.xavier_normal_(self.first.weight[k * self.units[0] : (k + 1) * self.units[0]])
                nn.init.zeros_(self.first.bias)
            self.acts.append(activation(act, experts * self.units[0]))
        for h_in, h_out in zip(widths[1:-1], widths[2:], strict=True):
            self.weights.append(nn.Parameter(_xavier(experts, h_in, h_out)))
            self.biases.append(nn.Parameter(torch.zeros(experts, h_out)))
            self.acts.append(activation(act, experts * h_out))
        last = widths[-1]
        self.out_weight = nn.Parameter(_xavier(experts, last, 1).squeeze(2))  # (K, last)
        self.out_bias = nn.Parameter(torch.zeros(experts))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, k = x.shape[0], self.experts
        if self.first is None:  # linear experts
            return torch.einsum("bi,ki->bk", x, self.out_weight) + self.out_bias
        h = self.dropout(self.acts[0](self.first(x)))  # (B, K * h1)
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            h = torch.baddbmm(b.unsqueeze(1), h.view(batch, k, -1).transpose(0, 1), w)  # (K, B, h_out)
            h = self.dropout(self.acts[i + 1](h.transpose(0, 1).reshape(batch, -1)))
        return torch.einsum("bki,ki->bk", h.view(batch, k, -1), self.out_weight) + self.out_bias


def _xavier(experts: int, fan_in: int, fan_out: int) -> torch.Tensor:
    """K weight matrices (K, fan_in, fan_out), each xavier-normal as its own Linear would be."""
    std = (2.0 / (fan_in + fan_out)) ** 0.5
    return torch.randn(experts, fan_in, fan_out) * std


class AttentionGate(nn.Module):
    """G = softmax(b + sum_j a_j g_j): activation unit a_j, gate unit g_j = MLP_g(e_j) in R^K.

    `normalise`: a_j is the masked softmax of the activation unit's scores over the row's real
    behaviours (the gate logits are then b + a weighted mean of the g_j), else the raw scores.
    `attention`: the gate's own activation unit, or None when the caller hands it the scores of
    another (``gate_attention="shared"``: the experts' unit).
    """

    def __init__(
        self,
        token_dim: int,
        experts: int,
        attention_units: list[int] | None,
        attention_act: str,
        normalise: bool,
        gate_units: list[int],
        gate_act: str,
    ):
        super().__init__()
        self.experts, self.normalise = experts, normalise
        self.attention: ActivationUnit | None = None
        if attention_units is not None:
            self.attention = ActivationUnit(token_dim, attention_units, attention_act, use_softmax=False)
        self.unit = MLP(token_dim, list(gate_units), gate_act, out=experts)
        self.default = nn.Parameter(torch.zeros(experts))  # b: the gate logits of a row without history

    def parts(
        self,
        q: torch.Tensor,
        keys: torch.Tensor,
        rows: torch.Tensor,
        slots: torch.Tensor,
        length: int,
        scores: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(a (P,), g (P, K)) for the real behaviours `keys` at (rows, slots); `scores` (P,) are the
        raw activation-unit scores when the unit is shared."""
        if scores is None:
            if self.attention is None:
                raise ValueError("a gate without its own activation unit needs the shared scores")
            scores = self.attention.forward_packed(q, keys, rows, slots, length)[1]
        a = packed_softmax(scores, rows, q.shape[0]) if self.normalise else scores
        return a, self.unit(keys)

    def logits(self, a: torch.Tensor, g: torch.Tensor, rows: torch.Tensor, batch: int) -> torch.Tensor:
        """Gate logits (B, K) = b + sum_j a_j g_j over the real behaviours."""
        contribution = a.unsqueeze(1).to(g.dtype) * g
        start = self.default.to(g.dtype).unsqueeze(0).expand(batch, -1)
        return start.index_add(0, rows, contribution)

    def view_logits(
        self, a: torch.Tensor, g: torch.Tensor, rows: torch.Tensor, batch: int, keep: torch.Tensor
    ) -> torch.Tensor:
        """Gate logits (B, V, K) of V masked views at once: view v sums over the behaviours with
        ``keep[:, v]`` True; normalised weights are renormalised over the kept ones (= the masked
        softmax of the kept scores, what a forward pass over the masked sequence computes)."""
        w = a.unsqueeze(1) * keep.to(a.dtype)  # (P, V)
        if self.normalise:
            total = w.new_zeros(batch, w.shape[1]).index_add_(0, rows, w)
            w = w / total.index_select(0, rows).clamp_min(1e-12)
        contribution = w.unsqueeze(2).to(g.dtype) * g.unsqueeze(1)  # (P, V, K)
        start = self.default.to(g.dtype).expand(batch, w.shape[1], -1)
        return start.index_add(0, rows, contribution)


def packed_softmax(scores: torch.Tensor, rows: torch.Tensor, batch: int) -> torch.Tensor:
    """Softmax of packed scores (P,) within each row (`rows` (P,) gives each score's row). No early
    return for an empty batch of behaviours: the ops below handle P = 0, and a data-dependent branch
    would stop `torch.export` (the serving bundle)."""
    top = scores.new_full((batch,), float("-inf"))
    top = top.scatter_reduce(0, rows, scores.detach(), reduce="amax", include_self=False)
    e = (scores - top.index_select(0, rows)).exp()
    total = e.new_zeros(batch).index_add_(0, rows, e)
    return e / total.index_select(0, rows)


#: Smallest InfoNCE temperature: cosine / tau then lies in [-20, 20] and exp(cos / tau - 1 / tau) in
#: [exp(-40), 1], safe in float32 without a per-row max.
MIN_TEMPERATURE = 0.05


def info_nce(u: torch.Tensor, v: torch.Tensor, temperature: float) -> torch.Tensor:
    """Symmetric InfoNCE: row i of `u` and row i of `v` are positives, the other rows negatives;
    similarity = cosine / temperature; the mean of the u->v and v->u cross-entropies.

    The same value as ``(cross_entropy(S, I) + cross_entropy(S.T, I)) / 2`` (tested), computed with
    ONE exp of the (n, n) matrix shifted by its known bound 1 / temperature (cosines are <= 1) and
    its row and column sums -- about 4x faster on CPU than the two cross-entropies.
    """
    if temperature < MIN_TEMPERATURE:
        raise ValueError(f"temperature must be >= {MIN_TEMPERATURE}, got {temperature}")
    u = F.normalize(u.float(), dim=1)
    v = F.normalize(v.float(), dim=1)
    scale = 1.0 / temperature
    e = torch.exp((u @ v.t() - 1.0) * scale)  # exp(S - 1/tau), S = cos / tau
    positives = ((u * v).sum(1) - 1.0) * scale
    return 0.5 * (e.sum(1).log() + e.sum(0).log()).mean() - positives.mean()


class AwMoeNet(DinNet):
    """AW-MoE: DIN's embeddings and target attention feed K expert towers mixed by an
    attention-weighted, behaviour-conditioned gate; a contrastive loss on the gate in training.

    `forward` returns logits (B,) when scoring and ``{"logit", "aux_loss"}`` in training when the
    contrastive branch is on (the trainer adds aux_loss = cl_weight * InfoNCE to the BCE).
    """

    def __init__(self, spec: FeatureSpec, config: Any, item_vectors: torch.Tensor | None = None):
        super().__init__(spec, config, item_vectors)
        k = int(config.num_experts)
        self.experts = k
        self.gate_kind = str(config.gate)
        if self.gate_kind not in GATES:
            raise ValueError(f"gate must be one of {GATES}, got {self.gate_kind!r}")
        tower_in = self.tower.net[0].in_features  # DIN's tower input: fields, target, pooled, dense
        # DIN's single tower is replaced by the K expert towers over the same input
        units, act = list(config.tower_units), config.tower_activation
        self.tower = ExpertTowers(tower_in, units, k, act, config.dropout)
        self.gate: AttentionGate | None = None
        self.shared_scores = False
        if self.gate_kind == "attention":
            self.shared_scores = str(config.gate_attention) == "shared"
            if self.shared_scores and self.attention is None:
                raise ValueError("gate_attention='shared' needs the experts' activation unit")
            self.gate = AttentionGate(
                self.token_dim,
                k,
                None if self.shared_scores else list(config.attention_units),
                config.attention_activation,
                config.gate_softmax,
                list(config.gate_units),
                config.gate_activation,
            )
        self.mask_rate = float(config.mask_rate)
        self.cl_temperature = float(config.cl_temperature)
        self.cl_weight = float(config.cl_weight) if self.gate is not None else 0.0
        self.cl_min_behaviours = int(config.cl_min_behaviours)
        # running sum of the contrastive loss (unweighted InfoNCE) since the last `take_cl_mean`
        self._cl_sum: torch.Tensor | None = None
        self._cl_steps = 0

    def _encode(self, batch: dict[str, torch.Tensor]) -> dict[str, Any]:
        rows, slots, q, keys = self.packed_tokens(batch)
        length = batch["hist_mask"].shape[1]
        scores = None
        if self.attention is None:
            pooled = q.new_zeros(q.shape).index_add_(0, rows, keys)
        else:
            pooled, scores = self.attention.forward_packed(q, keys, rows, slots, length)
        parts = [self.embeddings[name](batch[name]) for name in self.context_fields]
        experts = self.tower(torch.cat([*parts, q, pooled, batch["dense"]], dim=1))  # (B, K)
        out: dict[str, Any] = {"experts": experts, "rows": rows}
        if self.gate is None:
            out["gate"] = torch.full_like(experts, 1.0 / self.experts)
        else:
            a, g = self.gate.parts(q, keys, rows, slots, length, scores if self.shared_scores else None)
            out["gate"] = torch.softmax(self.gate.logits(a, g, rows, q.shape[0]).float(), dim=1)
            out["a"], out["g"] = a, g
        return out

    def gate_weights(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The gate G (B, K) of each row (no masking)."""
        return self._encode(batch)["gate"]

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor | dict[str, torch.Tensor]:
        enc = self._encode(batch)
        logit = (enc["gate"].to(enc["experts"].dtype) * enc["experts"]).sum(1)
        if not (self.training and self.cl_weight > 0):
            return logit
        loss = self.contrastive_loss(enc, batch["hist_len"])
        return {"logit": logit, "aux_loss": self.cl_weight * loss}

    def contrastive_loss(self, enc: dict[str, Any], hist_len: torch.Tensor) -> torch.Tensor:
        """InfoNCE between the gates of two randomly masked views (each real behaviour dropped with
        probability `mask_rate`, independently per view), over the rows with >= `cl_min_behaviours`
        behaviours whose two views both keep one; 0 with fewer than 2 such rows. Recorded for
        `take_cl_mean`."""
        a, g, rows = enc["a"], enc["g"], enc["rows"]
        batch = hist_len.shape[0]
        keep = torch.rand(rows.shape[0], 2, device=rows.device) >= self.mask_rate  # (P, 2 views)
        gates = torch.softmax(self.gate.view_logits(a, g, rows, batch, keep).float(), dim=2)  # (B, 2, K)
        kept = torch.zeros(batch, 2, device=rows.device).index_add_(0, rows, keep.float())
        use = (hist_len >= self.cl_min_behaviours) & (kept > 0).all(1)
        idx = use.nonzero().squeeze(1)
        if idx.numel() < 2:
            return gates.sum() * 0.0  # nothing to contrast; keeps the graph
        views = gates.index_select(0, idx)
        loss = info_nce(views[:, 0], views[:, 1], self.cl_temperature)
        detached = loss.detach()
        self._cl_sum = detached if self._cl_sum is None else self._cl_sum + detached
        self._cl_steps += 1
        return loss

    def take_cl_mean(self) -> float | None:
        """Mean contrastive loss (unweighted InfoNCE) of the training steps since the last call; resets."""
        if self._cl_steps == 0 or self._cl_sum is None:
            return None
        value = float(self._cl_sum) / self._cl_steps
        self._cl_sum, self._cl_steps = None, 0
        return value
