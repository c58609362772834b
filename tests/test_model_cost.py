"""Model cost: parameters, training rows/s and 1,000-candidate latency, measured alike for every plugin."""

import types

import pytest
import torch

from ctr_dagster import model_cost
from ctr_dagster.contracts import FitContext
from ctr_dagster.modeling import features_only
from ctr_dagster.testing import make_training_table


def test_parameter_count_of_a_torch_module_counts_trainable_parameters_only():
    module = torch.nn.Linear(4, 3)  # 12 weights + 3 biases
    module.register_buffer("frozen", torch.zeros(100))
    frozen = torch.nn.Embedding(10, 2)
    frozen.weight.requires_grad_(False)
    module.frozen_table = frozen
    assert model_cost.parameter_count(types.SimpleNamespace(module=module)) == 15


def test_a_plugins_own_count_wins_and_unknown_is_none():
    assert model_cost.parameter_count(types.SimpleNamespace(parameter_count=lambda: 7)) == 7
    assert model_cost.parameter_count(object()) is None


def test_measure_a_fitted_plugin_on_one_users_candidates():
    from ctr_baseline_lr.model import BaselineLrModel
    from ctr_lightgbm.model import LightgbmModel

    table = make_training_table(1200, seed=3)
    train = table.slice(0, 1000)
    lr = BaselineLrModel().fit(train, table.slice(1000), FitContext(seed=0))
    cost = model_cost.measure(lr, train.num_rows, 0.5, features_only(table.slice(1000)))
    assert cost["parameters"] == len(lr.state["weights"]) + 1
    assert cost["train_rows_per_s"] == pytest.approx(2000.0)
    assert cost["latency_ms"]["candidates"] == model_cost.LATENCY_CANDIDATES
    assert 0 < cost["latency_ms"]["p50"] <= cost["latency_ms"]["p99"]
    row = model_cost.cost_row(cost)
    assert row["latency_p99_ms"] == cost["latency_ms"]["p99"] and row["parameters"] == cost["parameters"]

    gbm = LightgbmModel(LightgbmModel.Config(num_boost_round=5)).fit(
        train, table.slice(1000), FitContext(seed=0)
    )
    trees = gbm.booster.dump_model()["tree_info"]
    assert gbm.parameter_count() == sum(2 * t["num_leaves"] - 1 for t in trees) > 0
    assert model_cost.cost_row(None) == dict.fromkeys(row)
