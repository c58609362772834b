"""QIN's torch modules: the item token, ASTA (adaptive sparse target attention) and the QNN.

Quadratic Interest Network (QIN), the 2nd-place solution of the WWW'25 EReL@MIR multimodal CTR
challenge, task 2 (arXiv 2504.17699). Official code: salmon1802/QIN@5d07dd1, ``src/QIN_variety_v9.py``
(on FuxiCTR 2.3.7); the facts used are collected in the project's MODELS.md section 1. Written from
that description, not copied.

* **Item token** [code]: ``concat(id embedding, masked mean of the item's tag embeddings, bias-free
  Linear of the frozen multimodal item vector)``; the target and every behaviour read the same
  tables. The mean divides by the number of real tags (FuxiCTR's ``MaskedAveragePooling``: sum /
  (count + 1e-12), read in a later FuxiCTR than 2.3.7), so an item without tags gets 0. Choice:
  the engine's data has item categories, so a category embedding is appended (``use_category``;
  the paper's MicroLens token has none).
* **ASTA** [code]: ``q = W_q t``, ``K = W_k S``, ``V = W_v S`` (bias-free, attention width 2 x token
  width), ``s = (q K^T) / sqrt(attention width)``, ``s <- s * mask``, ``a = ReLU(s)``: no softmax, no
  renormalisation, no dropout. Output ``W_o (a V) + t`` (the target is added after ``W_o``). A
  behaviour's weight is exactly 0 when it is padding or when its score is negative.
* **QNN** [code]: each layer ``x <- x + Dropout(PReLU(BN(x * sum_r H_r)))`` with
  ``H = Dropout(W x + b)`` reshaped to R row blocks of the input width (``einsum("bd,brd->bd")``);
  one PReLU slope per layer (``nn.PReLU()``), then ``Linear(width, 1)`` -> logit. The input x0 is
  ``[context field embeddings, dense features, t, o]`` (the challenge's likes/views embeddings are
  the engine's user/device/region/age/hour/day embeddings here; choice: the standardized dense
  columns are concatenated raw). ``quadratic=False`` drops the product with x (``x <- x +
  Dropout(PReLU(BN(sum_r H_r)))``: a residual MLP of the same width and parameters), the ablation.
* **Init** [code, FuxiCTR BaseModel]: Linear layers xavier-normal with zero bias; embedding rows
  N(0, std) with the padding row 0 (FuxiCTR: std 1e-4; choice here: ``embedding_init_std``).

Choices not pinned by the source (see also the README):

* the category part of the item token (``use_category``), the engine's context fields standing for
  likes_level / views_level, the user id left out by default (``use_user_idx``);
* the dense columns, standardized and concatenated raw, without the two that grow with time
  (``dense_columns`` in `ctr_qin.model`);
* 20 behaviours (the engine's default window) instead of the paper's 64; the engine's Adam (lazy Adam
  for tables of >= 1,000 rows on CPU) and early stopping instead of FuxiCTR's loop; no whole-table
  embedding L2 (the engine's mini-batch-aware ``mba_l2`` instead, default 0.3; the tag table, indexed
  through the frozen tag matrix, is outside it).

Exact rewrites (same function as the textbook form up to float rounding; ``Asta.reference`` computes
the textbook form over every padded slot and the tests compare them):

1. *Real slots only*: the tokens of the target and of the real (non-padded) behaviours are built with
   one lookup per table; padded slots, whose weight the mask forces to 0, are never computed.
2. *Re-association*: ``(W_q t) . (W_k s) = ((W_q t)^T W_k) s`` and ``sum_i a_i W_v s_i = W_v sum_i
   a_i s_i``: per behaviour one dot product of token width instead of two projections to twice
   that width.
3. *One user's candidates*: when every row of a scoring batch has the same history (the serving
   shape), the behaviours' tokens are built once and the scores are one (B, D) @ (D, L) product.
4. *Row blocks summed first* where no dropout acts on H (scoring, or ``net_dropout=0``):
   ``sum_r (W_r x + b_r) = (sum_r W_r) x + sum_r b_r``, a product R times smaller.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from ctr_dagster.training.spec import FeatureSpec
from ctr_din.modules import SMALL_TABLE_ROWS, SmallTable, real_slots
from torch import nn

#: Columns of the item token; every other `FeatureSpec.categorical` column is a context field.
ITEM_FIELDS = ("item_idx", "category_idx")


def _linear(in_dim: int, out_dim: int, bias: bool = True) -> nn.Linear:
    layer = nn.Linear(in_dim, out_dim, bias=bias)
    nn.init.xavier_normal_(layer.weight)  # FuxiCTR's reset_parameters for Linear layers
    if layer.bias is not None:
        nn.init.zeros_(layer.bias)
    return layer


def _table(rows: int, dim: int, std: float, padding: bool) -> nn.Embedding:
    """An embedding table, N(0, std) rows, the padding row (index 0) zero when `padding`."""
    kind = SmallTable if rows <= SMALL_TABLE_ROWS else nn.Embedding
    table = kind(rows, dim, padding_idx=0 if padding else None)
    nn.init.normal_(table.weight, std=std)
    if padding:
        with torch.no_grad():
            table.weight[0].zero_()
    return table


class ItemTokens(nn.Module):
    """Item token = [id embedding, mean tag embedding, W_mm v, category embedding] (present parts only).

    `item_vectors` (float [item rows, m]) and `item_tags` (int [item rows, T], 0 = pad) are frozen,
    persistent buffers indexed by item_idx, so they travel in the weights file.
    """

    def __init__(
        self,
        spec: FeatureSpec,
        dim: int,
        init_std: float,
        item_vectors: torch.Tensor | None = None,
        item_tags: torch.Tensor | None = None,
        use_category: bool = True,
    ):
        super().__init__()
        rows = spec.categorical["item_idx"]
        self.item = _table(rows, dim, init_std, padding=True)
        parts = 1
        self.tags: nn.Embedding | None = None
        if spec.item_tags is not None:
            if item_tags is None:
                raise ValueError("the spec has item tags but no tag matrix was given")
            width, vocabulary = spec.item_tags
            if tuple(item_tags.shape) != (rows, width):
                raise ValueError(f"item_tags must be [{rows}, {width}], got {tuple(item_tags.shape)}")
            self.register_buffer("item_tags", item_tags.long(), persistent=True)
            self.tags = _table(vocabulary, dim, init_std, padding=True)
            parts += 1
        self.mm_projection: nn.Linear | None = None
        if spec.item_embedding_dim is not None:
            if item_vectors is None:
                raise ValueError("the spec has item embeddings but no item vectors were given")
            self.register_buffer("item_vectors", item_vectors.float(), persistent=True)
            self.mm_projection = _linear(spec.item_embedding_dim, dim, bias=False)
            parts += 1
        self.category: nn.Embedding | None = None
        if use_category:
            self.category = _table(spec.categorical["category_idx"], dim, init_std, padding=True)
            parts += 1
        self.dim = parts * dim

    def mean_tags(self, items: torch.Tensor) -> torch.Tensor:
        """(N, d): the mean of each item's real tag embeddings (tag id 0 = padding; 0 without tags)."""
        assert self.tags is not None
        tags = self.item_tags.index_select(0, items)  # (N, T)
        real = (tags > 0).to(self.tags.weight.dtype)
        summed = torch.einsum("ntd,nt->nd", self.tags(tags), real)
        return summed / real.sum(1, keepdim=True).clamp_min(1.0)

    def forward(self, items: torch.Tensor, categories: torch.Tensor | None = None) -> torch.Tensor:
        """Tokens (N, dim) of the item ids `items` (N,) and their categories (N,)."""
        parts = [self.item(items)]
        if self.tags is not None:
            parts.append(self.mean_tags(items))
        if self.mm_projection is not None:
            parts.append(self.mm_projection(self.item_vectors.index_select(0, items)))
        if self.category is not None:
            if categories is None:
                raise ValueError("the item token uses categories but none were given")
            parts.append(self.category(categories))
        return torch.cat(parts, dim=-1)


