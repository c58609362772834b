"""Attribute extraction: run extractor plugins, score them, enrich the catalogue, check downstream.

Model-agnostic: an extractor is any `ExtractorPlugin` (`ctr_dagster.contracts`); this module never
names one. The pieces, each a plain function `ctr_dagster.attributes.build_item_attributes` (the
stage) puts together:

* `evaluation_setup`: what the extractors are fitted on and judged against. Synthetic data has an
  oracle: extractors see the whole structured catalogue and are judged on the (item, attribute)
  pairs it lacks. Imported data has none: `holdout` hides whole attribute values (every row of
  them: the zero-shot test) and a share of the other rows (the seen-value test) before fitting.
* `fit_and_extract` / `run_extractor`: fit + extract one plugin, timed, its output checked
  (columns, types, scores in [0, 1], known items) and its report collected; run through
  `ctr_dagster.plugin_runs`, so a failure is captured (never raised) and the others still count.
* `evaluate`: precision / recall / F1 of one extractor overall, on seen values (the (attribute,
  value) pair occurs in the fitting catalogue) and on unseen ones (zero-shot), against the truth,
  counting only (item, attribute) pairs the fitting catalogue lacks. Values compare case-insensitively.
* `enrich`: the `item_attributes` table (schemas.ITEM_ATTRIBUTES_ENRICHED): catalogue rows, plus for
  each missing (item, attribute) the highest-scoring extracted value and who extracted it.
* `downstream_auc`: test AUC of one simple CTR model (scikit-learn logistic regression on one-hot
  context, item attribute one-hots and "the user's past clicks share this value" features) built
  with catalogue-only vs enriched attributes: does extraction help the CTR task at all?

numpy / pyarrow / scikit-learn are imported inside the functions.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ctr_dagster import extraction_scoring as scoring
from ctr_dagster.plugin_runs import PluginRun, Step, run_plugin

if TYPE_CHECKING:  # pragma: no cover - typing only
    import pyarrow as pa

    from ctr_dagster.contracts import FitContext

CATALOGUE = "catalogue"  # `extractor` value of rows that come from the structured catalogue
SLICES = scoring.SLICES
EVALUATION_COLUMNS = scoring.EVALUATION_COLUMNS
_triples = scoring.triples


# -- inputs ------------------------------------------------------------------------------------------
def interactions_from_training(training: pa.Table, split: str = "train") -> pa.Table:
    """(user_id, item_id, ts, click, conversion) of one split of the TRAINING table: the interaction
    input extractors may use (the train split only, so nothing from the CTR test period leaks)."""
    import pyarrow.compute as pc

    rows = training.filter(pc.equal(training.column("split"), split))
    return rows.select(["user_id", "item_id", "ts", "label", "conversion"]).rename_columns(
        ["user_id", "item_id", "ts", "click", "conversion"]
    )


def taxonomy(*tables: pa.Table | None) -> pa.Table:
    """Distinct (attribute, value) pairs of the given tables, sorted: the candidate values.

    The asset passes the structured catalogue and the source's published taxonomy
    (`SourceSettings.attribute_taxonomy`: the synthetic world's value vocabulary, as the paper's AV
    node set covers the whole dataset's values); never the oracle's per-item truth."""
    import pyarrow as pa

    pairs: set[tuple[str, str]] = set()
    for t in tables:
        if t is not None and t.num_rows:
            pairs |= set(zip(t.column("attribute").to_pylist(), t.column("value").to_pylist(), strict=True))
    ordered = sorted(pairs)
    return pa.table(
        {
            "attribute": pa.array([a for a, _ in ordered], pa.string()),
            "value": pa.array([v for _, v in ordered], pa.string()),
        }
    )


@dataclass(frozen=True)
class EvaluationSetup:
    fit_attributes: pa.Table  # ITEM_ATTRIBUTES the extractors are fitted on
    truth: pa.Table  # (item_id, attribute, value) the extractors are judged against
    source: str  # "oracle" or "holdout"
    #: True: every (item, attribute) pair outside the fitting catalogue is judged (the oracle knows
    #: them all); False: only labelled ones (held-out values, held-out negatives)
    complete: bool = True
    fit_negatives: pa.Table | None = None  # (item_id, attribute) known to have no value, for fitting
    truth_negatives: pa.Table | None = None  # the same, held out: abstention is judged on them


def evaluation_setup(
    attributes: pa.Table,
    oracle: pa.Table | None,
    seed: int = 0,
    negatives: pa.Table | None = None,
    **holdout_args: Any,
) -> EvaluationSetup:
    """Oracle when there is one (synthetic data), else a `holdout` of the catalogue (imported data).

    `negatives` (ATTRIBUTE_NEGATIVES, e.g. MAVE's empty-evidence attributes): with an oracle they
    are all given to the extractors; with a holdout the same row share is held out with the values,
    so abstention is judged on pairs the extractors never saw labelled."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    if oracle is not None and oracle.num_rows:
        missing = oracle.filter(pc.invert(oracle.column("in_catalogue")))
        truth = missing.select(["item_id", "attribute", "value"])
        return EvaluationSetup(attributes, truth, "oracle", complete=True, fit_negatives=negatives)
    fit, truth = holdout(attributes, seed=seed, **holdout_args)
    fit_neg = held_neg = None
    if negatives is not None and negatives.num_rows:
        share = holdout_args.get("row_share", 0.1)
        held = np.random.default_rng([seed, 1]).random(negatives.num_rows) < share
        fit_neg, held_neg = negatives.filter(pa.array(~held)), negatives.filter(pa.array(held))
    return EvaluationSetup(
        fit, truth, "holdout", complete=False, fit_negatives=fit_neg, truth_negatives=held_neg
    )


def holdout(
    attributes: pa.Table, seed: int = 0, av_share: float = 0.1, row_share: float = 0.1, min_items: int = 2
) -> tuple[pa.Table, pa.Table]:
    """(fitting catalogue, held-out truth) without an oracle.

    Whole (attribute, value) pairs are held out first - a share `av_share` of those used by at least
    `min_items` items, with *all* their rows: values the extractors never see (zero-shot, as the
    paper's unseen-AV split). Then `row_share` of the remaining rows is held out (seen values).
    """
    import numpy as np
    import pyarrow as pa

    attr = attributes.column("attribute").to_pylist()
    value = attributes.column("value").to_pylist()
    pairs: dict[tuple[str, str], int] = {}
    for a, v in zip(attr, value, strict=True):
        pairs[(a, v)] = pairs.get((a, v), 0) + 1
    rng = np.random.default_rng(seed)
    eligible = sorted(p for p, n in pairs.items() if n >= min_items)
    n_held = int(round(av_share * len(eligible)))
    held_pairs = {eligible[k] for k in rng.permutation(len(eligible))[:n_held].tolist()}
    zero_shot = np.array([(a, v) in held_pairs for a, v in zip(attr, value, strict=True)], dtype=bool)
    seen_held = ~zero_shot & (rng.random(len(attr)) < row_share)
    held = zero_shot | seen_held
    truth = attributes.filter(pa.array(held)).select(["item_id", "attribute", "value"])
    return attributes.filter(pa.array(~held)), truth


# -- running ---------------------------------------------------------------------------------------
@dataclass
class ExtractorRun(PluginRun["pa.Table"]):
    """One extractor's `PluginRun`: its predictions (the step's value) or the error that stopped it."""

    @property
    def predictions(self) -> pa.Table | None:
        return self.value

    @property
    def fit_seconds(self) -> float:
        return self.phases.get("fit", 0.0)

    @property
    def extract_seconds(self) -> float:
        return self.phases.get("extract", 0.0)

    @property
    def summary(self) -> dict[str, Any]:
        """The extractor's report (its `summary` + `report(directory)`), JSON-able."""
        return self.report.as_json()


def check_predictions(out: Any, items: pa.Table, name: str) -> pa.Table:
    """The extractor output as (item_id, attribute, value, score float32), or ValueError naming the problem."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    if not isinstance(out, pa.Table):
        raise ValueError(f"{name}: extract must return a pyarrow Table, got {type(out).__name__}")
    missing = [c for c in ("item_id", "attribute", "value", "score") if c not in out.column_names]
    if missing:
        raise ValueError(f"{name}: extract output lacks column(s) {missing}; has {out.column_names}")
    table = pa.table(
        {
            "item_id": out.column("item_id").cast(pa.string()),
            "attribute": out.column("attribute").cast(pa.string()),
            "value": out.column("value").cast(pa.string()),
            "score": out.column("score").cast(pa.float32()),
        }
    )
    for column in table.column_names:
        if table.column(column).null_count:
            row = int(np.flatnonzero(table.column(column).is_null().to_numpy(zero_copy_only=False))[0])
            raise ValueError(f"{name}: extract output row {row}, column {column!r} is null")
    score = table.column("score").to_numpy(zero_copy_only=False)
    bad = np.flatnonzero(~np.isfinite(score) | (score < 0) | (score > 1))
    if len(bad):
        raise ValueError(
            f"{name}: extract output row {int(bad[0])}, column 'score' = {float(score[bad[0]])!r} is not in [0, 1]"
        )
    unknown = pc.invert(pc.is_in(table.column("item_id"), value_set=items.column("item_id")))
    if pc.any(unknown).as_py():
        row = int(np.flatnonzero(unknown.to_numpy(zero_copy_only=False))[0])
        raise ValueError(
            f"{name}: extract output row {row}, column 'item_id' = {table.column('item_id')[row]} is not a catalogue item"
        )
    return table


def fit_and_extract(
    step: Step,
    name: str,
    extractor: Any,
    items: pa.Table,
    attributes: pa.Table,
    ctx: FitContext,
    report_dir: Path | None = None,
    extract_on: pa.Table | None = None,
) -> pa.Table:
    """One extractor's work inside a plugin step: fit (with `ctx` when it declares `requires`), extract
    on `extract_on` (default: `items`, the catalogue it was fitted on; `ctr attributes` passes the
    test file's new products), check the output, collect its report (`report(report_dir)`)."""
    from ctr_dagster.contracts import extractor_fit

    targets = items if extract_on is None else extract_on
    with step.phase("fit"):
        fitted = extractor_fit(extractor, items, attributes, ctx)
    with step.phase("extract"):
        predictions = check_predictions(fitted.extract(targets), targets, name)
    step.collect_report(fitted, report_dir)
    return predictions


def run_extractor(
    name: str,
    extractor: Any,
    items: pa.Table,
    attributes: pa.Table,
    ctx: FitContext,
    *,
    report_dir: Path | None = None,
    warn: Callable[[str], None] | None = None,
) -> ExtractorRun:
    """`fit_and_extract` one extractor instance, isolated (`plugin_runs.run_plugin`); never raises."""
    return run_plugin(
        name,
        lambda step: fit_and_extract(step, name, extractor, items, attributes, ctx, report_dir),
        kind="extractor",
        warn=warn,
        run_type=ExtractorRun,
    )


# -- scoring (`extraction_scoring`) ------------------------------------------------------------------
def evaluate(
    name: str,
    predictions: pa.Table,
    truth: pa.Table,
    known: pa.Table,
    negatives: pa.Table | None = None,
    *,
    complete: bool = True,
) -> list[dict[str, Any]]:
    """P/R/F1 rows of one extractor (`extraction_scoring.score_extractors`, which says what is judged:
    pairs `known` lacks; with `complete=False` only the labelled ones)."""
    scores = scoring.score_extractors({name: predictions}, truth, known, negatives, complete=complete)
    return scores.rows


# -- enrichment ------------------------------------------------------------------------------------
def enrich(attributes: pa.Table, runs: Sequence[ExtractorRun], use: Sequence[str] | None = None) -> pa.Table:
    """Catalogue rows (score 1, extractor "catalogue") + per missing (item, attribute) the best
    extracted value among the successful runs named in `use` (all when None): highest score, ties to
    the earlier run. Sorted by item, attribute."""
    import pyarrow as pa

    from ctr_dagster import schemas

    known = set(
        zip(attributes.column("item_id").to_pylist(), attributes.column("attribute").to_pylist(), strict=True)
    )
    best: dict[tuple[str, str], tuple[float, str, str]] = {}
    for run in runs:
        if not run.ok or (use is not None and run.name not in use):
            continue
        p = run.predictions
        for item, attribute, value, score in zip(
            p.column("item_id").to_pylist(),
            p.column("attribute").to_pylist(),
            p.column("value").to_pylist(),
            p.column("score").to_pylist(),
            strict=True,
        ):
            slot = (item, attribute)
            if slot in known:
                continue
            if slot not in best or score > best[slot][0]:
                best[slot] = (float(score), value, run.name)
    rows = [(i, a, v, 1.0, CATALOGUE) for i, a, v in zip(
        attributes.column("item_id").to_pylist(),
        attributes.column("attribute").to_pylist(),
        attributes.column("value").to_pylist(),
        strict=True,
    )]  # fmt: skip
    rows += [(i, a, v, s, who) for (i, a), (s, v, who) in best.items()]
    rows.sort(key=lambda r: (r[0], r[1], r[4] != CATALOGUE))
    table = pa.table({k: [r[n] for r in rows] for n, k in enumerate(schemas.ITEM_ATTRIBUTES_ENRICHED.names)})
    return schemas.conform(table, schemas.ITEM_ATTRIBUTES_ENRICHED, source="item_attributes")


# -- downstream ------------------------------------------------------------------------------------
_ONE_HOT = ("category_idx", "device_idx", "region_idx", "age_group_idx", "position", "hour", "day_of_week")


def _value_codes(table: pa.Table, item_of_idx: dict[int, str], n_idx: int) -> dict[str, Any]:
    """attribute -> int array [n_idx] of value codes per item index (-1 = unknown)."""
    import numpy as np

    index_of = {item: idx for idx, item in item_of_idx.items()}
    out: dict[str, Any] = {}
    vocab: dict[tuple[str, str], int] = {}
    for item, attribute, value in _triples(table):
        idx = index_of.get(item)
        if idx is None:
            continue
        codes = out.setdefault(attribute, np.full(n_idx, -1, dtype=np.int64))
        codes[idx] = vocab.setdefault((attribute, value), len(vocab))
    return out


def attribute_features(training: pa.Table, attributes: pa.Table) -> tuple[Any, list[str]]:
    """Sparse [rows, k] features of the target item's attributes: value one-hots per attribute
    (unknown = its own column) and, per attribute, the share of the user's earlier clicks (the
    behaviour sequence) whose item has the same known value, plus whether any does."""
    import numpy as np
    import scipy.sparse as sp

    item_idx = training.column("item_idx").to_numpy()
    item_ids = training.column("item_id").to_pylist()
    item_of_idx = {int(i): s for i, s in zip(item_idx.tolist(), item_ids, strict=True) if i > 1}
    hist = training.column("hist_item_idx").combine_chunks()
    flat = hist.flatten().to_numpy()
    offsets = hist.offsets.to_numpy()
    n_idx = int(max(item_idx.max(initial=1), flat.max(initial=1))) + 1
    codes = _value_codes(attributes, item_of_idx, n_idx)
    n = len(item_idx)
    row_of_flat = np.repeat(np.arange(n), np.diff(offsets))
    lengths = np.maximum(np.diff(offsets), 1)
    blocks, names = [], []
    for attribute in sorted(codes):
        c = codes[attribute]
        target = c[item_idx]
        n_values = int(c.max(initial=-1)) + 2  # + "unknown"
        onehot = sp.csr_matrix((np.ones(n), (np.arange(n), target + 1)), shape=(n, n_values))
        match = (c[flat] == target[row_of_flat]) & (target[row_of_flat] >= 0)
        share = np.bincount(row_of_flat, weights=match, minlength=n) / lengths
        blocks += [onehot, sp.csr_matrix(np.stack([share, share > 0], axis=1))]
        names += [f"{attribute}=#{k}" for k in range(n_values)] + [
            f"{attribute}_hist_share",
            f"{attribute}_hist_any",
        ]
    if not blocks:
        return sp.csr_matrix((n, 0)), []
    return sp.hstack(blocks).tocsr(), names


def context_features(training: pa.Table) -> Any:
    """Sparse one-hots of the context columns plus scaled numeric columns (shared by both variants)."""
    import numpy as np
    import scipy.sparse as sp

    n = training.num_rows
    blocks = []
    for column in _ONE_HOT:
        v = training.column(column).to_numpy().astype(np.int64)
        lo, hi = (int(v.min()), int(v.max())) if n else (0, 0)
        blocks.append(sp.csr_matrix((np.ones(n), (np.arange(n), v - lo)), shape=(n, hi - lo + 1)))
    numeric = np.stack(
        [
            np.log1p(training.column("user_click_count").to_numpy().astype(np.float64)),
            np.log1p(training.column("price").to_numpy().astype(np.float64)),
            training.column("is_new_item").to_numpy(zero_copy_only=False).astype(np.float64),
            training.column("is_new_user").to_numpy(zero_copy_only=False).astype(np.float64),
        ],
        axis=1,
    )
    numeric = (numeric - numeric.mean(axis=0)) / np.maximum(numeric.std(axis=0), 1e-9)
    blocks.append(sp.csr_matrix(numeric))
    return sp.hstack(blocks).tocsr()


def downstream_auc(
    training: pa.Table,
    variants: dict[str, pa.Table],
    seed: int = 0,
    max_train_rows: int = 200_000,
    log: Callable[[str], None] = print,
) -> dict[str, float]:
    """Test AUC of a logistic regression per attribute table in `variants` (e.g. {"catalogue": ...,
    "enriched": ...}), same rows, same context features, same seed: `auc_<variant>` per variant."""
    import numpy as np
    import pyarrow.compute as pc
    import scipy.sparse as sp
    from sklearn.linear_model import LogisticRegression

    from ctr_dagster.metrics import auc

    split = training.column("split")
    train_rows = np.flatnonzero(pc.equal(split, "train").to_numpy(zero_copy_only=False))
    test_rows = np.flatnonzero(pc.equal(split, "test").to_numpy(zero_copy_only=False))
    if len(train_rows) > max_train_rows:
        train_rows = np.sort(np.random.default_rng(seed).choice(train_rows, max_train_rows, replace=False))
    label = training.column("label").to_numpy().astype(np.int64)
    out: dict[str, float] = {"train_rows": len(train_rows), "test_rows": len(test_rows)}
    if not len(test_rows) or len(np.unique(label[train_rows])) < 2 or len(np.unique(label[test_rows])) < 2:
        log("downstream_auc: train or test split has a single class; skipped")
        return out
    context = context_features(training)
    for name, attributes in variants.items():
        started = time.perf_counter()
        features, _ = attribute_features(training, attributes)
        x = sp.hstack([context, features]).tocsr()
        model = LogisticRegression(C=1.0, max_iter=400, random_state=seed)
        model.fit(x[train_rows], label[train_rows])
        out[f"auc_{name}"] = float(auc(label[test_rows], model.predict_proba(x[test_rows])[:, 1]))
        log(f"downstream_auc[{name}]: {out[f'auc_{name}']:.4f} ({time.perf_counter() - started:.1f} s)")
    return out
