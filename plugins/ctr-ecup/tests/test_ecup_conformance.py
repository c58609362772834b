"""The `ecup` plugin passes the engine's model conformance kit (uplift task: scores in [-1, 1], positive
uplift gain on held-out rows, save/load round trip, no pickles, same-seed determinism, single row,
no input mutation, label blindness).

The kit's default 3,000-row table holds ~580 test rows over four arms: too few for the top-half minus
bottom-half observed uplift to be reliably positive for a coupon effect of ~2 points (its standard
error there is ~0.07; the meta-learners' S-learner scores -0.016 on it). This class draws 24,000
rows (~15,600 train, ~4,200 test; the oracle's own ranking scores +0.03 to +0.09 on such tables) and
trains 5 epochs in batches of 256: measured gain +0.032 (torch 1 and 2 threads give the same
bits). Two fits (the determinism check refits), ~30 s on 2 cores.
"""

from ctr_dagster.testing import ModelConformance

from ctr_ecup.model import EcupModel

FAST = {"epochs": 5, "batch_size": 256, "num_threads": 1}


class TestEcup(ModelConformance):
    plugin = EcupModel
    config = FAST
    n_rows = 24_000
