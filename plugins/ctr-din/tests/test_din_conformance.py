"""Both DIN plugins pass the engine's model conformance kit (small configs keep it fast)."""

from ctr_dagster.testing import ModelConformance, make_fit_inputs, make_training_table

from ctr_din.model import DinModel, DinStudentModel

FAST = {"epochs": 4, "batch_size": 128, "lr": 3e-3, "num_threads": 1, "log_every": 0}


class TestDin(ModelConformance):
    plugin = DinModel
    config = FAST


class TestDinStudent(ModelConformance):
    plugin = DinStudentModel
    config = FAST


class TestDinWithItemEmbeddings(ModelConformance):
    """The frozen item vectors (make_fit_inputs stand-ins) travel in the weights file."""

    plugin = DinModel
    config = {**FAST, "use_item_embeddings": True}
    inputs = make_fit_inputs({"item_embeddings"}, make_training_table(ModelConformance.n_rows, 0))

    def test_uses_the_item_vectors(self):
        model = self.harness().fitted
        vectors = self.inputs["item_embeddings"]
        buffer = model.module.item_vectors.numpy()
        assert buffer.shape[1] == vectors.shape[1]
        assert (buffer[: len(vectors)] == vectors[: len(buffer)]).all()
