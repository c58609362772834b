"""Item-embedding features of the `lightgbm` model (behind `use_item_embeddings`).

The engine hands the model the fused multimodal item vectors as a matrix indexed by `item_idx`
(`FitContext.inputs["item_embeddings"]`, rows 0/1 and unknown items zero). Trees cannot use a
128-d vector directly, so the model keeps two small views of it, learned at fit time and stored
with the model (`item_vectors.safetensors`, so `predict` never needs the engine):

* `emb_pc0..` — the target item's first `components` principal components (what the item *is*:
  category, colour, material... as the encoders saw them), useful above all for items with few
  impressions, whose id statistics are weak;
* similarities of the target to the user's behaviour sequence (cosine of unit vectors): mean over
  the clicks, max, the most recent click, and the recency-weighted mean (weights
  exp(-(age/1 day + rank/5)), as the sequence features) — "is this like what the user just
  clicked", with a finer notion of "like" than the category match of the sequence features;
* the same similarities on *residual* vectors (each item's unit vector minus the mean vector of its
  category, from the train rows' (item_idx, category_idx) pairs, re-normalized): category dominates
  the fused vectors, so plain cosines mostly repeat the category-match features; residuals compare
  what items share *beyond* their category (colour, material, brand, style);
* `emb_target_known` — 1 when the target has a vector (else every other feature is 0).

Everything is vectorized over the flattened sequence lists, in chunks of pairs (bounded memory).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

SIMILARITY = ("emb_hist_mean_cos", "emb_hist_max_cos", "emb_hist_last_cos", "emb_hist_decayed_cos")
#: The same on the vectors minus their category's mean ("alike beyond the category": colour, material...).
RESIDUAL = ("emb_hist_mean_rcos", "emb_hist_max_rcos", "emb_hist_decayed_rcos")
KNOWN = "emb_target_known"
VECTORS_FILE = "item_vectors.safetensors"
_PAIRS_PER_CHUNK = 200_000
DAY_S = 86_400.0
RANK_SCALE = 5.0


def names(components: int) -> list[str]:
    return [f"emb_pc{i}" for i in range(components)] + list(SIMILARITY) + list(RESIDUAL) + [KNOWN]


@dataclass
class ItemVectors:
    """Per item_idx: the unit-length vector (cosines) and its PCA scores (tree features)."""

    unit: np.ndarray  # float32[n_items, d]; zero rows = no vector
    scores: np.ndarray  # float32[n_items, components]
    residual: np.ndarray  # float32[n_items, d]: unit minus its category's mean, re-normalized

    @classmethod
    def fit(
        cls, matrix: np.ndarray, components: int, item_category: tuple[np.ndarray, np.ndarray] | None = None
    ) -> ItemVectors:
        """PCA of the known items' unit vectors (sign-fixed: deterministic), and their residuals from
        the mean vector of their category (`item_category` = (item_idx, category_idx) pairs, e.g. from
        the train rows; items without a known category keep a zero residual)."""
        x = np.asarray(matrix, dtype=np.float64)
        if x.ndim != 2:
            raise ValueError(f"item_embeddings must be a 2-D matrix [items, dim], got shape {x.shape}")
        norm = np.linalg.norm(x, axis=1, keepdims=True)
        known = norm[:, 0] > 0
        unit = np.where(norm > 0, x / np.where(norm > 0, norm, 1.0), 0.0)
        scores = np.zeros((len(x), components))
        if known.sum() >= 2 and components > 0:
            centred = unit[known] - unit[known].mean(axis=0)
            _, _, vt = np.linalg.svd(centred, full_matrices=False)
            vt = vt[:components]
            vt *= np.sign(vt[np.arange(len(vt)), np.argmax(np.abs(vt), axis=1)])[:, None]
            scores[known, : len(vt)] = centred @ vt.T
        residual = np.zeros_like(unit)
        if item_category is not None and len(item_category[0]):
            items, cats = (np.asarray(a, dtype=np.int64) for a in item_category)
            ok = (items >= 0) & (items < len(unit))
            items, cats = items[ok], cats[ok]
            items, first = np.unique(items, return_index=True)
            cats = cats[first]
            items, cats = items[known[items]], cats[known[items]]
            if len(items):
                sums = np.zeros((int(cats.max()) + 1, unit.shape[1]))
                np.add.at(sums, cats, unit[items])
                counts = np.bincount(cats, minlength=len(sums))[:, None]
                diff = unit[items] - sums[cats] / counts[cats]
                length = np.linalg.norm(diff, axis=1, keepdims=True)
                residual[items] = np.where(length > 1e-9, diff / np.where(length > 0, length, 1.0), 0.0)
        return cls(unit.astype(np.float32), scores.astype(np.float32), residual.astype(np.float32))

    @property
    def components(self) -> int:
        return int(self.scores.shape[1])

    def _rows(self, idx: np.ndarray) -> np.ndarray:
        """Indices into the tables; ids beyond them (vocabulary grew after training) -> row 0 (zero)."""
        idx = np.asarray(idx, dtype=np.int64)
        return np.where((idx >= 0) & (idx < len(self.unit)), idx, 0)

    def features(self, table: pa.Table) -> np.ndarray:
        """float64[n, len(names(components))] for the rows of a TRAINING-schema table."""
        from ctr_lightgbm.features import _list

        n = table.num_rows
        target = self._rows(table.column("item_idx").to_numpy())
        items, parents = _list(table, "hist_item_idx")
        ages, _ = _list(table, "hist_age_s")
        items = self._rows(items)
        lengths = np.bincount(parents, minlength=n).astype(np.int64)
        starts = np.cumsum(lengths) - lengths
        rank = (lengths[parents] - 1) - (np.arange(len(parents)) - starts[parents])
        weight = np.exp(-(np.maximum(ages.astype(np.float64), 0.0) / DAY_S + rank / RANK_SCALE))

        nonempty = lengths > 0
        count = np.maximum(lengths, 1).astype(np.float64)
        total = np.bincount(parents, weights=weight, minlength=n)

        def similarity(table: np.ndarray) -> tuple[np.ndarray, ...]:
            """(mean, max, most recent, recency-weighted mean) cosine of target vs each click."""
            cos = np.empty(len(parents))
            for s in range(0, len(parents), _PAIRS_PER_CHUNK):
                e = s + _PAIRS_PER_CHUNK
                cos[s:e] = np.einsum(
                    "ij,ij->i", table[target[parents[s:e]]], table[items[s:e]], dtype=np.float64
                )
            mean = np.bincount(parents, weights=cos, minlength=n) / count
            top, last = np.zeros(n), np.zeros(n)
            if nonempty.any():
                top[nonempty] = np.maximum.reduceat(cos, starts[nonempty])
                last[nonempty] = cos[starts[nonempty] + lengths[nonempty] - 1]
            weighted = np.bincount(parents, weights=weight * cos, minlength=n)
            return mean, top, last, np.divide(weighted, total, out=np.zeros(n), where=total > 0)

        mean_cos, max_cos, last_cos, decayed = similarity(self.unit)
        mean_r, max_r, _, decayed_r = similarity(self.residual)
        known = (np.abs(self.unit[target]).sum(axis=1) > 0).astype(np.float64)
        return np.column_stack(
            [
                self.scores[target].astype(np.float64),
                mean_cos,
                max_cos,
                last_cos,
                decayed,
                mean_r,
                max_r,
                decayed_r,
                known,
            ]
        )

    def save(self, directory: Path) -> None:
        from safetensors.numpy import save_file

        save_file(
            {name: np.ascontiguousarray(getattr(self, name)) for name in ("unit", "scores", "residual")},
            str(Path(directory) / VECTORS_FILE),
        )

    @classmethod
    def load(cls, directory: Path) -> ItemVectors:
        from safetensors.numpy import load_file

        tensors = load_file(str(Path(directory) / VECTORS_FILE))
        return cls(tensors["unit"], tensors["scores"], tensors["residual"])
