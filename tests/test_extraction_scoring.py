"""Extraction scoring: what is judged (complete vs labelled truth), abstention on known no-value
pairs, item-bootstrap intervals, and the paired comparison against the stronger baseline."""

import pyarrow as pa
import pytest

from ctr_dagster import extraction_scoring as scoring


def _attrs(rows) -> pa.Table:
    return pa.table({k: [r[n] for r in rows] for n, k in enumerate(["item_id", "attribute", "value"])})


def _pred(rows) -> pa.Table:
    return pa.table(
        {
            "item_id": [r[0] for r in rows],
            "attribute": [r[1] for r in rows],
            "value": [r[2] for r in rows],
            "score": pa.array([1.0] * len(rows), pa.float32()),
        }
    )


def _neg(rows) -> pa.Table:
    return pa.table({"item_id": [r[0] for r in rows], "attribute": [r[1] for r in rows]})


KNOWN = _attrs([("k1", "colour", "red"), ("k1", "brand", "Acme")])
TRUTH = _attrs([("i1", "colour", "red"), ("i2", "colour", "teal"), ("i3", "brand", "Acme")])
NEGATIVES = _neg([("i1", "brand"), ("i2", "brand"), ("i3", "colour")])


def _rows(scores, name):
    return {r["slice"]: r for r in scores.rows if r["extractor"] == name}


def test_labelled_truth_judges_only_labelled_pairs_and_counts_abstention():
    predictions = _pred(
        [
            ("i1", "colour", "red"),  # right, seen
            ("i1", "brand", "Acme"),  # a known no-value pair: wrong, and not abstained
            ("i2", "colour", "teal"),  # right, unseen
            ("i4", "colour", "blue"),  # i4 is not labelled at all: unjudged, not an error
            ("i3", "material", "wool"),  # attribute not labelled for i3: unjudged
        ]
    )
    scores = scoring.score_extractors({"x": predictions}, TRUTH, KNOWN, NEGATIVES, complete=False)
    rows = _rows(scores, "x")
    assert (rows["overall"]["tp"], rows["overall"]["predicted"], rows["overall"]["true"]) == (2, 3, 3)
    assert rows["overall"]["unjudged"] == 2
    assert (rows["seen"]["tp"], rows["seen"]["predicted"], rows["seen"]["true"]) == (1, 2, 2)
    assert (rows["unseen"]["tp"], rows["unseen"]["predicted"], rows["unseen"]["true"]) == (1, 1, 1)
    assert rows["no_value"]["predicted"] == 1 and rows["no_value"]["true"] == 3
    assert rows["no_value"]["abstained"] == pytest.approx(2 / 3, abs=1e-4)


def test_complete_truth_judges_every_pair_outside_the_catalogue():
    predictions = _pred([("i1", "colour", "red"), ("i4", "colour", "blue"), ("k1", "colour", "blue")])
    rows = _rows(scoring.score_extractors({"x": predictions}, TRUTH, KNOWN, complete=True), "x")
    # i4's prediction is wrong (the oracle knows i4 has no such value); k1's pair is in the catalogue
    assert (rows["overall"]["tp"], rows["overall"]["predicted"], rows["overall"]["unjudged"]) == (1, 2, 0)


def test_interval_brackets_the_point_and_narrows_with_more_items():
    def world(n):
        truth = _attrs([(f"i{k}", "colour", "red") for k in range(n)])
        # right on 3 of every 4 items, a wrong value on the others
        pred = _pred([(f"i{k}", "colour", "red" if k % 4 else "blue") for k in range(n)])
        return scoring.score_extractors({"x": pred}, truth, KNOWN, complete=False, seed=1)

    small, large = _rows(world(40), "x")["overall"], _rows(world(800), "x")["overall"]
    assert small["f1"] == pytest.approx(0.75) and large["f1"] == pytest.approx(0.75)
    for row in (small, large):
        assert row["f1_low"] < row["f1"] < row["f1_high"]
    assert large["f1_high"] - large["f1_low"] < (small["f1_high"] - small["f1_low"]) / 3


def test_comparison_uses_the_stronger_baseline_per_slice_and_says_noise():
    n = 400
    truth = _attrs([(f"i{k}", "colour", "red" if k % 2 else "teal") for k in range(n)])  # teal: unseen
    good = _pred([(f"i{k}", "colour", "red" if k % 2 else "teal") for k in range(n)])
    seen_only = _pred([(f"i{k}", "colour", "red") for k in range(1, n, 2)])  # a dictionary: seen values
    almost = _pred([(f"i{k}", "colour", "red" if k % 2 else "teal") for k in range(n) if k != 3])
    scores = scoring.score_extractors(
        {"good": good, "dictionary": seen_only, "almost": almost},
        truth,
        KNOWN,
        complete=False,
        baselines=["dictionary", "almost"],
    )
    by = {(c["extractor"], c["slice"]): c for c in scores.comparisons}
    assert {c["extractor"] for c in scores.comparisons} == {"good"}  # baselines are not judged
    assert by[("good", "unseen")]["baseline"] == "almost"  # the dictionary scores 0 there
    assert by[("good", "seen")]["baseline"] in {"dictionary", "almost"}
    assert by[("good", "overall")]["verdict"] == "noise"  # one item apart of 400
    beaten = scoring.score_extractors(
        {"good": good, "dictionary": seen_only}, truth, KNOWN, complete=False, baselines=["dictionary"]
    )
    assert {c["slice"]: c["verdict"] for c in beaten.comparisons}["unseen"] == "better"


def test_display_rows_leave_no_literal_none():
    scores = scoring.score_extractors(
        {"x": _pred([("i1", "colour", "red")])}, TRUTH, KNOWN, NEGATIVES, complete=False
    )
    for row in scoring.display_rows(scores.rows):
        assert "None" not in " ".join(row.values())