class Asta(nn.Module):
    """Adaptive sparse target attention: ReLU((W_q t)(W_k S)^T / sqrt(A) * mask) V, then W_o, + t."""

    def __init__(self, dim: int, attention_dim: int):
        super().__init__()
        self.dim, self.attention_dim = dim, attention_dim
        self.scale = float(attention_dim) ** 0.5
        self.w_q = _linear(dim, attention_dim, bias=False)
        self.w_k = _linear(dim, attention_dim, bias=False)
        self.w_v = _linear(dim, attention_dim, bias=False)
        self.w_o = _linear(attention_dim, dim, bias=False)

    def reference(
        self, target: torch.Tensor, history: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The textbook form over every slot, padding included: (output (B, D), weights (B, L))."""
        q, k, v = self.w_q(target), self.w_k(history), self.w_v(history)
        scores = torch.einsum("ba,bla->bl", q, k) / self.scale
        weights = torch.relu(scores * mask.to(scores.dtype))
        return self.w_o(torch.einsum("bl,bla->ba", weights, v)) + target, weights

    def forward_packed(
        self, target: torch.Tensor, keys: torch.Tensor, rows: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Real behaviours only: `keys` (P, D) belong to the rows `rows` (P,) of `target` (B, D).

        Returns (output (B, D), weights (P,)); padded slots have weight 0 and are never computed.
        """
        query = self.w_q(target) @ self.w_k.weight  # (B, D) = (W_q t)^T W_k
        scores = (query.index_select(0, rows) * keys).sum(-1) / self.scale
        weights = torch.relu(scores)
        pooled = target.new_zeros(target.shape).index_add_(0, rows, keys * weights.unsqueeze(1))
        return self.w_o(self.w_v(pooled)) + target, weights

    def forward_shared(self, target: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        """Every row has the same real behaviours `keys` (L0, D) (one user's candidates): output (B, D).

        The behaviours are looked up once; the scores are one (B, D) @ (D, L0) product.
        """
        query = self.w_q(target) @ self.w_k.weight  # (B, D)
        weights = torch.relu(query @ keys.t() / self.scale)  # (B, L0)
        return self.w_o(self.w_v(weights @ keys)) + target


class QuadraticLayer(nn.Module):
    """x * sum_r H_r with H = Dropout(W x + b) in R row blocks of the input width (Khatri-Rao form).

    `quadratic=False` returns sum_r H_r: the same parameters without the product (the MLP ablation).
    """

    def __init__(self, width: int, num_row: int, dropout: float, quadratic: bool = True):
        super().__init__()
        self.width, self.num_row, self.quadratic = width, num_row, quadratic
        self.linear = _linear(width, width * num_row)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and self.dropout.p > 0:
            h = self.dropout(self.linear(x)).view(-1, self.num_row, self.width).sum(1)
        else:  # no dropout: sum_r (W_r x + b_r) = (sum_r W_r) x + sum_r b_r, one R-times smaller product
            weight = self.linear.weight.view(self.num_row, self.width, self.width).sum(0)
            h = F.linear(x, weight, self.linear.bias.view(self.num_row, self.width).sum(0))
        return x * h if self.quadratic else h


class QuadraticNetwork(nn.Module):
    """QNN: per layer x <- x + Dropout(PReLU(BN(QuadraticLayer(x)))); then Linear(width, 1)."""

    def __init__(
        self,
        width: int,
        num_layers: int,
        num_row: int,
        dropout: float,
        batch_norm: bool = True,
        quadratic: bool = True,
    ):
        super().__init__()
        self.layers = nn.ModuleList(
            QuadraticLayer(width, num_row, dropout, quadratic) for _ in range(num_layers)
        )
        self.norms = nn.ModuleList(
            nn.BatchNorm1d(width) if batch_norm else nn.Identity() for _ in range(num_layers)
        )
        self.activations = nn.ModuleList(nn.PReLU() for _ in range(num_layers))  # one slope, init 0.25
        self.dropout = nn.Dropout(dropout)
        self.fc = _linear(width, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer, norm, act in zip(self.layers, self.norms, self.activations, strict=True):
            x = self.dropout(act(norm(layer(x)))) + x
        return self.fc(x).squeeze(1)


class QinNet(nn.Module):
    """QIN: item tokens -> ASTA over the behaviour sequence -> QNN over [context, dense, t, o] -> logit."""

    def __init__(
        self,
        spec: FeatureSpec,
        config: Any,
        item_vectors: torch.Tensor | None = None,
        item_tags: torch.Tensor | None = None,
    ):
        super().__init__()
        d = int(config.embedding_dim)
        std = float(config.embedding_init_std)
        self.spec = spec
        self.use_category = bool(config.use_category)
        self.tokens = ItemTokens(spec, d, std, item_vectors, item_tags, self.use_category)
        self.context_fields = [
            name
            for name in spec.categorical
            if name not in ITEM_FIELDS and (config.use_user_idx or name != "user_idx")
        ]
        self.context = nn.ModuleDict(
            {
                name: _table(spec.categorical[name], d, std, padding=name.endswith("_idx"))
                for name in self.context_fields
            }
        )
        token = self.tokens.dim
        self.attention = Asta(token, int(config.attention_dim or 2 * token))
        self.width = d * len(self.context_fields) + len(spec.dense) + 2 * token
        self.qnn = QuadraticNetwork(
            self.width,
            int(config.num_layers),
            int(config.num_row),
            float(config.net_dropout),
            bool(config.batch_norm),
            quadratic=config.interaction_layers == "quadratic",
        )

    def embedding_inputs(self) -> list[tuple[nn.Embedding, tuple[str, ...]]]:
        """Tables indexed by batch columns, for the trainer's mini-batch-aware L2 (`mba_l2`): the item
        and category tables serve the target and the behaviours. The tag table is indexed through the
        frozen tag matrix, not a batch column, so the penalty leaves it out."""
        out: list[tuple[nn.Embedding, tuple[str, ...]]] = []
        for name, table in (("item_idx", self.tokens.item), ("category_idx", self.tokens.category)):
            if table is not None:
                out.append(
                    (table, (name, f"hist_{name}") if f"hist_{name}" in self.spec.sequence else (name,))
                )
        out += [(table, (name,)) for name, table in self.context.items()]
        return out

    def target_and_behaviours(
        self, batch: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(target tokens (B, D), real behaviour tokens (P, D), their rows (P,), their slots (P,)),
        with one lookup per shared table."""
        mask = batch["hist_mask"]
        rows, slots, flat = real_slots(mask)
        size = mask.shape[0]
        items = torch.cat([batch["item_idx"], batch["hist_item_idx"].reshape(-1).index_select(0, flat)])
        categories = None
        if self.use_category:
            hist = batch["hist_category_idx"].reshape(-1).index_select(0, flat)
            categories = torch.cat([batch["category_idx"], hist])
        token = self.tokens(items, categories)
        return token[:size], token[size:], rows, slots

    def _one_history(self, batch: dict[str, torch.Tensor]) -> bool:
        """Scoring rows that all share one history (one user's candidates)."""
        items = batch["hist_item_idx"]
        if self.training or items.shape[0] < 2 or not bool((items == items[:1]).all()):
            return False
        if not self.use_category:
            return True
        cats = batch["hist_category_idx"]
        return bool((cats == cats[:1]).all())

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Logits (B,). Scoring one history against many candidates looks the history up once;
        training and general scoring take the packed path over the real behaviours."""
        if self._one_history(batch):
            real = batch["hist_mask"][0]
            target = self.tokens(batch["item_idx"], batch["category_idx"] if self.use_category else None)
            hist_cats = batch["hist_category_idx"][0, real] if self.use_category else None
            keys = self.tokens(batch["hist_item_idx"][0, real], hist_cats)
            interest = self.attention.forward_shared(target, keys)
        else:
            target, keys, rows, _ = self.target_and_behaviours(batch)
            interest = self.attention.forward_packed(target, keys, rows)[0]
        parts = [self.context[name](batch[name]) for name in self.context_fields]
        parts += [batch["dense"], target, interest]
        return self.qnn(torch.cat(parts, dim=1))
