"""Ablation: DIN's target attention beats the same network with sum pooling where the sequence matters.

The world: `tiny` with every signal knob at 0 except ``sequence=3`` (the click logit then holds only
the always-on base, popularity and user-item affinity terms plus ``sequence``: the mean over the
user's last clicks of relu(cos(target, click)), `ctr_dagster.datagen.behaviour.sequence_component`).
The same DIN (defaults, 8 epochs, batches of 256) is trained with ``pooling="attention"`` and with
``pooling="sum"`` (every real behaviour weighted 1, nothing else changed) on world seeds 0-4, both
scored on the same test rows of each world.

Measured (2 CPU cores, torch 1 thread, default ``mba_l2=0.3``): test AUC attention - sum =
+0.0013, +0.0058, +0.0047, +0.0045, +0.0040 on world seeds 0-4 (seed 5, not in the test: +0.0041):
mean +0.0041, sample standard deviation across the six seeds 0.0015, every seed positive (attention
AUC 0.90-0.96). The sampling noise of one seed's difference (paired bootstrap over its ~3,800 test
rows) is about 0.002, so a single seed proves little (seed 0's +0.0013 is within it); six of six
positive is the evidence. The gap is small because in this generator item similarity is mostly
category-level, so a sum-pooled history keeps the category histogram the sequence term needs; what
attention adds is the item-level part and an easier-to-learn pairwise form. Hence two assertions:
attention wins on every seed, and by more than 0.002 on average (half the measured mean). About
30 s on 2 cores (CPU training is deterministic, so the figures above are what CI sees).
"""

import numpy as np
import pyarrow.compute as pc
import pytest
import torch
from ctr_dagster.contracts import FitContext
from ctr_dagster.metrics import auc
from ctr_dagster.testing import synthetic_training_table, training_cardinalities

from ctr_din.model import DinConfig, DinModel

SEEDS = (0, 1, 2, 3, 4)


def sequence_only_world(seed: int):
    from ctr_dagster.datagen import Signals

    off = dict.fromkeys(
        (
            "temporal",
            "multimodal",
            "interaction",
            "segment",
            "uplift",
            "zero_shot",
            "drift",
            "position_bias",
            "scaling",
        ),
        0.0,
    )
    return synthetic_training_table("tiny", seed=seed, signals=Signals(sequence=3.0, **off))


@pytest.fixture
def one_thread():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def attention_minus_sum(seed: int) -> tuple[float, float]:
    table = sequence_only_world(seed)
    split = table.column("split")
    train, valid, test = (table.filter(pc.equal(split, s)) for s in ("train", "valid", "test"))
    ctx = FitContext(seed=seed, cardinalities=training_cardinalities(table), log=lambda s: None)
    labels = test.column("label").to_numpy()
    scores = {}
    for pooling in ("attention", "sum"):
        config = DinConfig(epochs=8, batch_size=256, num_threads=1, log_every=0, pooling=pooling)
        model = DinModel(config).fit(train, valid, ctx)
        scores[pooling] = auc(labels, model.predict(test))
    return scores["attention"], scores["sum"]


def test_target_attention_beats_sum_pooling_when_only_the_sequence_carries_signal(one_thread):
    results = {seed: attention_minus_sum(seed) for seed in SEEDS}
    diffs = np.array([a - s for a, s in results.values()])
    print({seed: (round(a, 4), round(s, 4)) for seed, (a, s) in results.items()}, "diffs", diffs.round(4))
    assert np.all(diffs > 0), results
    assert diffs.mean() > 0.002, diffs
