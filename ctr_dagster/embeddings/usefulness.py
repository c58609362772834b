"""How useful are item vectors? Linear attribute probes, same-category retrieval, a 2-D projection.

* **Attribute probe**: a linear classifier (ridge regression onto one-hot targets, argmax; closed
  form, so deterministic and fast) trained on the vectors of the non-held-out items predicts each
  attribute of the held-out items. Accuracy next to the majority-class rate says how much of the
  attribute the vectors carry linearly (what a downstream model can read off).
* **Retrieval P@k**: for each item, the share of its k nearest other items (cosine) that are in its
  category.
* **Projection**: the 2-D PCA of the vectors, for a picture.

The hold-out is a fixed share of items chosen by a hash of the item id (`holdout_mask`), so it does
not move when the catalogue grows, and trainable encoders are fitted without the held-out items'
attributes (`ctr_dagster.embeddings.pipeline`): the probe scores labels no encoder has seen.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

HOLDOUT_SHARE = 0.2


def holdout_mask(item_ids: Sequence[str], share: float = HOLDOUT_SHARE) -> np.ndarray:
    """bool[n]: True for the held-out items (a stable hash of the id, ~`share` of them)."""
    cut = int(share * 10_000)
    return np.array(
        [
            int.from_bytes(hashlib.sha256(str(i).encode()).digest()[:4], "big") % 10_000 < cut
            for i in item_ids
        ],
        dtype=bool,
    )


@dataclass(frozen=True)
class ProbeResult:
    accuracy: float | None  # on held-out items whose value was seen in training; None if none
    majority: float | None  # accuracy of always predicting the most frequent training value
    n_test: int
    n_classes: int


def linear_probe(
    x: np.ndarray, labels: Sequence[str | None], heldout: np.ndarray, alpha: float = 10.0
) -> ProbeResult:
    """Ridge one-vs-all probe: fit on non-held-out labelled rows, score held-out labelled rows."""
    labels_arr = np.array([None if v is None else str(v) for v in labels], dtype=object)
    known = labels_arr != None  # noqa: E711 (elementwise on an object array)
    train = known & ~heldout
    classes = sorted(set(labels_arr[train].tolist()))
    test = known & heldout & np.isin(labels_arr, classes)
    if len(classes) < 2 or not test.any():
        return ProbeResult(None, None, int(test.sum()), len(classes))
    xs = np.asarray(x, dtype=np.float64)
    mean = xs[train].mean(axis=0)
    std = xs[train].std(axis=0)
    std[std == 0] = 1.0
    z = (xs - mean) / std
    z = np.concatenate([z, np.ones((len(z), 1))], axis=1)
    index = {c: k for k, c in enumerate(classes)}
    y = np.zeros((int(train.sum()), len(classes)))
    y[np.arange(len(y)), [index[v] for v in labels_arr[train]]] = 1.0
    gram = z[train].T @ z[train]
    reg = alpha * np.eye(gram.shape[0])
    reg[-1, -1] = 0.0  # no penalty on the bias
    weights = np.linalg.solve(gram + reg, z[train].T @ y)
    predicted = np.argmax(z[test] @ weights, axis=1)
    truth = np.array([index[v] for v in labels_arr[test]])
    counts = np.bincount([index[v] for v in labels_arr[train]], minlength=len(classes))
    return ProbeResult(
        accuracy=float((predicted == truth).mean()),
        majority=float((truth == int(np.argmax(counts))).mean()),
        n_test=int(test.sum()),
        n_classes=len(classes),
    )


def retrieval_precision(
    x: np.ndarray, categories: Sequence[str | None], k: int = 10, max_queries: int = 5000, chunk: int = 1024
) -> float | None:
    """Mean share of same-category items among each item's `k` cosine-nearest others.

    Items without a category are neither queries nor counted as hits. At most `max_queries` queries
    (the first ones, in order) keep the cost bounded on large catalogues; all items are candidates.
    """
    cats = np.array([None if c is None else str(c) for c in categories], dtype=object)
    valid = cats != None  # noqa: E711
    xs = np.asarray(x, dtype=np.float32)[valid]
    cats = cats[valid]
    n = len(xs)
    if n <= k:
        return None
    _, codes = np.unique(cats.astype(str), return_inverse=True)
    norm = np.linalg.norm(xs, axis=1, keepdims=True)
    unit = xs / np.where(norm > 0, norm, 1.0)
    queries = np.arange(min(n, max_queries))
    hits = 0.0
    for start in range(0, len(queries), chunk):
        q = queries[start : start + chunk]
        sim = unit[q] @ unit.T
        sim[np.arange(len(q)), q] = -np.inf  # never retrieve the item itself
        top = np.argpartition(-sim, k - 1, axis=1)[:, :k]
        hits += float((codes[top] == codes[q][:, None]).sum())
    return hits / (len(queries) * k)


def projection_2d(x: np.ndarray) -> np.ndarray:
    """float32[n, 2]: the two leading principal components (sign-fixed, deterministic)."""
    xs = np.asarray(x, dtype=np.float64)
    xs = xs - xs.mean(axis=0, keepdims=True)
    out = np.zeros((len(xs), 2), dtype=np.float32)
    if len(xs) < 2:
        return out
    _, vectors = np.linalg.eigh(xs.T @ xs)  # the d x d covariance: far cheaper than an SVD of x
    vt = vectors[:, ::-1][:, : min(2, xs.shape[1])].T
    vt *= np.sign(vt[np.arange(len(vt)), np.argmax(np.abs(vt), axis=1)])[:, None]
    out[:, : len(vt)] = (xs @ vt.T).astype(np.float32)
    return out
