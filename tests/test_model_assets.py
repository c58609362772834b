"""Model asset factory: a plugin's Config becomes typed launchpad config; training stores safe,
content-addressed artifacts and the predictions evaluation will read."""

import dagster as dg
import pydantic
import pytest

from assets.models import _launchpad_config, model_asset, split_engine_fields
from ctr_dagster.modeling import train_and_store
from ctr_dagster.registry import discover
from ctr_dagster.settings import Home
from ctr_dagster.testing import assert_no_pickles, make_training_table
from ctr_dagster.warehouse import Warehouse
from tests.plugin_fixtures import MODELS, on_sys_path, write_dist


@pytest.fixture
def good_plugin(tmp_path):
    root = tmp_path / "site"
    write_dist(root, "ctrfix-good", {MODELS: {"ctrfix_good": "ctrfix_good:GoodModel"}}, ("ctrfix_good",))
    with on_sys_path(root):
        yield discover(["model"], path=[root]).get("model", "ctrfix_good")


def test_launchpad_config_mirrors_the_plugin_config(good_plugin):
    config_class = _launchpad_config(good_plugin)
    config = config_class()
    assert config.model_dump() == {
        "smoothing": 10.0,
        "seed": 0,
        "warm_start": False,
        "full_retrain_every_days": 7,
    }
    assert split_engine_fields(good_plugin, config_class(seed=4, warm_start=True).model_dump()) == (
        4,
        True,
        {"smoothing": 10.0},
    )
    assert config_class(smoothing=2.5).smoothing == 2.5
    with pytest.raises(pydantic.ValidationError):
        config_class(smoothing="lots")
    asset = model_asset(good_plugin)
    assert asset.key == dg.AssetKey(["models", "ctrfix_good"])
    assert asset.group_names_by_key[asset.key] == "models"


def test_training_stores_content_addressed_safe_artifacts(good_plugin, tmp_path):
    home = Home(tmp_path / "home")
    wh = Warehouse(home.warehouse)
    wh.write("training_dataset", make_training_table(3000, seed=1))
    first = train_and_store(good_plugin, {"smoothing": 5.0}, wh, home, seed=3, log=lambda s: None)
    second = train_and_store(good_plugin, {"smoothing": 5.0}, wh, home, seed=3, log=lambda s: None)
    assert first.artifact_dir == second.artifact_dir  # same weights -> same content address
    assert first.artifact_dir.parent == home.artifacts / "ctrfix_good"
    other = train_and_store(good_plugin, {"smoothing": 500.0}, wh, home, seed=3, log=lambda s: None)
    assert other.artifact_dir != first.artifact_dir
    assert_no_pickles(first.artifact_dir)
    assert first.scores["valid_auc"] > 0.55 and first.scores["test_auc"] > 0.55
    predictions = wh.read("predictions_ctrfix_good")
    assert set(predictions.column("split").to_pylist()) == {"valid", "test"}
    with pytest.raises(ValueError, match="unknown config key"):
        train_and_store(good_plugin, {"smoothin": 1.0}, wh, home)


SEEDED_PLUGIN = """
from dataclasses import dataclass
import json
import numpy as np


@dataclass
class SeededConfig:
    seed: int = 5


class SeededModel:
    name = "ctrfix_seeded"
    task = "ctr"
    Config = SeededConfig
    requires = frozenset()

    def __init__(self, config=None):
        self.config = config or SeededConfig()
        self.seen = None

    def fit(self, train, valid, ctx):
        self.seen = (ctx.seed, self.config.seed)
        return self

    def predict(self, batch):
        return np.full(batch.num_rows, 0.5)

    def save(self, directory):
        (directory / "seen.json").write_text(json.dumps(self.seen))

    @classmethod
    def load(cls, directory):
        return cls()
"""


def test_a_plugin_with_its_own_seed_keeps_it(tmp_path):
    root = tmp_path / "site"
    write_dist(
        root,
        "ctrfix-seeded",
        {MODELS: {"ctrfix_seeded": "ctrfix_seeded:SeededModel"}},
        sources={"ctrfix_seeded.py": SEEDED_PLUGIN},
    )
    with on_sys_path(root):
        plugin = discover(["model"], path=[root]).get("model", "ctrfix_seeded")
        config_class = _launchpad_config(plugin)
        assert config_class().model_dump() == {  # the plugin's seed default
            "seed": 5,
            "warm_start": False,
            "full_retrain_every_days": 7,
        }
        home = Home(tmp_path / "home")
        wh = Warehouse(home.warehouse)
        wh.write("training_dataset", make_training_table(300, seed=1))
        seed, _, values = split_engine_fields(plugin, config_class(seed=11).model_dump())
        assert (seed, values) == (11, {"seed": 11})
        result = train_and_store(plugin, values, wh, home, seed=seed, log=lambda s: None)
        assert (result.artifact_dir / "seen.json").read_text() == "[11, 11]"


def test_predict_never_sees_a_label(good_plugin, tmp_path, monkeypatch):
    """Issue 14: the engine scored valid/test with tables that still held `label` and `conversion`, so a
    plugin reading them would have topped the leaderboard. Every engine call of predict gets
    `modeling.features_only(table)`: no label, conversion or oracle column; `treatment` (a request
    feature) stays."""
    seen: list[list[str]] = []
    real_predict = good_plugin.cls.predict

    def spy(self, batch):
        seen.append(batch.column_names)
        return real_predict(self, batch)

    monkeypatch.setattr(good_plugin.cls, "predict", spy)
    home = Home(tmp_path / "home")
    wh = Warehouse(home.warehouse)
    table = make_training_table(1000, seed=1)
    wh.write("training_dataset", table)
    result = train_and_store(good_plugin, {}, wh, home, log=lambda s: None)
    # valid, then test, then the cost measurement's 1,000-candidate latency runs (model_cost)
    assert len(seen) > 2
    for columns in seen:
        assert not {"label", "conversion"} & set(columns)
        assert "treatment" in columns and "hist_item_idx" in columns
    assert result.scores["test_auc"] > 0.55  # still scored against the labels
    from ctr_dagster.modeling import HIDDEN_AT_PREDICT, features_only

    assert {"label", "click", "conversion", "p_click"} <= set(HIDDEN_AT_PREDICT)
    assert features_only(table).column_names == [c for c in table.column_names if c not in HIDDEN_AT_PREDICT]
