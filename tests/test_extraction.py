"""Extraction engine: the extractor contract, P/R/F1 on a hand-checked example, enrichment, the
imported-data holdout (no leakage), failure isolation and the downstream AUC check."""

import dataclasses
import re

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from ctr_dagster import extraction, schemas, testing
from ctr_dagster.contracts import FitContext, contract_violations, extractor_fit


def _attrs(rows) -> pa.Table:
    return pa.table({k: [r[n] for r in rows] for n, k in enumerate(["item_id", "attribute", "value"])})


def _pred(rows) -> pa.Table:
    return pa.table(
        {
            "item_id": [r[0] for r in rows],
            "attribute": [r[1] for r in rows],
            "value": [r[2] for r in rows],
            "score": pa.array([r[3] for r in rows], pa.float32()),
        }
    )


KNOWN = _attrs([("i1", "colour", "red"), ("i2", "colour", "blue"), ("i2", "brand", "Acme")])
TRUTH = _attrs(
    [
        ("i1", "brand", "Acme"),
        ("i1", "material", "cotton"),
        ("i2", "material", "wool"),
        ("i3", "colour", "teal"),
        ("i3", "brand", "Zentro"),
    ]
)


def test_precision_recall_f1_hand_checked():
    predictions = _pred(
        [
            ("i1", "colour", "red", 1.0),  # the catalogue has this pair: not an extraction, ignored
            ("i1", "brand", "ACME", 0.9),  # right (case-insensitive), seen value
            ("i1", "material", "silk", 0.8),  # wrong, unseen value
            ("i2", "material", "Wool", 0.7),  # right, unseen value
            ("i3", "colour", "teal", 0.6),  # right, unseen value
            ("i3", "colour", "red", 0.5),  # wrong, seen value
            ("i4", "brand", "Acme", 0.4),  # no truth for this pair: wrong, seen value
        ]
    )
    rows = {r["slice"]: r for r in extraction.evaluate("x", predictions, TRUTH, KNOWN)}
    # overall: 3 right of 6 predictions, 5 truths
    assert (rows["overall"]["tp"], rows["overall"]["predicted"], rows["overall"]["true"]) == (3, 6, 5)
    assert rows["overall"]["precision"] == 0.5 and rows["overall"]["recall"] == 0.6
    assert rows["overall"]["f1"] == pytest.approx(2 * 0.5 * 0.6 / 1.1, abs=1e-4)
    # seen values (pair in the catalogue): Acme right, red and i4's Acme wrong; one seen truth
    assert (rows["seen"]["tp"], rows["seen"]["predicted"], rows["seen"]["true"]) == (1, 3, 1)
    assert rows["seen"]["f1"] == pytest.approx(0.5, abs=1e-4)
    # unseen values: wool and teal right, silk wrong; truths cotton, wool, teal, Zentro
    assert (rows["unseen"]["tp"], rows["unseen"]["predicted"], rows["unseen"]["true"]) == (2, 3, 4)
    assert rows["unseen"]["f1"] == pytest.approx(2 * (2 / 3) * 0.5 / (2 / 3 + 0.5), abs=1e-4)


def test_empty_predictions_score_zero():
    rows = extraction.evaluate("none", _pred([]), TRUTH, KNOWN)
    assert [(r["slice"], r["f1"], r["true"]) for r in rows] == [
        ("overall", 0.0, 5),
        ("seen", 0.0, 1),
        ("unseen", 0.0, 4),
    ]


def test_oracle_setup_judges_the_pairs_the_catalogue_lacks():
    oracle = pa.table(
        {
            "item_id": ["i1", "i1", "i2"],
            "attribute": ["colour", "brand", "colour"],
            "value": ["red", "Acme", "teal"],
            "in_catalogue": [True, False, False],
            "in_title": [True, True, True],
            "in_image": [False, False, False],
            "zero_shot": [False, False, True],
        }
    )
    setup = extraction.evaluation_setup(KNOWN, oracle)
    assert setup.source == "oracle" and setup.fit_attributes is KNOWN
    assert setup.truth.to_pylist() == [
        {"item_id": "i1", "attribute": "brand", "value": "Acme"},
        {"item_id": "i2", "attribute": "colour", "value": "teal"},
    ]
    assert extraction.taxonomy(KNOWN, oracle).to_pylist()[-1] == {"attribute": "colour", "value": "teal"}


def test_holdout_hides_whole_values_with_no_leakage():
    rng = np.random.default_rng(0)
    values = [f"v{k}" for k in range(20)]
    rows = [(f"i{j}", "colour", values[rng.integers(20)]) for j in range(400)]
    rows += [(f"i{j}", "brand", values[rng.integers(5)]) for j in range(400)]
    attributes = _attrs(rows)
    fit, truth = extraction.holdout(attributes, seed=3, av_share=0.2, row_share=0.1)
    assert fit.num_rows + truth.num_rows == attributes.num_rows
    fit_pairs = set(zip(fit["attribute"].to_pylist(), fit["value"].to_pylist(), strict=True))
    truth_pairs = set(zip(truth["attribute"].to_pylist(), truth["value"].to_pylist(), strict=True))
    unseen = truth_pairs - fit_pairs
    assert len(unseen) == round(0.2 * 25)  # 25 (attribute, value) pairs, 20 % held out whole
    # every row of an unseen value is in the truth, none in the fitting catalogue
    for a, v in unseen:
        assert not any(r[1] == a and r[2] == v for r in zip(*fit.to_pydict().values(), strict=True))
    assert truth.num_rows > sum(1 for r in rows if (r[1], r[2]) in unseen)  # plus seen-value rows
    again_fit, again_truth = extraction.holdout(attributes, seed=3, av_share=0.2, row_share=0.1)
    assert again_fit.equals(fit) and again_truth.equals(truth)
    setup = extraction.evaluation_setup(attributes, schemas.empty(schemas.ORACLE_ITEM_ATTRIBUTES), seed=3)
    assert setup.source == "holdout"


