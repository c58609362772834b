"""HyperPAVE's zero-shot split: held-out AV nodes never reach training, and unseen values are found."""

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from ctr_dagster import testing
from ctr_dagster.contracts import FitContext

from ctr_hyperpave import net
from ctr_hyperpave.extractor import HyperpaveConfig, HyperpaveExtractor
from ctr_hyperpave.hypergraph import build_hypergraph
from ctr_hyperpave.split import best_thresholds, zero_shot_split
from ctr_hyperpave.training import NegativeSampler

N_ITEMS = 160


@pytest.fixture(scope="module")
def catalogue():
    """The synthetic world's catalogue: held-out categories use zero-shot values that no catalogue
    row has (they exist only as taxonomy candidates), stated in some titles; `full` is the truth."""
    items = testing.make_items_table(N_ITEMS, seed=1)
    full = testing.make_item_attributes_table(N_ITEMS, seed=1, complete=True)
    known = testing.make_item_attributes_table(N_ITEMS, seed=1)
    inputs = testing.make_extractor_inputs({"interactions", "candidates"}, N_ITEMS, seed=1)
    return items, full, known, inputs


def _pairs(table: pa.Table) -> set[tuple[str, str]]:
    return set(zip(table["attribute"].to_pylist(), table["value"].to_pylist(), strict=True))


def test_split_holds_out_whole_av_nodes(catalogue):
    items, _, known, inputs = catalogue
    hg = build_hypergraph(items, known, inputs["interactions"], inputs["candidates"])
    split = zero_shot_split(hg, n_valid=3, min_edges=2, seed=0, seen_share=0.1)
    uncatalogued = {hg.avs.index(p) for p in _pairs(inputs["candidates"]) - _pairs(known)}
    zero_shot = testing.make_oracle_item_attributes_table(N_ITEMS, seed=1).filter(pc.field("zero_shot"))
    assert {hg.avs.index(p) for p in _pairs(zero_shot)} <= uncatalogued  # the world's zero-shot values
    assert sorted(split.unseen_av.tolist()) == sorted(uncatalogued)
    assert len(split.valid_av) == 3 and not set(split.valid_av.tolist()) & uncatalogued
    held = set(split.valid_av.tolist()) | uncatalogued
    # nothing of a held-out AV is left in training: no edge, hence no hyperedge membership
    assert not set(split.train_edges[1].tolist()) & held
    assert set(split.valid_edges[1].tolist()) == set(split.valid_av.tolist())
    train_graph = hg.with_av_edges(split.train_edges)
    for family in ("product_aspect", "category_product_aspect"):
        inc = train_graph.hyperedges[family]
        assert not set(inc.node[inc.kind == 2].tolist()) & held
    # the three parts partition the catalogue's edges; seen-value validation AVs stay connected
    total = split.train_edges.shape[1] + split.valid_edges.shape[1] + split.valid_seen_edges.shape[1]
    assert total == hg.product_av.shape[1]
    assert set(split.valid_seen_edges[1].tolist()) <= set(split.train_edges[1].tolist())
    attribute = np.array([a for a, _ in hg.avs])
    for a in set(attribute.tolist()):  # every attribute keeps >= 2 training AVs
        assert len(set(split.train_edges[1].tolist()) & set(np.flatnonzero(attribute == a).tolist())) >= 2


def test_negatives_come_from_training_avs_only(catalogue):
    items, _, known, inputs = catalogue
    hg = build_hypergraph(items, known, inputs["interactions"], inputs["candidates"])
    split = zero_shot_split(hg, n_valid=3, min_edges=2, seed=0)
    train_av = split.train_av(len(hg.avs))
    sampler = NegativeSampler(hg, split.train_edges, train_av)
    rng = np.random.default_rng(0)
    p, a, w = sampler.sample(split.train_edges[0], split.train_edges[1], 4, rng)
    assert set(a.tolist()) <= set(train_av.tolist())
    known_pairs = set(zip(hg.product_av[0].tolist(), hg.product_av[1].tolist(), strict=True))
    is_known = np.array([(x, y) in known_pairs for x, y in zip(p.tolist(), a.tolist(), strict=True)])
    assert (w[is_known] == 0).all() and (w[~is_known] == 1).all()


def test_training_supervision_never_touches_held_out_avs(catalogue, monkeypatch):
    items, _, known, inputs = catalogue
    supervised: list[np.ndarray] = []
    original = net.HyperPAVENet.logits

    def spy(self, h, product, av):  # `logits` scores exactly the supervision pairs of a step
        supervised.append(av.numpy().copy())
        return original(self, h, product, av)

    monkeypatch.setattr(net.HyperPAVENet, "logits", spy)
    extractor = HyperpaveExtractor(HyperpaveConfig(steps=20, eval_every=10, patience=100))
    extractor.fit(items, known, FitContext(seed=0, inputs=inputs, log=lambda _m: None))
    assert len(supervised) == 20
    held = set(extractor.split.valid_av.tolist()) | set(extractor.split.unseen_av.tolist())
    assert held and not set(np.concatenate(supervised).tolist()) & held


