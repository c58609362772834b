"""DIN beats LightGBM where the behaviour sequence carries the signal its attention is built for.

The world: the `tiny` profile with a strong sequence signal (``Signals(sequence=3)``) and the
signals aimed at other mechanisms switched off -- recency (`temporal`, `drift`: TIN/SUAN),
3-way interactions (QIN), segments and behaviour segments, long-tail users (AW-MoE), fine-grained
scaling term and profile-aware relevance (SUAN), target-aware decay (TIN), product lines
(`neighbourhood`: HyperPAVE) -- and a 2-d latent
taste space (`latent_dim=2`), so item-to-item similarity crosses category boundaries. There
LightGBM's hand-made sequence features (same-category counts, shares, decays) only approximate the
signal while DIN's target attention over item embeddings can learn it. With the default `tiny`
signals LightGBM stays ahead (see the plugin README for the measured figures on both).

Three worlds (world seeds 7 = the profile's default, 3 and 11; chosen before these measurements:
the README's seeds), DIN must win on each. Measured (DIN defaults incl. ``mba_l2=0.3``, 15 epochs,
batches of 256; LightGBM defaults of the working tree, which was being edited at the time): DIN -
LightGBM test AUC = +0.0175, +0.0091, +0.0102 on seeds 7 / 3 / 11, and +0.0106, +0.0026 on seeds
0 / 1 (mean of the five +0.0100, sample standard deviation 0.0053; every one positive). About 16 s.
"""

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
import torch
from ctr_dagster.contracts import FitContext
from ctr_dagster.metrics import auc
from ctr_dagster.testing import synthetic_training_table, training_cardinalities

from ctr_din.model import DinConfig, DinModel

lightgbm_plugin = pytest.importorskip("ctr_lightgbm")


def sequence_world_table(seed: int) -> pa.Table:
    from ctr_dagster.datagen import Signals

    signals = Signals(
        sequence=3.0,
        temporal=0.0,
        drift=0.0,
        interaction=0.0,
        segment=0.0,
        scaling=0.0,
        neighbourhood=0.0,
        target_time=0.0,
        profile_sequence=0.0,
        behaviour_segment=0.0,
        long_tail=0.0,
    )
    return synthetic_training_table("tiny", latent_dim=2, signals=signals, seed=seed)


def din_and_lightgbm_auc(seed: int) -> tuple[float, float, list[float]]:
    table = sequence_world_table(seed)
    train, valid, test = (
        table.filter(pc.equal(table.column("split"), s)) for s in ("train", "valid", "test")
    )
    ctx = FitContext(seed=0, cardinalities=training_cardinalities(table), log=lambda s: None)
    labels = test.column("label").to_numpy()

    gbdt = lightgbm_plugin.LightgbmModel().fit(train, valid, ctx)
    gbdt_auc = auc(labels, gbdt.predict(test))

    before = torch.get_num_threads()
    din = DinModel(DinConfig(epochs=15, batch_size=256, num_threads=1, log_every=0))
    try:
        din.fit(train, valid, ctx)
    finally:
        torch.set_num_threads(before)
    losses = [r["train_loss"] for r in din.summary["history"]]
    return auc(labels, din.predict(test)), gbdt_auc, losses


@pytest.mark.parametrize("seed", [7, 3, 11])
def test_din_beats_lightgbm_when_the_sequence_matters(seed):
    din_auc, gbdt_auc, losses = din_and_lightgbm_auc(seed)
    print(f"world seed {seed}: DIN {din_auc:.4f}, LightGBM {gbdt_auc:.4f}, margin {din_auc - gbdt_auc:+.4f}")
    assert losses[1] < losses[0]  # it learns
    assert np.isfinite(din_auc) and din_auc > gbdt_auc, (din_auc, gbdt_auc)
