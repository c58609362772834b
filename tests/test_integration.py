"""The data graph materialized on `tiny` in a temporary Dagster instance, as the UI would run it."""

import json
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pyarrow.compute as pc
import pytest

from ctr_dagster.registry import discover
from ctr_dagster.settings import Settings
from tests.plugin_fixtures import MODELS, on_sys_path, write_dist, write_standard_set

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def settings(tmp_path_factory) -> Settings:
    return Settings(profile="tiny", home=tmp_path_factory.mktemp("ctr_home"))


@pytest.fixture(scope="module")
def materialized(settings):
    """Run the whole graph once for this module; yields (warehouse, instance, timings)."""
    from assets.run import materialize_all
    from ctr_dagster.warehouse import Warehouse

    with dg.instance_for_test() as instance:
        timings = materialize_all(settings, instance=instance, log=lambda s: None)
        yield Warehouse(settings.ctr_home.warehouse), instance, timings


def _last_metadata(instance: dg.DagsterInstance, key: str, partition: str | None = None) -> dict:
    asset_key = dg.AssetKey.from_user_string(key)
    event = instance.get_latest_materialization_event(asset_key) if partition is None else None
    if partition is not None:
        records = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=asset_key, asset_partitions=[partition]), limit=1
        ).records
        event = records[0].event_log_entry
    assert event is not None, f"{key} was not materialized"
    return {k: v.value for k, v in event.asset_materialization.metadata.items()}


def test_uplift_evaluation_scores_each_uplift_model_per_arm_and_stage(materialized, settings):
    """The uplift models (ECUP, S/T-learners) are judged in their own asset, never on the CTR board;
    the oracle is the ceiling row, the placebo arm is recognised as zero-effect, and the leaderboard
    JSON carries the uplift document."""
    from ctr_dagster.evaluation import report
    from ctr_dagster.registry import default_registry
    from ctr_dagster.uplift.lineage import latest, uplift_plugins

    _, instance, _ = materialized
    expected = {p.name for p in uplift_plugins(default_registry())}
    assert expected, "no uplift plugin installed"
    doc = latest(settings.ctr_home)
    scored = {r["model"] for r in doc["rows"]}
    assert expected | {"oracle"} == scored and doc["stages"] == ["click", "conversion"]
    placebo = [a for a in doc["arms"] if a["zero_effect"]]
    assert {(a["arm"], a["stage"]) for a in placebo} >= {(3, "click")} and all(a["basis"] for a in placebo)
    oracle_arm1 = next(
        r for r in doc["rows"] if r["model"] == "oracle" and r["arm"] == 1 and r["stage"] == "click"
    )
    assert (
        oracle_arm1["auuc"] > 0 and oracle_arm1["auuc_low"] <= oracle_arm1["auuc"] <= oracle_arm1["auuc_high"]
    )
    ctr_board = report(settings.ctr_home)
    assert not expected & {m["name"] for m in ctr_board["models"] + ctr_board["unranked"]}
    assert ctr_board["uplift"]["rows"] == doc["rows"]
    meta = _last_metadata(instance, "uplift_evaluation")
    assert "uplift_click" in meta and meta["zero_effect_arms"].startswith("arm 3 click")


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
        # the partition's own counts only: by rule they add up, and no raw-side report is attached
        by_rule = sum(v for k, v in meta.items() if k.startswith("quarantined."))
        assert by_rule >= quarantined > 0 or quarantined == 0  # a row may fail several rules
        assert "table" not in meta and "success" not in meta
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


