"""The `title_match` baseline: conformance kit plus its matching rules."""

import pyarrow as pa
from ctr_dagster.testing import ExtractorConformance

from ctr_title_match.extractor import TitleMatchConfig, TitleMatchExtractor


class TestTitleMatchExtractor(ExtractorConformance):
    plugin = TitleMatchExtractor


def _items(rows) -> pa.Table:
    return pa.table(
        {"item_id": [r[0] for r in rows], "category": [r[1] for r in rows], "title": [r[2] for r in rows]}
    )


def _attrs(rows) -> pa.Table:
    return pa.table({k: [r[n] for r in rows] for n, k in enumerate(["item_id", "attribute", "value"])})


ITEMS = _items(
    [
        ("a", "shirt", "Acme red cotton shirt"),
        ("b", "shirt", "ACME Navy Blue tee - gift idea"),
        ("c", "mug", "Red mug by acme"),
        ("d", "shirt", "Teal redwood shirt"),
    ]
)
ATTRS = _attrs(
    [
        ("a", "brand", "Acme"),
        ("a", "colour", "red"),
        ("x", "colour", "navy blue"),  # an item outside `items` still teaches the dictionary
    ]
)


def _found(extractor, items=ITEMS) -> set[tuple[str, str, str]]:
    out = extractor.extract(items)
    assert set(out["score"].to_pylist()) <= {1.0}
    return set(
        zip(out["item_id"].to_pylist(), out["attribute"].to_pylist(), out["value"].to_pylist(), strict=True)
    )


def test_whole_word_phrases_case_insensitive_in_the_catalogue_spelling():
    found = _found(TitleMatchExtractor().fit(ITEMS, ATTRS))
    assert ("b", "brand", "Acme") in found and ("b", "colour", "navy blue") in found
    assert ("a", "colour", "red") in found
    # "redwood" is not "red", and "teal" was never in the catalogue: the baseline cannot find it
    assert not {f for f in found if f[0] == "d"}


def test_category_scoping():
    scoped = _found(TitleMatchExtractor().fit(ITEMS, ATTRS))
    assert not {f for f in scoped if f[0] == "c"}  # mugs have no attribute in the catalogue
    everywhere = _found(TitleMatchExtractor(TitleMatchConfig(category_scoped=False)).fit(ITEMS, ATTRS))
    assert {("c", "brand", "Acme"), ("c", "colour", "red")} <= everywhere


def test_min_count():
    found = _found(TitleMatchExtractor(TitleMatchConfig(min_count=2)).fit(ITEMS, ATTRS))
    assert found == set()
