"""No held-out attribute value reaches an extractor: not as a candidate, not in the catalogue it is
fitted on, not as a HyperPAVE graph node (its vocabulary and features), not in what it predicts.

The regression this guards: candidates were once built from the full catalogue, hidden rows
included, so every candidate value without catalogue rows was a held-out answer."""

import dataclasses

import pyarrow as pa
import pytest

from ctr_dagster import extraction
from ctr_dagster.attributes import ExtractorSpec, build_item_attributes


@pytest.fixture(scope="module")
def world():
    from ctr_dagster.datagen import build_world, profile
    from ctr_dagster.testing import synthetic_training_table

    w = build_world(profile("tiny"))
    return {
        "items": w.items(),
        "attributes": w.item_attributes(),
        "training": synthetic_training_table("tiny"),
    }


@dataclasses.dataclass
class _Config:
    pass


class Spy:
    """Records everything the stage hands it; predicts nothing."""

    name = "spy"
    Config = _Config
    requires = frozenset({"candidates", "interactions", "negatives"})
    seen: dict = {}

    def __init__(self, config=None):
        pass

    def fit(self, items, attributes, ctx):
        Spy.seen = {"attributes": attributes, **ctx.inputs}
        return self

    def extract(self, items):
        return pa.table(
            {
                "item_id": pa.array([], pa.string()),
                "attribute": pa.array([], pa.string()),
                "value": pa.array([], pa.string()),
                "score": pa.array([], pa.float32()),
            }
        )


def _pairs(table) -> set[tuple[str, str]]:
    return set(zip(table.column("attribute").to_pylist(), table.column("value").to_pylist(), strict=True))


def _held_out_values(attributes, seed=0) -> set[tuple[str, str]]:
    """(attribute, value) pairs the holdout hides whole: the answers of the zero-shot slice."""
    setup = extraction.evaluation_setup(attributes, None, seed=seed)
    hidden = _pairs(setup.truth) - _pairs(setup.fit_attributes)
    assert hidden, "the holdout must hide some whole values for this test to mean anything"
    return hidden


def test_no_held_out_value_reaches_an_extractor_without_a_taxonomy(world):
    hidden = _held_out_values(world["attributes"])
    result = build_item_attributes(
        world["items"],
        world["attributes"],
        [ExtractorSpec(Spy)],
        training=world["training"],
        log=lambda m: None,
    )
    assert result.evaluation_source == "holdout"
    assert not (_pairs(Spy.seen["candidates"]) & hidden)
    assert not (_pairs(Spy.seen["attributes"]) & hidden)
    assert "publishes no taxonomy" in result.candidate_note
    unseen = next(r for r in result.evaluation if r["slice"] == "unseen")
    assert unseen["true"] > 0  # the held-out values are still judged (and no extractor can find them)


def test_a_published_taxonomy_adds_only_its_own_values(world):
    hidden = sorted(_held_out_values(world["attributes"]))
    published = hidden[: len(hidden) // 2] + [("colour", "no-such-colour")]  # half of them + a distractor
    taxonomy = pa.table({"attribute": [a for a, _ in published], "value": [v for _, v in published]})
    build_item_attributes(
        world["items"], world["attributes"], [ExtractorSpec(Spy)], taxonomy=taxonomy, log=lambda m: None
    )
    offered = _pairs(Spy.seen["candidates"])
    assert set(published) <= offered
    assert not (offered & set(hidden[len(hidden) // 2 :]))  # the unpublished half stays hidden


def test_hyperpave_never_sees_or_predicts_a_held_out_value(world):
    from ctr_hyperpave.extractor import HyperpaveExtractor

    hidden = _held_out_values(world["attributes"])
    fitted = {}

    class Recording(HyperpaveExtractor):
        def fit(self, items, attributes, ctx=None):
            super().fit(items, attributes, ctx)
            fitted["extractor"] = self
            return self

    result = build_item_attributes(
        world["items"],
        world["attributes"],
        [ExtractorSpec(Recording, {"steps": 20})],
        training=world["training"],
        downstream=False,
        log=lambda m: None,
    )
    graph = fitted["extractor"].graph
    assert not (set(graph.avs) & hidden)  # no AV node (vocabulary, node features) for a hidden value
    predictions = result.runs.ok[0].predictions
    assert not (_pairs(predictions) & hidden)


def test_known_negatives_are_split_like_the_values_and_judged_as_no_value(world):
    """With a holdout, part of the known no-value pairs is held out and judged (abstention); only the
    rest reaches the extractors, so none is both an input and an answer."""
    items = world["items"].column("item_id").to_pylist()
    negatives = pa.table({"item_id": items, "attribute": ["warranty"] * len(items)})
    result = build_item_attributes(
        world["items"], world["attributes"], [ExtractorSpec(Spy)], negatives=negatives, log=lambda m: None
    )
    given = set(
        zip(
            Spy.seen["negatives"]["item_id"].to_pylist(),
            Spy.seen["negatives"]["attribute"].to_pylist(),
            strict=True,
        )
    )
    no_value = next(r for r in result.evaluation if r["slice"] == "no_value")
    assert 0 < no_value["true"] < len(items) and len(given) + no_value["true"] == len(items)
    assert no_value["abstained"] == 1.0  # the spy predicts nothing
