"""`qin` passes the engine's model conformance kit, with and without the item vectors and tags."""

import pytest
from ctr_dagster.contracts import FitContext
from ctr_dagster.testing import ModelConformance, make_fit_inputs, make_training_table, training_cardinalities

from ctr_qin.model import QinModel, parameter_count_for

FAST = {"epochs": 4, "batch_size": 128, "lr": 3e-3, "num_threads": 1, "log_every": 0}
WITHOUT_ITEM_INPUTS = {"use_item_embeddings": False, "use_item_tags": False}


class TestQin(ModelConformance):
    """The id + category item token only (no prepared inputs)."""

    plugin = QinModel
    config = {**FAST, **WITHOUT_ITEM_INPUTS}


class TestQinWithItemEmbeddingsAndTags(ModelConformance):
    """The paper's token (id, mean tag embedding, projected item vector) plus the category: the frozen
    vectors and tags (make_fit_inputs stand-ins) travel in the weights file."""

    plugin = QinModel
    config = FAST  # use_item_embeddings and use_item_tags are on by default
    inputs = make_fit_inputs(
        {"item_embeddings", "item_tags"}, make_training_table(ModelConformance.n_rows, 0)
    )

    def test_uses_the_item_vectors_and_tags(self):
        model = self.harness().fitted
        tokens = model.module.tokens
        vectors, tags = self.inputs["item_embeddings"], self.inputs["item_tags"].matrix
        buffer = tokens.item_vectors.numpy()
        assert buffer.shape[1] == vectors.shape[1]
        assert (buffer[: len(vectors)] == vectors[: len(buffer)]).all()
        held = tokens.item_tags.numpy()
        assert held.shape[1] == tags.shape[1] and (held[: len(tags)] == tags[: len(held)]).all()
        assert (held > 0).any()  # real tags, not the zeros `load` starts from
        assert model.spec.item_tags == [tags.shape[1], self.inputs["item_tags"].vocabulary_size]
        assert model.module.tokens.dim == 4 * model.config.embedding_dim
        assert sum(p.numel() for p in model.module.parameters()) == parameter_count_for(
            model.spec, model.config
        )


@pytest.mark.parametrize("missing", ["item_embeddings", "item_tags"])
def test_a_missing_item_input_is_a_clear_error(missing):
    table = make_training_table(600, 0)
    inputs = make_fit_inputs({"item_embeddings", "item_tags"}, table)
    del inputs[missing]
    ctx = FitContext(seed=0, cardinalities=training_cardinalities(table), log=lambda s: None, inputs=inputs)
    switch = "use_item_embeddings" if missing == "item_embeddings" else "use_item_tags"
    with pytest.raises(ValueError, match=switch):
        QinModel(QinModel.Config(**FAST)).fit(table, table.slice(0, 0), ctx)
