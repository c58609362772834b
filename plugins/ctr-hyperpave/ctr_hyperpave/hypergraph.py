"""The heterogeneous product / category / attribute-value hypergraph HyperPAVE works on.

Node types and relations follow HyperPAVE (Gong et al., WWW'24, arXiv 2402.08802; the released code
gjiaying/HyperPAVE, `code/main.py` and `code/Hypergraph.py`):

* nodes: ``product`` (one per item), ``category`` (one per category name), ``av`` (one per
  attribute-value pair, text "attr is value"; taxonomy values without any catalogue row are kept as
  isolated nodes: they are the zero-shot candidates). No separate attribute nodes (the paper has none).
* pairwise edges: (product, in, category) and (product, has, av) (reverses are implied).
* hyperedge families:
  - ``also_view``: one hyperedge per product whose co-viewed list holds >= 2 other catalogue items,
    containing the product and that list. The synthetic world has no "also viewed" lists, so we
    derive them from the interaction logs: items clicked by the same user in the same session
    (`SESSION_MINUTES`), kept when co-clicked in >= `MIN_CO_VIEWS` sessions, ranked by cosine.
  - ``also_buy``: the same from conversions, grouped by user over the whole period (purchases are
    ~10x rarer than clicks; a per-day grouping leaves almost no co-purchases).
  - ``product_aspect``: one per product: the product and its AV nodes (every product has one, as in
    the released `PAfusion`, even when it has no AV yet).
  - ``category_product_aspect``: one per category: the category, its products and their AV nodes.

`Hypergraph` keeps everything as numpy index arrays (what a torch model needs, built in
milliseconds on 2,000 items); `to_networkx()` gives the star expansion (one node per hyperedge,
joined to its members) used for the counts and the neighbourhood picture the extractor reports
(`HyperpaveExtractor.report`, shown by the engine's attribute stage).
`with_av_edges` rebuilds the AV-dependent families for another set of product-AV edges (a model's
message-passing subset). Heavy imports (networkx, matplotlib) stay inside the functions.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover - typing only
    import networkx as nx
    import pyarrow as pa

NODE_TYPES: tuple[str, ...] = ("product", "category", "av")
EDGE_TYPES: tuple[str, ...] = ("product-in-category", "product-has-av")
FAMILIES: tuple[str, ...] = ("also_view", "also_buy", "product_aspect", "category_product_aspect")
INTERACTION_COLUMNS: tuple[str, ...] = ("user_id", "item_id", "ts", "click", "conversion")
#: Longest co-view / co-buy list kept per product (most frequent partners first), like the bounded
#: "also viewed" lists of the Amazon metadata the paper uses.
MAX_PARTNERS = 20
#: A user's clicks within one window of this many minutes are one session (one also_view group).
SESSION_MINUTES = 30
#: Shared sessions a co-viewed product needs to be an also_view partner (co-purchases need 1).
MIN_CO_VIEWS = 1
_KIND = {name: k for k, name in enumerate(NODE_TYPES)}


def av_text(attribute: str, value: str) -> str:
    """The text of an AV node, as in the paper: "attr is value"."""
    return f"{attribute} is {value}"


@dataclass(frozen=True)
class Incidence:
    """Members of one hyperedge family: member k is node `node[k]` of type `NODE_TYPES[kind[k]]`,
    in hyperedge `edge[k]` (0 .. n_edges-1)."""

    kind: np.ndarray  # int8
    node: np.ndarray  # int64, index within its node type
    edge: np.ndarray  # int64
    n_edges: int
    #: per member, how strongly it belongs to its hyperedge (partner families: the cosine association
    #: with the hyperedge's product, which has weight 1); None = all 1
    weight: np.ndarray | None = None

    @staticmethod
    def empty() -> Incidence:
        return Incidence(np.zeros(0, np.int8), np.zeros(0, np.int64), np.zeros(0, np.int64), 0)

    @property
    def n_members(self) -> int:
        return len(self.edge)


@dataclass(frozen=True)
class Hypergraph:
    """Index form of the hypergraph; node i of a type is position i of its list."""

    products: list[str]  # item ids
    categories: list[str]
    avs: list[tuple[str, str]]  # (attribute, value)
    product_category: np.ndarray  # int64 [n_products]
    product_av: np.ndarray  # int64 [2, n_edges]: (product index, av index), unique pairs
    hyperedges: dict[str, Incidence]

    @property
    def n_nodes(self) -> dict[str, int]:
        return {"product": len(self.products), "category": len(self.categories), "av": len(self.avs)}

    def counts(self) -> dict[str, int]:
        """Nodes per type, pairwise edges per type, hyperedges and memberships per family."""
        out = {f"nodes_{k}": v for k, v in self.n_nodes.items()}
        out["edges_product-in-category"] = len(self.product_category)
        out["edges_product-has-av"] = int(self.product_av.shape[1])
        for family in FAMILIES:
            inc = self.hyperedges[family]
            out[f"hyperedges_{family}"] = inc.n_edges
            out[f"members_{family}"] = inc.n_members
        return out

    def with_av_edges(self, product_av: np.ndarray) -> Hypergraph:
        """The same graph with other product-AV edges (and the families built from them)."""
        product_av = _unique_pairs(np.asarray(product_av, dtype=np.int64).reshape(2, -1))
        families = dict(self.hyperedges)
        families["product_aspect"] = product_aspect(len(self.products), product_av)
        families["category_product_aspect"] = category_product_aspect(
            len(self.categories), self.product_category, product_av
        )
        return replace(self, product_av=product_av, hyperedges=families)

    def to_networkx(self) -> nx.Graph:
        """Star expansion: typed nodes ("product", id) / ("category", name) / ("av", "attr is value") /
        ("hyperedge", family, k); pairwise edges carry kind="product-in-category" / "product-has-av",
        membership edges kind="member:<family>"."""
        import networkx as nx

        g = nx.Graph()
        names = {
            "product": [("product", p) for p in self.products],
            "category": [("category", c) for c in self.categories],
            "av": [("av", av_text(a, v)) for a, v in self.avs],
        }
        for kind, nodes in names.items():
            g.add_nodes_from(nodes, kind=kind)
        g.add_edges_from(
            (
                (names["product"][p], names["category"][c])
                for p, c in enumerate(self.product_category.tolist())
            ),
            kind="product-in-category",
        )
        g.add_edges_from(
            ((names["product"][p], names["av"][a]) for p, a in self.product_av.T.tolist()),
            kind="product-has-av",
        )
        for family in FAMILIES:
            inc = self.hyperedges[family]
            g.add_nodes_from(
                (("hyperedge", family, k) for k in range(inc.n_edges)), kind=f"hyperedge:{family}"
            )
            members = zip(inc.kind.tolist(), inc.node.tolist(), inc.edge.tolist(), strict=True)
            g.add_edges_from(
                ((names[NODE_TYPES[t]][n], ("hyperedge", family, e)) for t, n, e in members),
                kind=f"member:{family}",
            )
        return g


def graph_counts(g: nx.Graph) -> dict[str, int]:
    """`Hypergraph.counts()` read back from the networkx star expansion (the two must agree)."""
    nodes = Counter(kind for _, kind in g.nodes(data="kind"))
    edges = Counter(kind for _, _, kind in g.edges(data="kind"))
    out = {f"nodes_{t}": nodes.get(t, 0) for t in NODE_TYPES}
    out.update({f"edges_{t}": edges.get(t, 0) for t in EDGE_TYPES})
    for family in FAMILIES:
        out[f"hyperedges_{family}"] = nodes.get(f"hyperedge:{family}", 0)
        out[f"members_{family}"] = edges.get(f"member:{family}", 0)
    return out


# -- construction ----------------------------------------------------------------------------------
def build_hypergraph(
    items: pa.Table,
    attributes: pa.Table,
    interactions: pa.Table | None = None,
    candidates: pa.Table | None = None,
    *,
    max_partners: int = MAX_PARTNERS,
    session_minutes: int = SESSION_MINUTES,
    min_co_views: int = MIN_CO_VIEWS,
) -> Hypergraph:
    """The hypergraph of a catalogue (ITEMS + ITEM_ATTRIBUTES), its interactions and its taxonomy.

    `attributes` rows about items not in `items` are ignored; `candidates` (attribute, value) adds AV
    nodes that no product has (yet); `interactions` (user_id, item_id, ts, click, conversion) gives
    the also_view / also_buy families (empty without it). AV nodes are sorted by (attribute, value)
    and products keep the order of `items`, so the same inputs always give the same indices.
    """
    products = [str(p) for p in items.column("item_id").to_pylist()]
    position = {p: i for i, p in enumerate(products)}
    if len(position) != len(products):
        raise ValueError("build_hypergraph: items.item_id has duplicates")
    item_category = [str(c) for c in items.column("category").to_pylist()]
    categories = sorted(set(item_category))
    cat_index = {c: i for i, c in enumerate(categories)}
    product_category = np.array([cat_index[c] for c in item_category], dtype=np.int64)

    triples = [
        (position[i], a, v)
        for i, a, v in zip(
            attributes.column("item_id").to_pylist(),
            attributes.column("attribute").to_pylist(),
            attributes.column("value").to_pylist(),
            strict=True,
        )
        if i in position
    ]
    pairs = {(a, v) for _, a, v in triples}
    if candidates is not None:
        pairs |= set(
            zip(
                candidates.column("attribute").to_pylist(),
                candidates.column("value").to_pylist(),
                strict=True,
            )
        )
    avs = sorted(pairs)
    av_index = {av: k for k, av in enumerate(avs)}
    product_av = _unique_pairs(
        np.array(
            [[p for p, _, _ in triples], [av_index[(a, v)] for _, a, v in triples]], dtype=np.int64
        ).reshape(2, -1)
    )
    hyperedges = {
        "also_view": Incidence.empty(),
        "also_buy": Incidence.empty(),
        "product_aspect": product_aspect(len(products), product_av),
        "category_product_aspect": category_product_aspect(len(categories), product_category, product_av),
    }
    if interactions is not None and interactions.num_rows:
        view, buy = co_interaction_groups(interactions, position, session_minutes)
        hyperedges["also_view"] = partner_hyperedges(view, len(products), max_partners, min_co_views)
        hyperedges["also_buy"] = partner_hyperedges(buy, len(products), max_partners)
    return Hypergraph(products, categories, avs, product_category, product_av, hyperedges)


def _unique_pairs(pairs: np.ndarray) -> np.ndarray:
    if pairs.shape[1] == 0:
        return pairs.astype(np.int64)
    return np.unique(pairs, axis=1).astype(np.int64)


def product_aspect(n_products: int, product_av: np.ndarray) -> Incidence:
    """Hyperedge p = {product p} ∪ its AV nodes, for every product."""
    kind = np.concatenate(
        [np.full(n_products, _KIND["product"], np.int8), np.full(product_av.shape[1], 2, np.int8)]
    )
    node = np.concatenate([np.arange(n_products, dtype=np.int64), product_av[1]])
    edge = np.concatenate([np.arange(n_products, dtype=np.int64), product_av[0]])
    return Incidence(kind, node, edge, n_products)


def category_product_aspect(
    n_categories: int, product_category: np.ndarray, product_av: np.ndarray
) -> Incidence:
    """Hyperedge c = {category c} ∪ its products ∪ their AV nodes (each AV once per category)."""
    cat_av = _unique_pairs(np.stack([product_category[product_av[0]], product_av[1]]))
    kind = np.concatenate(
        [
            np.full(n_categories, _KIND["category"], np.int8),
            np.full(len(product_category), _KIND["product"], np.int8),
            np.full(cat_av.shape[1], _KIND["av"], np.int8),
        ]
    )
    node = np.concatenate([np.arange(n_categories), np.arange(len(product_category)), cat_av[1]]).astype(
        np.int64
    )
    edge = np.concatenate([np.arange(n_categories), product_category, cat_av[0]]).astype(np.int64)
    return Incidence(kind, node, edge, n_categories)


def co_interaction_groups(
    interactions: pa.Table, position: dict[str, int], session_minutes: int = SESSION_MINUTES
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(co-click groups per user session, co-conversion groups per user), as product indices.

    A session is a user's clicks within the same `session_minutes` window of the clock: co-views
    from one visit are about one need, while a heavy user's whole day mixes many (on the synthetic
    `small` world, day groups made 9 % of also_view partners line mates, sessions 16 %)."""
    import pyarrow.compute as pc

    missing = [c for c in INTERACTION_COLUMNS if c not in interactions.column_names]
    if missing:
        raise ValueError(f"interactions lack column(s) {missing}; need {list(INTERACTION_COLUMNS)}")
    items = interactions.column("item_id").to_pylist()
    known = np.array([i in position for i in items], dtype=bool)
    product = np.array([position.get(i, -1) for i in items], dtype=np.int64)
    users = pc.dictionary_encode(interactions.column("user_id")).combine_chunks().indices.to_numpy()
    ts_ms = interactions.column("ts").cast("int64").to_numpy()
    window = ts_ms // (max(session_minutes, 1) * 60_000)
    click = interactions.column("click").to_numpy(zero_copy_only=False).astype(bool) & known
    buy = interactions.column("conversion").to_numpy(zero_copy_only=False).astype(bool) & known
    lo = window.min(initial=0)
    view_key = users.astype(np.int64) * (int(window.max(initial=0) - lo) + 1) + (window - lo)
    return _groups(view_key[click], product[click]), _groups(users[buy].astype(np.int64), product[buy])


