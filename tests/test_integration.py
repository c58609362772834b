"""The data graph materialized on `tiny` in a temporary Dagster instance, as the UI would run it."""

import json
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pyarrow.compute as pc
import pytest

from tests.plugin_fixtures import write_standard_set

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def materialized(tmp_path_factory):
    """Run the whole graph once for this module; yields (warehouse, instance, timings)."""
    home = tmp_path_factory.mktemp("ctr_home")
    old = os.environ.get("CTR_HOME")
    os.environ["CTR_HOME"] = str(home)
    try:
        from assets.run import materialize_all
        from ctr_dagster.warehouse import Warehouse

        with dg.instance_for_test() as instance:
            timings = materialize_all(instance=instance, log=lambda s: None)
            yield Warehouse.default(), instance, timings
    finally:
        if old is None:
            os.environ.pop("CTR_HOME", None)
        else:
            os.environ["CTR_HOME"] = old


def _last_metadata(instance: dg.DagsterInstance, key: str, partition: str | None = None) -> dict:
    event = instance.get_latest_materialization_event(dg.AssetKey(key)) if partition is None else None
    if partition is not None:
        records = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey(key), asset_partitions=[partition]), limit=1
        ).records
        event = records[0].event_log_entry
    assert event is not None, f"{key} was not materialized"
    return {k: v.value for k, v in event.asset_materialization.metadata.items()}


def test_every_partition_reconciles_and_quarantine_catches_corruption(materialized):
    wh, instance, _ = materialized
    days = wh.partitions("raw_impressions")
    assert len(days) == 6
    total_quarantined = 0
    for day in days:
        raw = wh.read("raw_impressions", [day]).num_rows
        clean = wh.read("clean_impressions", [day]).num_rows
        quarantined = wh.read("quarantine_impressions", [day]).num_rows
        assert raw == clean + quarantined > 0
        meta = _last_metadata(instance, "clean_impressions", day)
        assert meta["rows_in"] == raw and meta["rows_quarantined"] == quarantined
        total_quarantined += quarantined
    # the tiny world injects corrupt rows: the gate must have caught some of every day's
    assert total_quarantined > 0
    checks = instance.event_log_storage.get_latest_asset_check_execution_by_key(
        [dg.AssetCheckKey(dg.AssetKey("clean_impressions"), "rows_reconcile")]
    )
    assert checks


def test_training_dataset_is_time_split_with_sequences_and_oracle(materialized):
    wh, instance, _ = materialized
    table = wh.read("training_dataset")
    splits = table.column("split").to_numpy(zero_copy_only=False)
    ts = table.column("ts").to_numpy()
    assert ts[splits == "train"].max() < ts[splits == "valid"].min()
    assert ts[splits == "valid"].max() < ts[splits == "test"].min()
    lengths = pc.list_value_length(table.column("hist_item_idx")).to_numpy()
    assert lengths.max() > 0 and lengths.max() <= 20
    meta = _last_metadata(instance, "training_dataset")
    assert 0.5 < meta["oracle_auc_test"] < 1.0
    assert meta["vocab_item_size"] > 2 and "date_range" in meta


def test_vocabulary_is_stable_across_two_nightly_runs(materialized):
    """Re-building the dataset one day later keeps every existing index and appends new ids."""
    wh, instance, _ = materialized
    from assets.run import build_definitions
    from ctr_dagster import vocab

    before = vocab.load(wh, "item").to_pydict()
    days = wh.partitions("clean_impressions")
    defs = build_definitions()
    for end in days[-2:]:  # "yesterday's" run, then "tonight's" (one more day of training data)
        dg.materialize(
            list(defs.assets),
            selection=["training_dataset"],
            instance=instance,
            resources=dict(defs.resources),
            run_config={"ops": {"training_dataset": {"config": {"end_date": end, "window_days": 4}}}},
        )
        after = vocab.load(wh, "item").to_pydict()
        n = len(before["key"])
        assert after["key"][:n] == before["key"] and after["index"][:n] == before["index"]
        before = after
    assert len(set(before["index"])) == len(before["index"])


def test_demo_cli_with_broken_and_good_plugins(tmp_path):
    """`ctr demo` beside a set of broken plugins: the graph still loads and runs, the good model
    plugin gets its asset and is trained, the broken ones are reported by the registry asset."""
    plugins = tmp_path / "plugins"
    write_standard_set(plugins)
    env = {
        **os.environ,
        "PYTHONPATH": f"{plugins}{os.pathsep}{ROOT}",
        "CTR_HOME": str(tmp_path / "ctr"),
        "DAGSTER_HOME": str(tmp_path / "dagster"),
    }
    out = subprocess.run(
        [sys.executable, "-m", "ctr_dagster.cli", "demo", "--profile", "tiny", "--json"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    summary = json.loads(out.stdout[out.stdout.index("{\n") :])
    assert summary["profile"] == "tiny"
    assert summary["raw_impressions"] == summary["clean_impressions"] + summary["quarantined"]
    assert 0.5 < summary["oracle_auc_test"] < 1.0
    assert 0.5 < summary["model_auc_test"]["ctrfix_good"] <= summary["oracle_auc_test"] + 0.02

    instance = dg.DagsterInstance.from_config(str(tmp_path / "dagster"))
    check = instance.event_log_storage.get_latest_asset_check_execution_by_key(
        [dg.AssetCheckKey(dg.AssetKey("plugin_registry"), "no_broken_plugins")]
    )
    record = next(iter(check.values()))
    assert record.event.dagster_event.event_specific_data.passed is False
    broken = instance.get_latest_materialization_event(dg.AssetKey("plugin_registry"))
    assert broken.asset_materialization.metadata["broken_count"].value >= 5
