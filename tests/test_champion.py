"""The champion gate (pure decision), the promotion history and rollback, and their CLI."""

import json

import pytest
from typer.testing import CliRunner

from ctr_dagster.champion import ChampionStore, GatePolicy, decide
from ctr_dagster.cli import app

SLICES = {"new_items": {"rows": 500, "auc": 0.70}, "activity:0": {"rows": 50, "auc": 0.60}}


def _row(name: str, auc: float, artifact: str, slices: dict | None = None) -> dict:
    return {"name": name, "task": "ctr", "artifact": artifact, "auc": auc, "slices": slices or SLICES}


def _doc(candidate: dict | None, baseline: dict | None = None) -> dict:
    return {"candidate": candidate, "champion_baseline": baseline}


POLICY = GatePolicy(confidence=0.95, slice_tolerance=0.01, min_auc=0.6, min_slice_rows=200)


def _comparison(delta: float, p_value: float, rows: int = 5000, **extra) -> dict:
    return {
        "test": "DeLong paired (one-sided)",
        "statistic": "z",
        "z": 2.0,
        "p_value": p_value,
        "delta": delta,
        "ci": [delta - 0.004, delta + 0.004],
        "rows": rows,
        "rows_used": "all test rows",
        "logloss_a": 0.40,
        "logloss_b": 0.40,
        "ece_a": 0.01,
        "ece_b": 0.01,
        **extra,
    }


def test_first_champion_needs_only_the_quality_floor():
    assert decide(_doc(_row("a", 0.61, "/a/1")), None, POLICY).action == "promote"
    blocked = decide(_doc(_row("a", 0.59, "/a/1")), None, POLICY)
    assert (blocked.passed, blocked.action) == (False, "block")
    assert "below the floor 0.6" in blocked.reasons[0]


def test_a_challenger_is_promoted_only_when_the_paired_test_says_it_is_better():
    current = {"name": "old", "artifact": "/old/1"}
    doc = _doc(_row("new", 0.706, "/new/1"), _row("old", 0.700, "/old/1"))
    won = decide(doc, current, POLICY, _comparison(0.006, p_value=0.01))
    assert (won.passed, won.action) == (True, "promote")
    assert won.comparison["test"] == "DeLong paired (one-sided)" and "p = 0.0100" in won.reasons[0]
    noise = decide(doc, current, POLICY, _comparison(0.006, p_value=0.20))
    assert not noise.passed and "not significantly better (needs p < 0.050)" in noise.reasons[0]
    assert "CI [+0.0020, +0.0100]" in noise.reasons[0]
    strict = decide(doc, current, GatePolicy(confidence=0.999, min_auc=0.6), _comparison(0.006, p_value=0.01))
    assert not strict.passed  # the confidence is configurable


def test_logloss_and_ece_may_not_degrade_beyond_their_tolerances():
    current = {"name": "old", "artifact": "/old/1"}
    doc = _doc(_row("new", 0.75, "/new/1"), _row("old", 0.70, "/old/1"))
    worse_logloss = decide(doc, current, POLICY, _comparison(0.05, 0.001, logloss_a=0.45))
    assert not worse_logloss.passed and any("logloss degrades" in r for r in worse_logloss.reasons)
    worse_ece = decide(doc, current, POLICY, _comparison(0.05, 0.001, ece_a=0.05))
    assert not worse_ece.passed and any("ece degrades" in r for r in worse_ece.reasons)


def test_a_slice_regression_beyond_tolerance_blocks_even_a_better_model():
    current = {"name": "old", "artifact": "/old/1"}
    baseline = _row("old", 0.70, "/old/1")
    better = _comparison(0.05, 0.001)
    worse_new_items = {**SLICES, "new_items": {"rows": 500, "auc": 0.68}}
    decision = decide(_doc(_row("new", 0.75, "/new/1", worse_new_items), baseline), current, POLICY, better)
    assert not decision.passed
    assert decision.slice_deltas["new_items"] == pytest.approx(-0.02)
    assert any("slice new_items" in r for r in decision.reasons)
    # a small slice (50 rows < min_slice_rows) is too noisy to veto, however bad
    tiny_slice_bad = {**SLICES, "activity:0": {"rows": 50, "auc": 0.30}}
    assert decide(_doc(_row("new", 0.75, "/new/1", tiny_slice_bad), baseline), current, POLICY, better).passed


def test_the_champion_itself_is_kept_and_an_uncomparable_champion_blocks():
    current = {"name": "old", "artifact": "/old/1"}
    keep = decide(_doc(_row("old", 0.70, "/old/1"), _row("old", 0.70, "/old/1")), current, POLICY)
    assert (keep.passed, keep.action) == (True, "keep")
    lost = decide(_doc(_row("new", 0.90, "/new/1"), None), current, POLICY, None)
    assert not lost.passed and "could not be compared" in lost.reasons[0]
    assert decide(_doc(None), current, POLICY).reasons == ["no model was trained successfully"]