def test_models_evaluation_and_first_champion(materialized, settings):
    """LightGBM clearly learns but stays below the oracle; the leaderboard and gate ran; a champion exists."""
    wh, instance, _ = materialized
    from ctr_dagster.champion import ChampionStore
    from ctr_dagster.evaluation import report

    doc = report(settings.ctr_home)
    assert doc["profile"] == "tiny" and doc["data"] == settings.label
    ranked = {r["name"]: r for r in doc["models"]}
    oracle = doc["oracle"]["auc"]
    assert {"lightgbm", "baseline_lr"} <= set(ranked)
    assert 0.6 < ranked["lightgbm"]["auc"] < oracle
    for row in ranked.values():
        assert row["gauc"] is not None and 0 < row["logloss"] < 1 and 0 <= row["ece"] < 0.2
        assert row["oracle_gap"] == pytest.approx(oracle - row["auc"])
        assert {"new_items", "new_users", "activity:0", "activity:20+"} <= set(row["slices"])
    meta = _last_metadata(instance, "evaluation")
    # the first table and the ROC thumbnail are drawn on the first view: markdown under the UI's inline
    # limit, or table metadata
    board = meta["leaderboard"]
    assert isinstance(board, dg.TableMetadataValue) or len(board) < 1000
    text = board if isinstance(board, str) else str([r.data for r in board.records])
    assert "| lightgbm | 0." in text or "'model': 'lightgbm', 'AUC ± 95% CI': '0." in text
    assert "oracle" in text
    assert meta["roc_at_a_glance"].startswith("![ROC") and len(meta["roc_at_a_glance"]) < 1000
    # which planted mechanism each model captures: every ranked CTR model, every component with worth
    mech = doc["mechanisms"]
    worth = {r["component"]: r["worth"] for r in mech["components"]}
    assert worth["affinity"] > 0.01 and set(mech["models"]) == {
        n for n, r in ranked.items() if r["task"] == "ctr"
    }
    captured = mech["models"]["lightgbm"]["affinity"]["captured"]
    assert captured is not None and 0 <= captured <= 1
    assert "worth" in meta["mechanisms"] and "lightgbm" in meta["mechanisms"]
    assert meta["lightgbm/auc"] == pytest.approx(ranked["lightgbm"]["auc"])
    assert meta["roc_calibration"].startswith("![ROC")
    assert "activity:20+" in meta["slice_auc"] and "| lightgbm |" in meta["slice_auc"]
    gate = instance.event_log_storage.get_latest_asset_check_execution_by_key(
        [dg.AssetCheckKey(dg.AssetKey("evaluation"), "champion_gate")]
    )
    assert next(iter(gate.values())).event.dagster_event.event_specific_data.passed
    # no nightly has run: no full retrain came due with a previous artifact, so nothing was audited
    warm = instance.event_log_storage.get_latest_asset_check_execution_by_key(
        [dg.AssetCheckKey(dg.AssetKey("evaluation"), "warm_starts_track_full_retrains")]
    )
    warm_check = next(iter(warm.values())).event.dagster_event.event_specific_data
    assert warm_check.passed and warm_check.metadata["models_audited"].value == 0
    champion = ChampionStore(settings.ctr_home.champion).current()
    assert champion["name"] == doc["candidate"]["name"] == doc["models"][0]["name"]
    assert _last_metadata(instance, "champion")["champion"] == champion["name"]


def test_ctr_compare_is_the_paired_test_of_any_two_models(materialized, settings):
    """`ctr compare A B`: the leaderboard's AUCs, a paired interval that holds the difference, a verdict
    that follows the interval, the reverse comparison its mirror, and errors that name what is wrong."""
    from typer.testing import CliRunner

    from ctr_dagster.cli import app
    from ctr_dagster.evaluation import compare_models, report

    aucs = {r["name"]: r["auc"] for r in report(settings.ctr_home)["models"]}
    result = compare_models(settings.ctr_home, "lightgbm", "baseline_lr")
    assert result["auc_a"] == pytest.approx(aucs["lightgbm"]) and result["auc_b"] == pytest.approx(
        aucs["baseline_lr"]
    )
    low, high = result["ci"]
    assert low < result["delta"] < high and result["delta"] == pytest.approx(
        result["auc_a"] - result["auc_b"]
    )
    assert result["verdict"] == ("better" if low > 0 else "worse" if high < 0 else "noise")
    mirror = compare_models(settings.ctr_home, "baseline_lr", "lightgbm")
    assert mirror["delta"] == pytest.approx(-result["delta"]) and mirror["p_value"] == pytest.approx(
        1 - result["p_value"]
    )
    valid = compare_models(settings.ctr_home, "lightgbm", "baseline_lr", split="valid")
    assert valid["rows"] != result["rows"] or valid["auc_a"] != result["auc_a"]

    runner = CliRunner()
    out = runner.invoke(app, ["--home", str(settings.ctr_home.root), "compare", "lightgbm", "baseline_lr"])
    assert out.exit_code == 0, out.output
    assert f"difference {result['delta']:+.4f} [{low:+.4f}, {high:+.4f}]" in out.output
    missing = runner.invoke(app, ["--home", str(settings.ctr_home.root), "compare", "lightgbm", "nope"])
    assert missing.exit_code == 2 and "'nope' has no predictions" in missing.output
    assert "lightgbm" in missing.output.split("models with predictions:")[1]


