"""Run the ctr-dagster conformance kit against the `lightgbm` model."""

from ctr_dagster.testing import ModelConformance

from ctr_lightgbm.model import LightgbmModel


class TestLightgbmModel(ModelConformance):
    plugin = LightgbmModel
    # Small trees and few rounds: the synthetic table has ~2k training rows.
    config = {
        "num_boost_round": 60,
        "early_stopping_rounds": 10,
        "min_data_in_leaf": 20,
        "min_data_per_group": 10,
        "num_leaves": 15,
    }
