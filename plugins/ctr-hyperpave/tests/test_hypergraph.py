"""The HyperPAVE hypergraph on a hand-made catalogue: exact node / edge / hyperedge counts per type."""

import datetime as dt

import numpy as np
import pyarrow as pa
import pytest

from ctr_hyperpave import hypergraph as hgm

DAY_MS = 86_400_000
T0 = int(dt.datetime(2026, 11, 1, tzinfo=dt.UTC).timestamp() * 1000)


def _items() -> pa.Table:
    return pa.table(
        {
            "item_id": ["i1", "i2", "i3", "i4"],
            "category": ["shirt", "shirt", "mug", "mug"],
            "title": ["Acme red shirt", "blue shirt", "red glass mug", "teal mug"],
        }
    )


def _attributes() -> pa.Table:
    rows = [
        ("i1", "colour", "red"),
        ("i1", "brand", "Acme"),
        ("i2", "colour", "blue"),
        ("i3", "colour", "red"),
        ("i3", "material", "glass"),
        ("i3", "material", "glass"),  # duplicate row: one edge
        ("zz", "colour", "red"),  # unknown item: ignored
    ]
    return pa.table({k: [r[n] for r in rows] for n, k in enumerate(["item_id", "attribute", "value"])})


def _interactions() -> pa.Table:
    rows = [  # user, item, day, click, conversion
        ("u1", "i1", 0, 1, 1),
        ("u1", "i2", 0, 1, 0),
        ("u1", "i3", 0, 1, 1),
        ("u1", "i4", 0, 0, 0),  # shown, not clicked: no co-view
        ("u2", "i1", 0, 1, 1),
        ("u2", "i4", 0, 1, 0),
        ("u2", "i2", 1, 1, 0),
        ("u2", "i4", 1, 1, 1),
        ("u2", "zz", 1, 1, 1),  # unknown item: ignored
    ]
    return pa.table(
        {
            "user_id": [r[0] for r in rows],
            "item_id": [r[1] for r in rows],
            "ts": pa.array([T0 + r[2] * DAY_MS + 3_600_000 for r in rows], pa.int64()).cast(
                pa.timestamp("ms", tz="UTC")
            ),
            "click": pa.array([r[3] for r in rows], pa.int8()),
            "conversion": pa.array([r[4] for r in rows], pa.int8()),
        }
    )


def _candidates() -> pa.Table:
    return pa.table({"attribute": ["colour", "colour"], "value": ["teal", "red"]})


@pytest.fixture(scope="module")
def graph() -> hgm.Hypergraph:
    # every co-click counts here (min_co_views=1), so the counts below can be worked out by hand
    return hgm.build_hypergraph(_items(), _attributes(), _interactions(), _candidates(), min_co_views=1)


def test_nodes_and_pairwise_edges(graph):
    assert graph.products == ["i1", "i2", "i3", "i4"]
    assert graph.categories == ["mug", "shirt"]
    # AV nodes: the catalogue's pairs plus the candidate "colour is teal" (no edge: zero-shot)
    assert graph.avs == [
        ("brand", "Acme"),
        ("colour", "blue"),
        ("colour", "red"),
        ("colour", "teal"),
        ("material", "glass"),
    ]
    assert graph.product_category.tolist() == [1, 1, 0, 0]
    edges = {(graph.products[p], hgm.av_text(*graph.avs[a])) for p, a in graph.product_av.T.tolist()}
    assert edges == {
        ("i1", "colour is red"),
        ("i1", "brand is Acme"),
        ("i2", "colour is blue"),
        ("i3", "colour is red"),
        ("i3", "material is glass"),
    }


def test_exact_counts_per_type(graph):
    # also_view: co-clicks per user and day: (u1,d0)={i1,i2,i3}, (u2,d0)={i1,i4}, (u2,d1)={i2,i4}
    #   partners i1:{i2,i3,i4} i2:{i1,i3,i4} i3:{i1,i2} i4:{i1,i2} -> 4 hyperedges, 4+4+3+3 members
    # also_buy: co-conversions per user: u1={i1,i3}, u2={i1,i4} -> only i1 has 2 partners: 1 x 3
    # product_aspect: 4 products + 5 AV memberships; CPA: 2 categories + 4 products + shirt{red,Acme,blue}
    #   + mug{red,glass} AV memberships
    assert graph.counts() == {
        "nodes_product": 4,
        "nodes_category": 2,
        "nodes_av": 5,
        "edges_product-in-category": 4,
        "edges_product-has-av": 5,
        "hyperedges_also_view": 4,
        "members_also_view": 14,
        "hyperedges_also_buy": 1,
        "members_also_buy": 3,
        "hyperedges_product_aspect": 4,
        "members_product_aspect": 9,
        "hyperedges_category_product_aspect": 2,
        "members_category_product_aspect": 11,
    }


