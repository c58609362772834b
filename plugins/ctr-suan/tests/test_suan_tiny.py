"""SUAN, LightSUAN and DIN with their defaults on the `tiny` synthetic world (seed 0, default signals).

Measured (2 shared CPU cores, torch 1 thread; CPU training is deterministic, so these are what CI
sees), test AUC on the test day: SUAN 0.8325, LightSUAN 0.8263 (see README), DIN 0.8319. One
seed's AUC difference on `tiny` has a paired-bootstrap standard deviation of about 0.0025 (ctr-tin's
README), so SUAN and DIN tie here; the assertions are floors with a margin. The defaults train in
well under a minute of CPU time (SUAN about 18 s, LightSUAN about 9 s; printed, not asserted: no test
depends on speed, benchmarks/bench_suan.py measures it).
"""

import time

import pyarrow.compute as pc
import pytest
import torch
from ctr_dagster.contracts import FitContext
from ctr_dagster.metrics import auc
from ctr_dagster.testing import synthetic_training_table, training_cardinalities

from ctr_suan.model import LightSuanConfig, LightSuanModel, SuanConfig, SuanModel

din = pytest.importorskip("ctr_din.model")


@pytest.fixture(scope="module")
def results():
    table = synthetic_training_table("tiny", seed=0)
    split = table.column("split")
    train, valid, test = (table.filter(pc.equal(split, s)) for s in ("train", "valid", "test"))
    ctx = FitContext(seed=0, cardinalities=training_cardinalities(table), log=lambda s: None)
    labels = test.column("label").to_numpy()
    models = {
        "suan": SuanModel(SuanConfig(num_threads=1, log_every=0)),
        "lightsuan": LightSuanModel(LightSuanConfig(num_threads=1, log_every=0)),
        "din": din.DinModel(din.DinConfig(num_threads=1, log_every=0)),
    }
    before = torch.get_num_threads()
    out = {}
    try:
        for name, model in models.items():
            started = time.process_time()
            model.fit(train, valid, ctx)
            seconds = time.process_time() - started
            out[name] = {"test_auc": auc(labels, model.predict(test)), "cpu_s": seconds}
    finally:
        torch.set_num_threads(before)
    print({k: {m: round(v, 4) for m, v in r.items()} for k, r in out.items()})
    return out


def test_suan_and_lightsuan_learn_the_tiny_world(results):
    assert results["suan"]["test_auc"] > 0.82
    assert results["lightsuan"]["test_auc"] > 0.815
    assert results["suan"]["test_auc"] > results["din"]["test_auc"] - 0.01  # a tie within the noise or better
