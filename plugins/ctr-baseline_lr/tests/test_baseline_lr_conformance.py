"""Run the ctr-dagster conformance kit against the `baseline_lr` model."""

from ctr_dagster.testing import ModelConformance

from ctr_baseline_lr.model import BaselineLrModel


class TestBaselineLrModel(ModelConformance):
    plugin = BaselineLrModel
    # Config overrides that keep this test fast, e.g. config = {"epochs": 5}
    config = {}
