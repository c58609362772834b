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


# -- marked slices (the synthetic oracle's "hidden": values no title or image states) ------------------
def test_marked_slice_holds_predictions_and_truth_on_marked_slots_split_by_unseen():
    truth = _attrs(
        [
            ("i1", "colour", "red"),  # seen, marked
            ("i2", "colour", "teal"),  # unseen, marked
            ("i3", "colour", "teal"),  # unseen, not marked
            ("i4", "brand", "Acme"),  # seen, not marked
        ]
    )
    hidden = _neg([("i1", "colour"), ("i2", "colour"), ("i5", "colour")])  # i5: no value at all
    predictions = _pred(
        [
            ("i1", "colour", "blue"),  # marked, wrong, unseen value predicted
            ("i2", "colour", "teal"),  # marked, right, unseen
            ("i3", "colour", "teal"),  # right, unmarked
            ("i5", "colour", "red"),  # marked slot without a value: wrong, seen value predicted
        ]
    )
    scores = scoring.score_extractors(
        {"x": predictions}, truth, KNOWN, complete=True, marked={"hidden": hidden}
    )
    rows = _rows(scores, "x")
    assert set(rows) == {"overall", "seen", "unseen", "hidden", "hidden_unseen"}
    count = {s: (rows[s]["tp"], rows[s]["predicted"], rows[s]["true"]) for s in rows}
    assert count["hidden"] == (1, 3, 2)
    assert count["hidden_unseen"] == (1, 2, 1)  # by the predicted value, and by the true value
    assert count["overall"] == (2, 4, 4)  # marking changes no other slice
    assert rows["hidden"]["f1"] == pytest.approx(2 * (1 / 3) * (1 / 2) / (1 / 3 + 1 / 2), abs=1e-4)


def test_marked_slices_are_compared_with_the_baseline_and_absent_when_not_asked():
    truth = _attrs([(f"i{k}", "colour", "teal") for k in range(60)])
    hidden = _neg([(f"i{k}", "colour") for k in range(30)])
    graph = _pred([(f"i{k}", "colour", "teal") for k in range(60)])
    text = _pred([(f"i{k}", "colour", "teal") for k in range(30, 60)])  # finds only the stated ones
    scores = scoring.score_extractors(
        {"graph": graph, "text": text},
        truth,
        KNOWN,
        complete=True,
        baselines=["text"],
        marked={"hidden": hidden},
    )
    by = {c["slice"]: c for c in scores.comparisons}
    assert by["hidden"]["verdict"] == "better" and by["hidden"]["baseline_f1"] == 0.0
    assert by["hidden_unseen"]["difference"] == pytest.approx(1.0)
    plain = scoring.score_extractors({"graph": graph}, truth, KNOWN, complete=True)
    assert {r["slice"] for r in plain.rows} == set(scoring.SLICES)  # real data: no marked rows


def test_hidden_slice_of_a_tiny_world_is_what_neither_title_nor_image_states():
    """The oracle flags give the slice: a reader of every title and image finds none of it, the
    values the `neighbourhood` knob hides are all in it, and the full truth fills it."""
    import numpy as np
    import pyarrow.compute as pc

    from ctr_dagster.datagen import build_world, profile

    world = build_world(profile("tiny", seed=5))
    assert world.config.signals.neighbourhood > 0
    oracle = world.oracle_item_attributes()
    silent = pc.invert(pc.or_(oracle.column("in_title"), oracle.column("in_image")))
    hidden = oracle.filter(silent).select(["item_id", "attribute"])
    marked = scoring.slots(hidden)
    by_line = {
        (f"i{i:06d}", a)
        for a, flags in world.catalogue.hidden_by_line.items()
        for i in np.flatnonzero(flags).tolist()
    }
    assert by_line and by_line <= marked
    truth = oracle.filter(pc.invert(oracle.column("in_catalogue"))).select(["item_id", "attribute", "value"])
    stated = oracle.filter(pc.invert(pc.or_(silent, oracle.column("in_catalogue"))))
    reader = stated.select(["item_id", "attribute", "value"]).append_column(
        "score", pa.array([1.0] * stated.num_rows, pa.float32())
    )
    everything = truth.append_column("score", pa.array([1.0] * truth.num_rows, pa.float32()))
    scores = scoring.score_extractors(
        {"reader": reader, "oracle": everything},
        truth,
        world.item_attributes(),
        complete=True,
        marked={"hidden": hidden},
        n_boot=10,
    )
    reader_rows, oracle_rows = _rows(scores, "reader"), _rows(scores, "oracle")
    n_hidden = sum(1 for s in scoring.slots(truth) if s in marked)
    assert n_hidden > 0
    assert (reader_rows["hidden"]["tp"], reader_rows["hidden"]["predicted"]) == (0, 0)
    assert reader_rows["hidden"]["true"] == oracle_rows["hidden"]["true"] == n_hidden
    assert oracle_rows["hidden"]["f1"] == 1.0 and reader_rows["overall"]["precision"] == 1.0