def test_unseen_values_are_extracted(catalogue):
    """The world's most title-stated zero-shot value has no catalogue edge at all, yet most items
    whose title states it get it, and few others do (text is HyperPAVE's only view of an item)."""
    items, _, known, inputs = catalogue
    oracle = testing.make_oracle_item_attributes_table(N_ITEMS, seed=1)
    stated = oracle.filter(pc.field("zero_shot") & pc.field("in_title"))
    attribute, value = max(_pairs(stated), key=lambda p: (len(_items_with(stated, p)), p))
    assert (attribute, value) not in _pairs(known)
    truth = _items_with(oracle, (attribute, value))
    in_title = _items_with(stated, (attribute, value))
    assert len(in_title) >= 6  # enough items to speak of "most" (the world hides some line values)
    extractor = HyperpaveExtractor(HyperpaveConfig(steps=60, eval_every=10))
    out = extractor.fit(items, known, FitContext(seed=0, inputs=inputs, log=lambda _m: None)).extract(items)
    found = _items_with(out, (attribute, value))
    assert len(found & in_title) >= 0.5 * len(in_title)
    assert len(found - truth) <= 0.2 * max(len(found), 1)
    unseen = len(_pairs(inputs["candidates"]) - _pairs(known))
    assert extractor.summary["zero_shot_candidates"] == unseen and extractor.summary["best_step"] > 0


def _items_with(table: pa.Table, pair: tuple[str, str]) -> set[str]:
    rows = table.filter((pc.field("attribute") == pair[0]) & (pc.field("value") == pair[1]))
    return set(rows["item_id"].to_pylist())


def test_new_items_are_scored_inductively(catalogue):
    items, _, known, inputs = catalogue
    extractor = HyperpaveExtractor(HyperpaveConfig(steps=30, eval_every=10))
    extractor.fit(items.slice(0, 120), known, FitContext(seed=0, inputs=inputs, log=lambda _m: None))
    new = items.slice(120)
    out = extractor.extract(new)
    assert set(out["item_id"].to_pylist()) <= set(new["item_id"].to_pylist())
    assert out.num_rows > 0


def test_two_thresholds_maximize_f1():
    score = np.array([0.9, 0.8, 0.7, 0.6, 0.3, 0.2])
    correct = np.array([True, True, False, True, True, False])
    isolated = np.array([False, False, False, True, True, True])
    t_conn, t_iso, f1, precision, recall = best_thresholds(score, correct, isolated, n_truth=6)
    # best: answer the two right connected ones (cut above 0.7) and isolated down to 0.3
    assert (t_conn, t_iso) == (0.8, 0.3)
    assert (precision, recall) == (1.0, 4 / 6) and f1 == pytest.approx(0.8)


def test_no_validation_avs_still_trains(catalogue):
    items, _, known, inputs = catalogue
    extractor = HyperpaveExtractor(HyperpaveConfig(steps=5, valid_avs=0, valid_seen_share=0.0))
    extractor.fit(items, known, FitContext(seed=0, inputs=inputs, log=lambda _m: None))
    assert extractor.summary["steps"] == 5 and extractor.summary["threshold"] == 0.5
    assert isinstance(extractor.extract(items.slice(0, 3)), pa.Table)


def test_group_thresholds_give_each_group_its_own_cut():
    """Title-silent answers are scored on another scale: their own cut lets the right confident
    ones through without admitting the wrong ones of the same score elsewhere."""
    from ctr_hyperpave.split import group_thresholds

    score = np.array([0.9, 0.8, 0.6, 0.5, 0.4, 0.35, 0.3])
    correct = np.array([True, True, False, False, True, True, False])
    group = np.array([0, 0, 0, 0, 2, 2, 2])  # 2: silent (0 connected, 1 / 3 isolated: none here)
    cuts, f1, precision, recall = group_thresholds(score, correct, group, 4, n_truth=5)
    assert cuts[0] == 0.8 and cuts[2] == 0.35  # each group stops before its first wrong answer
    assert np.isinf(cuts[1]) and np.isinf(cuts[3])  # empty groups answer nothing
    assert (precision, recall) == (1.0, 4 / 5) and f1 == pytest.approx(8 / 9)
    # one shared cut would have to admit the wrong 0.6 / 0.5 to reach the silent 0.4 / 0.35
    t_conn, _, shared_f1, _, _ = best_thresholds(score, correct, np.zeros(7, bool), n_truth=5)
    assert shared_f1 < f1


def test_homophily_reads_training_edges_only_and_validation_picks_the_neighbour_weight(
    catalogue, monkeypatch
):
    """The per-attribute neighbourhood weights are estimated on the training edges (no validation
    or held-out edge is read), and the neighbourhood weight kept is the grid point with the best
    validation criterion."""
    items, _, known, inputs = catalogue
    read: list[np.ndarray] = []
    original = net.attribute_homophily

    def spy(hg, *args, **kwargs):
        read.append(hg.product_av.copy())
        return original(hg, *args, **kwargs)

    monkeypatch.setattr(net, "attribute_homophily", spy)
    extractor = HyperpaveExtractor(HyperpaveConfig(steps=20, eval_every=10))
    extractor.fit(items, known, FitContext(seed=0, inputs=inputs, log=lambda _m: None))
    assert len(read) == 1
    held = np.concatenate([extractor.split.valid_edges, extractor.split.valid_seen_edges], axis=1)
    assert held.shape[1] > 0
    assert not {tuple(e) for e in held.T.tolist()} & {tuple(e) for e in read[0].T.tolist()}
    trace = extractor.summary["neighbour_grid"]
    assert len(trace) >= len(HyperpaveConfig().neighbour_grid)  # this world has co-views and lines
    assert dict(trace)[extractor.summary["neighbour_scale"]] == max(select for _, select in trace)
