"""TIN's torch modules: the target-aware temporal encoding, the target attention and the network.

Temporal Interest Network, Zhou et al., WWW'24 (arXiv 2308.08487); official TF1 code
zhouxy1003/TIN@e42f07b, `model/tin/tin.py` (a fork of the DIN code base); the facts used are in the
project's MODELS.md section 3. Notation: e_i / e_t the behaviour / target item token ([item
embedding, category embedding]), P the position table, D the token width.

* **Target-aware temporal encoding (TTE)** [code]: a table P indexed by the distance to the
  target, row 0 reserved for the target, shared by target and behaviours:
  ``u_i = e_i + P[pos_i]``, ``v_t = e_t + P[0]`` (`TemporalEncoding`). ``position="rank"``: pos_i =
  hist_rel_pos (1 = most recent), as the released code (no time buckets there).
  ``position="time_bucket"``: pos_i is a log-spaced bucket of hist_age_s (seconds before the
  request; unknown ages < 0 get a row of their own), the target bucket 0 -- whether the paper's
  Alibaba runs bucket real time gaps is [unverified]. ``position="rank_time"`` (choice, an
  extension of the paper, the default): ``u_i = e_i + P[rank_i] + T[bucket_i]`` and ``v_t = e_t +
  P[0] + T[0]``, i.e. one encoding per behaviour that is the sum of a rank row and a time row; it
  had the best validation AUC on every world measured (README, "Choosing the defaults").
* **Target-aware attention (TA)** [code]: ``a_i = softmax_i(u_i . v_t / sqrt(D))`` over the real
  behaviours only (padded slots weight exactly 0). No attention MLP: that is the difference from
  DIN. Expanding the dot product gives the paper's 4-way interaction: e_i.e_t + e_i.P[0] +
  P[pos_i].e_t + P[pos_i].P[0]; the third term (behaviour time x target semantics) is what lets the
  decay over time depend on the target.
* **Target-aware representation (TR)**: ``representation="paper"``: ``u = sum_i a_i (u_i * v_t)``
  [paper, as read in MODELS.md], head input [u, v_t]. Because v_t does not depend on i this equals
  ``(sum_i a_i u_i) * v_t`` exactly, which is how it is computed (`TinNet.representation`; the
  test compares it with the per-behaviour sum). ``representation="code"`` [code]: ``u = Dense(BN(
  sum_i a_i u_i))`` and head input [u, v_t, u * v_t] -- the paper's product after pooling, up to
  the BN and Dense layers.
* **Head** [code]: BN -> Dense 80 sigmoid -> Dense 40 sigmoid -> Dense 1, and ``logit = b_item +
  out`` with a per-item bias initialised to 0.

Design choices not pinned by the sources (README has the measurements behind the defaults):

* choice: rows without any behaviour pool to a zero vector (the official code's all-masked softmax
  is uniform over padding, i.e. it pools padding embeddings).
* choice: the masked slots get the dtype's most negative finite score before the softmax (the
  official code uses -2^32+1 before scaling) and are multiplied by the mask afterwards.
* choice: BN is a real `BatchNorm1d` (training statistics in training, running ones in scoring).
  The official TF1 `tf.layers.batch_normalization` calls pass no `training` flag, so there they
  normalise with the initial moving statistics (mean 0, variance 1): an affine layer in effect.
* choice: the head also reads the other id fields' embeddings and the standardized dense features
  (``use_context``), as the engine's DIN, so the two compete on the same inputs; the official code
  reads only [u, v_t, u * v_t].
* choice: the position rows are initialised N(0, embedding_init_std) like the id embeddings (TF's
  default glorot-uniform in the official code; N(0, 0.01) measured within noise on validation);
  hist_rel_pos is clipped to [1, max_seq_len].
* choice: time buckets: ``time_buckets`` log-spaced buckets with edges from ``time_bucket_min_s``
  to ``time_bucket_max_s`` (ages below / above fall in the first / last bucket).
* choice: embedding init N(0, 0.3), DIN's mini-batch-aware L2 (mba_l2 0.3, DIN's default) on the
  id tables and the item bias, not on the position table; no user-id embedding (as the engine's DIN).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from ctr_dagster.training.spec import FeatureSpec
from ctr_din.modules import MLP, attach_item_vectors, id_embedding, id_table
from torch import nn


def time_bucket_edges(count: int, min_s: float, max_s: float) -> torch.Tensor:
    """The `count - 1` log-spaced upper edges (seconds) of time buckets 1 .. count-1 (count = older)."""
    return torch.logspace(math.log10(min_s), math.log10(max_s), count - 1, dtype=torch.float64).float()


class TemporalEncoding(nn.Module):
    """TIN's target-aware temporal encoding: the rows added to the behaviour tokens and to the
    target token. Every table reserves row 0 for the target.

    * ``rank``: ``P[hist_rel_pos]`` (1 = most recent, clipped to [1, max_seq_len]); the target ``P[0]``.
    * ``time_bucket``: ``T[bucket(hist_age_s)]`` (buckets 1..time_buckets log-spaced, time_buckets + 1
      = unknown age); the target ``T[0]``.
    * ``rank_time``: ``P[rank] + T[bucket]``, the target ``P[0] + T[0]``.
    """

    def __init__(self, config: Any, max_seq_len: int, width: int):
        super().__init__()
        self.mode = str(config.position)
        if self.mode not in ("rank", "time_bucket", "rank_time"):
            raise ValueError(f"position must be 'rank', 'time_bucket' or 'rank_time', got {self.mode!r}")
        self.max_seq_len = int(max_seq_len)
        count = int(config.time_buckets)
        self.unknown = count + 1
        edges = time_bucket_edges(count, float(config.time_bucket_min_s), float(config.time_bucket_max_s))
        self.register_buffer("edges", edges, persistent=False)  # rebuilt from the config on load
        std = float(config.embedding_init_std)
        self.rank_table: nn.Embedding | None = None
        self.time_table: nn.Embedding | None = None
        if self.mode in ("rank", "rank_time"):
            self.rank_table = id_table(self.max_seq_len + 1, width, None)  # 0 = target, 1..L = rank
            nn.init.normal_(self.rank_table.weight, std=std)
        if self.mode in ("time_bucket", "rank_time"):
            self.time_table = id_table(count + 2, width, None)  # 0 = target, 1..count, count+1 = unknown
            nn.init.normal_(self.time_table.weight, std=std)

    @property
    def columns(self) -> tuple[str, ...]:
        """The batch columns it reads."""
        return (("hist_rel_pos",) if self.rank_table is not None else ()) + (
            ("hist_age_s",) if self.time_table is not None else ()
        )

    def tables(self) -> list[nn.Embedding]:
        return [t for t in (self.rank_table, self.time_table) if t is not None]

    def rank_indices(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """(B, L) rank rows: hist_rel_pos clipped to [1, max_seq_len] (padded slots: 1; masked)."""
        return batch["hist_rel_pos"].long().clamp(1, self.max_seq_len)

    def time_indices(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """(B, L) time-bucket rows of hist_age_s: 1..time_buckets, time_buckets + 1 for age < 0."""
        age = batch["hist_age_s"]
        bucket = 1 + torch.bucketize(age.float(), self.edges)
        return torch.where(age < 0, torch.full_like(bucket, self.unknown), bucket)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """(B, L, D) the behaviours' encodings."""
        out = None
        if self.rank_table is not None:
            out = self.rank_table(self.rank_indices(batch))
        if self.time_table is not None:
            time = self.time_table(self.time_indices(batch))
            out = time if out is None else out + time
        return out

    def target(self) -> torch.Tensor:
        """(D,) the target's encoding: row 0 of every table."""
        rows = [t.weight[0] for t in self.tables()]
        return rows[0] if len(rows) == 1 else rows[0] + rows[1]


