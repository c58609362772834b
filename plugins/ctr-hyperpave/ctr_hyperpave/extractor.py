"""`hyperpave`: zero-shot attribute-value extraction by inductive link prediction on a hypergraph.

HyperPAVE (Gong et al., WWW'24, arXiv 2402.08802; code gjiaying/HyperPAVE) predicts (product, has,
av) links on a heterogeneous hypergraph of products, categories and attribute-value nodes. This
plugin follows the released code's structure (see `ctr_hyperpave.net` for the network and its
differences, `ctr_hyperpave.split` for the zero-shot split) at CPU scale:

* graph: `ctr_hyperpave.hypergraph.build_hypergraph`, built in `fit` from the inputs the engine
  offers (`FitContext.inputs`: "interactions", "candidates", "negatives") (products, categories, AV
  nodes incl. the taxonomy's values without any catalogue row; pairwise edges; also_view from
  session co-clicks ranked by cosine association, also_buy from co-conversions, product_aspect,
  category_product_aspect);
* features: hashed character n-grams of the title / category name / "attr is value"
  (`ctr_hyperpave.features`) instead of BERT, which is what makes unseen AV nodes scorable;
* training: full-batch AdamW on BCE-with-logits. Each step re-draws which training edges carry
  messages and which are supervision (the code's `RandomLinkSplit(disjoint_train_ratio=0.3)`, so a
  supervised link is never also a message), and `isolate_share` of the training AVs pass no
  message at all that step (the zero-shot condition, seen in training), and so do the AV edges of
  `isolate_product_share` of the products (a new product's condition). `neg_ratio` negatives per
  positive: one AV of the same attribute and the rest uniform (the code samples uniformly; the
  same-attribute one matches our per-slot question). Negatives come from training AVs only:
  validation and zero-shot AV nodes are never supervised, positively or negatively. Each known
  no-value pair (MAVE's empty-evidence attributes) adds a negative: one AV of that attribute.
* selection (`ctr_hyperpave.split`): every `eval_every` steps the validation questions are scored
  full-candidate on the training graph: products of the held-out AV nodes (zero-shot) and held-out
  edges of the other AVs (seen values), plus `valid_negative_share` of the known no-value pairs
  (where any answer is wrong). The step with the best harmonic mean of the two F1s is kept (early
  stopping with `patience`); its F1-optimal thresholds (answers that are edge-less AVs, answers
  that are connected AVs, and with the gate answers on slots whose own title is silent on the
  attribute, `silent_threshold`) are the decision thresholds. After that the neighbourhood term's
  weight is chosen from `neighbour_grid` by the same criterion (training does not move it). The
  code instead trains 50 epochs and predicts at logit > 0 (`decision="logit"`; the README
  measures both).
* extraction: every (item, attribute) pair whose attribute the item's category uses in the
  catalogue is scored against all AV nodes of that attribute on the full catalogue graph (known
  no-value pairs are skipped); the top value is returned when its probability reaches its
  threshold (`multi_label=True`: every value above it, as the paper's multi-label decision).
  Items unknown at fit join the graph as new, edge-less product nodes (inductive).

Reporting: `report(directory)` returns the fitted hypergraph's counts (nodes / edges / hyperedges /
memberships per type, mean hyperedge sizes) and writes a picture of one product's neighbourhood; the
engine shows them with the validation figures of `summary` (numbers as metadata, the picture inline).

Scale-down (MODELS.md §6): hidden 64, `feature_dim` 512, at most 200 full-batch steps (early
stopping usually ends near 80); `small` (2,000 items) trains in ~10 s on 2 CPU cores. Deterministic
for a given `FitContext.seed`. No persistence: the extractor contract has no save/load, and the
asset refits each run.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover - typing only
    import pyarrow as pa
    from ctr_dagster.contracts import FitContext


@dataclass
class HyperpaveConfig:
    hidden: int = 64  # width of node embeddings
    feature_dim: int = 512  # hashed character n-gram columns per node text
    steps: int = 200  # full-batch optimizer steps (the whole graph is one batch at this scale)
    lr: float = 0.01  # AdamW learning rate
    weight_decay: float = 1e-6  # AdamW weight decay
    dropout: float = 0.1  # dropout on node features between layers
    neg_ratio: int = 2  # negatives per positive link
    supervision_share: float = 0.3  # training edges used as supervision only in each step
    valid_avs: int = 6  # AV nodes held out (with all their edges) for validation
    valid_seen_share: float = 0.1  # share of the other edges held out (seen-value validation)
    isolate_share: float = 0.2  # share of training AVs passing no message in a step
    # share of products passing no AV message in a step: extraction mostly asks about products with
    # few or no known values (new listings, another file's products), so training must see them
    isolate_product_share: float = 0.3
    min_av_edges: int = 2  # an AV needs this many catalogue edges to be a validation AV
    eval_every: int = 10  # steps between validation passes
    patience: int = 6  # evaluations without a better validation F1 before stopping
    text_skip: bool = True  # add the frozen text similarity to the pair score
    use_graph: bool = True  # False: ablation without the graph part of the score
    score: str = "cosine"  # graph part of the score: "cosine" (the paper's text) or "dot" (the code)
    # graph part also reads the frozen text of the product's also_view / also_buy partners against
    # the AV text (what the hypergraph convolution of frozen BERT features gives the paper's model)
    neighbour_text: bool = True
    # each partner contributes its product_aspect convolution (its title and its known AV nodes'
    # "attr is value" texts), not its title alone: a value co-viewed products are *known* to have
    # reaches the product though no title states it (issue 15: hidden-slice F1 0.063 -> see README)
    neighbour_values: bool = True
    # the graph part of the score is weighted by 1 - σ(slope · (best own-title similarity among the
    # attribute's AV nodes - bias)), both learned: the graph answers where the title is silent and
    # does not outvote a title that states the value (without it the neighbourhood term, made strong
    # enough to fill hidden values, overrode stated ones: overall F1 -0.04 to -0.11)
    gate: bool = True
    # initial weight of the neighbourhood term, as the own-title term's (both frozen similarities of
    # the same features); 2.0 before issue 15, which left it where it started (training barely moves it)
    neighbour_init: float = 5.0
    # per-attribute multiplier of the neighbourhood term, estimated from the training edges
    # (`net.attribute_homophily`): "pmi" = log(observed / chance agreement of co-viewed partners'
    # values), "kappa" = (observed - chance) / (1 - chance), "none" = 1 everywhere
    homophily: str = "pmi"
    # after training, the neighbourhood weight is picked among these (and the trained one) by the
    # validation criterion; [] keeps the trained weight
    neighbour_grid: list[float] = field(default_factory=lambda: [0.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0])
    # "tuned": answer when the top value's probability reaches a threshold chosen on validation
    # (slots with and without a value); "logit": the code's rule, logit > 0
    decision: str = "tuned"
    # with the gate and "tuned": answers on title-silent slots (own-title similarity below the
    # gate's midpoint: only the graph can fill them) get their own threshold, chosen on validation.
    # "pooled": one for all of them; "split": separate for edge-less and connected AVs (4 cuts from
    # ~6 validation AVs: noisier, seeds 0-2 unseen F1 +0.027 vs +0.055 pooled); "off": none
    silent_threshold: str = "pooled"
    fusion: str = "all"  # hypergraph fusion: "all" (every family) or "user" (the code's default)
    valid_negative_share: float = 0.3  # known no-value pairs held out to validate abstention
    multi_label: bool = False  # answer every value above the threshold, not only the top one
    max_partners: int = 20  # longest also_view / also_buy list per product
    session_minutes: int = 30  # a user's clicks in one such window are one also_view group
    # shared sessions an also_view partner needs: 1 gives 85 % of `small`'s products partners (2: 58 %)
    min_co_views: int = 1
    # torch intra-op threads while fitting / extracting (0 = torch's default). The graph is small:
    # on 2 busy cores, 2 threads made each step ~10x slower than 1 (synchronisation, not compute).
    threads: int = 1


class HyperpaveExtractor:
    """HyperPAVE: zero-shot attribute values by hypergraph link prediction (torch, CPU-scale)."""

    name = "hyperpave"
    Config = HyperpaveConfig
    requires = frozenset({"interactions", "candidates", "negatives"})
    baseline = False

    def __init__(self, config: HyperpaveConfig | None = None):
        self.config = config or HyperpaveConfig()
        self.summary: dict[str, Any] = {}
        self.split = None  # the ZeroShotSplit of the last fit (held-out AV nodes and edges)
        self.graph = None  # the hypergraph of the last fit (ctr_hyperpave.hypergraph.Hypergraph)
        self._state: dict[str, Any] | None = None

    def fit(self, items: pa.Table, attributes: pa.Table, ctx: FitContext | None = None) -> HyperpaveExtractor:
        from ctr_hyperpave.training import fit_model

        with _torch_threads(self.config.threads):
            fitted = fit_model(self.config, items, attributes, ctx)
        self._state, self.summary, self.split = fitted.state, fitted.summary, fitted.split
        self.graph = fitted.graph
        return self

    def report(self, directory: Path) -> dict[str, Any]:
        """The fitted hypergraph for people to look at (the engine's optional reporting hook): node,
        edge, hyperedge and membership counts per type (read back from the networkx star expansion,
        which must agree with the index arrays), mean hyperedge sizes, and a picture of one product's
        neighbourhood written into `directory`."""
        from ctr_hyperpave import hypergraph

        if self.graph is None:
            return {}
        counts = hypergraph.graph_counts(self.graph.to_networkx())
        sizes = {k: v for k, v in hypergraph.summary(self.graph).items() if k.startswith("mean_size_")}
        png = hypergraph.render_neighbourhood(
            self.graph,
            Path(directory) / "hypergraph_neighbourhood.png",
            title="one product's neighbourhood (squares: hyperedges)",
        )
        return {
            **{f"hypergraph/{k}": v for k, v in {**counts, **sizes}.items()},
            "hypergraph/neighbourhood": png,
        }

    def extract(self, items: pa.Table) -> pa.Table:
        from ctr_hyperpave.training import extract_rows

        if self._state is None:
            raise RuntimeError("hyperpave: extract() called before fit()")
        with _torch_threads(self.config.threads):
            return extract_rows(self.config, self._state, items)


@dataclass
class HyperpaveTextConfig(HyperpaveConfig):
    use_graph: bool = False  # the ablation: frozen title-vs-value text similarity, learned scale only


class HyperpaveTextExtractor(HyperpaveExtractor):
    """`hyperpave_text`: HyperPAVE without its graph (`use_graph=False`), shipped as a baseline.

    The same candidates, negatives, validation split and decision rule as `hyperpave`, but the score
    is the frozen title / "attr is value" text similarity alone: whatever `hyperpave` adds over it is
    what the hypergraph adds. The attribute stage judges every non-baseline extractor against the
    stronger of this and title matching."""

    name = "hyperpave_text"
    Config = HyperpaveTextConfig
    baseline = True

    def __init__(self, config: HyperpaveConfig | None = None):
        super().__init__(config or HyperpaveTextConfig())


@contextmanager
def _torch_threads(n: int) -> Iterator[None]:
    """Run with `n` torch intra-op threads (0 = leave as is), restoring the previous number after."""
    import torch

    previous = torch.get_num_threads()
    if n > 0:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
