"""SUAN's torch modules: the unified attention block, its shared biases and the network.

SUAN (Meituan, "scaling laws for CTR", arXiv 2508.15326); official TF1 code laiweijiang/SUAN@249237f,
read for this module (not copied): `handle_layer/handle_lib/handle_rec_unit.py` (``RMSNorm``,
``SwiGLU``, ``Relative_positional_encoding``, ``MultiHeadSelfAttention``, ``MultiHeadCrossAttention``,
``SUAN_Block`` with ``MS_SeNet``, ``Eleme_SUAN`` / ``Mix1k_SUAN``), `exp/user1/Eleme_SUAN/task_conf.json`
and `model/test_dnn.py` (head). The facts used are collected in the project's MODELS.md section 2.
Notation: B rows, L behaviours, N = L + 1 tokens, D the token width, h heads, d_h = D / h, P profile
tokens, d the per-field embedding width.

**Sequence** [code: ``Eleme_SUAN.__call__``]: the behaviours (oldest first, right-aligned as the
engine's batches are) then the candidate as token N-1, so the sequence is target-aware and causal.
A behaviour token is the concatenation of its field embeddings ``[item, category (, projected frozen
item vector)]`` (the code: shop, item, category, aoi, hour); the candidate token is a Dense projection
of its own fields (the code's ``tgt_emb`` Dense). Both get a time embedding (the code: Dense of the
hour-of-day embedding; here a table row of the log bucket of ``hist_age_s``, the candidate's age 0:
[choice], the engine has no per-behaviour hour) and a learned absolute position row (N x D table).

**Unified attention block, in the code's order** (`SuanBlock.forward`, ``SUAN_Block.__call__``)::

    x = RMSNorm1(x)
    x = RMSNorm2(x + Dropout(SelfAttention(x, bias, mask)))
    c = CrossAttention(x, profile)
    x = RMSNorm3(x + Dropout(Fusion(x, c)))
    out = x + Dropout(SwiGLU(x))

* RMSNorm [code]: ``gamma * x / (sqrt(mean(x^2)) + 1e-6)`` (eps outside the root, as the code).
* Self-attention [code]: Q, K, V, O without bias; logits ``QK^T / sqrt(d_h) + b_pos(j - i) +
  b_time(bucket |t_i - t_j|)``; the bias is shared by every head and every layer (`RelativeBias`,
  computed once per forward); masked logits are removed (-inf; the code adds -1e9).
  ``b_pos``: a learned vector indexed by ``N - 1 + j - i`` (the code's Toeplitz construction gives
  exactly this index; its vector has 2N + 1 entries of which 2N - 1 are used, so here 2N - 1).
  ``b_time``: a learned table of ``num_time_buckets + 1`` entries indexed by
  ``clip(floor(ln(max(|dt|, 1)) / 0.301), 0, num_time_buckets)`` (HSTU's bucketization, as the code;
  dt in seconds here, the Eleme config feeds hours of day), plus one row for an unknown time
  (``hist_age_s < 0``) [choice]. Both bias vectors are initialised N(0, 0.02) as the code.
* Mask [code]: causal look-ahead union padding. [choice] every token may attend to itself, so a
  padded slot's query row is never empty (the code's -1e9 gives it a uniform row instead); real
  tokens never see a padded one either way.
* Cross-attention [code]: queries from the sequence, keys/values from the P profile field
  embeddings (each d wide, projected to D), softmax over the profile fields, no bias, then O.
  The code scales the logits by ``sqrt(P)`` (it reads the key tensor's last axis, the field axis),
  not ``sqrt(d_h)``: ``cross_scale="fields"`` (default) keeps that quirk, ``"head_dim"`` the usual one.
* Fusion, the code's ``MS_SeNet`` (the paper's adaptive fusion) [code]: ``s = mean(x + c)`` ->
  Dense(D/4, ReLU, no bias) -> two Dense(D, no bias) heads -> softmax over the 2 branches per
  channel -> ``w1 * x + w2 * c``. **The code's mean runs over all tokens, the candidate and
  padding included**, which lets the candidate change every behaviour's output: the sequence is
  then not causal and cannot be encoded once per request. ``gate_pool="causal"`` (default, a
  [choice] that departs from the code) uses the running mean over the real tokens up to and
  including each position, so a token sees only itself and earlier tokens through every path;
  ``gate_pool="all"`` is the code's (then `score_shared` falls back to the full forward).
* SwiGLU [code]: ``W3(SiLU(W1 x) * W2 x)``, hidden 3D, Dense layers with bias (the code's
  ``tf.layers.Dense`` default).

**Head** [code: ``Eleme_SUAN`` / ``model/test_dnn.py``]: ``[candidate token's output, flattened
profile embeddings, the candidate's raw item token, BN(dense features)]`` -> per hidden layer
Dense -> BN -> Dice -> Dense(1). [choice] the code's final BN on the single logit is left out (at
scoring it is an affine map of the logit); Dice is DIN's (`ctr_din.modules.Dice`).

**Profile tokens** (keys of the cross-attention) [choice, the engine's fields]: the embeddings of the
request-side fields ``device_idx, region_idx, age_group_idx, hour, day_of_week`` (``user_idx`` with
``use_user_idx``) and one token per user-side dense column (``user_click_count``: ``x * w + b``).
Item-side columns (``position``, ``price``, ``item_age_days``, ``treatment``) go to the head only:
they differ between the candidates of one request, and the history must not depend on the candidate.

**Sparse self-attention** (LightSUAN; [paper] only: "local window plus a dilated pattern", no code):
query i may attend key j when ``0 <= i - j < window`` or (``i - j >= window`` and ``(i - j) % dilation
== 0``), intersected with the padding mask (`attention_pattern`). Per query that is ``window`` local
keys plus every ``dilation``-th older one, about ``window + (i - window) / dilation`` instead of ``i + 1``.

**Encoding the history once** (`encode_history`, `score_cached`, `score_shared`): with the causal
fusion the history tokens' outputs do not depend on the candidate, but the candidate's own output
does attend to the history with a candidate-dependent query. So the history prefix (N - 1 tokens)
runs through every block once per request, keeping per block the keys/values of its self-attention
input (a KV cache), the running sum and count of the fusion's pool and the profile's cross-attention
keys/values; each candidate then runs only its last token through the blocks against that cache.
Same function as the full forward up to float rounding (tested to 1e-5).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from ctr_dagster.training.spec import FeatureSpec
from ctr_din.modules import Dice, attach_item_vectors, id_embedding
from torch import nn

#: The code's bucketization: floor(ln(max(|dt|, 1)) / 0.301) (HSTU's).
LOG_BUCKET_DIVISOR = 0.301

#: Request-side id/categorical fields that become profile tokens (``user_idx`` only with use_user_idx).
PROFILE_FIELDS = ("user_idx", "device_idx", "region_idx", "age_group_idx", "hour", "day_of_week")

#: User-side dense columns that become profile tokens (the others are per candidate: head only).
PROFILE_DENSE = ("user_click_count",)


def log_time_buckets(delta: torch.Tensor, num_buckets: int) -> torch.Tensor:
    """int64 buckets ``clip(floor(ln(max(|dt|, 1)) / 0.301), 0, num_buckets)`` (no gradient)."""
    x = delta.detach().abs().float().clamp(min=1.0)
    return torch.floor(torch.log(x) / LOG_BUCKET_DIVISOR).long().clamp(0, num_buckets)


def attention_pattern(
    n: int, window: int | None = None, dilation: int | None = None, device=None
) -> torch.Tensor:
    """(n, n) bool: query i may attend key j. Causal (j <= i); with `window`, only ``i - j < window``
    or ``i - j`` a multiple of `dilation` (LightSUAN's local + dilated pattern)."""
    i = torch.arange(n, device=device)
    gap = i[:, None] - i[None, :]
    allowed = gap >= 0
    if window is not None:
        step = max(int(dilation or 0), 0)
        dilated = (gap % step == 0) if step > 0 else torch.zeros_like(allowed)
        allowed = allowed & ((gap < window) | dilated)
    return allowed


def sparse_pattern_count(n: int, window: int, dilation: int) -> int:
    """The number of allowed (query, key) pairs of `attention_pattern(n, window, dilation)`, by
    counting per distance g = i - j (there are n - g pairs at distance g)."""
    return sum(n - g for g in range(n) if g < window or (dilation > 0 and g % dilation == 0))


class RMSNorm(nn.Module):
    """``gamma * x / (rms(x) + eps)`` (the code's form: eps added to the root, not inside it)."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.gamma = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rms = x.pow(2).mean(dim=-1, keepdim=True).sqrt()
        return self.gamma * x / (rms + self.eps)


class RelativeBias(nn.Module):
    """The attention-logit bias shared by all heads and layers:
    ``b_pos(j - i) + b_time(bucket |t_i - t_j|)``."""

    def __init__(self, n_tokens: int, num_buckets: int):
        super().__init__()
        self.n = int(n_tokens)
        self.num_buckets = int(num_buckets)
        self.unknown = self.num_buckets + 1
        self.pos_w = nn.Parameter(torch.randn(2 * self.n - 1) * 0.02)  # index N - 1 + j - i
        self.ts_w = nn.Parameter(torch.randn(self.num_buckets + 2) * 0.02)  # + 1 row: unknown time

    def position_bias(self, n: int | None = None) -> torch.Tensor:
        """(n, n), default (N, N): entry (i, j) = pos_w[N - 1 + j - i]. It depends on j - i only, so
        the last n tokens' block is the same for any n (a trimmed sequence gets the same bias)."""
        n = self.n if n is None else int(n)
        i = torch.arange(n, device=self.pos_w.device)
        return self.pos_w[self.n - 1 + i[None, :] - i[:, None]]

    def time_indices(self, times: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
        """(B, N, N) bucket of |t_i - t_j|; the unknown row where either time is unknown."""
        buckets = log_time_buckets(times[:, :, None] - times[:, None, :], self.num_buckets)
        both = known[:, :, None] & known[:, None, :]
        return torch.where(both, buckets, torch.full_like(buckets, self.unknown))

    def time_bias(self, times: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
        """(B, N, N)."""
        return self.ts_w[self.time_indices(times, known)]

    def forward(self, times: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
        """(B, n, n) = position bias (broadcast) + time bias, for the n = times.shape[1] last tokens."""
        return self.position_bias(times.shape[1]).unsqueeze(0) + self.time_bias(times, known)


def short_softmax(x: torch.Tensor) -> torch.Tensor:
    """Softmax over a short last axis (float32), written out: the same function, but torch's CPU
    kernel is about 6x slower on rows of 6-21 entries (measured, torch 2.13, one thread), which is
    most of the cost of scoring 1,000 candidates against a cached history. Every row here has a
    finite entry (a token always sees itself; the profile is never masked)."""
    e = torch.exp(x - x.amax(dim=-1, keepdim=True))
    return e / e.sum(dim=-1, keepdim=True)


def _split(x: torch.Tensor, heads: int) -> torch.Tensor:
    """(..., T, D) -> (..., h, T, d_h)."""
    *lead, t, d = x.shape
    return x.reshape(*lead, t, heads, d // heads).transpose(-3, -2)


def _merge(x: torch.Tensor) -> torch.Tensor:
    """(..., h, T, d_h) -> (..., T, D)."""
    *lead, h, t, dh = x.shape
    return x.transpose(-3, -2).reshape(*lead, t, h * dh)


class SelfAttention(nn.Module):
    """Multi-head self-attention with an additive logit bias; Q, K, V, O without bias (the code).

    Q, K and V are one bias-free Linear(D, 3D) (the same function as the code's three Dense layers,
    one matrix product instead of three)."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.o = nn.Linear(dim, dim, bias=False)

    def project(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(Q, K, V) of x (B, T, D), each (B, h, T, d_h)."""
        rows, t, _ = x.shape
        q, k, v = self.qkv(x).view(rows, t, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        return q, k, v

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor, keep: list[torch.Tensor] | None = None
    ) -> torch.Tensor:
        """x (B, T, D); mask (B, T, T) float: the shared bias with -inf on forbidden pairs -> (B, T, D).
        `keep`: a list that receives (K, V), each (B, h, T, d_h), for a history cache."""
        rows, t, dim = x.shape
        q, k, v = self.project(x)
        if keep is not None:
            keep += [k, v]
        h = self.heads
        logits = torch.baddbmm(
            mask.unsqueeze(1).expand(rows, h, t, t).reshape(rows * h, t, t).to(q.dtype),
            q.reshape(rows * h, t, -1),
            k.reshape(rows * h, t, -1).transpose(1, 2),
            alpha=1.0 / math.sqrt(self.head_dim),
        )
        weights = torch.softmax(logits.float(), dim=-1).to(v.dtype)
        out = (weights @ v.reshape(rows * h, t, -1)).view(rows, h, t, -1)
        return self.o(out.transpose(1, 2).reshape(rows, t, dim))

    def attend_last(
        self, x: torch.Tensor, k_hist: torch.Tensor, v_hist: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        """The last token of C sequences that share one history prefix.

        x (C, D) the candidates' block inputs; k_hist, v_hist (h, T, d_h) the prefix's cached keys and
        values; mask (T + 1,) the last query's row of the masked bias. Returns (C, D). Heads lead
        ((h, C, ...)), so each product is one batched matrix product per head over all C rows."""
        rows = x.shape[0]
        q, k_new, v_new = self.qkv(x).view(rows, 3, self.heads, self.head_dim).permute(1, 2, 0, 3)
        hist = torch.bmm(q, k_hist.transpose(1, 2))  # (h, C, T)
        own = (q * k_new).sum(-1, keepdim=True)  # (h, C, 1)
        logits = torch.cat([hist, own], dim=-1).float() / math.sqrt(self.head_dim) + mask.float()
        weights = short_softmax(logits).to(v_hist.dtype)
        out = torch.baddbmm(weights[..., -1:] * v_new, weights[..., :-1], v_hist)  # (h, C, d_h)
        return self.o(out.transpose(0, 1).reshape(rows, self.heads * self.head_dim))


class CrossAttention(nn.Module):
    """Sequence tokens (queries) attend the profile tokens (keys/values), softmax over the profile."""

    def __init__(self, dim: int, profile_dim: int, heads: int, n_profile: int, scale: str):
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        self.q = nn.Linear(dim, dim, bias=False)
        self.k = nn.Linear(profile_dim, dim, bias=False)
        self.v = nn.Linear(profile_dim, dim, bias=False)
        self.o = nn.Linear(dim, dim, bias=False)
        # the code divides by sqrt(P) (the key tensor's last axis is the field axis); "head_dim": sqrt(d_h)
        self.scale = 1.0 / math.sqrt(n_profile if scale == "fields" else self.head_dim)

    def keys_values(self, profile: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(K, V) of the profile (B, P, d) -> each (B, h, P, d_h)."""
        return _split(self.k(profile), self.heads), _split(self.v(profile), self.heads)

    def attend(self, x: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """x (B, T, D) with the profile's (K, V) (B, h, P, d_h) -> (B, T, D)."""
        q = _split(self.q(x), self.heads)
        weights = torch.softmax((q @ k.transpose(-1, -2)).float() * self.scale, dim=-1).to(v.dtype)
        return self.o(_merge(weights @ v))

    def attend_one(self, x: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """`attend` for one token of C rows sharing one profile: x (C, D), (K, V) (h, P, d_h) -> (C, D).
        One batched product per head over all C rows instead of C tiny ones (serving: 1,000
        candidates of a request)."""
        q = self.q(x).view(-1, self.heads, self.head_dim).transpose(0, 1)  # (h, C, d_h)
        weights = short_softmax(torch.bmm(q, k.transpose(1, 2)).float() * self.scale).to(v.dtype)
        return self.o(torch.bmm(weights, v).transpose(0, 1).reshape(x.shape[0], -1))

    def forward(self, x: torch.Tensor, profile: torch.Tensor) -> torch.Tensor:
        return self.attend(x, *self.keys_values(profile))


class GatedFusion(nn.Module):
    """The code's ``MS_SeNet``: a per-channel softmax over two branches from a pooled summary ``s``."""

    def __init__(self, dim: int):
        super().__init__()
        self.squeeze = nn.Linear(dim, max(1, dim // 4), bias=False)
        self.w1 = nn.Linear(max(1, dim // 4), dim, bias=False)
        self.w2 = nn.Linear(max(1, dim // 4), dim, bias=False)

    def weights(self, s: torch.Tensor) -> torch.Tensor:
        """w1 of the two-way softmax (w2 = 1 - w1), written as the reference form: for tests."""
        z = F.relu(self.squeeze(s))
        return torch.softmax(torch.stack([self.w1(z), self.w2(z)]).float(), dim=0)[0]

    def forward(self, x: torch.Tensor, c: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        """``w1 * x + w2 * c`` with (w1, w2) = softmax over the two heads of Dense(ReLU(Dense(s))).

        A softmax over two logits is ``w1 = sigmoid(a1 - a2)``, so one product with (W1 - W2) and
        ``c + w1 * (x - c)``: the same function (and gradients) with half the work."""
        z = F.relu(self.squeeze(s))
        w1 = torch.sigmoid(F.linear(z, self.w1.weight - self.w2.weight))
        return torch.addcmul(c, w1, x - c)


class SwiGLU(nn.Module):
    """``W3(SiLU(W1 x) * W2 x)`` with hidden width 3D (the code's ``ffn_factor``)."""

    def __init__(self, dim: int, factor: int = 3):
        super().__init__()
        self.w12 = nn.Linear(dim, 2 * factor * dim)  # W1 and W2 stacked: one matrix product
        self.w3 = nn.Linear(factor * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, value = self.w12(x).chunk(2, dim=-1)
        return self.w3(F.silu(gate) * value)


@dataclass
class BlockCache:
    """One block's state after the history prefix: what the last token needs (see `SuanBlock.last`)."""

    keys: torch.Tensor  # (h, T, d_h): keys of the self-attention input of the prefix
    values: torch.Tensor  # (h, T, d_h)
    pool_sum: torch.Tensor  # (D,): sum over the prefix's real tokens of (x + c)
    pool_count: torch.Tensor  # (): the number of real prefix tokens
    profile_keys: torch.Tensor  # (h, P, d_h): the cross-attention's keys of the user's profile
    profile_values: torch.Tensor  # (h, P, d_h)


class SuanBlock(nn.Module):
    """SUAN's unified attention block, in the code's order (module docstring)."""

    ORDER = ("norm1", "attention", "norm2", "cross", "fusion", "norm3", "ffn")

    def __init__(self, dim: int, profile_dim: int, heads: int, n_profile: int, config: Any):
        super().__init__()
        self.norm1 = RMSNorm(dim)
        self.attention = SelfAttention(dim, heads)
        self.norm2 = RMSNorm(dim)
        self.cross = CrossAttention(dim, profile_dim, heads, n_profile, str(config.cross_scale))
        self.fusion = GatedFusion(dim)
        self.norm3 = RMSNorm(dim)
        self.ffn = SwiGLU(dim)
        self.dropout = nn.Dropout(float(config.dropout))
        self.gate_pool = str(config.gate_pool)

    def pool(self, y: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """The fusion's summary per position: "causal" = running mean over real tokens <= i (0 before
        the first); "all" = the code's mean over every token, padding and candidate included."""
        if self.gate_pool == "all":
            return y.mean(dim=1, keepdim=True).expand_as(y)
        w = valid.to(y.dtype).unsqueeze(-1)
        total = torch.cumsum(y * w, dim=1)
        count = torch.cumsum(w, dim=1).clamp(min=1.0)
        return total / count

    def forward(
        self,
        x: torch.Tensor,
        profile: torch.Tensor,
        mask: torch.Tensor,
        valid: torch.Tensor,
        cache: list[BlockCache] | None = None,
    ) -> torch.Tensor:
        """x (B, T, D), profile (B, P, d), mask (B, T, T) (the shared bias, -inf where not allowed),
        valid (B, T) -> (B, T, D). With `cache` (a list, B = 1), appends this block's `BlockCache`."""
        x = self.norm1(x)
        kv: list[torch.Tensor] | None = [] if cache is not None else None
        x = self.norm2(x + self.dropout(self.attention(x, mask, kv)))
        c = self.cross(x, profile)
        if cache is not None and kv is not None:
            pk, pv = self.cross.keys_values(profile)
            w = valid[0].to(x.dtype).unsqueeze(-1)
            keys, values = kv
            cache.append(BlockCache(keys[0], values[0], ((x + c)[0] * w).sum(0), w.sum(), pk[0], pv[0]))
        x = self.norm3(x + self.dropout(self.fusion(x, c, self.pool(x + c, valid))))
        return x + self.dropout(self.ffn(x))

    def last(self, x: torch.Tensor, cache: BlockCache, mask: torch.Tensor) -> torch.Tensor:
        """The last (candidate) token of C sequences sharing the cached prefix: x (C, D) -> (C, D);
        mask (N,) the last query's row of the masked bias."""
        x = self.norm1(x)
        x = self.norm2(x + self.attention.attend_last(x, cache.keys, cache.values, mask))
        c = self.cross.attend_one(x, cache.profile_keys, cache.profile_values)
        s = (cache.pool_sum + x + c) / (cache.pool_count + 1.0)
        x = self.norm3(x + self.fusion(x, c, s))
        return x + self.ffn(x)


@dataclass
class HistoryCache:
    """One request's encoded history: per block a `BlockCache`, plus the candidate row's bias/mask
    and the user's head inputs (everything that does not depend on the candidate)."""

    blocks: list[BlockCache]
    mask: torch.Tensor  # (N,): the last query's row of the shared bias, -inf on forbidden keys
    profile_flat: torch.Tensor  # (P * d,): the flattened profile tokens (head input)


class SuanNet(nn.Module):
    """SUAN: target-aware causal token sequence -> `n_layers` unified attention blocks -> the
    candidate token's output + profile + candidate item + dense -> Dice MLP -> logit."""

    def __init__(self, spec: FeatureSpec, config: Any, grade: Any, item_vectors: torch.Tensor | None = None):
        super().__init__()
        d = int(grade.embedding_dim)
        self.spec = spec
        self.length = int(spec.max_seq_len)
        self.n_tokens = self.length + 1
        self.num_buckets = int(config.num_time_buckets)
        self.gate_pool = str(config.gate_pool)
        std = float(config.embedding_init_std)
        self.profile_fields = [
            name
            for name in PROFILE_FIELDS
            if name in spec.categorical and (name != "user_idx" or config.use_user_idx)
        ]
        self.profile_dense = [name for name in PROFILE_DENSE if name in spec.dense]
        self.profile_dense_index = [spec.dense.index(name) for name in self.profile_dense]
        self.embeddings = nn.ModuleDict()
        for name in ("item_idx", "category_idx", *self.profile_fields):
            self.embeddings[name] = id_embedding(
                spec.categorical[name], d, 0 if name.endswith("_idx") else None, std
            )
        token = 2 * d + attach_item_vectors(self, spec, item_vectors, d)
        self.item_dim = token
        self.dim = token  # D: the behaviour token's width (the code: fields x d)
        heads = int(grade.n_heads)
        if self.dim % heads:
            raise ValueError(f"the token width {self.dim} is not divisible by n_heads={heads}")
        self.heads = heads
        self.target_proj = nn.Linear(token, self.dim)  # the code's `tgt_emb` Dense on the candidate's fields
        self.time_table = nn.Parameter(
            torch.randn(self.num_buckets + 2, self.dim) * std
        )  # age buckets + unknown
        self.position = nn.Parameter(torch.randn(self.n_tokens, self.dim) * std)  # absolute positions
        self.dense_w = nn.Parameter(torch.randn(len(self.profile_dense), d) * std)
        self.dense_b = nn.Parameter(torch.zeros(len(self.profile_dense), d))
        self.n_profile = len(self.profile_fields) + len(self.profile_dense)
        if self.n_profile == 0:
            raise ValueError("SUAN needs at least one profile field for its cross-attention")
        self.bias = RelativeBias(self.n_tokens, self.num_buckets)
        self.window: int | None = None
        self.dilation: int | None = None
        if str(config.attention) == "sparse":
            self.window, self.dilation = int(config.window), int(config.dilation)
        self.register_buffer(
            "pattern", attention_pattern(self.n_tokens, self.window, self.dilation), persistent=False
        )
        self.blocks = nn.ModuleList(
            SuanBlock(self.dim, d, heads, self.n_profile, config) for _ in range(int(grade.n_layers))
        )
        n_dense = len(spec.dense)
        self.dense_bn = nn.BatchNorm1d(n_dense) if n_dense else None
        head_in = self.dim + self.n_profile * d + token + n_dense
        layers: list[nn.Module] = []
        for width in grade.tower_units:
            layers += [_linear(head_in, width), nn.BatchNorm1d(width), Dice(width)]
            if float(config.dropout) > 0:
                layers.append(nn.Dropout(float(config.dropout)))
            head_in = width
        layers.append(_linear(head_in, 1))
        self.head = nn.Sequential(*layers)
        self.allow_shared = True  # eval-time scoring of one request's candidates encodes its history once
        self.trim = True  # encode rows in history-length groups, trimmed (`candidate_outputs`); same function
        self.history_encodings = 0  # `encode_history` calls (tests count them)

    # -- declared tables for the trainer's mini-batch-aware L2 --------------------------------------
    def embedding_inputs(self) -> list[tuple[nn.Embedding, tuple[str, ...]]]:
        return [
            (table, (name, f"hist_{name}") if f"hist_{name}" in self.spec.sequence else (name,))
            for name, table in self.embeddings.items()
        ]

    # -- inputs ---------------------------------------------------------------------------------------
    def item_token(self, items: torch.Tensor, categories: torch.Tensor) -> torch.Tensor:
        parts = [self.embeddings["item_idx"](items), self.embeddings["category_idx"](categories)]
        if self.item_projection is not None:
            parts.append(self.item_projection(self.item_vectors[items]))
        return torch.cat(parts, dim=-1)

    def times(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(t (B, N), known (B, N)): the behaviours' ages in seconds then the candidate's 0."""
        age = batch["hist_age_s"].float()
        rows = age.shape[0]
        t = torch.cat([age, age.new_zeros(rows, 1)], dim=1)
        known = torch.cat([age >= 0, torch.ones(rows, 1, dtype=torch.bool, device=age.device)], dim=1)
        return t, known

    def valid(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """(B, N) bool: real behaviours, and the candidate."""
        mask = batch["hist_mask"]
        return torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=1)

    def time_rows(self, t: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
        """(B, N, D) the time embedding of each token's age bucket (the candidate: bucket 0)."""
        buckets = log_time_buckets(t, self.num_buckets)
        return self.time_table[torch.where(known, buckets, torch.full_like(buckets, self.num_buckets + 1))]

    def tokens(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(sequence (B, N, D), candidate raw item token (B, D0)); one lookup per shared table."""
        items, cats = batch["hist_item_idx"], batch["hist_category_idx"]
        rows, length = items.shape
        token = self.item_token(
            torch.cat([batch["item_idx"], items.reshape(-1)]),
            torch.cat([batch["category_idx"], cats.reshape(-1)]),
        )
        target, hist = token[:rows], token[rows:].view(rows, length, token.shape[-1])
        seq = torch.cat([hist, self.target_proj(target).unsqueeze(1)], dim=1)
        t, known = self.times(batch)
        return seq + self.time_rows(t, known) + self.position[self.n_tokens - length - 1 :], target

    def profile(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """(B, P, d): the profile field embeddings, then one token per user-side dense column."""
        parts = [self.embeddings[name](batch[name]) for name in self.profile_fields]
        if self.profile_dense:
            x = batch["dense"][:, self.profile_dense_index]  # (B, n)
            parts += list((x.unsqueeze(-1) * self.dense_w + self.dense_b).unbind(1))
        return torch.stack(parts, dim=1)

    def masks(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(allowed (B, N, N) bool, valid (B, N)): pattern & (key real or key == query)."""
        valid = self.valid(batch)
        n = valid.shape[1]
        eye = torch.eye(n, dtype=torch.bool, device=valid.device)
        allowed = self.pattern[-n:, -n:] & (valid.unsqueeze(1) | eye)
        return allowed, valid

    def attention_mask(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(mask (B, N, N) float, valid (B, N)): the shared relative bias with -inf where a query may
        not attend a key; computed once per forward and used by every head of every block."""
        allowed, valid = self.masks(batch)
        bias = self.bias(*self.times(batch))
        return bias.masked_fill(~allowed, float("-inf")), valid

    def head_input(
        self, out: torch.Tensor, profile: torch.Tensor, target: torch.Tensor, dense: torch.Tensor
    ) -> torch.Tensor:
        parts = [out, profile.flatten(1), target]
        if self.dense_bn is not None:
            parts.append(self.dense_bn(dense))
        return torch.cat(parts, dim=1)

    # -- the full forward -----------------------------------------------------------------------------
    def encode(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(block outputs (B, N, D), profile (B, P, d), candidate item token (B, D0))."""
        x, target = self.tokens(batch)
        profile = self.profile(batch)
        mask, valid = self.attention_mask(batch)  # shared by every head and block
        for block in self.blocks:
            x = block(x, profile, mask, valid)
        return x, profile, target

    def candidate_outputs(
        self, batch: dict[str, torch.Tensor], trimmed: bool | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(candidate token's output (B, D), profile (B, P, d), candidate item token (B, D0)).

        With the causal fusion pool, rows are encoded in groups of similar history length, each group
        trimmed to its longest history (`length_groups`): positions, biases and the sparse pattern
        depend only on distances to the candidate, and padded tokens never reach a real one, so this
        is the same function as encoding every row at full length (the tests check it), at a
        fraction of the cost (on `tiny` a quarter of the rows have no history, the mean is 7 of 20).
        `trimmed`: None = `self.trim`; False = every row at full length (no data-dependent python:
        what the serving export traces)."""
        if self.gate_pool != "causal" or not (self.trim if trimmed is None else trimmed):
            x, profile, target = self.encode(batch)
            return x[:, -1], profile, target
        groups = length_groups(batch["hist_len"], self.length)
        if len(groups) == 1:
            x, profile, target = self.encode(trim(batch, groups[0][1]))
            return x[:, -1], profile, target
        parts = []
        for rows, keep in groups:
            x, profile, target = self.encode(trim(take_rows(batch, rows), keep))
            parts.append((rows, x[:, -1], profile, target))
        order = torch.cat([rows for rows, *_ in parts])
        inverse = torch.empty_like(order)
        inverse[order] = torch.arange(order.numel(), device=order.device)
        return tuple(torch.cat([p[i] for p in parts]).index_select(0, inverse) for i in (1, 2, 3))

    def forward_full(self, batch: dict[str, torch.Tensor], trimmed: bool | None = None) -> torch.Tensor:
        out, profile, target = self.candidate_outputs(batch, trimmed)
        return self.head(self.head_input(out, profile, target, batch["dense"])).squeeze(1)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Logits (B,). Scoring many candidates of one request encodes its history once (`score_shared`)."""
        if self.allow_shared and self.one_request(batch):
            return self.score_shared(batch)
        return self.forward_full(batch)

    # -- one request, many candidates -----------------------------------------------------------------
    def shares_history_exactly(self) -> bool:
        """The cached path equals the full forward only with the causal fusion pool."""
        return self.gate_pool == "causal"

    def one_request(self, batch: dict[str, torch.Tensor]) -> bool:
        """Scoring rows (eval, no grad) that all share row 0's history and profile."""
        if self.training or torch.is_grad_enabled() or not self.shares_history_exactly():
            return False
        first = batch["hist_item_idx"]
        if first.shape[0] < 2:
            return False
        names = ["hist_item_idx", "hist_category_idx", "hist_age_s", "hist_mask", *self.profile_fields]
        if any(not bool((batch[n] == batch[n][:1]).all()) for n in names):
            return False
        if self.profile_dense_index:
            user_dense = batch["dense"][:, self.profile_dense_index]
            if not bool((user_dense == user_dense[:1]).all()):
                return False
        return True

    def encode_history(self, batch: dict[str, torch.Tensor], trimmed: bool | None = None) -> HistoryCache:
        """Run row 0's history prefix (N - 1 tokens) through every block once; returns the cache.
        `trimmed`: None = `self.trim`; False = all N - 1 slots (padding masked; no data-dependent
        python: what the serving export traces)."""
        self.history_encodings += 1
        one = {k: v[:1] for k, v in batch.items()}
        if self.trim if trimmed is None else trimmed:  # the real behaviours only (>= 1 slot, masked if none)
            one = trim(one, max(int(one["hist_len"][0]), 1))
        x, _ = self.tokens(one)
        profile = self.profile(one)
        mask, valid = self.attention_mask(one)
        t = one["hist_item_idx"].shape[1]
        cache: list[BlockCache] = []
        x = x[:, :t]
        for block in self.blocks:
            x = block(x, profile, mask[:, :t, :t], valid[:, :t], cache=cache)
        return HistoryCache(cache, mask[0, t], profile[0].flatten())

    def score_cached(self, cache: HistoryCache, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Logits (C,) of the candidates in `batch` (their item/dense columns) against `cache`."""
        target = self.item_token(batch["item_idx"], batch["category_idx"])
        zero = target.new_zeros(1)
        x = self.target_proj(target) + self.time_rows(zero, torch.ones_like(zero, dtype=torch.bool))[0]
        x = x + self.position[-1]  # the candidate's slot
        for block, state in zip(self.blocks, cache.blocks, strict=True):
            x = block.last(x, state, cache.mask)
        return self.head_shared_profile(x, cache.profile_flat, target, batch["dense"])

    def head_shared_profile(
        self, out: torch.Tensor, profile_flat: torch.Tensor, target: torch.Tensor, dense: torch.Tensor
    ) -> torch.Tensor:
        """`head` on C rows that share one profile: logits (C,). The first layer's profile columns
        are applied once, as a per-request bias, instead of to C copies of the profile (the profile
        is over half of that layer's inputs: P * d of about D + P * d + D0 + dense). The same function
        as ``head(head_input(...))`` up to float rounding."""
        first = self.head[0]
        start, stop = out.shape[1], out.shape[1] + profile_flat.shape[0]
        weight = first.weight
        bias = torch.addmv(first.bias, weight[:, start:stop], profile_flat.to(weight.dtype))
        parts = [out, target]
        if self.dense_bn is not None:
            parts.append(self.dense_bn(dense))
        rest = torch.cat([weight[:, :start], weight[:, stop:]], dim=1)
        hidden = F.linear(torch.cat(parts, dim=1), rest, bias)
        return self.head[1:](hidden).squeeze(1)

    def score_shared(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Logits (B,) of rows that share one history: encoded once, then one token per candidate."""
        if not self.shares_history_exactly():
            return self.forward_full(batch)
        return self.score_cached(self.encode_history(batch), batch)

    # -- serving export (`ctr_dagster.serving.torch_export`) -------------------------------------------
    def export_module(self) -> nn.Module:
        """The traceable form of `forward` for a serving bundle: every row at full length. `forward`
        branches on the data (`one_request`, the trimmed length groups: python ints read from the
        tensors), which torch.export cannot capture; untrimmed encoding is the same function."""
        return FullLengthScorer(self)

    def export_request_module(self) -> nn.Module | None:
        """The bundle's one-request program: row 0's history and profile encoded once, every row's
        candidate scored against that cache (`score_cached`). The runtime runs it only on rows that
        share every user-side column; None with the code's fusion (`gate_pool="all"`), where the
        history's outputs depend on the candidate."""
        return RequestScorer(self) if self.shares_history_exactly() else None


class FullLengthScorer(nn.Module):
    """Export view of a `SuanNet` (shares its parameters): logits of every row at full length."""

    def __init__(self, net: SuanNet):
        super().__init__()
        self.net = net

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.net.forward_full(batch, trimmed=False)


class RequestScorer(nn.Module):
    """Export view of a `SuanNet` for one request: row 0's history and profile encoded once (all N - 1
    slots, padding masked), then each row's candidate token against that cache."""

    def __init__(self, net: SuanNet):
        super().__init__()
        self.net = net

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.net.score_cached(self.net.encode_history(batch, trimmed=False), batch)


def length_groups(lengths: torch.Tensor, max_len: int) -> list[tuple[torch.Tensor, int]]:
    """[(rows, keep)]: the rows of each history-length group -- 0, 1..L/4, ..L/2, ..L -- with the
    group's longest history (the slots it keeps). Empty groups are left out."""
    bounds = sorted({0, max(1, max_len // 4), max(1, max_len // 2), max_len})
    lengths = lengths.clamp(max=max_len)
    groups = []
    lower = -1
    for upper in bounds:
        rows = ((lengths > lower) & (lengths <= upper)).nonzero().squeeze(1)
        if rows.numel():
            groups.append((rows, int(lengths.index_select(0, rows).max())))
        lower = upper
    return groups


def trim(batch: dict[str, torch.Tensor], keep: int) -> dict[str, torch.Tensor]:
    """The batch with its (B, L) sequence tensors cut to their last `keep` slots (right-aligned: the
    most recent ones); other tensors unchanged."""
    out = {}
    for name, value in batch.items():
        sequence = name.startswith("hist_") and value.dim() == 2
        out[name] = value[:, value.shape[1] - keep :] if sequence else value
    return out


def take_rows(batch: dict[str, torch.Tensor], rows: torch.Tensor) -> dict[str, torch.Tensor]:
    return {name: value.index_select(0, rows) for name, value in batch.items()}


def _linear(n_in: int, n_out: int) -> nn.Linear:
    layer = nn.Linear(n_in, n_out)
    nn.init.xavier_normal_(layer.weight)
    nn.init.zeros_(layer.bias)
    return layer
