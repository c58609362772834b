"""The HyperPAVE network in plain torch: hypergraph convolution per family, fixed-weight fusion,
a 2-layer heterogeneous GraphSAGE, product-AV pair scores.

Follows the released code (gjiaying/HyperPAVE: `code/Hypergraph.py`, `code/GNN.py`, `code/Model.py`,
`code/Classifier.py`) with these differences, each for a stated reason:

* HypergraphConv is written out (X' = D⁻¹ H B⁻¹ Hᵀ X Θ + b, hyperedge weights W = I, no attention,
  as PyG's `HypergraphConv(use_attention=False)`) with scipy sparse products: no torch-geometric.
  One Θ is shared by all four families, as in the code (`self.conv_hyper` is one module), and the
  encoder before it is linear too, so the sparse propagation is applied to the fixed input features
  once per graph (`fused_propagation`) and the network itself does only dense products.
* Every node gets a singleton self-loop hyperedge in each family that covers its type (as the
  repository's unused `hyper_calculation` does with H + I). Without it a node in no hyperedge
  comes out as the bias alone, and every AV node without a catalogue edge - every zero-shot value -
  would be indistinguishable from the others.
* Fusion (`fusion`): the code's `hyperedge_type="all"` weights by default: product 0.4 also_view +
  0.4 also_buy + 0.1 PA + 0.1 CPA, AV 0.5 PA + 0.5 CPA, category = CPA. The code's own default,
  "user" (products 0.5 also_view + 0.5 also_buy, AV and category nodes unconvolved), is the
  `fusion="user"` option; the plugin README gives both measured.
* `to_hetero(GNN, aggr="sum")` is written out: per edge type a SAGE layer (mean of the neighbours
  through `lin_l` with bias, plus the root through `lin_r`), summed per destination type; ReLU
  between the two layers.
* Pair score: the paper's text says cosine similarity, the code's Classifier a dot product. We use a
  learned affine map of the cosine (`cosine=True`), plus (`text_skip=True`) a learned multiple of
  the similarity of the frozen hashed input texts. The paper gets that text comparison from BERT;
  with small hashed features trained end to end the GNN memorized the seen values and lost it.
  Development runs on `small` (seed 0, zero-shot F1): learned skip + dot 0.07, learned skip +
  cosine 0.39, frozen text term + dot 0.75, frozen text term + cosine 0.84. `use_graph=False` drops
  the graph part (ablation: what the hypergraph adds to the text match).
* Neighbourhood text (`neighbour_text=True`, part of the graph score): a learned multiple of the
  similarity between the AV text and the mean frozen text of the product's also_view / also_buy
  co-members (itself excluded). It is the hypergraph convolution of the frozen text with Θ = I, the
  zero-shot counterpart of the frozen title term: a value the product's own title does not state
  but its co-viewed products' titles do scores high even for an AV node without edges, which the
  learned part (trained on connected AVs) does not transfer to. With `neighbour_values` (default)
  each co-member contributes its product_aspect convolution (title + its AV nodes' texts), so a
  value co-viewed products are *known* to have counts too (two hops: partner family after
  product_aspect, on the message-passing edges only).
* Gate (`gate=True`): the graph part (cosine + neighbourhood) is weighted by
  1 - σ(a·(t - b)), t = the best frozen own-title similarity among the AV nodes of the scored
  AV's attribute, a and b learned: the graph fills values the title is silent about and does not
  outvote a title that states one.
* Homophily (`HyperPAVENet.homophily`, set by the fit from `attribute_homophily` on the training
  edges): the neighbourhood term of an AV is multiplied by its attribute's log(observed / chance)
  agreement of partners' values, so it is off where partners do not share values. Its overall
  weight is then chosen on validation (`training.fit_model`, `neighbour_grid`). See the plugin
  README ("Does the graph matter?") for all of these.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from ctr_hyperpave.hypergraph import FAMILIES, NODE_TYPES, Hypergraph

#: Fusion weights per destination node type (the code's hyperedge_type="all").
FUSION: dict[str, dict[str, float]] = {
    "product": {"also_view": 0.4, "also_buy": 0.4, "product_aspect": 0.1, "category_product_aspect": 0.1},
    "av": {"product_aspect": 0.5, "category_product_aspect": 0.5},
    "category": {"category_product_aspect": 1.0},
}
#: The code's `hyperedge_type="user"` (its default in `main.py`): products average the also_view /
#: also_buy convolutions; AV and category nodes keep their input features (no convolution).
FUSION_USER: dict[str, dict[str, float]] = {"product": {"also_view": 0.5, "also_buy": 0.5}}
FUSIONS = {"all": FUSION, "user": FUSION_USER}
#: Node types each family's members may have (self-loops are added for these types).
FAMILY_TYPES: dict[str, tuple[str, ...]] = {
    "also_view": ("product",),
    "also_buy": ("product",),
    "product_aspect": ("product", "av"),
    "category_product_aspect": ("product", "category", "av"),
}
#: (source type, destination type) of each message-passing edge type.
EDGE_TYPES: dict[str, tuple[str, str]] = {
    "in": ("product", "category"),
    "rev_in": ("category", "product"),
    "has": ("product", "av"),
    "rev_has": ("av", "product"),
}


@dataclass
class GraphTensors:
    """One message-passing graph, ready for the network (global node order product | category | av).

    `mx` is the fused hypergraph operator applied to the node features: because Θ (and the text
    encoder before it) are linear and shared by all families, Σ_f w_f M_f (X W) Θ = ((Σ_f w_f M_f) X) W Θ,
    so the sparse part is computed once per graph (scipy) and the network only does dense products.
    """

    offsets: dict[str, int]
    sizes: dict[str, int]
    mx: torch.Tensor  # [n_nodes, d_in]
    mean_adj: dict[str, torch.Tensor]  # edge type -> dense row-normalized [n_dst, n_src]
    neighbour_text: torch.Tensor  # [n_products, d_in] unit mean text of co-members (0: none)
    #: [n_products, n_attributes]: the best frozen title-vs-AV similarity among each attribute's AV
    #: nodes (how clearly the own title states some value of it), and each AV's attribute column
    title_max: torch.Tensor | None = None
    av_attribute: torch.Tensor | None = None


def _offsets(hg: Hypergraph) -> tuple[dict[str, int], dict[str, int], int]:
    sizes = hg.n_nodes
    offsets = {"product": 0, "category": sizes["product"], "av": sizes["product"] + sizes["category"]}
    return offsets, sizes, sum(sizes.values())


def propagate(hg: Hypergraph, family: str, x: np.ndarray) -> np.ndarray:
    """D⁻¹ H B⁻¹ Hᵀ x for one family, with a singleton self-loop hyperedge per node of the family's
    types (rows of other node types are zero). Never forms H Hᵀ, which is dense inside big
    hyperedges (a category's products): the cost is O(memberships x d)."""
    import scipy.sparse as sp

    offsets, sizes, n = _offsets(hg)
    inc = hg.hyperedges[family]
    base = np.array([offsets[t] for t in NODE_TYPES], dtype=np.int64)
    rows = [base[inc.kind.astype(np.int64)] + inc.node]
    cols = [inc.edge]
    n_edges = inc.n_edges
    for t in FAMILY_TYPES[family]:
        rows.append(offsets[t] + np.arange(sizes[t], dtype=np.int64))
        cols.append(n_edges + np.arange(sizes[t], dtype=np.int64))
        n_edges += sizes[t]
    r, c = np.concatenate(rows), np.concatenate(cols)
    h = sp.csr_matrix((np.ones(len(r), dtype=np.float32), (r, c)), shape=(n, n_edges))
    h.data[:] = 1.0  # a repeated membership counts once
    node_deg = np.asarray(h.sum(axis=1)).ravel()
    edge_deg = np.asarray(h.sum(axis=0)).ravel()
    inv_d = np.divide(1.0, node_deg, out=np.zeros_like(node_deg), where=node_deg > 0)
    inv_b = np.divide(1.0, edge_deg, out=np.zeros_like(edge_deg), where=edge_deg > 0)
    per_edge = np.asarray(h.T @ x) * inv_b[:, None]
    return np.asarray(h @ per_edge) * inv_d[:, None]


def fused_propagation(
    hg: Hypergraph, x: np.ndarray, cache: dict | None = None, fusion: str = "all"
) -> np.ndarray:
    """Σ_f w_f(type of the row) · (D⁻¹ H B⁻¹ Hᵀ x)_f: the fixed-weight fusion of the four families.

    `cache` (a dict owned by the caller, for one `x`) re-uses the result of a family whose
    incidence object is unchanged (also_view / also_buy do not depend on the AV edges).
    """
    offsets, sizes, n = _offsets(hg)
    total = np.zeros((n, x.shape[1]), dtype=np.float32)
    weights_by_type = FUSIONS[fusion]
    for t in NODE_TYPES:  # a type the fusion does not convolve keeps its input features
        if t not in weights_by_type:
            total[offsets[t] : offsets[t] + sizes[t]] = x[offsets[t] : offsets[t] + sizes[t]]
    for family in FAMILIES:
        w = np.zeros(n, dtype=np.float32)
        for t, weights in weights_by_type.items():
            w[offsets[t] : offsets[t] + sizes[t]] = weights.get(family, 0.0)
        if not w.any():
            continue
        inc = hg.hyperedges[family]
        key = (family, id(inc))
        if cache is not None and key in cache and cache[key][0] is inc:
            part = cache[key][1]
        else:
            part = propagate(hg, family, x)
            if cache is not None:
                cache[key] = (inc, part)
        total += w[:, None] * part
    return total


def partner_matrix(hg: Hypergraph) -> Any:
    """scipy CSR [n_products, n_products]: w_pq = association of partner q with product p in the
    also_view / also_buy hyperedges (summed over the two families), symmetric (a product also
    reads those that list it), same category only, zero diagonal."""
    import scipy.sparse as sp

    n = len(hg.products)
    together = sp.csr_matrix((n, n), dtype=np.float32)
    category = hg.product_category
    for family in ("also_view", "also_buy"):
        inc = hg.hyperedges[family]
        if not inc.n_edges:
            continue
        # the hyperedge of product p holds p (its first member) and p's ranked partners q, weight w_pq
        w = inc.weight if inc.weight is not None else np.ones(inc.n_members, np.float32)
        first = np.r_[True, inc.edge[1:] != inc.edge[:-1]]
        owner = inc.node[first][inc.edge]
        partner = ~first
        # only partners of the product's own category vote: another category's values are another
        # vocabulary (on `small`, right zero-shot value where the title is silent: 30 % -> 35 %)
        vote = w[partner] * (category[owner[partner]] == category[inc.node[partner]])
        a = sp.csr_matrix((vote, (owner[partner], inc.node[partner])), shape=(n, n), dtype=np.float32)
        together = together + a.maximum(a.T)  # no diagonal: a partner list never holds its product
    return together.tocsr()


def neighbour_text(
    hg: Hypergraph,
    x: np.ndarray,
    partners: Any | None = None,
    values: bool = False,
) -> np.ndarray:
    """float32 [n_products, d]: per product, the frozen text (rows of `x`, products first) of its
    also_view / also_buy partners of the same category, weighted by association (`partner_matrix`),
    itself excluded, scaled to unit norm (0 without partners). Sparse only.

    `values`: each partner contributes its product_aspect convolution (its title and the "attr is
    value" texts of its AV nodes, `propagate(hg, "product_aspect", x)`) instead of its title alone:
    two hops of hypergraph convolution, partner family after product_aspect, so a value a co-viewed
    product is *known* to have reaches the product even when no title states it."""
    n = len(hg.products)
    partners = partner_matrix(hg) if partners is None else partners
    z = propagate(hg, "product_aspect", x)[:n] if values else x[:n]
    out = np.asarray(partners @ z, dtype=np.float32)
    norm = np.linalg.norm(out, axis=1, keepdims=True)
    return np.divide(out, norm, out=np.zeros_like(out), where=norm > 0)


def graph_tensors(
    hg: Hypergraph,
    x: np.ndarray,
    device: str = "cpu",
    cache: dict | None = None,
    text_only: bool = False,
    fusion: str = "all",
    neighbour_values: bool = False,
) -> GraphTensors:
    """`GraphTensors` of `hg` for node features `x` (float32 [n_nodes, d_in], global order).
    `text_only`: just the node layout (the text-only ablation reads no graph); `neighbour_values`:
    see `neighbour_text`."""
    offsets, sizes, _ = _offsets(hg)
    if text_only:
        empty = torch.zeros(0)
        return GraphTensors(offsets, sizes, empty, {}, empty)
    mx = torch.from_numpy(fused_propagation(hg, x, cache, fusion)).to(device)
    key = ("partners", id(hg.hyperedges["also_view"]), id(hg.hyperedges["also_buy"]))
    if cache is not None and key in cache:
        partners = cache[key]
    else:
        partners = partner_matrix(hg)
        if cache is not None:  # the partner families do not depend on the AV edges
            cache[key] = partners
    text_key = ("neighbour_text", *key[1:])
    if not neighbour_values and cache is not None and text_key in cache:
        neighbours = cache[text_key]
    else:  # with values it depends on this graph's AV edges: recomputed (one sparse product)
        neighbours = torch.from_numpy(neighbour_text(hg, x, partners, neighbour_values)).to(device)
        if cache is not None and not neighbour_values:
            cache[text_key] = neighbours
    products = np.arange(sizes["product"], dtype=np.int64)
    pairs = {
        "in": (hg.product_category, products),  # (dst, src)
        "rev_in": (products, hg.product_category),
        "has": (hg.product_av[1], hg.product_av[0]),
        "rev_has": (hg.product_av[0], hg.product_av[1]),
    }
    if cache is not None and "title_max" in cache:
        title_max, av_attribute = cache["title_max"]
    else:  # depends on the node texts and the AV nodes only
        title_max, av_attribute = (torch.from_numpy(t).to(device) for t in own_title_max(hg, x))
        if cache is not None:
            cache["title_max"] = (title_max, av_attribute)
    mean_adj = {}
    for name, (dst, src) in pairs.items():
        src_type, dst_type = EDGE_TYPES[name]
        adj = np.zeros((sizes[dst_type], sizes[src_type]), dtype=np.float32)
        np.add.at(adj, (dst, src), 1.0)
        adj /= np.maximum(adj.sum(axis=1, keepdims=True), 1.0)
        mean_adj[name] = torch.from_numpy(adj).to(device)
    return GraphTensors(offsets, sizes, mx, mean_adj, neighbours, title_max, av_attribute)


def own_title_max(hg: Hypergraph, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(float32 [n_products, n_attributes] max over each attribute's AV nodes of ⟨x_product, x_av⟩,
    int64 [n_av] attribute column of each AV): `GraphTensors.title_max`."""
    offsets, sizes, _ = _offsets(hg)
    products = x[: sizes["product"]]
    avs = x[offsets["av"] : offsets["av"] + sizes["av"]]
    names = sorted({a for a, _ in hg.avs})
    column = {a: k for k, a in enumerate(names)}
    av_attribute = np.array([column[a] for a, _ in hg.avs], dtype=np.int64)
    sims = products @ avs.T
    out = np.zeros((len(products), len(names)), dtype=np.float32)
    for k in range(len(names)):
        members = av_attribute == k
        if members.any():
            out[:, k] = sims[:, members].max(axis=1)
    return out, av_attribute


def attribute_homophily(
    hg: Hypergraph, partners: Any | None = None, prior_pairs: float = 20.0, kind: str = "pmi"
) -> np.ndarray:
    """float32 [n_attributes] (sorted attribute names, as `own_title_max`): per attribute, the
    evidence a partner's value carries, log(observed / chance) ≥ 0, from the graph's known AV edges
    only (give it the training edges: no held-out value is read).

    Over partner pairs (p, q) (`partner_matrix`, association-weighted, each pair once) where both
    have a value of the attribute: observed = weighted share whose value sets intersect; chance =
    the same pairs' expected agreement Σ_v f_v² with f the value frequencies of the pair's category
    (partners are same-category, so a category-specific value is not mistaken for homophily).
    `prior_pairs` pseudo-pairs agreeing at chance shrink a thin estimate toward 0. The log ratio is
    the pointwise mutual information of "a partner has v" and "the product has v", i.e. the
    log-odds a partner's value adds, so it scales the neighbourhood term per attribute. Why: that
    term only helps where partners share values (e.g. a product line's material); on an attribute
    they do not share (colour) it only adds false answers."""
    import scipy.sparse as sp

    n = len(hg.products)
    names = sorted({a for a, _ in hg.avs})
    column = {a: k for k, a in enumerate(names)}
    av_attribute = np.array([column[a] for a, _ in hg.avs], dtype=np.int64)
    out = np.zeros(len(names), dtype=np.float32)
    pairs = sp.triu(partner_matrix(hg) if partners is None else partners, k=1).tocoo()
    if not pairs.nnz or not hg.product_av.shape[1]:
        return out
    edge_p, edge_a = hg.product_av
    category = np.asarray(hg.product_category, dtype=np.int64)
    n_cat = len(hg.categories)
    for k in range(len(names)):
        sel = av_attribute[edge_a] == k
        if not sel.any():
            continue
        has = sp.csr_matrix(
            (np.ones(int(sel.sum()), np.float64), (edge_p[sel], edge_a[sel])), shape=(n, len(hg.avs))
        )
        known = np.asarray(has.sum(axis=1)).ravel() > 0
        both = known[pairs.row] & known[pairs.col]
        if not both.any():
            continue
        row, col, w = pairs.row[both], pairs.col[both], pairs.data[both].astype(np.float64)
        agree = np.asarray(has[row].multiply(has[col]).sum(axis=1)).ravel() > 0
        # value frequencies per category (each product's values share its unit weight)
        share = sp.diags(1.0 / np.maximum(np.asarray(has.sum(axis=1)).ravel(), 1.0)) @ has
        by_cat = sp.csr_matrix((np.ones(n), (category, np.arange(n))), shape=(n_cat, n)) @ share
        totals = np.asarray(by_cat.sum(axis=1)).ravel()
        freq = sp.diags(1.0 / np.maximum(totals, 1e-12)) @ by_cat
        chance_cat = np.asarray(freq.multiply(freq).sum(axis=1)).ravel()
        observed = float(np.sum(w * agree) / np.sum(w))
        chance = float(np.sum(w * chance_cat[category[row]]) / np.sum(w))
        if chance <= 0.0:
            continue
        total = float(np.sum(w))
        prior = prior_pairs * total / len(row)  # pseudo-pairs weigh as an average pair
        shrunk = (observed * total + prior * chance) / (total + prior)
        if kind == "kappa":  # share of pairs agreeing beyond chance, in [0, 1]
            out[k] = max((shrunk - chance) / (1.0 - chance), 0.0) if chance < 1.0 else 0.0
        else:
            out[k] = max(float(np.log(shrunk / chance)), 0.0) if shrunk > 0.0 else 0.0
    return out


class HyperPAVENet(nn.Module):
    """Text encoder -> hypergraph convolution (fused families) -> 2 hetero SAGE layers -> pair scores.

    `text_skip`: the pair score also gets `text_scale · ⟨x_p, x_av⟩`, the similarity of the frozen
    hashed texts (unit vectors), so a product's title and an AV's "attr is value" are compared on the
    same footing whether or not the value has edges. `cosine`: the graph part of the score is a
    learned affine map of cos(h_p, h_av) instead of the code's raw dot product.
    """

    def __init__(
        self,
        d_in: int,
        hidden: int = 64,
        dropout: float = 0.1,
        text_skip: bool = True,
        cosine: bool = True,
        use_graph: bool = True,
        neighbour_text: bool = True,
        neighbour_init: float = 2.0,
        gate: bool = False,
    ):
        super().__init__()
        self.encoder = nn.Linear(d_in, hidden, bias=False)  # shared by all node types (the paper's BERT)
        self.theta = nn.Linear(hidden, hidden, bias=False)  # HypergraphConv's Θ, shared by the families
        self.hyper_bias = nn.Parameter(torch.zeros(hidden))
        self.lin_l = nn.ModuleList(
            nn.ModuleDict({e: nn.Linear(hidden, hidden) for e in EDGE_TYPES}) for _ in range(2)
        )
        self.lin_r = nn.ModuleList(
            nn.ModuleDict({e: nn.Linear(hidden, hidden, bias=False) for e in EDGE_TYPES}) for _ in range(2)
        )
        self.dropout = nn.Dropout(dropout)
        self.text_skip = text_skip
        self.use_graph = use_graph  # False: ablation, the score is the text part alone
        self.cosine = cosine
        self.neighbour_text = neighbour_text and use_graph
        self.scale = nn.Parameter(torch.tensor(5.0))  # logit = scale · cos + ... + offset
        self.text_scale = nn.Parameter(torch.tensor(5.0))
        self.neighbour_scale = nn.Parameter(torch.tensor(float(neighbour_init)))
        self.offset = nn.Parameter(torch.tensor(-1.0))
        self.gate = gate and use_graph
        # graph part weighted by 1 - σ(slope · (title_max - bias)): starts closing near 0.22, where
        # on `small` titles that state a value (10th percentile ~0.25-0.30) part from silent ones
        # (90th percentile ~0.21)
        self.gate_slope = nn.Parameter(torch.tensor(30.0))
        self.gate_bias = nn.Parameter(torch.tensor(0.22))
        # per attribute multiplier of the neighbourhood term (`attribute_homophily`, set by the fit
        # from the training edges; empty = 1 for every attribute)
        self.register_buffer("homophily", torch.zeros(0))

    def split(self, z: torch.Tensor, g: GraphTensors) -> dict[str, torch.Tensor]:
        return {t: z[g.offsets[t] : g.offsets[t] + g.sizes[t]] for t in NODE_TYPES}

    def sage(self, layer: int, h: dict[str, torch.Tensor], g: GraphTensors) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        for e, (src, dst) in EDGE_TYPES.items():
            msg = self.lin_l[layer][e](g.mean_adj[e] @ h[src]) + self.lin_r[layer][e](h[dst])
            out[dst] = out[dst] + msg if dst in out else msg
        return out

    def forward(self, x: torch.Tensor, g: GraphTensors) -> dict[str, torch.Tensor]:
        """Node embeddings per type; "text_<type>" entries carry the frozen input text vectors,
        "neighbours" the products' co-member text. Without the graph only the text entries exist."""
        text = self.split(x, g)
        if not self.use_graph:
            return {f"text_{t}": v for t, v in text.items()}
        h0 = self.split(self.theta(self.encoder(self.dropout(g.mx))) + self.hyper_bias, g)
        h1 = {
            t: torch.relu(v) for t, v in self.sage(0, {t: self.dropout(v) for t, v in h0.items()}, g).items()
        }
        out = self.sage(1, h1, g)
        out.update({f"text_{t}": v for t, v in text.items()})
        out["neighbours"] = g.neighbour_text
        if g.title_max is not None:
            out["title_max"], out["av_attribute"] = g.title_max, g.av_attribute
        return out

    def logits(self, h: dict[str, torch.Tensor], product: torch.Tensor, av: torch.Tensor) -> torch.Tensor:
        """Scores of (product[k], av[k]) pairs."""
        return self._score(h, product, av, pairwise=True)

    def score_matrix(
        self, h: dict[str, torch.Tensor], product: torch.Tensor, av: torch.Tensor
    ) -> torch.Tensor:
        """Scores of every product in `product` against every AV in `av`: [len(product), len(av)]."""
        return self._score(h, product, av, pairwise=False)

    def _score(self, h, product, av, pairwise: bool) -> torch.Tensor:
        def inner(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            return (a * b).sum(-1) if pairwise else a @ b.T

        score = self.offset
        if self.use_graph:
            hp, ha = h["product"][product], h["av"][av]
            if self.cosine:
                graph = self.scale * inner(
                    nn.functional.normalize(hp, dim=-1), nn.functional.normalize(ha, dim=-1)
                )
            else:
                graph = inner(hp, ha)
            if self.neighbour_text:
                near = self.neighbour_scale * inner(h["neighbours"][product], h["text_av"][av])
                if len(self.homophily):
                    near = near * self.homophily[h["av_attribute"][av]]
                graph = graph + near
            if self.gate:
                column = h["av_attribute"][av]
                stated = h["title_max"][product, column] if pairwise else h["title_max"][product][:, column]
                graph = graph * (1.0 - torch.sigmoid(self.gate_slope * (stated - self.gate_bias)))
            score = score + graph
        if self.text_skip:
            score = score + self.text_scale * inner(h["text_product"][product], h["text_av"][av])
        return score