def test_rerunning_the_models_reproduces_their_metrics(materialized, settings):
    wh, instance, _ = materialized
    from assets.definitions import build_definitions
    from ctr_dagster.reproducibility import METRIC_TOLERANCE, same_computation

    defs = build_definitions(settings)
    models = ("lightgbm", "baseline_lr")
    before = {m: _last_metadata(instance, f"models/{m}") for m in models}
    dg.materialize(
        list(defs.assets),
        selection=[dg.AssetKey(["models", m]) for m in models],
        instance=instance,
        resources=dict(defs.resources),
    )
    for model, meta in before.items():
        again = _last_metadata(instance, f"models/{model}")
        assert abs(again["test_auc"] - meta["test_auc"]) <= METRIC_TOLERANCE, model
        assert again["artifact"] == meta["artifact"] and again["data_sha256"] == meta["data_sha256"]
        records = [json.loads(Path(m["record"]).read_text()) for m in (meta, again)]
        assert same_computation(*records) == []


def test_a_retrained_model_marks_evaluation_and_champion_unsynced(materialized, settings):
    """Issue 21: after a retrain the evaluation and champion showed the old figures as current. Each
    model's data version is its artifact's content hash: a retrain that reproduces the artifact keeps
    them in sync (the test above reran two models), one that changes it makes both unsynced in the
    UI (Dagster's stale status), and `ctr leaderboard` names the model until `evaluation` runs again."""
    wh, instance, _ = materialized
    from dagster._core.definitions.data_version import CachingStaleStatusResolver, StaleStatus
    from dagster._core.loader import LoadingContextForTest

    from assets.definitions import build_definitions
    from ctr_dagster.cli import leaderboard_text
    from ctr_dagster.evaluation import report

    defs = build_definitions(settings)

    def status(key: str) -> StaleStatus:
        resolver = CachingStaleStatusResolver(
            instance, defs.resolve_asset_graph(), loading_context=LoadingContextForTest(instance)
        )
        return resolver.get_status(dg.AssetKey.from_user_string(key))

    model = _last_metadata(instance, "models/baseline_lr")
    event = instance.get_latest_materialization_event(dg.AssetKey(["models", "baseline_lr"]))
    assert event.asset_materialization.tags["dagster/data_version"] == Path(model["artifact"]).name
    assert status("evaluation") == StaleStatus.FRESH and status("champion") == StaleStatus.FRESH
    assert report(settings.ctr_home)["changed_since_evaluation"] == []

    dg.materialize(
        list(defs.assets),
        selection=[dg.AssetKey(["models", "baseline_lr"])],
        instance=instance,
        resources=dict(defs.resources),
        run_config={"ops": {"models__baseline_lr": {"config": {"seed": 5}}}},  # other weights
    )
    assert _last_metadata(instance, "models/baseline_lr")["artifact"] != model["artifact"]
    assert status("evaluation") == StaleStatus.STALE and status("champion") == StaleStatus.STALE
    doc = report(settings.ctr_home)
    assert [c["model"] for c in doc["changed_since_evaluation"]] == ["baseline_lr"]
    assert "STALE: baseline_lr was retrained" in leaderboard_text(doc)

    dg.materialize(
        list(defs.assets) + list(defs.asset_checks),
        selection=["evaluation", "champion"],
        instance=instance,
        resources=dict(defs.resources),
    )
    assert status("evaluation") == StaleStatus.FRESH and status("champion") == StaleStatus.FRESH
    assert report(settings.ctr_home)["changed_since_evaluation"] == []


