"""The `tin` plugin passes the engine's model conformance kit (small configs keep it fast)."""

from ctr_dagster.testing import ModelConformance, make_fit_inputs, make_training_table

from ctr_tin.model import TinModel

FAST = {"epochs": 4, "batch_size": 128, "lr": 3e-3, "num_threads": 1, "log_every": 0}


class TestTin(ModelConformance):
    """Defaults (rank + time-bucket positions, the code's representation)."""

    plugin = TinModel
    config = FAST


class TestTinRankPaper(ModelConformance):
    """Rank positions (the official code's) and the paper's per-behaviour representation."""

    plugin = TinModel
    config = {**FAST, "position": "rank", "representation": "paper"}


class TestTinWithItemEmbeddings(ModelConformance):
    """The frozen item vectors (make_fit_inputs stand-ins) travel in the weights file."""

    plugin = TinModel
    config = {**FAST, "use_item_embeddings": True}
    inputs = make_fit_inputs({"item_embeddings"}, make_training_table(ModelConformance.n_rows, 0))

    def test_uses_the_item_vectors(self):
        model = self.harness().fitted
        vectors = self.inputs["item_embeddings"]
        buffer = model.module.item_vectors.numpy()
        assert buffer.shape[1] == vectors.shape[1]
        assert (buffer[: len(vectors)] == vectors[: len(buffer)]).all()
        assert all(t.weight.shape[1] == model.module.token_dim for t in model.module.temporal.tables())
        assert model.module.token_dim == 3 * model.config.embedding_dim  # item, category, projection