def test_hyperedge_members(graph):
    def members(family: str) -> list[set[str]]:
        inc = graph.hyperedges[family]
        names = {
            0: graph.products,
            1: graph.categories,
            2: [hgm.av_text(a, v) for a, v in graph.avs],
        }
        out = [set() for _ in range(inc.n_edges)]
        for k, n, e in zip(inc.kind.tolist(), inc.node.tolist(), inc.edge.tolist(), strict=True):
            out[e].add(names[k][n])
        return out

    assert members("also_buy") == [{"i1", "i3", "i4"}]
    assert {"i1", "i2", "i3", "i4"} in members("also_view")
    assert members("product_aspect")[2] == {"i3", "colour is red", "material is glass"}
    assert members("product_aspect")[3] == {"i4"}  # a product without AVs still has its hyperedge
    assert members("category_product_aspect") == [
        {"mug", "i3", "i4", "colour is red", "material is glass"},
        {"shirt", "i1", "i2", "colour is red", "brand is Acme", "colour is blue"},
    ]


def test_networkx_star_expansion_agrees(graph):
    g = graph.to_networkx()
    assert hgm.graph_counts(g) == graph.counts()
    assert g.nodes[("av", "colour is teal")]["kind"] == "av"
    assert g.degree(("av", "colour is teal")) == 0  # the zero-shot candidate is isolated


def test_with_av_edges_rebuilds_aspect_families(graph):
    keep = graph.product_av[:, graph.product_av[0] != 2]  # drop i3's edges
    smaller = graph.with_av_edges(keep)
    counts = smaller.counts()
    assert counts["edges_product-has-av"] == 3
    assert counts["members_product_aspect"] == 4 + 3
    assert counts["members_category_product_aspect"] == 2 + 4 + 3  # mug lost red and glass
    assert counts["hyperedges_also_view"] == 4  # interaction families do not depend on AV edges
    assert graph.counts()["edges_product-has-av"] == 5  # the original is unchanged


def test_without_interactions_the_user_families_are_empty():
    graph = hgm.build_hypergraph(_items(), _attributes())
    assert graph.counts()["hyperedges_also_view"] == graph.counts()["hyperedges_also_buy"] == 0
    assert graph.counts()["nodes_av"] == 4


def test_interactions_missing_a_column_are_refused():
    with pytest.raises(ValueError, match=r"lack column\(s\) \['conversion'\]"):
        hgm.build_hypergraph(_items(), _attributes(), _interactions().drop_columns(["conversion"]))


def test_partner_lists_are_capped():
    groups = [np.arange(30)]
    inc = hgm.partner_hyperedges(groups, 30, max_partners=5)
    assert inc.n_edges == 30
    assert np.bincount(inc.edge).tolist() == [6] * 30


def test_neighbourhood_png(graph, tmp_path):
    sub = hgm.neighbourhood(graph)
    assert ("product", "i1") in sub  # most AV edges among the co-viewed products (ties: first)
    path = hgm.render_neighbourhood(graph, tmp_path / "n.png", title="t")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_also_view_needs_repeated_sessions_and_ranks_by_cosine():
    """A partner must share >= min_count sessions; a popular item shared with everyone ranks below
    a partner that is co-viewed mostly with this product (cosine, not raw count)."""
    popular, a, b = 0, 1, 2
    groups = (
        [np.array([a, b])] * 3 + [np.array([a, popular])] * 3 + [np.array([popular, k]) for k in range(3, 40)]
    )
    groups += [np.array([a, 5]), np.array([a, 6]), np.array([a, 6])]
    inc = hgm.partner_hyperedges(groups, 40, max_partners=2, min_count=2)
    first = inc.node[inc.edge == 0]
    # b (3 shared of its 3) and 6 (2 of 2) beat popular (3 shared, but of its 40): cosine, not counts;
    # item 5 (1 shared session) is no partner at all
    assert first[0] == a and list(first[1:]) == [b, 6]
    by_count = hgm.partner_hyperedges(groups, 40, max_partners=3, min_count=2)
    assert list(by_count.node[by_count.edge == 0]) == [a, b, 6, popular]


def test_sessions_split_a_users_day():
    rows = pa.table(
        {
            "user_id": ["u"] * 4,
            "item_id": ["i1", "i2", "i3", "i4"],
            "ts": pa.array(
                [T0, T0 + 60_000, T0 + 5 * 3_600_000, T0 + 5 * 3_600_000 + 60_000], pa.int64()
            ).cast(pa.timestamp("ms", tz="UTC")),
            "click": pa.array([1, 1, 1, 1], pa.int8()),
            "conversion": pa.array([0, 0, 0, 0], pa.int8()),
        }
    )
    view, _ = hgm.co_interaction_groups(rows, {"i1": 0, "i2": 1, "i3": 2, "i4": 3}, session_minutes=30)
    assert sorted(sorted(g.tolist()) for g in view) == [[0, 1], [2, 3]]