def _groups(key: np.ndarray, product: np.ndarray) -> list[np.ndarray]:
    """Distinct products per key, for keys with >= 2 distinct products."""
    if not len(key):
        return []
    pairs = np.unique(np.stack([key, product]), axis=1)
    starts = np.flatnonzero(np.r_[True, pairs[0, 1:] != pairs[0, :-1]])
    groups = np.split(pairs[1], starts[1:])
    return [g for g in groups if len(g) >= 2]


def partner_hyperedges(
    groups: list[np.ndarray], n_products: int, max_partners: int, min_count: int = 1
) -> Incidence:
    """One hyperedge per product with >= 2 partners (co-members of at least `min_count` of its
    groups): itself + partners.

    Partners are ranked by cosine association, shared groups / sqrt(groups of each), the item-to-item
    normalisation "also viewed" lists are built with (ties: lower index first), and cut at
    `max_partners`. Raw counts would rank a popular item first for everyone: on the synthetic
    `small` world, ranking by cosine with at least 2 shared sessions doubled the share of partners
    that are line mates (16 % -> 32 %) but left 20 % of the products without partners; with one
    shared session, the cosine-weighted partners' titles name the right zero-shot value 38 % of
    the time where the product's own title is silent (hyperedge mean by counts: 25 %).
    """
    together: list[Counter[int]] = [Counter() for _ in range(n_products)]
    degree = np.zeros(n_products, dtype=np.float64)
    for g in groups:
        members = g.tolist()
        degree[members] += 1.0
        for p in members:
            together[p].update(q for q in members if q != p)
    kind: list[int] = []
    node: list[int] = []
    edge: list[int] = []
    weight: list[float] = []
    n_edges = 0
    for p, counter in enumerate(together):
        scored = [(q, n / np.sqrt(degree[p] * degree[q])) for q, n in counter.items() if n >= min_count]
        if len(scored) < 2:
            continue
        partners = sorted(scored, key=lambda kv: (-kv[1], kv[0]))[:max_partners]
        members = [p, *(q for q, _ in partners)]
        node.extend(members)
        edge.extend([n_edges] * len(members))
        weight.extend([1.0, *(float(w) for _, w in partners)])
        n_edges += 1
    kind = [_KIND["product"]] * len(node)
    return Incidence(
        np.array(kind, np.int8),
        np.array(node, np.int64),
        np.array(edge, np.int64),
        n_edges,
        np.array(weight, np.float32),
    )


