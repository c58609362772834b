"""The evaluation protocol end to end on stored predictions: chosen on validation, reported on test
with DeLong intervals, and a gate that judges the champion in place on rows it never trained on."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from ctr_dagster import evaluation
from ctr_dagster.champion import ChampionStore, GatePolicy
from ctr_dagster.modeling import PREDICTIONS, read_status, train_and_store
from ctr_dagster.settings import Home
from ctr_dagster.testing import make_training_table
from ctr_dagster.warehouse import Warehouse
from tests.plugin_fixtures import distillation_pair_registry


@pytest.fixture
def registry(tmp_path):
    with distillation_pair_registry(tmp_path / "site") as found:
        yield found


@pytest.fixture
def trained(registry, tmp_path):
    home = Home(tmp_path / "home")
    wh = Warehouse(home.warehouse)
    wh.write("training_dataset", make_training_table(3000, seed=2))
    for plugin in registry.good("model"):
        train_and_store(plugin, {}, wh, home, log=lambda s: None)
    return wh, home


def _split(wh: Warehouse, name: str) -> pa.Table:
    table = wh.read("training_dataset")
    return table.filter(pc.equal(table.column("split"), name))


def _write_scores(wh: Warehouse, model: str, quality: dict[str, float], seed: int) -> None:
    """Predictions of `model` whose skill on each split is set by `quality` (noise added to the label)."""
    rng = np.random.default_rng(seed)
    parts = []
    for split, noise in quality.items():
        rows = _split(wh, split)
        label = rows.column("label").to_numpy().astype(float)
        score = 1 / (1 + np.exp(-(label + rng.normal(0, noise, len(label)))))
        parts.append(
            pa.table(
                {
                    "impression_id": rows.column("impression_id"),
                    "split": [split] * rows.num_rows,
                    "score": score,
                },
                schema=PREDICTIONS,
            )
        )
    wh.write(f"predictions_{model}", pa.concat_tables(parts))


def test_the_candidate_is_chosen_on_validation_and_test_is_only_reported(registry, trained):
    wh, home = trained
    _write_scores(wh, "ctrfix_good", {"valid": 0.5, "test": 3.0}, seed=1)  # best on valid, worse on test
    _write_scores(wh, "ctrfix_student", {"valid": 3.0, "test": 0.5}, seed=2)
    doc = evaluation.evaluate(wh, home, registry, log=lambda s: None)
    rows = {r["name"]: r for r in doc["models"]}
    assert rows["ctrfix_student"]["auc"] > rows["ctrfix_good"]["auc"]  # the test winner ...
    assert doc["candidate"]["name"] == "ctrfix_good"  # ... is not chosen: validation decides
    assert doc["candidate"]["selected_by"] == "validation AUC" and "validation" in doc["selected_by"]
    assert doc["models"][0]["name"] == "ctrfix_good" and doc["models"][0]["rank"] == 1
    for row in doc["models"]:
        low, high = row["auc_ci"]
        assert low < row["auc"] < high and high - low < 0.2


def test_the_gate_judges_the_champion_in_place_after_a_rollback(registry, trained):
    wh, home = trained
    _write_scores(wh, "ctrfix_good", {"valid": 0.4, "test": 0.4}, seed=1)
    _write_scores(wh, "ctrfix_student", {"valid": 1.0, "test": 1.0}, seed=2)
    store = ChampionStore(home.champion)
    student = read_status(home, "ctrfix_student")
    good = read_status(home, "ctrfix_good")
    store.promote({"name": "ctrfix_student", "artifact": student["artifact"], "auc": 0.7})
    # scores here are sigmoid(label + noise): uncalibrated by construction, so which one has the lower
    # ECE depends on the drawn rows; this test is about which champion is judged, not calibration
    lenient = GatePolicy(ece_tolerance=1.0, logloss_tolerance=1.0)
    doc = evaluation.evaluate(wh, home, registry, policy=lenient, log=lambda s: None)  # vs the student
    assert doc["candidate"]["name"] == "ctrfix_good"
    assert doc["champion_baseline"]["name"] == "ctrfix_student"
    # someone promotes the candidate itself (a better champion) before `champion` runs
    store.promote({"name": "ctrfix_good", "artifact": good["artifact"], "auc": 0.8})
    decision = evaluation.gate_decision(wh, home, registry, doc, log=lambda s: None)
    assert decision.champion["name"] == "ctrfix_good" and decision.action == "keep"
    # and back: the gate now compares with the student in place, on the same rows
    store.rollback()
    decision = evaluation.gate_decision(wh, home, registry, doc, log=lambda s: None)
    assert decision.comparison["champion"] == "ctrfix_student"
    assert decision.comparison["baseline_artifact"] == student["artifact"]
    assert decision.action == "promote" and decision.comparison["p_value"] < 0.05


def test_the_gate_compares_only_rows_after_the_champions_training_data(registry, trained):
    wh, home = trained
    _write_scores(wh, "ctrfix_good", {"valid": 0.4, "test": 0.4}, seed=1)
    _write_scores(wh, "ctrfix_student", {"valid": 1.0, "test": 1.0}, seed=2)
    test_ts = sorted(_split(wh, "test").column("ts").to_pylist())
    student = read_status(home, "ctrfix_student")
    store = ChampionStore(home.champion)
    middle = test_ts[len(test_ts) // 2]
    store.promote(
        {"name": "ctrfix_student", "artifact": student["artifact"], "trained_until": middle.isoformat()}
    )
    doc = evaluation.evaluate(wh, home, registry, log=lambda s: None)
    decision = evaluation.gate_decision(wh, home, registry, doc, log=lambda s: None)
    later = sum(t > middle for t in test_ts)
    assert 0 < decision.comparison["rows"] == later < len(test_ts)
    assert (
        f"{later} of {len(test_ts)} test rows after the champion's training data"
        in decision.comparison["rows_used"]
    )
    # a champion trained on every test row: nothing fair to compare on, so it is kept and the gate says so
    store.promote(
        {
            "name": "ctrfix_student",
            "artifact": student["artifact"],
            "trained_until": (test_ts[-1] + dt.timedelta(days=1)).isoformat(),
        }
    )
    decision = evaluation.gate_decision(wh, home, registry, doc, log=lambda s: None)
    assert decision.action == "keep" and "cannot be judged fairly" in decision.reasons[0]


def test_leaderboard_json_carries_intervals_selection_and_the_gate(registry, trained):
    wh, home = trained
    _write_scores(wh, "ctrfix_good", {"valid": 0.4, "test": 0.4}, seed=1)
    _write_scores(wh, "ctrfix_student", {"valid": 1.0, "test": 1.0}, seed=2)
    student = read_status(home, "ctrfix_student")
    ChampionStore(home.champion).promote({"name": "ctrfix_student", "artifact": student["artifact"]})
    doc = evaluation.evaluate(wh, home, registry, log=lambda s: None)
    doc.pop("curves")
    evaluation.save(doc, home)
    decision = evaluation.gate_decision(wh, home, registry, doc, log=lambda s: None)
    evaluation.save_gate(decision.as_dict(), doc, home)
    report = evaluation.report(home)
    assert all(len(r["auc_ci"]) == 2 for r in report["models"])
    assert report["candidate"]["selected_by"] == "validation AUC"
    good = next(r for r in report["models"] if r["name"] == "ctrfix_good")
    assert good["vs_champion"]["champion"] == "ctrfix_student" and len(good["vs_champion"]["ci"]) == 2
    gate = report["gate"]["comparison"]
    assert gate["test"] == "DeLong paired (one-sided)" and gate["statistic"] == "z"
    assert len(gate["ci"]) == 2 and report["gate"]["reasons"]
    text = evaluation.leaderboard_rows(report)
    assert next(r for r in text if r["model"] == "ctrfix_student")["vs_champion"] == "champion"


def test_a_variants_lift_says_whether_it_is_noise():
    def row(name, auc, base=None, ci=None):
        paired = {"ci": ci, "delta": 0.0} if ci else None
        return {
            "name": name,
            "auc": auc,
            "gauc": 0.6,
            "logloss": 0.4,
            "variant_of": base,
            "variant": "+ x",
            "vs_base": paired,
        }

    doc = {
        "models": [
            row("base", 0.700),
            row("noisy", 0.702, "base", [-0.003, 0.007]),
            row("real", 0.720, "base", [0.010, 0.030]),
        ]
    }
    verdicts = {r["model"]: (r["verdict"], r["lift_95ci"]) for r in evaluation.comparisons(doc)}
    assert verdicts == {"noisy": ("noise", "[-0.0030, +0.0070]"), "real": ("better", "[+0.0100, +0.0300]")}
