"""`evaluate_uplift`: model x arm x stage rows, the oracle ceiling, the zero-effect-arm verdict, failing and
predict-only models, the curve plots -- with stand-in models (the learners are tested in their plugin)."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest

from ctr_dagster.testing.uplift_files import planted_tables
from ctr_dagster.uplift.evaluate import (
    CONTAINS_ZERO,
    ORACLE,
    evaluate_uplift,
    oracle_effects,
    oracle_for,
)
from ctr_dagster.uplift.plots import uplift_curves_png


class NoisyTruth:
    """Predicts the true effects plus noise (an uplift model that learned something)."""

    def __init__(self, truth: dict[str, np.ndarray], noise: float, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.effects = {
            k: v + rng.normal(0.0, noise, v.shape) * (np.arange(v.shape[1]) > 0) for k, v in truth.items()
        }
        self.seen: list[list[str]] = []

    def predict_effects(self, batch: pa.Table) -> dict[str, np.ndarray]:
        self.seen.append(batch.column_names)
        return self.effects

    def predict(self, batch: pa.Table) -> np.ndarray:
        return self.effects["click"][:, 1:].mean(axis=1)


class PredictOnly:
    """Only `predict`: scored on the click stage, its one score for every arm."""

    def __init__(self, scores: np.ndarray):
        self.scores = scores

    def predict(self, batch: pa.Table) -> np.ndarray:
        return self.scores


class Broken:
    def predict_effects(self, batch: pa.Table) -> dict[str, np.ndarray]:
        raise RuntimeError("boom")


@pytest.fixture(scope="module")
def planted():
    tables, truth = planted_tables(6000, 3, zero_arm=3, seed=0)
    return tables["test"], truth


def test_rows_per_model_arm_stage_with_the_oracle_ceiling(planted):
    test, truth = planted
    good = NoisyTruth(truth, 0.02)
    report = evaluate_uplift(
        {"good": good, "only_predict": PredictOnly(np.zeros(test.num_rows)), "broken": Broken()},
        test,
        truth,
        n_resamples=100,
    )
    assert report.stages == ["click", "conversion"]
    assert report.failed == {"broken": "RuntimeError: boom"}
    # predict never sees a label
    assert all("label" not in cols and "conversion" not in cols for cols in good.seen)
    keys = {(r["model"], r["arm"], r["stage"]) for r in report.rows}
    for arm in (1, 2, 3):
        for stage in ("click", "conversion"):
            assert ("good", arm, stage) in keys and (ORACLE, arm, stage) in keys
        assert ("only_predict", arm, "click") in keys and ("only_predict", arm, "conversion") not in keys
    assert any("only_predict: no conversion effects" in n for n in report.notes)
    for row in report.rows:
        assert row["n_treated"] > 0 and row["n_control"] > 0
        assert row["kind"] == ("oracle" if row["model"] == ORACLE else "model")
    # the oracle is the ceiling; the noisy model is close below it on the arms with an effect
    for stage in ("click", "conversion"):
        oracle, model = report.row(ORACLE, 1, stage), report.row("good", 1, stage)
        assert oracle["auuc_low"] > 0 and model["verdict"] == "better than random"
        assert model["auuc"] <= oracle["auuc"] + 0.02
    # a constant ranking is random targeting: exactly 0
    assert report.row("only_predict", 1, "click")["auuc"] == pytest.approx(0.0, abs=1e-12)
    json.dumps(report.as_json(), allow_nan=False)  # machine-readable as it is


def test_zero_effect_arm_verdict_from_the_oracle(planted):
    test, truth = planted
    report = evaluate_uplift({"good": NoisyTruth(truth, 0.02)}, test, truth, n_resamples=100)
    arms = {(a["arm"], a["stage"]): a for a in report.arms}
    assert arms[(3, "click")]["zero_effect"] and arms[(3, "click")]["basis"] == "oracle"
    assert not arms[(1, "click")]["zero_effect"] and not arms[(2, "conversion")]["zero_effect"]
    for stage in ("click", "conversion"):
        for name in ("good", ORACLE):
            row = report.row(name, 3, stage)
            assert row["zero_effect_arm"] and row["verdict"] == CONTAINS_ZERO
        assert report.row(ORACLE, 3, stage)["auuc"] == pytest.approx(0.0, abs=1e-12)  # all ties: random
        assert f"arm 3 {stage} (no true effect (oracle)): every model's interval contains 0" in report.notes


def test_without_an_oracle_the_observed_effect_decides(planted):
    test, truth = planted
    report = evaluate_uplift({"good": NoisyTruth(truth, 0.02)}, test, None, n_resamples=50)
    assert all(r["model"] != ORACLE for r in report.rows)
    for a in report.arms:
        assert a["basis"] == "observed effect"
        assert a["zero_effect"] == (a["observed_low"] <= 0.0 <= a["observed_high"])


def test_oracle_columns_give_entire_space_effects():
    p_click = {f"p_click_arm{k}": np.array([0.1, 0.2]) + 0.1 * k * (k != 3) for k in range(4)}
    p_conv = {f"p_conv_arm{k}": np.array([0.5, 0.4]) + 0.05 * k * (k != 3) for k in range(4)}
    effects = oracle_effects({**p_click, **p_conv})
    np.testing.assert_allclose(effects["click"][:, 1], [0.1, 0.1])
    np.testing.assert_allclose(effects["click"][:, 3], [0.0, 0.0])
    np.testing.assert_allclose(effects["conversion"][:, 2], [0.3 * 0.6 - 0.1 * 0.5, 0.4 * 0.5 - 0.2 * 0.4])
    assert np.all(effects["conversion"][:, 0] == 0)
    # aligned to the test rows by impression_id
    test = pa.table({"impression_id": ["b", "a"]})
    oracle = pa.table({"impression_id": ["a", "b"], **{k: v.astype(np.float32) for k, v in p_click.items()}})
    aligned = oracle_for(test, oracle)
    np.testing.assert_allclose(aligned["p_click_arm1"], [0.3, 0.2], rtol=1e-6)
    with pytest.raises(ValueError, match="no row for 1"):
        oracle_for(pa.table({"impression_id": ["a", "zzz"]}), oracle)


def test_kit_world_placebo_arm_is_the_zero_effect_arm():
    """On the synthetic world the oracle marks arm 3 (placebo) as zero-effect at both stages."""
    from ctr_dagster.testing import kit_training_table, kit_world

    table = kit_training_table(0)
    test = table.filter(pa.compute.equal(table.column("split"), "test"))
    world = kit_world(0)
    oracle = oracle_for(test, pa.concat_tables([world.day(d).oracle for d in world.dates()]))
    truth = oracle_effects(oracle)
    report = evaluate_uplift({"truth": NoisyTruth(truth, 0.0)}, test, oracle, n_resamples=50)
    zero = {(a["arm"], a["stage"]) for a in report.arms if a["zero_effect"]}
    assert zero == {(3, "click"), (3, "conversion")}
    assert report.row("truth", 3, "click")["verdict"] == CONTAINS_ZERO


def test_curve_plots(planted, tmp_path):
    test, truth = planted
    report = evaluate_uplift(
        {"good": NoisyTruth(truth, 0.02), "only_predict": PredictOnly(np.zeros(test.num_rows))},
        test,
        truth,
        n_resamples=50,
    )
    written = uplift_curves_png(report, tmp_path / "plots")
    assert sorted(written) == ["click", "conversion"]
    for path in written.values():
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000


def test_uplift_contract_checks():
    import dataclasses

    from ctr_dagster.contracts import contract_violations

    class Uplift:
        name, task, Config = "u", "uplift", dataclasses.make_dataclass("UpliftConfig", [])
        requires = frozenset({"treatment"})
        predict_effects = None  # an optional member that is not a method

        def fit(self, train, valid, ctx): ...
        def predict(self, batch): ...
        def save(self, directory): ...
        @classmethod
        def load(cls, directory): ...

    assert contract_violations("model", Uplift) == [
        "predict_effects must be a method predict_effects(batch) -> dict[str, ndarray]"
    ]
    Uplift.predict_effects = lambda self, batch: {}
    assert contract_violations("model", Uplift) == []
    Uplift.requires = frozenset()
    assert contract_violations("model", Uplift) == ["an uplift model must declare 'treatment' in requires"]