# -- picture ---------------------------------------------------------------------------------------
_COLOURS = {"product": "#4C72B0", "category": "#DD8452", "av": "#55A868", "hyperedge": "#C44E52"}


def neighbourhood(hg: Hypergraph, product: int | None = None, max_nodes: int = 40) -> nx.Graph:
    """A small readable sub-graph around one product: its category, AVs, and hyperedges with a few
    members each. Default product: one in also_view and also_buy hyperedges if any, with the most
    AV edges among those."""
    g = hg.to_networkx()
    if product is None:
        degree = np.bincount(hg.product_av[0], minlength=len(hg.products))
        score = degree.astype(np.int64)
        for family in ("also_view", "also_buy"):  # prefer a product that shows every family
            member = np.zeros(len(hg.products), dtype=np.int64)
            member[hg.hyperedges[family].node] = 1000
            score += member
        product = int(np.argmax(score)) if len(hg.products) else 0
    centre = ("product", hg.products[product])
    keep = [centre]
    for nb in sorted(g.neighbors(centre), key=str):
        keep.append(nb)
        if nb[0] == "hyperedge":
            members = sorted((m for m in g.neighbors(nb) if m != centre), key=str)[:4]
            keep.extend(members)
    keep = list(dict.fromkeys(keep))[:max_nodes]
    return g.subgraph(keep).copy()


