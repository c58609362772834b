"""`suan` and `lightsuan` pass the engine's model conformance kit (small configs keep it fast)."""

from ctr_dagster.testing import ModelConformance, make_fit_inputs, make_training_table

from ctr_suan.model import LightSuanModel, SuanModel

FAST = {"epochs": 3, "batch_size": 256, "lr": 3e-3, "num_threads": 1, "log_every": 0}


class TestSuan(ModelConformance):
    """SUAN at its default grade (3)."""

    plugin = SuanModel
    config = FAST


class TestLightSuan(ModelConformance):
    """LightSUAN: grade 2, sparse attention."""

    plugin = LightSuanModel
    config = FAST


class TestSuanCodeFusionWithItemEmbeddings(ModelConformance):
    """The code's all-token fusion pool (not causal: no shared-history path), grade 1, the frozen
    item vectors (make_fit_inputs stand-ins) in the weights file."""

    plugin = SuanModel
    config = {**FAST, "grade": 1, "gate_pool": "all", "use_item_embeddings": True}
    inputs = make_fit_inputs({"item_embeddings"}, make_training_table(ModelConformance.n_rows, 0))

    def test_uses_the_item_vectors(self):
        model = self.harness().fitted
        vectors = self.inputs["item_embeddings"]
        buffer = model.module.item_vectors.numpy()
        assert (buffer[: len(vectors)] == vectors[: len(buffer)]).all()
        assert model.module.dim == 3 * model.config.resolved().embedding_dim