def test_enrich_keeps_the_catalogue_and_adds_the_best_value_per_missing_pair():
    a = extraction.ExtractorRun(
        "a", _pred([("i1", "colour", "blue", 0.9), ("i1", "brand", "X", 0.4), ("i3", "style", "boho", 0.3)])
    )
    b = extraction.ExtractorRun("b", _pred([("i1", "brand", "Acme", 1.0), ("i3", "style", "goth", 0.3)]))
    failed = extraction.ExtractorRun("c", None, error="boom")
    table = extraction.enrich(KNOWN, [a, b, failed])
    assert table.schema.equals(schemas.ITEM_ATTRIBUTES_ENRICHED)
    assert table.to_pylist() == [
        {"item_id": "i1", "attribute": "brand", "value": "Acme", "score": 1.0, "extractor": "b"},
        {"item_id": "i1", "attribute": "colour", "value": "red", "score": 1.0, "extractor": "catalogue"},
        {"item_id": "i2", "attribute": "brand", "value": "Acme", "score": 1.0, "extractor": "catalogue"},
        {"item_id": "i2", "attribute": "colour", "value": "blue", "score": 1.0, "extractor": "catalogue"},
        {
            "item_id": "i3",
            "attribute": "style",
            "value": "boho",
            "score": pytest.approx(0.3),
            "extractor": "a",
        },
    ]
    only_a = extraction.enrich(KNOWN, [a, b], use=["a"])
    assert only_a.filter(pc.equal(only_a["item_id"], "i1")).column("value").to_pylist() == ["X", "red"]


class _Good:
    name = "good"

    def fit(self, items, attributes):
        return self

    def extract(self, items):
        return _pred([(items["item_id"][0].as_py(), "colour", "red", 0.5)])


class _BadScore(_Good):
    def extract(self, items):
        return _pred([(items["item_id"][0].as_py(), "colour", "red", 1.5)])


class _UnknownItem(_Good):
    def extract(self, items):
        return _pred([("nope", "colour", "red", 0.5)])


class _Raises(_Good):
    def fit(self, items, attributes):
        raise RuntimeError("cannot fit")


def test_run_extractor_captures_failures_and_bad_output():
    items = testing.make_items_table(5)
    ctx = FitContext(log=lambda _m: None)
    ok = extraction.run_extractor("good", _Good(), items, KNOWN, ctx)
    assert ok.ok and ok.predictions.num_rows == 1 and ok.error is None
    for cls, message in (
        (_BadScore, r"row 0, column 'score' = 1\.5 is not in \[0, 1\]"),
        (_UnknownItem, r"row 0, column 'item_id' = nope is not a catalogue item"),
        (_Raises, r"RuntimeError: cannot fit"),
    ):
        run = extraction.run_extractor(cls.__name__, cls(), items, KNOWN, ctx)
        assert not run.ok and run.predictions is None
        assert re.search(message, run.error), run.error


class _WithContext:
    name = "with_context"
    Config = dataclasses.make_dataclass("C", [("k", int, 1)])
    requires = frozenset({"candidates"})

    def __init__(self, config=None):
        self.seen = None

    def fit(self, items, attributes, ctx):
        self.seen = ctx.inputs.get("candidates")
        return self

    def extract(self, items):
        return _pred([])


def test_extractor_contract_requires_and_context():
    assert contract_violations("extractor", _WithContext) == []
    ext = _WithContext()
    ctx = FitContext(inputs={"candidates": extraction.taxonomy(KNOWN)})
    assert extractor_fit(ext, None, KNOWN, ctx) is ext and ext.seen.num_rows == 3

    class UnknownInput(_WithContext):
        requires = frozenset({"weather"})

    class NoContext(_WithContext):
        def fit(self, items, attributes):
            return self

    assert any(
        "unknown extractor input(s) ['weather']" in p for p in contract_violations("extractor", UnknownInput)
    )
    assert any(
        "must accept fit(items, attributes, ctx)" in p for p in contract_violations("extractor", NoContext)
    )
    # an extractor without `requires` keeps the two-argument fit
    good = _Good()
    assert extractor_fit(good, None, KNOWN, ctx) is good


def test_interactions_come_from_the_train_split_only():
    training = testing.make_training_table(300, seed=1)
    inter = extraction.interactions_from_training(training)
    assert inter.column_names == ["user_id", "item_id", "ts", "click", "conversion"]
    assert inter.num_rows == pc.sum(pc.equal(training["split"], "train")).as_py()


def test_downstream_auc_sees_an_attribute_that_drives_clicks():
    # make_training_table plants a click boost for items of the category the user clicked recently:
    # giving the models that category as an item attribute (through the "user's past clicks share
    # this value" feature) must raise the test AUC over no attributes at all.
    training = testing.make_training_table(3000, seed=0)
    category = dict(zip(training["item_id"].to_pylist(), training["category_idx"].to_pylist(), strict=True))
    group = _attrs([(i, "group", str(c)) for i, c in category.items()])
    out = extraction.downstream_auc(
        training, {"none": schemas.empty(schemas.ITEM_ATTRIBUTES), "group": group}, log=lambda _m: None
    )
    assert out["test_rows"] == pc.sum(pc.equal(training["split"], "test")).as_py()
    assert out["auc_group"] > out["auc_none"] + 0.01
