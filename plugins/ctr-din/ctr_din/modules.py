"""DIN's torch modules: Dice, the local activation unit (target attention) and the network.

Deep Interest Network, Zhou et al., KDD'18 (arXiv 1706.06978); layer conventions follow FuxiCTR
(`fuxictr.pytorch.layers.attentions.DIN_Attention`, `fuxictr.pytorch.layers.activations.Dice`,
`model_zoo/DIN`); the facts used are collected in the project's MODELS.md section 7.

* **Dice** (paper eq. 6; FuxiCTR): ``p = sigmoid(BN(x))`` with a non-affine BatchNorm (eps 1e-9,
  momentum 0.01), output ``p * x + alpha * (1 - p) * x`` with alpha learned per channel, initialised
  to 0. It is a PReLU whose switch point follows the data's mean and variance.
* **Local activation unit** (paper fig. 2): for the target item q and every behaviour k_i the MLP
  reads ``[q, k_i, q - k_i, q * k_i]`` and outputs a scalar w_i; padded slots get w = 0; the pooled
  interest is ``sum_i w_i k_i``. No softmax by default: the paper keeps the weights unnormalised to
  preserve the intensity of the user's interest (``use_softmax=True`` gives the masked softmax of
  FuxiCTR's ``din_use_softmax`` and the original TF code).

Two exact rewrites make it fast (both give the same function as the textbook form, up to float
rounding; `ActivationUnit.reference` computes the textbook form and the tests compare them):

1. *Algebraic split of the first layer.* With W = [Wq | Wk | Wd | Wp] acting on
   [q, k, q - k, q * k]: ``W [q, k, q-k, q*k] = (Wq + Wd) q + (Wk - Wd) k + Wp (q * k)``. The target
   term is computed once per row (not once per slot), and the 4D-wide input is never built.
2. *Real slots only.* Training and general scoring gather the (row, slot) pairs of real, non-padded
   behaviours, run the MLP on those P pairs only and scatter-add ``w_i k_i`` back per row, so work
   is proportional to the real history length, not B x max_seq_len. When every row of a scoring batch
   has the same history (one user's candidates) the history terms are computed once and broadcast:
   ``Wp (q * k_i) = (Wp * k_i) q`` turns the pair term into one (B x D) @ (D x L*H) matrix product.

Two data-movement choices keep the training step lean (no change to the function): the target and
the real behaviours are looked up together, one lookup per shared table (one sparse gradient per
table and step, nothing to concatenate before the optimiser), and the real slots are found with one
flat `nonzero` + `index_select` instead of two-tensor advanced indexing (`real_slots`).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from ctr_dagster.training.spec import FeatureSpec
from torch import nn

#: Activations per chunk on the shared-history scoring path (512 KB of float32: stays in L2 cache).
SHARED_CHUNK_ELEMENTS = 1 << 17

#: Embedding tables up to this many rows are `SmallTable`s (read with `index_select`).
SMALL_TABLE_ROWS = 256

#: FuxiCTR's Dice BatchNorm settings.
DICE_EPS = 1e-9
DICE_MOMENTUM = 0.01


class Dice(nn.Module):
    """Data-adaptive activation (DIN paper eq. 6), as FuxiCTR: non-affine BN, eps 1e-9, momentum 0.01."""

    def __init__(self, num_features: int, eps: float = DICE_EPS, momentum: float = DICE_MOMENTUM):
        super().__init__()
        self.bn = nn.BatchNorm1d(num_features, affine=False, eps=eps, momentum=momentum)
        self.alpha = nn.Parameter(torch.zeros(num_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.is_grad_enabled() and not self.training:
            return self._infer(x)
        shape = x.shape
        flat = x.reshape(-1, shape[-1])
        p = torch.sigmoid(self.bn(flat))
        # p*x + alpha*(1-p)*x == x * (alpha + (1 - alpha) * p): one fewer pass over the activations
        return (flat * torch.addcmul(self.alpha, 1.0 - self.alpha, p)).reshape(shape)

    def _infer(self, x: torch.Tensor) -> torch.Tensor:
        """Scoring: the same function with the running statistics, in 4 passes and one allocation."""
        scale = torch.rsqrt(self.bn.running_var + self.bn.eps)
        gate = torch.addcmul(-self.bn.running_mean * scale, x, scale)  # BN(x) with running statistics
        gate.sigmoid_().mul_(1.0 - self.alpha).add_(self.alpha)
        return gate.mul_(x)


def activation(name: str, units: int) -> nn.Module:
    name = name.lower()
    if name == "dice":
        return Dice(units)
    if name == "relu":
        return nn.ReLU()
    if name == "prelu":
        return nn.PReLU(units, init=0.25)
    if name == "sigmoid":
        return nn.Sigmoid()
    raise ValueError(f"unknown activation {name!r}; choose dice, relu, prelu or sigmoid")


def _init_linear(layer: nn.Linear) -> nn.Linear:
    nn.init.xavier_normal_(layer.weight)  # FuxiCTR's default for Linear layers
    if layer.bias is not None:
        nn.init.zeros_(layer.bias)
    return layer


class MLP(nn.Module):
    """Linear -> activation (-> dropout) per hidden layer, then an optional Linear to `out` units."""

    def __init__(self, in_dim: int, units: list[int], act: str, dropout: float = 0.0, out: int | None = None):
        super().__init__()
        layers: list[nn.Module] = []
        for width in units:
            layers += [_init_linear(nn.Linear(in_dim, width)), activation(act, width)]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            in_dim = width
        if out is not None:
            layers.append(_init_linear(nn.Linear(in_dim, out)))
            in_dim = out
        self.net = nn.Sequential(*layers)
        self.out_dim = in_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class ActivationUnit(nn.Module):
    """DIN's local activation unit: w_i = MLP([q, k_i, q - k_i, q * k_i]); pooled = sum_i w_i k_i.

    `first` is the textbook first layer (Linear(4D, H1)); `forward_*` use its algebraic split.
    """

    def __init__(self, dim: int, units: list[int], act: str = "dice", use_softmax: bool = False):
        super().__init__()
        if not units:
            raise ValueError("the attention MLP needs at least one hidden layer")
        self.dim, self.use_softmax = dim, use_softmax
        self.first = _init_linear(nn.Linear(4 * dim, units[0]))
        self.first_act = activation(act, units[0])
        self.rest = MLP(units[0], list(units[1:]), act, out=1)

    def split_weights(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(A, Bk, C) with W [q, k, q-k, q*k] = A q + Bk k + C (q*k): A = Wq + Wd, Bk = Wk - Wd, C = Wp."""
        wq, wk, wd, wp = self.first.weight.split(self.dim, dim=1)
        return wq + wd, wk - wd, wp

    def _head(self, h: torch.Tensor) -> torch.Tensor:
        return self.rest(self.first_act(h)).squeeze(-1)

    def reference(
        self, q: torch.Tensor, keys: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The textbook form over every (padded) slot: (pooled (B, D), weights (B, L)). For tests."""
        qe = q.unsqueeze(1).expand_as(keys)
        x = torch.cat([qe, keys, qe - keys, qe * keys], dim=-1)
        w = self._head(self.first(x))
        w = self._normalise_dense(w, mask)
        return torch.einsum("bl,bld->bd", w, keys), w

    def _normalise_dense(self, w: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self.use_softmax:
            w = torch.softmax(w.masked_fill(~mask, float("-inf")), dim=1)
            return torch.nan_to_num(w, nan=0.0)  # rows without history
        return w * mask

    def forward_packed(
        self, q: torch.Tensor, keys: torch.Tensor, rows: torch.Tensor, slots: torch.Tensor, length: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Real slots only: `keys` (P, D) are the behaviours at (rows, slots); returns (pooled, w (P,))."""
        a, bk, c = self.split_weights()
        target = F.linear(q, a, self.first.bias)  # once per row: (B, H)
        # two accumulating products instead of one over cat([k, q*k]): no (P, 2D) copy either way
        h = torch.addmm(target.index_select(0, rows), keys, bk.t())
        h = torch.addmm(h, q.index_select(0, rows) * keys, c.t())
        w = self._head(h)  # (P,)
        batch = q.shape[0]
        if self.use_softmax:
            dense = torch.full((batch, length), float("-inf"), dtype=w.dtype, device=w.device)
            dense[rows, slots] = w
            dense = torch.nan_to_num(torch.softmax(dense, dim=1), nan=0.0)
            w = dense[rows, slots]
        pooled = torch.zeros(batch, keys.shape[1], dtype=keys.dtype, device=keys.device)
        pooled.index_add_(0, rows, keys * w.unsqueeze(1).to(keys.dtype))
        return pooled, w

    def forward_shared(self, q: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        """Every row has the same real behaviours `keys` (L0, D): returns pooled (B, D).

        Candidate scoring for one user: the history terms are computed once, and the pair term
        C (q * k_i) = (C * k_i) q becomes a single (B, D) @ (D, L0 * H) product.
        """
        batch, length = q.shape[0], keys.shape[0]
        if length == 0:
            return q.new_zeros(batch, self.dim)
        a, bk, c = self.split_weights()
        hidden = a.shape[0]
        target = F.linear(q, a, self.first.bias)  # (B, H)
        history = (keys @ bk.t()).reshape(-1)  # (L0*H,): once per user
        scaled = (keys.unsqueeze(1) * c.unsqueeze(0)).reshape(length * hidden, self.dim).t()  # (D, L0*H)
        # Row chunks keep the (rows, L0, H) activations cache-sized through Dice's elementwise passes.
        step = max(1, SHARED_CHUNK_ELEMENTS // (length * hidden))
        parts = []
        for start in range(0, batch, step):
            rows = slice(start, start + step)
            h = torch.addmm(history, q[rows], scaled).view(-1, length, hidden)
            h += target[rows].unsqueeze(1)
            parts.append(self._head(h))  # (rows, L0)
        w = parts[0] if len(parts) == 1 else torch.cat(parts)
        if self.use_softmax:
            w = torch.softmax(w, dim=1)
        return w @ keys


class DinNet(nn.Module):
    """DIN: embeddings -> target attention over the behaviour sequence -> MLP tower (Dice) -> logit.

    Item token = [item embedding, category embedding] (+ a bias-free projection of the frozen item
    vector when the spec has item embeddings); the target and the history share these tables. The
    tower reads every other field's embedding, the target token, the pooled interest (which replaces
    the raw sequence field) and the dense features.
    """

    def __init__(self, spec: FeatureSpec, config: Any, item_vectors: torch.Tensor | None = None):
        super().__init__()
        d = int(config.embedding_dim)
        self.spec = spec
        self.context_fields = [
            name
            for name in spec.categorical
            if name not in ("item_idx", "category_idx") and (config.use_user_idx or name != "user_idx")
        ]
        self.embeddings = nn.ModuleDict()
        for name, rows in spec.categorical.items():
            if name == "user_idx" and not config.use_user_idx:
                continue
            self.embeddings[name] = id_embedding(
                rows, d, 0 if name.endswith("_idx") else None, float(config.embedding_init_std)
            )
        token = 2 * d + attach_item_vectors(self, spec, item_vectors, d)
        self.token_dim = token
        self.pooling = str(getattr(config, "pooling", "attention"))
        # "sum": the ablation without target attention (every behaviour weighted 1), same tables and tower
        self.attention: ActivationUnit | None = None
        if self.pooling == "attention":
            self.attention = ActivationUnit(
                token, list(config.attention_units), config.attention_activation, config.use_softmax
            )
        elif self.pooling != "sum":
            raise ValueError(f"pooling must be 'attention' or 'sum', got {self.pooling!r}")
        tower_in = d * len(self.context_fields) + 2 * token + len(spec.dense)
        self.tower = MLP(tower_in, list(config.tower_units), config.tower_activation, config.dropout, out=1)

    def embedding_inputs(self) -> list[tuple[nn.Embedding, tuple[str, ...]]]:
        """Each embedding table with the batch columns indexing it, for the trainer's mini-batch-aware
        L2 (DIN section 4.3): the item and category tables serve the target and the behaviours."""
        return [
            (table, (name, f"hist_{name}") if f"hist_{name}" in self.spec.sequence else (name,))
            for name, table in self.embeddings.items()
        ]

    def item_token(self, items: torch.Tensor, categories: torch.Tensor) -> torch.Tensor:
        parts = [self.embeddings["item_idx"](items), self.embeddings["category_idx"](categories)]
        if self.item_projection is not None:
            parts.append(self.item_projection(self.item_vectors[items]))
        return torch.cat(parts, dim=-1)

    def tokens(
        self, items: torch.Tensor, categories: torch.Tensor, hist_items: torch.Tensor, hist_cats: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(target tokens (B, D), behaviour tokens (P, D)) with ONE lookup per shared table.

        The target and the history read the same tables: looking both up together gives each table
        one gradient per step (a single sparse tensor to coalesce) instead of two to concatenate.
        """
        batch = items.shape[0]
        token = self.item_token(torch.cat([items, hist_items]), torch.cat([categories, hist_cats]))
        return token[:batch], token[batch:]

    def packed_tokens(
        self, batch: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(rows, slots, target tokens (B, D), real behaviour tokens (P, D)) of the packed path."""
        items, cats = batch["hist_item_idx"], batch["hist_category_idx"]
        rows, slots, flat = real_slots(batch["hist_mask"])
        q, keys = self.tokens(
            batch["item_idx"],
            batch["category_idx"],
            items.reshape(-1).index_select(0, flat),
            cats.reshape(-1).index_select(0, flat),
        )
        return rows, slots, q, keys

    def _one_history(self, items: torch.Tensor, cats: torch.Tensor) -> bool:
        """Scoring rows that all share one history (one user's candidates)."""
        return (
            not self.training
            and items.shape[0] > 1
            and bool((items == items[:1]).all())
            and bool((cats == cats[:1]).all())
        )

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Logits (B,). Scoring one history against many candidates takes the shared-history path;
        training and general scoring the packed path over real behaviours."""
        items, cats, mask = batch["hist_item_idx"], batch["hist_category_idx"], batch["hist_mask"]
        if self._one_history(items, cats):
            q = self.item_token(batch["item_idx"], batch["category_idx"])
            real = mask[0]
            keys = self.item_token(items[0, real], cats[0, real])
            if self.attention is None:
                pooled = keys.sum(0).expand(q.shape[0], -1)
            else:
                pooled = self.attention.forward_shared(q, keys)
        else:  # target and behaviours in one lookup per table
            rows, slots, q, keys = self.packed_tokens(batch)
            if self.attention is None:
                pooled = q.new_zeros(q.shape).index_add_(0, rows, keys)
            else:
                pooled = self.attention.forward_packed(q, keys, rows, slots, mask.shape[1])[0]
        parts = [self.embeddings[name](batch[name]) for name in self.context_fields]
        parts += [q, pooled, batch["dense"]]
        return self.tower(torch.cat(parts, dim=1)).squeeze(1)


def attach_item_vectors(
    module: nn.Module, spec: FeatureSpec, item_vectors: torch.Tensor | None, width: int
) -> int:
    """Give `module` the frozen item vectors (a saved buffer) and a bias-free projection to `width`
    (`module.item_projection`, None without item embeddings); returns the width added to the token."""
    module.item_projection = None
    if spec.item_embedding_dim is None:
        return 0
    if item_vectors is None:
        raise ValueError("the spec has item embeddings but no item vectors were given")
    module.register_buffer("item_vectors", item_vectors.float(), persistent=True)
    module.item_projection = nn.Linear(spec.item_embedding_dim, width, bias=False)
    nn.init.xavier_normal_(module.item_projection.weight)
    return width


def real_slots(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(rows, slots, flat positions) of the real behaviours of a (B, L) mask, row-major.

    Flat positions index the row-major flattened (B * L) sequence tensors with one index_select
    (cheaper than two-tensor advanced indexing).
    """
    length = mask.shape[1]
    flat = mask.reshape(-1).nonzero().squeeze(1)
    return torch.div(flat, length, rounding_mode="floor"), flat.remainder(length), flat


def id_table(rows: int, width: int, padding_idx: int | None) -> nn.Embedding:
    """A `SmallTable` for a few rows (<= SMALL_TABLE_ROWS), else an `nn.Embedding`: same values and
    gradients, the cheaper backward where it pays (DIN, TIN, SUAN build their tables through it)."""
    kind = SmallTable if rows <= SMALL_TABLE_ROWS else nn.Embedding
    return kind(rows, width, padding_idx=padding_idx)


def id_embedding(rows: int, width: int, padding_idx: int | None, std: float) -> nn.Embedding:
    """`id_table` initialised N(0, std) with its padding row (if any) at zero: a field's id embedding."""
    table = id_table(rows, width, padding_idx)
    nn.init.normal_(table.weight, std=std)
    if table.padding_idx is not None:
        with torch.no_grad():
            table.weight[table.padding_idx].zero_()
    return table


class SmallTable(nn.Embedding):
    """An embedding table of a few rows (categories, devices, regions) read with `index_select`.

    Same values, gradients and state dict as `nn.Embedding`: the backward of `index_select` is an
    `index_add_` into the few rows, about 3x cheaper on CPU than `nn.Embedding`'s sort-based dense
    backward (0.10 vs 0.31 ms for 7,300 ids into 14 rows); a weight hook gives the padding row a
    zero gradient, as `padding_idx` does. Sparse or max-norm use falls back to `nn.Embedding`.
    """

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        if self.padding_idx is not None:
            self.weight.register_hook(_padding_row_without_gradient(self.padding_idx))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        if self.sparse or self.max_norm is not None:
            return super().forward(ids)
        return self.weight.index_select(0, ids.reshape(-1)).view(*ids.shape, self.embedding_dim)


def _padding_row_without_gradient(row: int):
    """A weight hook giving the padding row a zero gradient (what `padding_idx` does in `nn.Embedding`)."""

    def hook(grad: torch.Tensor) -> torch.Tensor:
        return grad if grad.is_sparse else grad.index_fill(0, torch.tensor([row], device=grad.device), 0.0)

    return hook
