"""`use_item_embeddings` / the `lightgbm_emb` twin: conformance, features by hand, persistence, errors."""

import numpy as np
import pyarrow as pa
import pytest
from ctr_dagster.contracts import FitContext
from ctr_dagster.testing import ModelConformance, make_fit_inputs, make_training_table

from ctr_lightgbm import embeddings
from ctr_lightgbm.embeddings import ItemVectors
from ctr_lightgbm.model import LightgbmEmbModel, LightgbmModel

FAST = {
    "num_boost_round": 60,
    "early_stopping_rounds": 10,
    "min_data_in_leaf": 20,
    "min_data_per_group": 10,
    "num_leaves": 15,
}


class TestLightgbmEmbModel(ModelConformance):
    plugin = LightgbmEmbModel
    config = FAST


def _rows(items: list[int], histories: list[list[int]]) -> pa.Table:
    ages = [[float(3600 * (len(h) - k)) for k in range(len(h))] for h in histories]
    return pa.table(
        {
            "item_idx": pa.array(items, pa.int32()),
            "hist_item_idx": pa.array(histories, pa.list_(pa.int32())),
            "hist_age_s": pa.array(ages, pa.list_(pa.float32())),
        }
    )


def test_similarity_features_by_hand():
    # items 2, 3 point along x; item 4 along y; 0/1 (pad/OOV) have no vector.
    matrix = np.zeros((5, 2), dtype=np.float32)
    matrix[2], matrix[3], matrix[4] = (2.0, 0.0), (1.0, 0.0), (0.0, 3.0)
    vectors = ItemVectors.fit(matrix, components=1)
    table = _rows([2, 4, 1, 9], [[3, 4], [3, 4], [2], []])
    f = vectors.features(table)
    names = embeddings.names(1)
    assert f.shape == (4, len(names))
    col = {n: f[:, i] for i, n in enumerate(names)}
    np.testing.assert_allclose(col["emb_hist_mean_cos"], [0.5, 0.5, 0.0, 0.0])
    np.testing.assert_allclose(col["emb_hist_max_cos"], [1.0, 1.0, 0.0, 0.0])
    np.testing.assert_allclose(col["emb_hist_last_cos"], [0.0, 1.0, 0.0, 0.0])  # most recent = last
    # the most recent click weighs more: item 4's decayed similarity leans to its last click (itself)
    assert col["emb_hist_decayed_cos"][1] > 0.5 > col["emb_hist_decayed_cos"][0]
    np.testing.assert_array_equal(col[embeddings.KNOWN], [1.0, 1.0, 0.0, 0.0])  # OOV and beyond-vocab
    # one component: items 2 (row 0) and 4 (row 1) point different ways; no vector -> 0
    assert col["emb_pc0"][0] != col["emb_pc0"][1] and col["emb_pc0"][2] == 0.0
    np.testing.assert_allclose(vectors.scores[2], vectors.scores[3])  # same direction, other length


def test_residual_similarity_compares_items_beyond_their_category():
    # items 2 and 3 share category 0 and differ only along y; item 4 is alone in category 1.
    matrix = np.array([[0, 0], [0, 0], [1, 0.2], [1, -0.2], [0, 1]], dtype=np.float32)
    vectors = ItemVectors.fit(
        matrix, components=0, item_category=(np.array([2, 3, 4, 2]), np.array([0, 0, 1, 0]))
    )
    np.testing.assert_allclose(vectors.residual[2], [0, 1], atol=1e-6)
    np.testing.assert_allclose(vectors.residual[3], [0, -1], atol=1e-6)
    np.testing.assert_array_equal(vectors.residual[4], [0, 0])  # alone in its category: no residual
    f = vectors.features(_rows([2, 2, 4], [[3], [2], [2]]))
    col = {n: f[:, i] for i, n in enumerate(embeddings.names(0))}
    np.testing.assert_allclose(col["emb_hist_mean_rcos"], [-1.0, 1.0, 0.0], atol=1e-6)
    assert col["emb_hist_mean_cos"][0] > 0.9  # the plain cosine only sees "same category"


def test_use_item_embeddings_without_the_input_is_a_clear_error():
    table = make_training_table(600, seed=1)
    train = table.filter(pa.compute.equal(table.column("split"), "train"))
    with pytest.raises(ValueError, match="item_embeddings asset"):
        LightgbmEmbModel(LightgbmEmbModel.Config(**FAST)).fit(train, train.slice(0, 0), FitContext())


def test_save_load_keeps_the_vectors(tmp_path):
    table = make_training_table(1500, seed=2)
    split = {s: table.filter(pa.compute.equal(table.column("split"), s)) for s in ("train", "valid", "test")}
    inputs = make_fit_inputs({"item_embeddings"}, table, seed=2)
    model = LightgbmEmbModel(LightgbmEmbModel.Config(**FAST, embedding_components=3)).fit(
        split["train"], split["valid"], FitContext(inputs=inputs, log=lambda m: None)
    )
    assert model.booster.feature_name()[-len(embeddings.names(3)) :] == embeddings.names(3)
    model.save(tmp_path)
    assert (tmp_path / embeddings.VECTORS_FILE).is_file()
    again = LightgbmModel.load(tmp_path)  # the base class loads either flavour from its files
    np.testing.assert_array_equal(again.predict(split["test"]), model.predict(split["test"]))
    assert again.vectors is not None and again.vectors.unit.shape == model.vectors.unit.shape


def test_plain_lightgbm_ignores_offered_embeddings():
    table = make_training_table(800, seed=3)
    train = table.filter(pa.compute.equal(table.column("split"), "train"))
    inputs = make_fit_inputs({"item_embeddings"}, table, seed=3)
    model = LightgbmModel(LightgbmModel.Config(**FAST)).fit(
        train, train, FitContext(inputs=inputs, log=print)
    )
    assert model.vectors is None and not any(n.startswith("emb_") for n in model.booster.feature_name())


def test_the_twin_is_a_declared_variant_of_lightgbm():
    assert LightgbmEmbModel.variant_of == LightgbmModel.name
    assert (
        LightgbmEmbModel.requires == frozenset({"item_embeddings"}) and LightgbmModel.requires == frozenset()
    )
    assert LightgbmEmbModel.Config().use_item_embeddings and not LightgbmModel.Config().use_item_embeddings