def render_neighbourhood(hg: Hypergraph, path: Path, product: int | None = None, title: str = "") -> Path:
    """PNG of `neighbourhood(hg, product)`: node colour = type, hyperedge nodes drawn as squares."""

    import networkx as nx
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    sub = neighbourhood(hg, product)
    fig = Figure(figsize=(8, 6), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    pos = nx.spring_layout(sub, seed=0, k=0.9)
    for kind, colour in _COLOURS.items():
        nodes = [n for n in sub.nodes if n[0] == kind]
        nx.draw_networkx_nodes(
            sub, pos, nodelist=nodes, node_color=colour, node_size=260 if kind != "hyperedge" else 160,
            node_shape="s" if kind == "hyperedge" else "o", ax=ax, label=kind,
        )  # fmt: skip
    nx.draw_networkx_edges(sub, pos, ax=ax, alpha=0.4, width=0.8)
    labels = {
        n: (n[1] if n[0] != "hyperedge" else n[1].replace("category_product_aspect", "cpa"))
        for n in sub.nodes
    }
    nx.draw_networkx_labels(sub, pos, labels=labels, font_size=6, ax=ax)
    ax.legend(loc="lower left", fontsize=7, markerscale=0.6)
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return _save_png(fig, Path(path))


def _save_png(fig: Any, path: Path) -> Path:
    """Write the figure atomically (temp file + rename): a reader never sees half a picture."""
    import os
    import tempfile

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fig.savefig(fh, format="png", dpi=100)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def summary(hg: Hypergraph) -> dict[str, Any]:
    """Counts plus mean hyperedge sizes (for metadata)."""
    out: dict[str, Any] = dict(hg.counts())
    for family in FAMILIES:
        inc = hg.hyperedges[family]
        out[f"mean_size_{family}"] = round(inc.n_members / inc.n_edges, 2) if inc.n_edges else 0.0
    return out
