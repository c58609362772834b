"""Issue 22: the nightly retrain shares the cores, warm-starts within a full-retrain cadence, and skips
what did not change."""

import json
import os
from pathlib import Path

import dagster as dg
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ctr_dagster import threads
from ctr_dagster.modeling import plan_warm_start, read_status, train_and_store, write_status
from ctr_dagster.registry import default_registry
from ctr_dagster.settings import Home
from ctr_dagster.testing import make_training_table
from ctr_dagster.warehouse import Warehouse

QUIET = {"log": lambda s: None}


# -- 1. threads ----------------------------------------------------------------------------------


def test_share_divides_the_cores_among_the_steps_that_run_at_once():
    assert threads.share(1, cpus=2) == 2
    assert threads.share(2, cpus=2) == 1
    assert threads.share(3, cpus=2) == 1  # never 0
    assert threads.share(3, cpus=16) == 5
    assert threads.share(0, cpus=4) == 4  # nonsense concurrency counts as one


def test_the_step_share_is_set_for_the_block_and_an_explicit_setting_wins(monkeypatch):
    monkeypatch.delenv(threads.ENV_VAR, raising=False)
    monkeypatch.setenv(threads.OMP_VAR, "7")  # the user's own OpenMP setting is left alone
    assert threads.step_thread_budget() is None
    assert threads.threads_per_step() == threads.cpu_count()
    with threads.step_threads(3) as n:
        assert n == 3 and threads.threads_per_step() == 3 and os.environ[threads.OMP_VAR] == "7"
        assert threads.resolve(0) == 3 and threads.resolve(5) == 5
    assert threads.step_thread_budget() is None
    monkeypatch.delenv(threads.OMP_VAR)
    with threads.step_threads(2):
        assert os.environ[threads.OMP_VAR] == "2"
    assert threads.OMP_VAR not in os.environ
    monkeypatch.setenv(threads.ENV_VAR, "lots")
    assert threads.step_thread_budget() is None