class TinNet(nn.Module):
    """TIN: tokens (+ positions) -> scaled dot-product target attention -> target-aware
    representation -> BN -> MLP head -> + item bias -> logit."""

    def __init__(self, spec: FeatureSpec, config: Any, item_vectors: torch.Tensor | None = None):
        super().__init__()
        d = int(config.embedding_dim)
        self.spec = spec
        self.representation_mode = str(config.representation)
        self.use_context = bool(config.use_context)
        self.context_fields = (
            [
                name
                for name in spec.categorical
                if name not in ("item_idx", "category_idx") and (config.use_user_idx or name != "user_idx")
            ]
            if self.use_context
            else []
        )
        std = float(config.embedding_init_std)
        self.embeddings = nn.ModuleDict()
        for name, rows in spec.categorical.items():
            if name not in ("item_idx", "category_idx") and name not in self.context_fields:
                continue
            self.embeddings[name] = id_embedding(rows, d, 0 if name.endswith("_idx") else None, std)
        token = 2 * d + attach_item_vectors(self, spec, item_vectors, d)
        self.token_dim = token
        self.scale = 1.0 / math.sqrt(token)
        self.temporal: TemporalEncoding | None = None
        if config.use_positions:
            self.temporal = TemporalEncoding(config, spec.max_seq_len, token)
            missing = [c for c in self.temporal.columns if c not in spec.sequence]
            if missing:
                raise ValueError(f"position={config.position!r} needs {missing} in the spec")
        self.pooled_bn: nn.BatchNorm1d | None = None
        self.pooled_dense: nn.Linear | None = None
        if self.representation_mode == "code":
            self.pooled_bn = nn.BatchNorm1d(token)
            self.pooled_dense = nn.Linear(token, token)
            nn.init.xavier_normal_(self.pooled_dense.weight)
            nn.init.zeros_(self.pooled_dense.bias)
            rep = 3 * token
        elif self.representation_mode == "paper":
            rep = 2 * token
        else:
            raise ValueError(f"representation must be 'code' or 'paper', got {self.representation_mode!r}")
        head_in = rep + (d * len(self.context_fields) + len(spec.dense) if self.use_context else 0)
        self.head_bn = nn.BatchNorm1d(head_in) if config.tower_input_bn else None
        self.head = MLP(head_in, list(config.tower_units), config.tower_activation, config.dropout, out=1)
        self.item_bias: nn.Embedding | None = None
        if config.use_item_bias:
            self.item_bias = id_table(spec.categorical["item_idx"], 1, padding_idx=0)
            nn.init.zeros_(self.item_bias.weight)

    # -- declared tables for the trainer's mini-batch-aware L2 ------------------------------------
    def embedding_inputs(self) -> list[tuple[nn.Embedding, tuple[str, ...]]]:
        """Each id table with the batch columns indexing it (DIN section 4.3 regularization); the
        item and category tables serve the target and the behaviours. Not the position table."""
        out = [
            (table, (name, f"hist_{name}") if f"hist_{name}" in self.spec.sequence else (name,))
            for name, table in self.embeddings.items()
        ]
        if self.item_bias is not None:
            out.append((self.item_bias, ("item_idx",)))
        return out

    # -- pieces (public for the tests) -----------------------------------------------------------
    def item_token(self, items: torch.Tensor, categories: torch.Tensor) -> torch.Tensor:
        """e = [item embedding, category embedding (, projected frozen item vector)]."""
        parts = [self.embeddings["item_idx"](items), self.embeddings["category_idx"](categories)]
        if self.item_projection is not None:
            parts.append(self.item_projection(self.item_vectors[items]))
        return torch.cat(parts, dim=-1)

    def encode(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(v_t (B, D), u (B, L, D), mask (B, L)): target and behaviour tokens with their positions.

        The target and the history read the same tables in ONE lookup per table (one gradient per
        table and step)."""
        items, cats, mask = batch["hist_item_idx"], batch["hist_category_idx"], batch["hist_mask"]
        rows, length = items.shape
        token = self.item_token(
            torch.cat([batch["item_idx"], items.reshape(-1)]),
            torch.cat([batch["category_idx"], cats.reshape(-1)]),
        )
        target, keys = token[:rows], token[rows:].view(rows, length, -1)
        if self.temporal is not None:
            target = target + self.temporal.target()
            keys = keys + self.temporal(batch)
        return target, keys, mask

    def attend(
        self, target: torch.Tensor, keys: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(pooled sum_i a_i u_i (B, D), weights a (B, L)): a = masked softmax(u . v_t / sqrt(D)).

        Padded slots weigh exactly 0; a row without behaviours has all-zero weights (pooled 0)."""
        scores = torch.einsum("bld,bd->bl", keys, target) * self.scale
        scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
        weights = torch.softmax(scores, dim=1) * mask
        return torch.einsum("bl,bld->bd", weights, keys), weights

    def representation(self, target: torch.Tensor, pooled: torch.Tensor) -> torch.Tensor:
        """The target-aware representation fed to the head (see the module docstring)."""
        if self.representation_mode == "paper":
            # sum_i a_i (u_i * v_t) == (sum_i a_i u_i) * v_t: v_t is the same for every i
            return torch.cat([pooled * target, target], dim=1)
        u = self.pooled_dense(self.pooled_bn(pooled))
        return torch.cat([u, target, u * target], dim=1)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Logits (B,)."""
        target, keys, mask = self.encode(batch)
        pooled, _ = self.attend(target, keys, mask)
        parts = [self.representation(target, pooled)]
        if self.use_context:
            parts = [self.embeddings[name](batch[name]) for name in self.context_fields] + parts
            parts.append(batch["dense"])
        x = torch.cat(parts, dim=1)
        if self.head_bn is not None:
            x = self.head_bn(x)
        logit = self.head(x).squeeze(1)
        if self.item_bias is not None:
            logit = logit + self.item_bias(batch["item_idx"]).squeeze(1)
        return logit
