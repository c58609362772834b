"""Training on the behaviour-segment world: the contrastive loss is recorded per epoch and falls,
and the trained gate is a distribution over the experts.

The world: `tiny`, world seed 0, every `Signals` knob at 0 except ``behaviour_segment=3`` and
``long_tail=1`` (the click logit holds the always-on base, popularity and affinity terms plus
``3 * gate * (zprice - 0.5 popularity)``, gate = (premium - cheap remembered clicks) / (clicks + 2),
`ctr_dagster.datagen.behaviour.behaviour_gate`). AW-MoE defaults, 6 epochs, batches of 256,
lr 3e-3, cosine schedule. About 10 s.
"""

import numpy as np
import pyarrow.compute as pc
import pytest
import torch
from ctr_dagster.contracts import FitContext
from ctr_dagster.datagen import Signals
from ctr_dagster.testing import synthetic_training_table, training_cardinalities

from ctr_awmoe.model import AwMoeConfig, AwMoeModel

FIT = {"epochs": 6, "batch_size": 256, "lr": 3e-3, "lr_schedule": "cosine", "patience": 0}


def behaviour_world(seed: int):
    knobs = dict.fromkeys(Signals.__dataclass_fields__, 0.0)
    knobs.update(behaviour_segment=3.0, long_tail=1.0)
    table = synthetic_training_table("tiny", seed=seed, signals=Signals(**knobs))
    split = table.column("split")
    return table, [table.filter(pc.equal(split, s)) for s in ("train", "valid", "test")]


def fit(config: AwMoeConfig, table, train, valid) -> AwMoeModel:
    ctx = FitContext(seed=0, cardinalities=training_cardinalities(table), log=lambda s: None)
    before = torch.get_num_threads()
    try:
        return AwMoeModel(config).fit(train, valid, ctx)
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope="module")
def trained():
    table, (train, valid, test) = behaviour_world(0)
    return fit(AwMoeConfig(num_threads=1, log_every=0, **FIT), table, train, valid), test


def test_contrastive_loss_is_recorded_per_epoch_and_falls(trained):
    model, _ = trained
    losses = model.cl_losses()
    print("contrastive loss per epoch", np.round(losses, 3))
    assert len(losses) == 6 and all(x is not None and np.isfinite(x) for x in losses)
    assert losses[-1] < losses[0] - 0.2, losses  # measured: 5.07 -> 4.56
    assert all(b < a + 0.02 for a, b in zip(losses, losses[1:], strict=False)), losses  # ~monotone
    assert model.summary["history"][0]["cl_loss"] == losses[0]  # in the stored training summary


def test_trained_gate_is_a_distribution_over_the_experts(trained):
    model, test = trained
    with torch.inference_mode():
        gate = model.module.gate_weights(model.encoder.tensors(test)).numpy()
    assert gate.shape == (test.num_rows, 4)
    assert (gate >= 0).all() and np.allclose(gate.sum(1), 1.0, atol=1e-5)
    assert gate.std(0).max() > 0.05  # it routes rows differently (not a constant mixture)


def test_uniform_gate_records_no_contrastive_loss():
    table, (train, _, _) = behaviour_world(0)
    config = AwMoeConfig(gate="uniform", epochs=1, num_threads=1, log_every=0)
    model = fit(config, table, train.slice(0, 2000), train.slice(0, 0))
    assert model.cl_losses() == [None]