def test_torch_threads_follow_the_share_split_over_local_ddp_processes(monkeypatch):
    from ctr_dagster.training.trainer import training_threads

    monkeypatch.delenv(threads.ENV_VAR, raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert training_threads(0) is None  # nothing known: torch's own default
    assert training_threads(3) == 3
    monkeypatch.setenv(threads.ENV_VAR, "8")
    assert training_threads(0) == 8
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert training_threads(0) == 4


def test_two_lightgbm_steps_under_the_multiprocess_executor_share_the_cores(tmp_path):
    """A 2-step multiprocess run of two model assets: each gets cpu_count // 2 threads (at least 1),
    used by LightGBM (its config leaves num_threads at 0) and recorded in the asset metadata, the
    reproducibility record and the artifact's model.json."""
    from tests import nightly_support

    home = Home(tmp_path / "home")
    Warehouse(home.warehouse).write("training_dataset", make_training_table(3000, seed=1))
    run_config = {
        "execution": {"config": {"multiprocess": {"max_concurrent": 2}}},
        "resources": {"warehouse": {"config": {"home": str(home.root)}}},
    }
    with dg.instance_for_test() as instance:
        result = dg.execute_job(
            dg.reconstructable(nightly_support.two_models_job), instance, run_config=run_config
        )
        assert result.success
        expected = threads.share(2)
        for name in nightly_support.MODELS:
            event = instance.get_latest_materialization_event(dg.AssetKey(["models", name]))
            metadata = event.asset_materialization.metadata
            assert metadata["threads"].value == expected, name
            record = json.loads(Path(metadata["record"].value).read_text())
            assert record["threads"] == expected
        artifact = read_status(home, "lightgbm")["artifact"]
        meta = json.loads((Path(artifact) / "model.json").read_text())
        assert meta["config"]["num_threads"] == 0 and meta["num_threads"] == expected


# -- 2. warm start and the full-retrain cadence ----------------------------------------------------


def _status(home: Home, artifact, full_day: str, plugin: str = "lightgbm") -> None:
    write_status(
        home,
        plugin,
        {"status": "ok", "plugin": plugin, "artifact": str(artifact), "full_retrain_day": full_day},
    )


def test_warm_start_continues_the_own_artifact_until_the_cadence_is_due(tmp_path):
    home = Home(tmp_path)
    artifact = home.artifacts / "lightgbm" / "abc"
    assert not plan_warm_start(home, "lightgbm", "lightgbm", "2026-11-06", 7).warm  # nothing yet
    artifact.mkdir(parents=True)
    _status(home, artifact, "2026-11-01")
    start = plan_warm_start(home, "lightgbm", "lightgbm", "2026-11-06", 7)
    assert start.warm and start.init_from == artifact and start.full_retrain_day == "2026-11-01"
    due = plan_warm_start(home, "lightgbm", "lightgbm", "2026-11-08", 7)  # 7 days of new data
    assert not due.warm and due.full_retrain_day == "2026-11-08" and "cadence 7" in due.reason
    assert due.audit_from == artifact  # the due night audits the warm start it replaces
    assert (
        start.audit_from is None and not plan_warm_start(home, "lightgbm", "lightgbm", "2026-11-02", 0).warm
    )
    # a warm start audited below its full retrain: full retrains, each audited, until one is not below
    for verdict, warm in (("below", False), ("within", True), ("above", True)):
        status = read_status(home, "lightgbm") | {
            "warm_start_audit": {"day": "2026-11-01", "verdict": verdict}
        }
        write_status(home, "lightgbm", status)
        again = plan_warm_start(home, "lightgbm", "lightgbm", "2026-11-03", 7)
        assert again.warm is warm and (again.audit_from == artifact) is not warm, verdict
        assert warm or "audit (2026-11-01) put the warm start below" in again.reason
    write_status(home, "lightgbm", {"status": "failed", "error": "boom"})
    assert not plan_warm_start(home, "lightgbm", "lightgbm", "2026-11-02", 7).warm


def _days(table: pa.Table) -> np.ndarray:
    return np.asarray(pc.strftime(table.column("ts"), format="%Y-%m-%d").to_pylist())


def _by_day(table: pa.Table, last: str) -> pa.Table:
    """The rows up to day `last`, split by day: the last day test, the one before valid, the rest train."""
    days = _days(table)
    table = table.filter(pa.array(days <= last))
    days = days[days <= last]
    ordered = sorted(set(days))
    split = np.where(days == ordered[-1], "test", np.where(days == ordered[-2], "valid", "train"))
    return table.set_column(table.schema.get_field_index("split"), "split", pa.array(split))


def _valid_scores(wh: Warehouse, name: str) -> tuple[np.ndarray, np.ndarray]:
    dataset = wh.read("training_dataset")
    valid = dataset.filter(pc.equal(dataset.column("split"), "valid")).select(["impression_id", "label"])
    predictions = wh.read(f"predictions_{name}")
    scored = valid.join(predictions.filter(pc.equal(predictions.column("split"), "valid")), "impression_id")
    return scored.column("label").to_numpy(), scored.column("score").to_numpy()


def test_a_warm_started_lightgbm_is_within_the_interval_of_a_full_retrain(tmp_path):
    """Yesterday's model (trained on days 1-5 of the tiny kit world) keeps boosting on today's dataset
    (days 1-6). Its validation AUC lies inside the DeLong 95 % interval of a full retrain on the same
    dataset. (The torch models: `benchmarks/bench_nightly.py` gives the same comparison for every model;
    DIN on this world with its default epochs: warm 0.7609, full 0.7610 [0.7413, 0.7807].)"""
    from ctr_dagster.significance import auc_interval

    model, config = "lightgbm", {}
    plugin = default_registry().get("model", model)
    world = make_training_table(24000, seed=0)
    last = sorted(set(_days(world)))
    nightly, full = Home(tmp_path / "nightly"), Home(tmp_path / "full")
    wh, wh_full = Warehouse(nightly.warehouse), Warehouse(full.warehouse)
    wh.write("training_dataset", _by_day(world, last[-2]))
    yesterday = train_and_store(plugin, config, wh, nightly, full_retrain_every_days=7, **QUIET)
    assert yesterday.lineage["training"] == "full retrain"
    today = _by_day(world, last[-1])
    wh.write("training_dataset", today)
    warm = train_and_store(plugin, config, wh, nightly, full_retrain_every_days=7, **QUIET)
    assert warm.lineage["training"] == "warm start"
    assert warm.lineage["warm_started_from"] == str(yesterday.artifact_dir)
    assert warm.lineage["full_retrain_day"] == last[-2]  # carried: the cadence counts from it
    assert warm.record["warm_start"]["training"] == "warm start"
    wh_full.write("training_dataset", today)
    retrained = train_and_store(plugin, config, wh_full, full, **QUIET)
    assert retrained.lineage["training"] == "full retrain"
    labels, full_scores = _valid_scores(wh_full, model)
    warm_labels, warm_scores = _valid_scores(wh, model)
    assert np.array_equal(labels, warm_labels)
    interval = auc_interval(labels, full_scores)
    warm_auc = auc_interval(labels, warm_scores).auc
    assert interval.low <= warm_auc <= interval.high, (warm_auc, interval)
    meta = json.loads((warm.artifact_dir / "model.json").read_text())
    assert meta["init_trees"] > 0 and meta["num_trees"] > meta["init_trees"]


def test_a_warm_started_torch_model_fine_tunes_on_the_rows_it_never_saw(tmp_path, monkeypatch):
    """DIN warm-started by the nightly path trains on the train rows after the last one its previous
    artifact saw (yesterday's valid day, now train), not on the whole window again.

    Its mini-batch-aware L2 divides each id's penalty by n_j, the id's training rows; n_j stays the
    window's: with the new rows' own counts every penalty would be (window / new rows) times stronger
    than in the full training it continues (on `small`, 12x: the warm starts of tin / din / din_student
    / awmoe / din_student_distilled lost 0.001-0.004 valid AUC)."""
    from ctr_dagster.training.regularization import MiniBatchAwareL2

    counted: list[int] = []
    original = MiniBatchAwareL2.from_train.__func__

    def spy(cls, module, train, strength):
        counted.append(int(next(iter(train.values())).shape[0]))
        return original(cls, module, train, strength)

    monkeypatch.setattr(MiniBatchAwareL2, "from_train", classmethod(spy))
    plugin = default_registry().get("model", "din")
    config = {"epochs": 1, "log_every": 0, "num_threads": 1, "batch_size": 512, "mba_l2": 0.3}
    world = make_training_table(6000, seed=0)
    last = sorted(set(_days(world)))
    home = Home(tmp_path)
    wh = Warehouse(home.warehouse)
    wh.write("training_dataset", _by_day(world, last[-2]))
    train_and_store(plugin, config, wh, home, full_retrain_every_days=7, **QUIET)
    previous_end = read_status(home, "din")["train_end"]
    today = _by_day(world, last[-1])
    wh.write("training_dataset", today)
    lines: list[str] = []
    warm = train_and_store(plugin, config, wh, home, full_retrain_every_days=7, log=lines.append)
    assert warm.lineage["training"] == "warm start"
    train_days = _days(today)[np.asarray(today.column("split").to_pylist()) == "train"]
    new_rows = int((train_days == last[-3]).sum())
    assert f"fine-tuning on the {new_rows} train rows after {previous_end}" in "\n".join(lines)
    assert counted[-1] == len(train_days) > new_rows  # the L2 counts the window's rows, not the fine-tune's


def _distil_two_days(tmp_path, every_days: int):
    """din_student distilled from din (temperatures 1 and 2) on the last two days of a small world at
    a full-retrain cadence of `every_days`: the last result, its log, each day's warm-start audit."""
    from ctr_dagster import distillation, warm_start_audit

    registry = default_registry()
    student, teacher = registry.get("model", "din_student"), registry.get("model", "din")
    config = {"epochs": 1, "log_every": 0, "num_threads": 1, "batch_size": 512}
    world = make_training_table(6000, seed=0)
    home = Home(tmp_path)
    wh = Warehouse(home.warehouse)
    weights = distillation.DistillationWeights()
    audits = []
    for day in sorted(set(_days(world)))[-2:]:
        wh.write("training_dataset", _by_day(world, day))
        train_and_store(teacher, config, wh, home, **QUIET)
        lines: list[str] = []
        result = distillation.distill_and_store(
            student, teacher, config, weights, wh, home, temperatures=(1.0, 2.0),
            full_retrain_every_days=every_days, log=lines.append,
        )  # fmt: skip
        audits.append(read_status(home, "din_student_distilled")[warm_start_audit.STATUS_KEY])
    return result, "\n".join(lines), audits


def test_a_warm_started_distilled_student_fine_tunes_with_its_rows_teacher_scores(tmp_path):
    """The nightly distillation (one fit at the chosen temperature) fine-tunes the student on the new
    rows only, the teacher's soft labels subset with them (they are row-aligned with the train split)."""
    result, log, _ = _distil_two_days(tmp_path, 7)
    assert result.lineage["training"] == "warm start" and len(result.selection["valid_auc"]) == 1
    assert "fine-tuning on the" in log, log


def test_the_night_a_full_retrain_comes_due_audits_the_warm_start_it_replaces(tmp_path):
    """Day 1 a full retrain; day 2 the cadence (1 day) is due: the model retrains from scratch and also
    fine-tunes yesterday's artifact as the nightly would have. The audit's warm figure is exactly what a
    real warm start from the same state gives (a copy of the home, cadence 7), its full figure is the
    stored model's; a warm night after it carries the audit; a full retrain without one drops it."""
    import shutil

    from ctr_dagster import warm_start_audit
    from ctr_dagster.significance import auc_interval

    model, config = "lightgbm", {"num_boost_round": 60}
    plugin = default_registry().get("model", model)
    world = make_training_table(24000, seed=0)
    last = sorted(set(_days(world)))
    home = Home(tmp_path / "audited")
    wh = Warehouse(home.warehouse)
    wh.write("training_dataset", _by_day(world, last[-3]))
    train_and_store(plugin, config, wh, home, full_retrain_every_days=1, **QUIET)
    assert read_status(home, model)[warm_start_audit.STATUS_KEY] is None  # nothing to fine-tune yet
    yesterday = read_status(home, model)["artifact"]
    shutil.copytree(home.root, tmp_path / "warm")
    wh.write("training_dataset", _by_day(world, last[-2]))
    lines: list[str] = []
    full = train_and_store(plugin, config, wh, home, full_retrain_every_days=1, log=lines.append)
    assert full.lineage["training"] == "full retrain" and "cadence 1" in "\n".join(lines)
    audit = read_status(home, model)[warm_start_audit.STATUS_KEY]
    assert audit["warm_started_from"] == yesterday and audit["day"] == last[-2]
    assert audit["full_valid_auc"] == round(full.scores["valid_auc"], 6)
    assert full.lineage["warm_start_audit/verdict"] == audit["verdict"]
    assert full.record["warm_start_audit"] == audit
    # the same night as the nightly's warm start (cadence 7) would have run it
    warm_home = Home(tmp_path / "warm")
    warm_wh = Warehouse(warm_home.warehouse)
    warm_wh.write("training_dataset", _by_day(world, last[-2]))
    warm = train_and_store(plugin, config, warm_wh, warm_home, full_retrain_every_days=7, **QUIET)
    assert warm.lineage["training"] == "warm start"
    assert audit["warm_valid_auc"] == round(warm.scores["valid_auc"], 6)
    labels, full_scores = _valid_scores(wh, model)
    interval = auc_interval(labels, full_scores)
    assert audit["full_interval"] == [round(interval.low, 6), round(interval.high, 6)]
    assert audit["verdict"] == warm_start_audit.verdict(warm.scores["valid_auc"], interval.low, interval.high)
    assert audit["warm_minus_full"] == round(warm.scores["valid_auc"] - full.scores["valid_auc"], 6)
    assert not (home.work / model / "warm-audit").exists()  # its checkpoints are not left behind
    # a warm night carries the audit (the model still descends from the audited full retrain)
    wh.write("training_dataset", _by_day(world, last[-1]))
    assert (
        train_and_store(plugin, config, wh, home, full_retrain_every_days=7, **QUIET).lineage["training"]
        == "warm start"
    )
    assert read_status(home, model)[warm_start_audit.STATUS_KEY] == audit
    train_and_store(plugin, config, wh, home, **QUIET)  # a full retrain outside the nightly: no audit
    assert read_status(home, model)[warm_start_audit.STATUS_KEY] is None


def test_the_warm_start_check_fails_only_on_an_audit_below_the_full_interval():
    from ctr_dagster import warm_start_audit as audits

    assert audits.verdict(0.79, 0.80, 0.82) == "below"
    assert audits.verdict(0.80, 0.80, 0.82) == "within"
    assert audits.verdict(0.83, 0.80, 0.82) == "above"

    def status(warm: float, verdict: str) -> dict:
        found = {"day": "2026-11-14", "warm_valid_auc": warm, "full_valid_auc": 0.81}
        found |= {"full_interval": [0.80, 0.82], "warm_minus_full": warm - 0.81, "verdict": verdict}
        return {"status": "ok", audits.STATUS_KEY: found}

    passed, text = audits.check_summary(audits.check_rows({"din": None, "tin": {"status": "ok"}}), 7)
    assert passed and "no warm-start audit yet" in text and "7 days" in text
    rows = audits.check_rows({"din": status(0.815, "within"), "qin": status(0.83, "above")})
    assert [r["model"] for r in rows] == ["din", "qin"] and audits.check_summary(rows, 7)[0]
    rows = audits.check_rows({"din": status(0.815, "within"), "din_student_distilled": status(0.79, "below")})
    passed, text = audits.check_summary(rows, 7)
    assert not passed and "din_student_distilled" in text and "din," not in text
    failed = {"status": "ok", audits.STATUS_KEY: {"day": "2026-11-14", "error": "ValueError: one class"}}
    rows = audits.check_rows({"din": failed})
    assert rows[0]["verdict"] == "error"
    passed, text = audits.check_summary(rows, 7)
    assert passed and "din" in text and "error" in text  # reported, not a verdict on the warm start


def test_a_due_distillation_audits_the_warm_start_at_the_temperature_chosen_then(tmp_path):
    result, log, audits = _distil_two_days(tmp_path, 1)
    assert audits[0] is None and result.lineage["training"] == "full retrain"
    assert len(result.selection["valid_auc"]) == 2  # the grid ran again
    audit = audits[1]
    assert audit["verdict"] in ("below", "within", "above") and audit["valid_rows"] > 0
    assert audit["full_valid_auc"] == round(result.scores["valid_auc"], 6)
    assert "warm-start audit: fine-tuning" in log and "fine-tuning on the" in log


# -- 3. skip what did not change -------------------------------------------------------------------


def test_an_unchanged_training_is_skipped_and_a_change_retrains(tmp_path):
    plugin = default_registry().get("model", "baseline_lr")
    home = Home(tmp_path)
    wh = Warehouse(home.warehouse)
    wh.write("training_dataset", make_training_table(2000, seed=1))
    first = train_and_store(plugin, {}, wh, home, **QUIET)
    assert first.skipped is None
    again = train_and_store(plugin, {}, wh, home, **QUIET)
    assert again.skipped and again.skipped.startswith("unchanged")
    assert again.artifact_dir == first.artifact_dir and again.record_path == first.record_path
    assert again.scores == first.scores and again.metadata()["skipped"] == again.skipped
    assert (
        read_status(home, "baseline_lr")["training_key"] == read_status(home, "baseline_lr")["training_key"]
    )
    other_seed = train_and_store(plugin, {}, wh, home, seed=3, **QUIET)  # a change in the seed
    assert other_seed.skipped is None
    wh.write("training_dataset", make_training_table(2000, seed=2))  # a change in the data
    assert train_and_store(plugin, {}, wh, home, seed=3, **QUIET).skipped is None
    before = read_status(home, "baseline_lr")["training_key"]
    changed = train_and_store(plugin, {"smoothing": 5.0}, wh, home, seed=3, **QUIET)  # the config
    assert changed.skipped is None and read_status(home, "baseline_lr")["training_key"] != before


def test_an_unchanged_training_dataset_is_kept_with_the_same_data_version(tiny_settings):
    """Rebuilding `training_dataset` from the same clean days, catalogue, config and code keeps the
    stored table ("skipped" in its metadata) and its data version, so the models stay in sync."""
    from assets.definitions import build_definitions
    from assets.raw import CATALOGUE_TABLES
    from assets.resources import daily_partitions
    from assets.schedules import DAY_ASSETS

    defs = build_definitions(tiny_settings)
    assets = list(defs.assets) + list(defs.asset_checks or [])
    resources = dict(defs.resources or {})

    def materialize(selection, partition_key=None):
        return dg.materialize(
            assets, selection=selection, partition_key=partition_key, instance=instance, resources=resources
        )

    with dg.instance_for_test() as instance:
        materialize(list(CATALOGUE_TABLES))
        for day in daily_partitions(tiny_settings).get_partition_keys()[:3]:
            materialize(DAY_ASSETS, day)
        materialize(["training_dataset"])
        first = instance.get_latest_materialization_event(
            dg.AssetKey("training_dataset")
        ).asset_materialization
        path = Warehouse(tiny_settings.ctr_home.warehouse).path("training_dataset")
        written = path.stat().st_mtime_ns
        materialize(["training_dataset"])
        second = instance.get_latest_materialization_event(
            dg.AssetKey("training_dataset")
        ).asset_materialization
    assert "skipped" not in first.metadata
    assert second.metadata["skipped"].value.startswith("unchanged")
    assert path.stat().st_mtime_ns == written  # not rewritten
    assert second.tags["dagster/data_version"] == first.tags["dagster/data_version"]


def test_skipping_tells_a_warm_start_from_a_full_retrain(tmp_path):
    """Unchanged data: a repeated nightly (warm) run is skipped, but a full retrain asked for after it
    is not (and neither is the first warm run after a full one)."""
    plugin = default_registry().get("model", "lightgbm")
    home = Home(tmp_path)
    wh = Warehouse(home.warehouse)
    wh.write("training_dataset", make_training_table(3000, seed=1))
    config = {"num_boost_round": 30}
    assert train_and_store(plugin, config, wh, home, **QUIET).skipped is None
    warm = train_and_store(plugin, config, wh, home, full_retrain_every_days=7, **QUIET)
    assert warm.skipped is None and warm.lineage["training"] == "warm start"
    assert train_and_store(plugin, config, wh, home, full_retrain_every_days=7, **QUIET).skipped
    assert train_and_store(plugin, config, wh, home, **QUIET).skipped is None
