"""Ablation: QIN's quadratic layers beat the same network with plain MLP layers where 3-way context
interactions carry the signal.

The world: `tiny` with every signal knob at 0 except ``interaction=5`` (the click logit then holds
the always-on base, popularity and user-item affinity terms plus two multiplicative 3-way terms with
no main effects: age group x category x daypart and region x category x device,
`ctr_dagster.datagen.behaviour`). QIN (its defaults: item tags and encoder-like item vectors from
`testing.synthetic_item_inputs`; 10 epochs, batches of 512) is trained with
``interaction_layers="quadratic"`` and with ``"mlp"`` (each layer's product with x removed:
``x <- x + Dropout(PReLU(BN(sum_r H_r)))``, same parameters, nothing else changed) on world seeds
0-2, both scored on the same test rows of each world.

Measured (2 shared CPU cores, torch 1 thread) with `mba_l2=0` (QIN's default before 2026-12-07):
test AUC quadratic - mlp = +0.0105, +0.0142, +0.0414 on world seeds 0-2 (quadratic 0.9156 / 0.8752 /
0.9173); on seeds 3-5, not in the test, +0.0546, +0.0254 and -0.0137. Mean over the six +0.0221,
sample standard deviation 0.0242, five of six positive. With today's `mba_l2=0.3` seeds 0-2 give
+0.0083, +0.0131, +0.0297 (quadratic 0.9165 / 0.8806 / 0.9124; mean +0.0170; the test fixes its own
batch size, so the default's change to 256 does not reach it). The sampling noise of one seed's
difference is about 0.01 (about 3,900 test rows, 7 % positives), so one seed proves little; the
seeds of the test were fixed (the first three) before seeds 3-5 were run. Two assertions: the
quadratic layers win on each of seeds 0-2, and by more than 0.01 on average (about half the measured
means). About 60 s on 2 busy cores (CPU training is deterministic, so the figures above are what CI
sees).
"""

import numpy as np
import pyarrow.compute as pc
import pytest
import torch
from ctr_dagster.contracts import FitContext
from ctr_dagster.metrics import auc
from ctr_dagster.testing import synthetic_item_inputs, synthetic_training_table, training_cardinalities

from ctr_qin.model import QinConfig, QinModel

SEEDS = (0, 1, 2)
#: The test's training settings (both variants).
TRAINING = {"epochs": 10, "patience": 3, "batch_size": 512, "num_threads": 1, "log_every": 0}


def interaction_world(seed: int) -> dict:
    """`synthetic_training_table` / `synthetic_item_inputs` overrides: only `interaction` is on."""
    import dataclasses

    from ctr_dagster.datagen import Signals

    off = {f.name: 0.0 for f in dataclasses.fields(Signals)}
    return {"seed": seed, "signals": Signals(**{**off, "interaction": 5.0})}


def quadratic_and_mlp_auc(seed: int) -> tuple[float, float]:
    world = interaction_world(seed)
    table = synthetic_training_table("tiny", **world)
    split = table.column("split")
    train, valid, test = (table.filter(pc.equal(split, s)) for s in ("train", "valid", "test"))
    ctx = FitContext(
        seed=seed,
        cardinalities=training_cardinalities(table),
        log=lambda s: None,
        inputs=synthetic_item_inputs("tiny", **world),
    )
    labels = test.column("label").to_numpy()
    scores = {}
    for layers in ("quadratic", "mlp"):
        model = QinModel(QinConfig(interaction_layers=layers, **TRAINING)).fit(train, valid, ctx)
        scores[layers] = auc(labels, model.predict(test))
    return scores["quadratic"], scores["mlp"]


@pytest.fixture
def one_thread():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_quadratic_layers_beat_mlp_layers_when_3_way_interactions_carry_the_signal(one_thread):
    results = {seed: quadratic_and_mlp_auc(seed) for seed in SEEDS}
    diffs = np.array([q - m for q, m in results.values()])
    print({seed: (round(q, 4), round(m, 4)) for seed, (q, m) in results.items()}, "diffs", diffs.round(4))
    assert np.all(diffs > 0), results
    assert diffs.mean() > 0.01, diffs
