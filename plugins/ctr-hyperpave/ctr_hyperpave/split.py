"""The zero-shot split and the validation metrics used to pick the epoch and the threshold.

HyperPAVE's intent (paper §4; MODELS.md §6): evaluate on attribute values never seen in training.
The released `data_sampling` draws random edges outside a few seed AVs, which does not guarantee
that; here whole AV nodes are held out and *all* their edges leave the training graph:

* validation AVs: `n_valid` AVs with >= `min_edges` catalogue edges, drawn at random (the code's
  NUMBER=5 seed AVs), never leaving an attribute with fewer than 2 training AVs;
* test (zero-shot) AVs: the candidate values with no catalogue edge at all (the taxonomy's new
  values). The engine's evaluation may hold out more AV nodes before `fit` ever sees them.

Validation then scores each validation slot (product, attribute of its held-out AV) against every
candidate AV of that attribute (full-candidate evaluation, as the code's multi-label test over all
AV nodes, restricted to the slot's attribute because each (item, attribute) holds one value here).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ctr_hyperpave.hypergraph import Hypergraph


@dataclass(frozen=True)
class ZeroShotSplit:
    valid_av: np.ndarray  # int64 AV indices held out for validation
    unseen_av: np.ndarray  # int64 AV indices without any catalogue edge (zero-shot candidates)
    train_edges: np.ndarray  # int64 [2, E]: product-AV edges of the training graph
    valid_edges: np.ndarray  # int64 [2, E]: all edges of the validation AVs (zero-shot labels)
    valid_seen_edges: np.ndarray  # int64 [2, E]: held-out edges of training AVs (seen-value labels)

    def train_av(self, n_av: int) -> np.ndarray:
        """AV indices that may appear in training supervision (positives and negatives)."""
        mask = np.ones(n_av, dtype=bool)
        mask[self.valid_av] = False
        mask[self.unseen_av] = False
        return np.flatnonzero(mask)


def zero_shot_split(
    hg: Hypergraph, n_valid: int, min_edges: int, seed: int, seen_share: float = 0.1
) -> ZeroShotSplit:
    """Hold out `n_valid` whole AV nodes (zero-shot validation) and `seen_share` of the remaining
    edges (seen-value validation: the slot's AV keeps its other edges). Extraction answers both
    kinds of question, so the epoch and threshold are chosen on both."""
    n_av = len(hg.avs)
    counts = np.bincount(hg.product_av[1], minlength=n_av)
    unseen = np.flatnonzero(counts == 0)
    attribute = [a for a, _ in hg.avs]
    remaining = {
        a: int(sum(1 for k in range(n_av) if attribute[k] == a and counts[k] > 0)) for a in set(attribute)
    }
    rng = np.random.default_rng(seed)
    chosen: list[int] = []
    for k in rng.permutation(np.flatnonzero(counts >= min_edges)).tolist():
        if len(chosen) >= n_valid:
            break
        if remaining[attribute[k]] > 2:
            chosen.append(k)
            remaining[attribute[k]] -= 1
    valid = np.array(sorted(chosen), dtype=np.int64)
    held = np.isin(hg.product_av[1], valid)
    rest = hg.product_av[:, ~held]
    seen_held = np.zeros(rest.shape[1], dtype=bool)
    n_seen = int(round(seen_share * rest.shape[1]))
    if n_seen:
        # never take an AV's last edges: it must stay connected (that is what "seen" means)
        left = np.bincount(rest[1], minlength=n_av)
        for e in rng.permutation(rest.shape[1]).tolist():
            if seen_held.sum() >= n_seen:
                break
            if left[rest[1, e]] > 1:
                seen_held[e] = True
                left[rest[1, e]] -= 1
    return ZeroShotSplit(valid, unseen, rest[:, ~seen_held], hg.product_av[:, held], rest[:, seen_held])


@dataclass(frozen=True)
class Slots:
    """(product, attribute) questions with their true AV (-1: the product has no value for it),
    grouped by attribute for scoring."""

    product: np.ndarray  # int64
    attribute: list[str]
    truth: np.ndarray  # int64 AV index, -1 = no value


def slots_of(
    edges: np.ndarray, hg: Hypergraph, no_value: tuple[np.ndarray, list[str]] | None = None
) -> Slots:
    """Slots of held-out product-AV edges, plus (product, attribute) pairs known to have no value."""
    product, attribute, truth = edges[0].copy(), [hg.avs[a][0] for a in edges[1].tolist()], edges[1].copy()
    if no_value is not None and len(no_value[0]):
        product = np.concatenate([product, np.asarray(no_value[0], np.int64)])
        attribute = attribute + list(no_value[1])
        truth = np.concatenate([truth, np.full(len(no_value[0]), -1, np.int64)])
    return Slots(product, attribute, truth)


def candidates_by_attribute(hg: Hypergraph) -> dict[str, np.ndarray]:
    out: dict[str, list[int]] = {}
    for k, (a, _) in enumerate(hg.avs):
        out.setdefault(a, []).append(k)
    return {a: np.array(v, dtype=np.int64) for a, v in out.items()}


def _cut_points(score: np.ndarray, correct: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(thresholds, answered, hits) for answering every slot whose score >= threshold, from
    "answer none" (threshold +inf) down to each distinct score."""
    order = np.argsort(-score, kind="stable")
    s, c = score[order], correct[order]
    last_of_tie = np.r_[s[1:] != s[:-1], True] if len(s) else np.zeros(0, dtype=bool)
    answered = np.arange(1, len(s) + 1)[last_of_tie]
    hits = np.cumsum(c)[last_of_tie] if len(s) else np.zeros(0)
    return np.r_[np.inf, s[last_of_tie]], np.r_[0, answered], np.r_[0, hits]


def best_thresholds(
    top_score: np.ndarray, correct: np.ndarray, isolated: np.ndarray, n_truth: int
) -> tuple[float, float, float, float, float]:
    """(threshold for connected answers, threshold for isolated answers, F1, precision, recall)
    maximizing micro-F1 when a slot is answered iff its top score reaches the threshold of its answer's
    kind. An "isolated" answer is an AV node without edges in the graph (a zero-shot value): its
    scores have their own scale, so it gets its own threshold (both chosen on validation only)."""
    if not len(top_score) or not n_truth:
        return 0.5, 0.5, 0.0, 0.0, 0.0
    t1, a1, h1 = _cut_points(top_score[~isolated], correct[~isolated])
    t2, a2, h2 = _cut_points(top_score[isolated], correct[isolated])
    hits = h1[:, None] + h2[None, :]
    answered = a1[:, None] + a2[None, :]
    f1 = 2.0 * hits / (answered + n_truth)
    i, j = np.unravel_index(int(np.argmax(f1)), f1.shape)
    precision = float(hits[i, j] / answered[i, j]) if answered[i, j] else 0.0
    return float(t1[i]), float(t2[j]), float(f1[i, j]), precision, float(hits[i, j] / n_truth)


def group_thresholds(
    top_score: np.ndarray,
    correct: np.ndarray,
    group: np.ndarray,
    n_groups: int,
    n_truth: int,
    start: np.ndarray | None = None,
    rounds: int = 3,
) -> tuple[np.ndarray, float, float, float]:
    """(threshold per group, F1, precision, recall) maximizing micro-F1 when a slot is answered iff
    its top score reaches its group's threshold: coordinate ascent from `start` (default: answer
    none), each group's cut exact given the others'. Generalizes `best_thresholds` to groups whose
    scores live on different scales (e.g. answers where the own title is silent, which only the
    graph can give); chosen on validation only."""
    cuts = [_cut_points(top_score[group == g], correct[group == g]) for g in range(n_groups)]
    pick = np.zeros(n_groups, dtype=np.int64)
    if start is not None:  # the cut index whose threshold is the largest <= start
        for g, (t, _, _) in enumerate(cuts):
            pick[g] = int(np.sum(t >= start[g])) - 1 if np.isfinite(start[g]) else 0
            pick[g] = max(pick[g], 0)
    if not len(top_score) or not n_truth:
        return np.full(n_groups, 0.5), 0.0, 0.0, 0.0
    for _ in range(rounds):
        changed = False
        for g, (_, answered, hits) in enumerate(cuts):
            rest_a = sum(int(cuts[k][1][pick[k]]) for k in range(n_groups) if k != g)
            rest_h = sum(float(cuts[k][2][pick[k]]) for k in range(n_groups) if k != g)
            f1 = 2.0 * (hits + rest_h) / (answered + rest_a + n_truth)
            best = int(np.argmax(f1))
            if f1[best] > f1[pick[g]] + 1e-12:
                pick[g], changed = best, True
        if not changed:
            break
    answered = sum(int(cuts[g][1][pick[g]]) for g in range(n_groups))
    hits = sum(float(cuts[g][2][pick[g]]) for g in range(n_groups))
    thresholds = np.array([float(cuts[g][0][pick[g]]) for g in range(n_groups)])
    precision = hits / answered if answered else 0.0
    return thresholds, 2.0 * hits / (answered + n_truth), precision, hits / n_truth


def macro_f1(pred: np.ndarray, truth: np.ndarray, answered: np.ndarray) -> float:
    """Mean over the true AVs of per-AV F1 (the paper's headline macro-F1, single-label form)."""
    values = []
    for a in np.unique(truth).tolist():
        tp = float(np.sum(answered & (pred == a) & (truth == a)))
        n_pred = float(np.sum(answered & (pred == a)))
        n_true = float(np.sum(truth == a))
        p = tp / n_pred if n_pred else 0.0
        r = tp / n_true if n_true else 0.0
        values.append(2 * p * r / (p + r) if p + r else 0.0)
    return float(np.mean(values)) if values else 0.0
