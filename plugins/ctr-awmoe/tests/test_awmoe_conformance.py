"""The `awmoe` plugin passes the engine's model conformance kit (small configs keep it fast)."""

from ctr_dagster.testing import ModelConformance

from ctr_awmoe.model import AwMoeModel

FAST = {"epochs": 4, "batch_size": 128, "lr": 3e-3, "num_threads": 1, "log_every": 0}


class TestAwMoe(ModelConformance):
    """Default AW-MoE: attention-weighted gate (shared activation scores) and the contrastive branch,
    whose random masks come from the trainer's (seed, epoch) RNG: same-seed refits are identical."""

    plugin = AwMoeModel
    config = FAST


class TestAwMoeUniformGate(ModelConformance):
    """The ablation (G = 1/K, no gate network, no contrastive loss) is a valid model too."""

    plugin = AwMoeModel
    config = {**FAST, "gate": "uniform"}