def test_neighbour_values_read_partners_known_avs_and_title_max_is_per_attribute(graph):
    """The neighbourhood term with `values` adds the partners' AV texts (their product_aspect
    convolution) and never the product's own; `own_title_max` is the best own-title similarity
    among each attribute's AV nodes."""
    from ctr_hyperpave import net

    rng = np.random.default_rng(0)
    n_nodes = sum(graph.n_nodes.values())
    x = rng.normal(size=(n_nodes, 16)).astype(np.float32)
    partners = net.partner_matrix(graph)
    assert partners.diagonal().sum() == 0
    titles_only = net.neighbour_text(graph, x, partners)
    with_values = net.neighbour_text(graph, x, partners, values=True)
    has_partners = np.asarray(partners.sum(axis=1)).ravel() > 0
    assert has_partners.any()
    assert not np.allclose(titles_only[has_partners], with_values[has_partners])
    assert np.allclose(with_values[~has_partners], 0.0)  # no partner: no neighbourhood
    # the product's own AVs do not enter its own neighbourhood: dropping them changes nothing
    p = int(np.flatnonzero(has_partners)[0])
    own = graph.product_av[0] == p
    without_own = graph.with_av_edges(graph.product_av[:, ~own])
    assert np.allclose(net.neighbour_text(without_own, x, partners, values=True)[p], with_values[p])
    best, column = net.own_title_max(graph, x)
    n = len(graph.products)
    avs = x[n_nodes - len(graph.avs) :]
    for k, attribute in enumerate(sorted({a for a, _ in graph.avs})):
        members = [i for i, (a, _) in enumerate(graph.avs) if a == attribute]
        assert (column[members] == k).all()
        assert np.allclose(best[:, k], (x[:n] @ avs[members].T).max(axis=1))


def _homophily_graph() -> tuple[hgm.Hypergraph, object]:
    """8 products: 0-5 category "a", 6-7 category "b". "line" is shared along the partner chain
    (0-3 L1, 4-5 L2), "tint" alternates along it (partners never agree), "kind" is one value per
    category (partners agree, but so would any two products of the category). Product 5 has no tint."""
    import scipy.sparse as sp

    avs = [("kind", "ka"), ("kind", "kb"), ("line", "L1"), ("line", "L2"), ("tint", "x"), ("tint", "y")]
    rows = [(p, 0) for p in range(6)] + [(6, 1), (7, 1)]  # kind
    rows += [(p, 2) for p in range(4)] + [(4, 3), (5, 3), (6, 2), (7, 2)]  # line
    rows += [(0, 4), (1, 5), (2, 4), (3, 5), (4, 4), (6, 4), (7, 5)]  # tint (5 has none)
    graph = hgm.Hypergraph(
        products=[f"i{p}" for p in range(8)],
        categories=["a", "b"],
        avs=avs,
        product_category=np.array([0] * 6 + [1] * 2, np.int64),
        product_av=np.array(rows, np.int64).T,
        hyperedges={},
    )
    chain = [(0, 1), (1, 2), (2, 3), (4, 5), (6, 7)]
    r, c = np.array(chain).T
    partners = sp.csr_matrix((np.ones(len(chain)), (r, c)), shape=(8, 8))
    return graph, partners.maximum(partners.T)


def test_attribute_homophily_is_partner_agreement_beyond_chance_within_category():
    """Per attribute, log(observed / chance) of partners sharing a value, chance from the value
    frequencies of the pair's category: 0 for an attribute partners never share or share only
    because the category has one value, > 0 for one they share."""
    from ctr_hyperpave import net

    graph, partners = _homophily_graph()
    names = ["kind", "line", "tint"]  # column order: sorted attribute names
    exact = dict(zip(names, net.attribute_homophily(graph, partners, prior_pairs=0.0), strict=True))
    assert exact["kind"] == pytest.approx(0.0)  # one value per category: chance agreement is 1
    assert exact["tint"] == 0.0  # partners always differ: below chance, clipped
    # line: the 5 pairs all agree; chance = category a (4 L1, 2 L2: 20/36) for 4 pairs, b (1 value) for 1
    chance = (4 * (16 + 4) / 36 + 1 * 1.0) / 5
    assert exact["line"] == pytest.approx(np.log(1.0 / chance), rel=1e-5)
    kappa = net.attribute_homophily(graph, partners, prior_pairs=0.0, kind="kappa")
    assert kappa[1] == pytest.approx(1.0) and kappa[2] == 0.0
    # pseudo-pairs at chance shrink a thin estimate toward 0, never past it
    shrunk = net.attribute_homophily(graph, partners, prior_pairs=5.0)
    assert 0.0 < shrunk[1] < exact["line"]
    # without partners nothing is known: every weight 0
    import scipy.sparse as sp

    assert not net.attribute_homophily(graph, sp.csr_matrix((8, 8))).any()
