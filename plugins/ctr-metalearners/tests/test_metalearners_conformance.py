"""Run the ctr-dagster conformance kit against both meta-learners (uplift task).

`n_rows = 6000`: the kit's uplift check (top-half minus bottom-half pooled uplift on held-out rows of
the `tiny` world) has little power on the default 3000 rows (~500 test rows over 4 arms, one a
placebo): over n_rows in {3000, 6000, 8000, 10000} x seeds {0, 1} the T-learner passed 8 of 8 and the
S-learner 5 of 8 (its trees often ignore the weak arm effect, a known S-learner trait). The learning
test (`test_metalearners_learning.py`) is the evidence that both learn the planted uplift.
"""

from ctr_dagster.testing import ModelConformance

from ctr_metalearners.model import SLearner, TLearner


class TestSLearner(ModelConformance):
    plugin = SLearner
    n_rows = 6000


class TestTLearner(ModelConformance):
    plugin = TLearner
    n_rows = 6000
