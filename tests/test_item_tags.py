"""Item tags: the engine's (attribute, value) -> tag-id matrix that QIN-style item tokens pool."""

import numpy as np
import pyarrow as pa
import pytest

from ctr_dagster.contracts import input_tables
from ctr_dagster.item_tags import ItemTags, tags_from_attributes
from ctr_dagster.modeling import INPUT_PROVIDERS
from ctr_dagster.training.spec import FeatureSpec


def test_tags_follow_item_index_sorted_pairs_and_padding():
    attributes = pa.table(
        {
            "item_id": ["a", "a", "b", "c", "a", "zz"],
            "attribute": ["colour", "brand", "colour", "colour", "colour", "colour"],
            "value": ["red", "acme", "blue", None, "red", "red"],
        }
    )
    tags = tags_from_attributes(attributes, {"a": 2, "b": 3, "c": 4}, rows=5)
    # ids in sorted (attribute, value) order: brand=acme 1, colour=blue 2, colour=red 3; 0 = pad
    assert tags.vocabulary_size == 4
    assert tags.matrix.tolist() == [[0, 0], [0, 0], [1, 3], [2, 0], [0, 0]]  # c's null value skipped


def test_width_is_capped_and_ids_checked():
    attributes = pa.table({"item_id": ["a"] * 5, "attribute": list("vwxyz"), "value": ["1"] * 5})
    assert tags_from_attributes(attributes, {"a": 2}, rows=3, max_tags=3).matrix.shape == (3, 3)
    with pytest.raises(ValueError, match="outside"):
        ItemTags(np.array([[0, 7]], dtype=np.int32), vocabulary_size=5)


def test_item_tags_come_from_item_attributes_and_are_a_model_dependency():
    assert INPUT_PROVIDERS["item_tags"][0] == "item_attributes"
    assert input_tables(frozenset({"sequence", "item_tags", "item_embeddings"})) == [
        "item_attributes",
        "item_embeddings",
    ]


def test_feature_spec_round_trips_the_tag_shape():
    spec = FeatureSpec.from_cardinalities(
        {"item_idx": 10, "category_idx": 4}, max_seq_len=5, columns=("item_idx", "category_idx")
    )
    spec.item_tags = [3, 40]
    again = FeatureSpec.from_dict(spec.to_dict())
    assert again.item_tags == [3, 40]
    with pytest.raises(ValueError, match="item_tags"):
        FeatureSpec(categorical={"item_idx": 3, "category_idx": 3}, item_tags=[0, 4])


def test_inputs_a_plugin_reads_by_default_are_its_model_asset_deps():
    """QIN reads item vectors and tags unless switched off (`optional_inputs`, not `requires`): its
    asset must still run after the tables behind them, so the lineage has the edges."""
    import types

    from assets.models import model_inputs

    cls = types.SimpleNamespace(requires=frozenset({"sequence"}), optional_inputs=frozenset({"item_tags"}))
    plugin = types.SimpleNamespace(cls=cls)
    assert input_tables(model_inputs(plugin)) == ["item_attributes"]
    plain = types.SimpleNamespace(cls=types.SimpleNamespace(requires=frozenset({"sequence"})))
    assert input_tables(model_inputs(plain)) == []
