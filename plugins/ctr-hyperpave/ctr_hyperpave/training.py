"""HyperPAVE training, validation and extraction (numpy / torch; imported only when the plugin runs).

See `ctr_hyperpave.extractor` for the method and `ctr_hyperpave.net` / `ctr_hyperpave.split` for the
network and the zero-shot split.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

if TYPE_CHECKING:  # pragma: no cover - typing only
    from ctr_dagster.contracts import FitContext

    from ctr_hyperpave.extractor import HyperpaveConfig
    from ctr_hyperpave.hypergraph import Hypergraph
    from ctr_hyperpave.split import ZeroShotSplit


@dataclass
class Fitted:
    state: dict[str, Any]  # model, fitted tables, AV nodes, thresholds, applicable attributes, device
    summary: dict[str, Any]  # JSON-able figures (validation metrics, steps, thresholds, seconds)
    split: ZeroShotSplit
    graph: Hypergraph  # the training hypergraph (what `HyperpaveExtractor.report` shows)


def fit_model(cfg: HyperpaveConfig, items: pa.Table, attributes: pa.Table, ctx: FitContext | None) -> Fitted:
    """Build the hypergraph, split it, train with early stopping on validation; see `HyperpaveExtractor`."""
    import torch
    from ctr_dagster.contracts import FitContext

    from ctr_hyperpave import net
    from ctr_hyperpave.split import slots_of, zero_shot_split

    ctx = ctx or FitContext()
    started = time.perf_counter()
    torch.manual_seed(ctx.seed)
    rng = np.random.default_rng(ctx.seed)
    interactions = ctx.inputs.get("interactions")
    candidates = ctx.inputs.get("candidates")
    hg = _hypergraph(cfg, items, attributes, interactions, candidates)
    graph_seconds = time.perf_counter() - started
    split = zero_shot_split(hg, cfg.valid_avs, cfg.min_av_edges, ctx.seed, cfg.valid_seen_share)
    no_value = negative_pairs(hg, ctx.inputs.get("negatives"))
    held_negative = rng.random(len(no_value[0])) < cfg.valid_negative_share
    train_no_value = (no_value[0][~held_negative], no_value[1][~held_negative])
    x_np = _features(hg, _title_map(items), cfg.feature_dim)
    x = torch.from_numpy(x_np).to(ctx.device)
    model = net.HyperPAVENet(
        x.shape[1],
        cfg.hidden,
        cfg.dropout,
        cfg.text_skip,
        cfg.score == "cosine",
        cfg.use_graph,
        cfg.neighbour_text,
        cfg.neighbour_init,
        cfg.gate,
    )
    if cfg.use_graph and cfg.neighbour_text and cfg.homophily != "none":
        # estimated on the training edges only (validation and held-out values stay unread)
        weight = net.attribute_homophily(hg.with_av_edges(split.train_edges), kind=cfg.homophily)
        model.homophily = torch.from_numpy(weight)
    model = model.to(ctx.device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    train_av = split.train_av(len(hg.avs))
    sampler = NegativeSampler(hg, split.train_edges, train_av)
    cache: dict = {}  # also_view / also_buy propagation, computed once
    text_only = not cfg.use_graph

    def graph_with(edges: np.ndarray) -> Any:
        """The graph tensors with these product-value edges (the rest of the config as fitted)."""
        return net.graph_tensors(
            hg.with_av_edges(edges), x_np, ctx.device, cache, text_only, cfg.fusion, cfg.neighbour_values
        )

    valid_graph = graph_with(split.train_edges)
    valid_slots = slots_of(
        np.concatenate([split.valid_edges, split.valid_seen_edges], axis=1),
        hg,
        no_value=(no_value[0][held_negative], no_value[1][held_negative]),
    )
    zero_shot_slot = np.arange(len(valid_slots.truth)) < split.valid_edges.shape[1]

    def validation() -> dict[str, float]:
        """The model as it stands, on the validation slots (during training and over the grid)."""
        return validate(
            model,
            x,
            valid_graph,
            split.train_edges,
            hg,
            valid_slots,
            zero_shot_slot,
            cfg.decision,
            cfg.silent_threshold,
        )

    step = 0
    best: dict[str, Any] = {"f1": -1.0, "step": 0, "threshold": 0.5, "state": None}
    stale = 0
    loss_value = float("nan")
    n_edges = split.train_edges.shape[1]
    n_sup = max(1, int(round(cfg.supervision_share * n_edges))) if n_edges else 0
    for step in range(1, cfg.steps + 1):
        if not n_sup:
            break
        model.train()
        order = rng.permutation(n_edges)
        sup = split.train_edges[:, order[:n_sup]]
        msg = split.train_edges[:, order[n_sup:]]
        if cfg.isolate_share > 0:  # these AVs pass no message this step: the zero-shot condition
            isolated = rng.random(len(hg.avs)) < cfg.isolate_share
            msg = msg[:, ~isolated[msg[1]]]
        if cfg.isolate_product_share > 0:  # these products show no value: a new product's condition
            bare = rng.random(len(hg.products)) < cfg.isolate_product_share
            msg = msg[:, ~bare[msg[0]]]
        g = graph_with(msg)
        pos_p, pos_a = sup[0], sup[1]
        neg_p, neg_a, neg_w = sampler.sample(pos_p, pos_a, cfg.neg_ratio, rng)
        if len(train_no_value[0]):  # a product without the attribute: none of its values fits
            pick = rng.integers(len(train_no_value[0]), size=min(len(train_no_value[0]), n_sup))
            abs_p, abs_a = sampler.absent(train_no_value[0][pick], train_no_value[1][pick], rng)
            neg_p, neg_a = np.concatenate([neg_p, abs_p]), np.concatenate([neg_a, abs_a])
            neg_w = np.concatenate([neg_w, np.ones(len(abs_p), np.float32)])
        product = torch.from_numpy(np.concatenate([pos_p, neg_p])).to(ctx.device)
        av = torch.from_numpy(np.concatenate([pos_a, neg_a])).to(ctx.device)
        target = torch.cat([torch.ones(len(pos_p)), torch.zeros(len(neg_p))]).to(ctx.device)
        weight = torch.cat([torch.ones(len(pos_p)), torch.from_numpy(neg_w)]).to(ctx.device)
        h = model(x, g)
        logits = model.logits(h, product, av)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, target, weight=weight)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"hyperpave: loss is {loss.item()} at step {step}")
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        loss_value = float(loss.item())
        if len(valid_slots.truth) and (step % cfg.eval_every == 0 or step == cfg.steps):
            metrics = validation()
            if metrics["select"] > best.get("select", -1.0):
                best = {
                    **metrics,
                    "step": step,
                    "state": {k: v.clone() for k, v in model.state_dict().items()},
                }
                stale = 0
            else:
                stale += 1
                if stale >= cfg.patience:
                    break
    if best["state"] is not None:
        model.load_state_dict(best["state"])
    grid_trace: list[tuple[float, float]] = []  # (weight, validation select) per grid point
    informative = (
        model.neighbour_text
        and bool(valid_graph.neighbour_text.abs().sum() > 0)  # some product has partners
        and (not len(model.homophily) or bool(model.homophily.any()))
    )
    if cfg.neighbour_grid and informative and len(valid_slots.truth):
        # the neighbourhood weight is chosen on validation, like the thresholds: the link loss
        # barely moves it before early stopping, and it trades title-silent answers for precision
        trained = float(model.neighbour_scale.detach())
        for value in sorted({trained, *cfg.neighbour_grid}):
            with torch.no_grad():
                model.neighbour_scale.fill_(value)
            metrics = validation()
            grid_trace.append((round(value, 4), round(float(metrics["select"]), 4)))
            if metrics["select"] > best.get("select", -1.0) + 1e-9:
                best = {**best, **metrics, "neighbour_scale": value}
        with torch.no_grad():
            model.neighbour_scale.fill_(best.get("neighbour_scale", trained))
    model.eval()
    state = {
        "model": model,
        "items": items,
        "attributes": attributes,
        "interactions": interactions,
        "candidates": candidates,
        "avs": hg.avs,
        "threshold": float(best["threshold"]),
        "threshold_isolated": float(best.get("threshold_isolated", best["threshold"])),
        "threshold_silent": float(best.get("threshold_silent", best["threshold"])),
        "threshold_isolated_silent": float(
            best.get("threshold_isolated_silent", best.get("threshold_isolated", best["threshold"]))
        ),
        "silent_cut": best.get("silent_cut"),
        "applicable": _applicable_attributes(hg),
        "no_value": {(hg.products[p], a) for p, a in zip(*no_value, strict=True)},
        "device": ctx.device,
    }
    summary = {
        "train_seconds": round(time.perf_counter() - started, 3),
        "graph_build_seconds": round(graph_seconds, 3),
        "steps": step if n_sup else 0,
        "best_step": best["step"],
        "final_loss": round(loss_value, 5),
        # None = "never answer" (+inf: validation found no cut worth answering at)
        "threshold": _json_number(best["threshold"]),
        "threshold_isolated": _json_number(best.get("threshold_isolated", best["threshold"])),
        "threshold_silent": _json_number(best.get("threshold_silent", best["threshold"])),
        "threshold_isolated_silent": _json_number(best.get("threshold_isolated_silent", best["threshold"])),
        "silent_cut": None if best.get("silent_cut") is None else round(float(best["silent_cut"]), 5),
        "valid_avs": [" is ".join(hg.avs[a]) for a in split.valid_av.tolist()],
        "valid_slots": int(len(valid_slots.truth)),
        "valid_no_value_slots": int(np.sum(valid_slots.truth < 0)),
        "decision": cfg.decision,
        "neighbour_scale": round(float(model.neighbour_scale.detach()), 4) if cfg.use_graph else None,
        "neighbour_grid": grid_trace,
        "zero_shot_candidates": int(len(split.unseen_av)),
        **{
            f"valid_{k}": round(float(v), 4)
            for k, v in best.items()
            if k in ("f1", "f1_zero_shot", "f1_seen", "precision", "recall", "macro_f1", "map", "abstained")
        },
    }
    ctx.log(f"{'hyperpave' if cfg.use_graph else 'hyperpave_text'}: {summary}")
    return Fitted(state, summary, split, hg)


def validate(
    model,
    x,
    graph,
    graph_edges: np.ndarray,
    hg: Hypergraph,
    slots,
    zero_shot_slot: np.ndarray,
    decision: str = "tuned",
    silent_group: str = "off",
) -> dict[str, float]:
    """Validation figures of the current model. Slots with truth -1 have no value (known negatives):
    answering one is a wrong answer, leaving it empty is right, so the thresholds learn to abstain.
    `decision`: "tuned" chooses the two thresholds for F1 here; "logit" keeps the code's logit > 0.
    `silent_group` (with the gate): answers on slots whose own title states no value of the
    attribute (best title similarity below the gate's learned midpoint) get their own cut
    ("pooled": one; "split": one for edge-less AVs and one for connected ones; "off": none)."""
    import torch

    from ctr_hyperpave.split import best_thresholds, candidates_by_attribute, group_thresholds, macro_f1

    model.eval()
    with torch.no_grad():
        h = model(x, graph)
    by_attribute = candidates_by_attribute(hg)
    top_av = np.zeros(len(slots.truth), dtype=np.int64)
    top_score = np.zeros(len(slots.truth), dtype=np.float64)
    reciprocal = np.zeros(len(slots.truth), dtype=np.float64)
    attrs = np.array(slots.attribute)
    for a, cands in by_attribute.items():
        rows = np.flatnonzero(attrs == a)
        if not len(rows):
            continue
        logits = (
            model.score_matrix(h, torch.from_numpy(slots.product[rows]), torch.from_numpy(cands))
            .detach()
            .cpu()
        )
        prob = torch.sigmoid(logits).detach().numpy().astype(np.float64)
        best = prob.argmax(axis=1)
        top_av[rows] = cands[best]
        top_score[rows] = prob[np.arange(len(rows)), best]
        truth_col = np.searchsorted(cands, np.maximum(slots.truth[rows], 0))
        truth_prob = prob[np.arange(len(rows)), np.minimum(truth_col, len(cands) - 1)]
        reciprocal[rows] = 1.0 / (1.0 + (prob > truth_prob[:, None]).sum(axis=1))
    valued = slots.truth >= 0
    correct = top_av == slots.truth
    isolated_av = np.bincount(graph_edges[1], minlength=len(hg.avs)) == 0
    isolated = isolated_av[top_av]
    n_truth = int(valued.sum())
    t_conn, t_iso, f1, precision, recall = best_thresholds(top_score, correct, isolated, n_truth)
    silent = np.zeros(len(top_av), dtype=bool)
    t_silent, t_iso_silent = t_conn, t_iso
    cut = silent_cut(model) if decision == "tuned" and silent_group in ("pooled", "split") else None
    if cut is not None:  # answers where the own title states no value of the attribute: own cuts
        stated = h["title_max"][torch.from_numpy(slots.product), h["av_attribute"][torch.from_numpy(top_av)]]
        silent = stated.detach().cpu().numpy() < cut
        if silent_group == "pooled":  # one cut for every title-silent answer, edge-less AV or not
            group = np.where(silent, 2, isolated.astype(np.int64))
        else:
            group = isolated.astype(np.int64) + 2 * silent
        start = np.array([t_conn, t_iso, t_conn, t_iso])
        cuts, f1, precision, recall = group_thresholds(top_score, correct, group, 4, n_truth, start)
        t_conn, t_iso, t_silent, t_iso_silent = (float(c) for c in cuts)
        if silent_group == "pooled":
            t_iso_silent = t_silent
    if decision == "logit":  # the code's rule: answer when the logit is > 0
        t_conn = t_iso = 0.5
        answered = top_score >= 0.5
        tp = float(np.sum(correct & answered))
        precision = tp / max(float(answered.sum()), 1.0)
        recall = tp / max(float(n_truth), 1.0)
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    stated_cut = np.where(isolated, t_iso, t_conn)
    answered = top_score >= np.where(silent, np.where(isolated, t_iso_silent, t_silent), stated_cut)
    parts = {}
    # no-value slots count against precision in the seen part (their products are in the graph)
    for name, mask in (("zero_shot", zero_shot_slot), ("seen", ~zero_shot_slot)):
        if (mask & valued).any():
            tp = float(np.sum(correct & answered & mask))
            p_ = tp / max(float(np.sum(answered & mask)), 1.0)
            r_ = tp / float((mask & valued).sum())
            parts[f"f1_{name}"] = 2 * p_ * r_ / (p_ + r_) if p_ + r_ else 0.0
    values = list(parts.values())
    return {
        **parts,
        # selection: harmonic mean of the seen and zero-shot F1, so neither can be given up
        # (e.g. "always answer an isolated AV" wins the zero-shot slots and loses all others)
        "select": len(values) / sum(1.0 / max(v, 1e-9) for v in values) if values else f1,
        "threshold": t_conn,
        "threshold_isolated": t_iso,
        "threshold_silent": t_silent,
        "threshold_isolated_silent": t_iso_silent,
        "silent_cut": cut,
        "f1": f1,
        "precision": precision,
        "recall": recall,
        "macro_f1": macro_f1(top_av[valued], slots.truth[valued], answered[valued]),
        "map": float(reciprocal[valued].mean()) if n_truth else 0.0,  # AP of one true label = 1 / rank
        "abstained": float(1.0 - answered[~valued].mean()) if (~valued).any() else float("nan"),
    }


def extract_rows(cfg: HyperpaveConfig, st: dict[str, Any], items: pa.Table) -> pa.Table:
    """Top value per applicable (item, attribute) above its threshold (all above it with multi_label)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import torch

    from ctr_hyperpave import net

    known = st["items"]
    new = items.filter(pc.invert(pc.is_in(items.column("item_id"), value_set=known.column("item_id"))))
    graph_items = known.select(["item_id", "category", "title"])
    if new.num_rows:
        graph_items = pa.concat_tables(
            [graph_items, new.select(["item_id", "category", "title"]).cast(graph_items.schema)]
        )
    hg = _hypergraph(cfg, graph_items, st["attributes"], st["interactions"], st["candidates"])
    if hg.avs != st["avs"]:  # same attributes + candidates -> same AV nodes; guard the invariant
        raise RuntimeError("hyperpave: AV nodes changed between fit and extract")
    x_np = _features(hg, _title_map(graph_items), cfg.feature_dim)
    with torch.no_grad():
        h = st["model"](
            torch.from_numpy(x_np).to(st["device"]),
            net.graph_tensors(
                hg,
                x_np,
                st["device"],
                text_only=not cfg.use_graph,
                fusion=cfg.fusion,
                neighbour_values=cfg.neighbour_values,
            ),
        )
    isolated_av = np.bincount(hg.product_av[1], minlength=len(hg.avs)) == 0
    position = {p: i for i, p in enumerate(hg.products)}
    want = [position[i] for i in items.column("item_id").to_pylist()]
    categories = [hg.categories[c] for c in hg.product_category[want].tolist()]
    all_attributes = sorted({a for a, _ in hg.avs})
    rows: list[tuple[int, str, str, float]] = []
    for a in all_attributes:
        cands = np.array([k for k, (attr, _) in enumerate(hg.avs) if attr == a], dtype=np.int64)
        members = [
            (n, p)
            for n, (p, c) in enumerate(zip(want, categories, strict=True))
            if a in st["applicable"].get(c, all_attributes) and (hg.products[p], a) not in st["no_value"]
        ]
        if not members or not len(cands):
            continue
        order = np.array([n for n, _ in members])
        prods = torch.tensor([p for _, p in members])
        logits = st["model"].score_matrix(h, prods, torch.from_numpy(cands))
        prob = torch.sigmoid(logits).detach().cpu().numpy()
        # an AV node without catalogue edges (a zero-shot value) has its own threshold, and so does
        # an answer where the own title states no value of the attribute (silent_cut, validation)
        cut = np.where(isolated_av[cands], st["threshold_isolated"], st["threshold"])[None, :]
        if st.get("silent_cut") is not None:
            stated = h["title_max"][prods][:, h["av_attribute"][torch.from_numpy(cands)][0]].cpu().numpy()
            silent_cut_row = np.where(
                isolated_av[cands],
                st["threshold_isolated_silent"],
                st["threshold_silent"],
            )[None, :]
            cut = np.where((stated < st["silent_cut"])[:, None], silent_cut_row, cut)
        cut = np.broadcast_to(cut, (len(prods), len(cands)))
        if cfg.multi_label:
            hit_r, hit_c = np.nonzero(prob >= cut)
        else:
            hit_c = prob.argmax(axis=1)
            rows_ = np.arange(len(prods))
            hit_r = np.flatnonzero(prob[rows_, hit_c] >= cut[rows_, hit_c])
            hit_c = hit_c[hit_r]
        for r, c in zip(hit_r.tolist(), hit_c.tolist(), strict=True):
            rows.append((int(order[r]), a, hg.avs[cands[c]][1], float(prob[r, c])))
    rows.sort(key=lambda r: (r[0], r[1], -r[3]))
    ids = items.column("item_id").to_pylist()
    return pa.table(
        {
            "item_id": pa.array([ids[r[0]] for r in rows], pa.string()),
            "attribute": pa.array([r[1] for r in rows], pa.string()),
            "value": pa.array([r[2] for r in rows], pa.string()),
            "score": pa.array([min(max(r[3], 0.0), 1.0) for r in rows], pa.float32()),
        }
    )


def silent_cut(model) -> float | None:
    """The own-title similarity below which a slot counts as title-silent: the gate's learned
    midpoint (None without the gate: no such split)."""
    if not getattr(model, "gate", False):
        return None
    return float(model.gate_bias.detach().cpu())


def _json_number(x: float) -> float | None:
    return round(float(x), 5) if np.isfinite(x) else None


def _title_map(items: pa.Table) -> dict[str, str]:
    return dict(zip(items.column("item_id").to_pylist(), items.column("title").to_pylist(), strict=True))


def _hypergraph(
    cfg: HyperpaveConfig,
    items: pa.Table,
    attributes: pa.Table,
    interactions: pa.Table | None,
    candidates: pa.Table | None,
) -> Hypergraph:
    """The hypergraph with the config's construction settings: fit and extract must build it alike."""
    from ctr_hyperpave.hypergraph import build_hypergraph

    return build_hypergraph(
        items,
        attributes,
        interactions,
        candidates,
        max_partners=cfg.max_partners,
        session_minutes=cfg.session_minutes,
        min_co_views=cfg.min_co_views,
    )


def _features(hg: Hypergraph, title_of: dict[str, str], dim: int) -> np.ndarray:
    """Hashed text of every node, in the global order products | categories | AVs."""
    from ctr_hyperpave.features import hashed_text
    from ctr_hyperpave.hypergraph import av_text

    texts = [title_of[p] for p in hg.products] + list(hg.categories) + [av_text(a, v) for a, v in hg.avs]
    return hashed_text(texts, dim)


def negative_pairs(hg: Hypergraph, negatives: pa.Table | None) -> tuple[np.ndarray, np.ndarray]:
    """(product indices, attributes) of the known no-value pairs of products in the graph whose
    attribute has candidate values and no catalogue value for that product (a value wins)."""
    if negatives is None or not negatives.num_rows:
        return np.zeros(0, np.int64), np.zeros(0, object)
    position = {p: i for i, p in enumerate(hg.products)}
    attributes = {a for a, _ in hg.avs}
    has = {(int(p), hg.avs[a][0]) for p, a in hg.product_av.T.tolist()}
    pairs = sorted(
        {
            (position[i], a)
            for i, a in zip(
                negatives.column("item_id").to_pylist(),
                negatives.column("attribute").to_pylist(),
                strict=True,
            )
            if i in position and a in attributes and (position[i], a) not in has
        }
    )
    return np.array([p for p, _ in pairs], np.int64), np.array([a for _, a in pairs], object)


def _applicable_attributes(hg: Hypergraph) -> dict[str, set[str]]:
    """Attributes each category uses in the catalogue (a held-out value still has a known attribute)."""
    out: dict[str, set[str]] = {c: set() for c in hg.categories}
    for p, a in hg.product_av.T.tolist():
        out[hg.categories[hg.product_category[p]]].add(hg.avs[a][0])
    return out


class NegativeSampler:
    """Negatives among the training AVs: one of the positive's attribute, the rest uniform; pairs
    that are known catalogue edges get weight 0 (never a false negative)."""

    def __init__(self, hg: Hypergraph, train_edges: np.ndarray, train_av: np.ndarray):
        self.n_av = len(hg.avs)
        self.train_av = train_av
        attribute = np.array([a for a, _ in hg.avs])
        self.same = {a: train_av[attribute[train_av] == a] for a in set(attribute.tolist())}
        self.attribute = attribute
        self.known = set((hg.product_av[0] * self.n_av + hg.product_av[1]).tolist())
        del train_edges

    def sample(
        self, product: np.ndarray, av: np.ndarray, ratio: int, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        neg_p, neg_a = [], []
        for k in range(ratio):
            if k == 0:
                pick = np.array(
                    [
                        pool[rng.integers(len(pool))] if len(pool := self.same[self.attribute[a]]) else a
                        for a in av.tolist()
                    ],
                    dtype=np.int64,
                )
            else:
                pick = self.train_av[rng.integers(len(self.train_av), size=len(av))]
            neg_p.append(product)
            neg_a.append(pick)
        p, a = np.concatenate(neg_p), np.concatenate(neg_a)
        return p, a, self.weights(p, a)

    def absent(
        self, product: np.ndarray, attributes: list[str] | np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        """One training AV of each pair's attribute, for products known not to have the attribute."""
        pick = [
            pool[rng.integers(len(pool))] if len(pool := self.same.get(a, ())) else -1 for a in attributes
        ]
        keep = np.array(pick, np.int64) >= 0
        return product[keep], np.array(pick, np.int64)[keep]

    def weights(self, p: np.ndarray, a: np.ndarray) -> np.ndarray:
        keys = (p * self.n_av + a).tolist()
        return np.array([0.0 if key in self.known else 1.0 for key in keys], dtype=np.float32)