def test_gate_blocks_a_model_that_does_not_beat_the_champion_by_the_margin(materialized, settings):
    wh, instance, _ = materialized
    from assets.definitions import build_definitions
    from ctr_dagster.champion import ChampionStore

    defs = build_definitions(settings)
    store = ChampionStore(settings.ctr_home.champion)
    store.promote(
        {
            "name": "baseline_lr",
            "artifact": json.loads(
                Path(_last_metadata(instance, "models/baseline_lr")["record"]).read_text()
            )["artifact"],
            "auc": 0.0,
        },
        who="test",
    )
    history = len(store.history())
    result = dg.materialize(
        list(defs.assets) + list(defs.asset_checks),
        selection=["evaluation", "champion"],
        instance=instance,
        resources=dict(defs.resources),
        run_config={"ops": {"evaluation": {"config": {"margin": 0.5}}}},
        raise_on_error=False,
    )
    assert not result.success  # the blocking check failed: champion was not materialized
    assert store.current()["name"] == "baseline_lr" and len(store.history()) == history
    checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
    check = checks["champion_gate"]
    assert not check.passed
    assert "margin 0.5" in check.metadata["reasons"].value


def test_vocabulary_is_stable_across_two_nightly_runs(materialized, settings):
    """Re-building the dataset one day later keeps every existing index and appends new ids.

    Runs after the tests that read the fixture's models and evaluation: it replaces the dataset."""
    wh, instance, _ = materialized
    from assets.definitions import build_definitions
    from ctr_dagster import vocab

    before = vocab.load(wh, "item").to_pydict()
    days = wh.partitions("clean_impressions")
    defs = build_definitions(settings)
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
    plugin gets its asset and is trained, the broken ones are reported by the registry asset.
    `CTR_MODELS` keeps the fixture plugins (good and broken) and LightGBM: the installed torch models
    train in the module's `materialized` graph and in the browser test, not a third time here."""
    plugins = tmp_path / "plugins"
    write_standard_set(plugins)
    write_dist(
        plugins,
        "ctrfix-failing",
        {MODELS: {"ctrfix_failing": "ctrfix_failing:FailingModel"}},
        ("ctrfix_failing",),
    )
    with on_sys_path(plugins):
        fixture_models = discover(["model"], path=[plugins])
    selected = {p.name for p in fixture_models.good("model")} | {b.name for b in fixture_models.broken}
    env = {
        **os.environ,
        "PYTHONPATH": str(plugins),  # the fixture plugins; the CLI finds assets/ itself (--project)
        "CTR_HOME": str(tmp_path / "ctr"),
        "DAGSTER_HOME": str(tmp_path / "dagster"),
        "CTR_MODELS": ",".join(sorted(selected | {"lightgbm"})),
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

    evaluation = summary["evaluation"]
    ranked = {r["name"] for r in evaluation["models"]}
    unranked = {r["name"]: r for r in evaluation["unranked"]}
    assert {"ctrfix_good", "lightgbm"} <= ranked
    assert unranked["ctrfix_failing"]["status"] == "failed"
    assert "loss is NaN" in unranked["ctrfix_failing"]["error"]
    assert unranked["ctrfix_raises"]["status"] == "broken"
    board = subprocess.run(
        [sys.executable, "-m", "ctr_dagster.cli", "leaderboard", "--json"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert board.returncode == 0, board.stderr
    doc = json.loads(board.stdout)
    assert [m["name"] for m in doc["models"]] == [m["name"] for m in evaluation["models"]]
    assert doc["profile"] == "tiny" and doc["oracle"]["auc"] == pytest.approx(summary["oracle_auc_test"])
    assert {"name", "task", "auc", "gauc", "logloss"} <= set(doc["models"][0])
    assert doc["champion"]["name"] == doc["models"][0]["name"]

    instance = dg.DagsterInstance.from_config(str(tmp_path / "dagster"))
    check = instance.event_log_storage.get_latest_asset_check_execution_by_key(
        [dg.AssetCheckKey(dg.AssetKey("plugin_registry"), "no_broken_plugins")]
    )
    record = next(iter(check.values()))
    assert record.event.dagster_event.event_specific_data.passed is False
    broken = instance.get_latest_materialization_event(dg.AssetKey("plugin_registry"))
    assert broken.asset_materialization.metadata["broken_count"].value >= 5
