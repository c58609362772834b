"""The reproducibility record: its contents, and that re-training from one record reproduces it."""

import json

import pytest

from ctr_dagster.modeling import read_status, train_and_store
from ctr_dagster.registry import discover
from ctr_dagster.reproducibility import METRIC_TOLERANCE, code_sha256, same_computation
from ctr_dagster.settings import Home
from ctr_dagster.testing import make_training_table
from ctr_dagster.warehouse import Warehouse
from tests.plugin_fixtures import MODELS, on_sys_path, write_dist


@pytest.fixture
def plugin(tmp_path):
    root = tmp_path / "plugins"
    write_dist(root, "ctrfix-good", {MODELS: {"ctrfix_good": "ctrfix_good:GoodModel"}}, ("ctrfix_good",))
    with on_sys_path(root):
        yield discover(["model"], path=[root]).get("model", "ctrfix_good"), root


@pytest.fixture
def home(tmp_path) -> Home:
    return Home(tmp_path / "home")


@pytest.fixture
def warehouse(home):
    wh = Warehouse(home.warehouse)
    wh.write("training_dataset", make_training_table(600, seed=3))
    return wh


def test_record_names_seed_config_data_code_libraries_and_hardware(plugin, warehouse, home):
    info, _ = plugin
    result = train_and_store(info, {"smoothing": 5.0}, warehouse, home, seed=42, log=lambda s: None)
    record = json.loads(result.record_path.read_text())
    assert record["seed"] == 42 and record["config"] == {"smoothing": 5.0}
    assert record["data"]["rows"]["train"] > 0 and len(record["data"]["sha256"]) == 64
    assert len(record["code"]["sha256"]) == 64
    assert {"python", "numpy", "pyarrow", "scikit-learn", "ctr-dagster"} <= set(record["libraries"])
    assert record["hardware"]["cpu_count"] >= 1 and record["hardware"]["machine"]
    assert record["artifact"] == str(result.artifact_dir)
    assert record["metrics"]["test_auc"] == result.scores["test_auc"]
    status = read_status(home, "ctrfix_good")
    assert status["status"] == "ok" and status["data_sha256"] == record["data"]["sha256"]


def test_same_record_inputs_reproduce_the_metrics_and_the_artifact(plugin, warehouse, home):
    info, _ = plugin
    first = train_and_store(info, {}, warehouse, home, seed=1, log=lambda s: None)
    # forced: an unchanged training is otherwise skipped (issue 22), and this checks the re-run
    second = train_and_store(info, {}, warehouse, home, seed=1, log=lambda s: None, skip_unchanged=False)
    assert same_computation(first.record, second.record) == []
    for key in ("valid_auc", "test_auc"):
        assert abs(first.scores[key] - second.scores[key]) <= METRIC_TOLERANCE
    assert first.artifact_dir == second.artifact_dir  # identical weights, identical content address
    assert first.record_path != second.record_path  # but one record per training


def test_a_change_in_data_or_config_is_named(plugin, warehouse, home):
    info, _ = plugin
    first = train_and_store(info, {}, warehouse, home, seed=1, log=lambda s: None)
    warehouse.write("training_dataset", make_training_table(600, seed=4))
    second = train_and_store(info, {"smoothing": 1.0}, warehouse, home, seed=1, log=lambda s: None)
    assert same_computation(first.record, second.record) == ["data", "config"]


def test_code_hash_follows_the_plugin_source(plugin):
    info, root = plugin
    before, where = code_sha256(info.cls)
    assert where == str(root / "ctrfix_good.py")
    (root / "ctrfix_good.py").write_text((root / "ctrfix_good.py").read_text() + "\n# a change\n")
    assert code_sha256(info.cls)[0] != before


def test_a_failed_training_is_recorded_and_leaves_the_last_artifact(plugin, warehouse, home):
    info, _ = plugin
    good = train_and_store(info, {}, warehouse, home, seed=1, log=lambda s: None)

    def explode(self, train, valid, ctx):
        raise FloatingPointError("loss is NaN at step 3")

    original = info.cls.fit
    info.cls.fit = explode
    try:
        with pytest.raises(FloatingPointError):  # forced: else skipped as unchanged (issue 22)
            train_and_store(info, {}, warehouse, home, seed=1, log=lambda s: None, skip_unchanged=False)
    finally:
        info.cls.fit = original
    status = read_status(home, "ctrfix_good")
    assert status["status"] == "failed" and "loss is NaN" in status["error"]
    assert good.artifact_dir.is_dir()