def test_with_no_test_rows_after_the_champions_training_data_the_champion_is_kept():
    current = {"name": "old", "artifact": "/old/1"}
    doc = _doc(_row("new", 0.90, "/new/1"), _row("old", 0.70, "/old/1"))
    decision = decide(doc, current, POLICY, {"rows": 0, "rows_used": "0 of 500 test rows after ..."})
    assert (decision.passed, decision.action) == (True, "keep")
    assert "cannot be judged fairly" in decision.reasons[0]


def test_promotions_keep_history_and_rollback_restores_the_previous(tmp_path):
    store = ChampionStore(tmp_path / "champion")
    assert store.current() is None
    with pytest.raises(LookupError, match="no champion"):
        store.rollback()
    store.promote({"name": "a", "artifact": "/a/1", "auc": 0.70}, who="alice", run_id="r1")
    with pytest.raises(LookupError, match="nothing to roll back to"):
        store.rollback()
    store.promote({"name": "b", "artifact": "/b/1", "auc": 0.72}, who="nightly", run_id="r2")
    assert store.current()["name"] == "b" and store.current()["previous"]["name"] == "a"
    restored = store.rollback(who="bob")
    assert restored["name"] == "a" and store.current()["artifact"] == "/a/1"
    events = store.history()
    assert [(e["event"], e["name"], e["promoted_by"]) for e in events] == [
        ("promote", "a", "alice"),
        ("promote", "b", "nightly"),
        ("rollback", "a", "bob"),
    ]
    assert events[1]["metrics"] == {"auc": 0.72} and events[1]["replaced"]["name"] == "a"
    assert "trained_until" in events[1]
    assert events[2]["replaced"] == {"name": "b", "artifact": "/b/1"}


def test_cli_rollback_show_and_history(tmp_path, monkeypatch):
    monkeypatch.setenv("CTR_HOME", str(tmp_path))  # the CLI reads its settings from the environment
    dagster_home = tmp_path / "dagster"
    dagster_home.mkdir()
    (dagster_home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    monkeypatch.setenv("DAGSTER_HOME", str(dagster_home))
    store = ChampionStore(tmp_path / "champion")
    store.promote({"name": "a", "artifact": "/a/1", "auc": 0.70}, who="alice")
    store.promote({"name": "b", "artifact": "/b/1", "auc": 0.72}, who="nightly")
    runner = CliRunner()
    shown = runner.invoke(app, ["champion", "show", "--json"])
    assert json.loads(shown.output)["name"] == "b"
    result = runner.invoke(app, ["champion", "rollback"])
    assert result.exit_code == 0, result.output
    assert "champion is a" in result.output and "replacing b" in result.output
    assert store.current()["name"] == "a"
    import dagster as dg

    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        event = instance.get_latest_materialization_event(dg.AssetKey("champion"))
    assert event.asset_materialization.metadata["action"].value == "rollback"
    assert event.asset_materialization.metadata["champion"].value == "a"
    history = runner.invoke(app, ["champion", "history"]).output
    assert history.count("promote") == 2 and "rollback" in history
    again = runner.invoke(app, ["champion", "rollback"])
    assert again.exit_code == 1 and "nothing to roll back to" in again.output
    # --home wins over $CTR_HOME: another home has no champion
    other = runner.invoke(app, ["--home", str(tmp_path / "other"), "champion", "show", "--json"])
    assert other.exit_code == 0 and json.loads(other.output) is None


def test_the_gate_explains_itself_criterion_by_criterion():
    from ctr_dagster.champion import gate_criteria, gate_headline

    first = decide(_doc(_row("a", 0.61, "/a/1")), None, POLICY)
    assert gate_headline(first).startswith("first promotion: a")
    rows = {r["criterion"]: r for r in gate_criteria(first, POLICY)}
    assert rows["AUC floor"]["result"] == "passed" and rows["better than the champion"]["result"] == "n/a"
    assert "no champion" in rows["better than the champion"]["detail"]

    current = {"name": "old", "artifact": "/old/1"}
    doc = _doc(_row("new", 0.75, "/new/1"), _row("old", 0.70, "/old/1"))
    worse_ece = decide(doc, current, POLICY, _comparison(0.05, 0.001, ece_a=0.05))
    assert gate_headline(worse_ece).startswith("block: new does not replace old")
    rows = {r["criterion"]: r for r in gate_criteria(worse_ece, POLICY)}
    assert rows["better than the champion"]["result"] == "passed"
    assert (
        "ΔAUC +0.0500" in rows["better than the champion"]["detail"]
        and "CI [+0.0460, +0.0540]" in rows["better than the champion"]["detail"]
    )
    assert rows["ECE"]["result"] == "failed" and rows["logloss"]["result"] == "passed"
    assert rows["slices"]["result"] == "passed"  # new_items: 0.70 vs 0.70
