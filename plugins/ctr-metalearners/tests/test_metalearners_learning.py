"""Both learners recover a planted heterogeneous uplift, per arm and chain stage, and behave on the
zero-effect arm; the contract's outputs (shapes, arm 0 zeros, entire-space conversion)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from ctr_dagster.contracts import FitContext, contract_violations
from ctr_dagster.modeling import features_only
from ctr_dagster.testing.uplift_files import planted_tables
from ctr_dagster.uplift.evaluate import CONTAINS_ZERO, evaluate_uplift

from ctr_metalearners.features import FeatureSpec
from ctr_metalearners.model import SLearner, TLearner


@pytest.fixture(scope="module")
def planted():
    return planted_tables(6000, 3, zero_arm=3, seed=0)


@pytest.fixture(scope="module")
def fitted(planted):
    tables, _ = planted
    ctx = FitContext(seed=0, log=lambda _line: None)
    return {cls.name: cls().fit(tables["train"], tables["valid"], ctx) for cls in (SLearner, TLearner)}


@pytest.mark.parametrize("plugin", [SLearner, TLearner])
def test_contract(plugin):
    assert contract_violations("model", plugin) == []
    assert plugin.task == "uplift" and "treatment" in plugin.requires


def test_outputs_follow_the_contract(planted, fitted):
    tables, _ = planted
    batch = features_only(tables["test"])
    n = batch.num_rows
    for model in fitted.values():
        outcomes, effects = model.predict_outcomes(batch), model.predict_effects(batch)
        assert sorted(outcomes) == sorted(effects) == ["click", "conversion"]
        for stage in ("click", "conversion"):
            assert outcomes[stage].shape == effects[stage].shape == (n, 4)
            assert np.all((outcomes[stage] >= 0) & (outcomes[stage] <= 1))
            assert np.all(effects[stage][:, 0] == 0)
            np.testing.assert_allclose(effects[stage], outcomes[stage] - outcomes[stage][:, :1])
        # entire space: p(click and conversion) never above p(click) on average
        assert outcomes["conversion"].mean() < outcomes["click"].mean()
        scores = model.predict(batch)
        assert scores.shape == (n,) and np.all(np.abs(scores) <= 1)
        np.testing.assert_allclose(scores, effects["click"][:, 1:].mean(axis=1))
        # independent of the row's own arm
        other = batch.set_column(
            batch.column_names.index("treatment"), "treatment", pa.array(np.zeros(n, dtype=np.int8))
        )
        np.testing.assert_array_equal(model.predict(other), scores)


def test_learns_the_planted_uplift(planted, fitted):
    tables, truth = planted
    batch = features_only(tables["test"])
    for name, model in fitted.items():
        effects = model.predict_effects(batch)
        for stage in ("click", "conversion"):
            for arm in (1, 2):
                corr = np.corrcoef(effects[stage][:, arm], truth[stage][:, arm])[0, 1]
                assert corr > 0.35, (name, stage, arm, corr)
    report = evaluate_uplift(fitted, tables["test"], truth, n_resamples=100)
    for name in fitted:
        for stage in ("click", "conversion"):
            row = report.row(name, 1, stage)
            assert row["verdict"] == "better than random", (name, stage, row)
            assert row["auuc"] <= report.row("oracle", 1, stage)["auuc"] + 0.02
        # the zero-effect arm: no conversion ranking beats random, and the verdict says so
        assert report.row(name, 3, "conversion")["verdict"] == CONTAINS_ZERO


def test_one_outcome_and_text_features():
    rng = np.random.default_rng(0)
    n = 1500
    city = rng.choice(["Paris", "Oslo", "Lima"], n)
    arm = rng.integers(0, 2, n)
    p = 0.2 + 0.4 * arm * (city == "Oslo")
    table = pa.table(
        {
            "label": pa.array((rng.random(n) < p).astype(np.int8)),
            "treatment": pa.array(arm.astype(np.int8)),
            "city": pa.array(city),
            "x": pa.array(rng.normal(size=n)),
            "tags": pa.array([["a"]] * n),  # a list column: not a feature
        }
    )
    spec = FeatureSpec.fit(table)
    assert spec.names() == ["city", "x"] and spec.categorical() == ["city"]
    for cls in (SLearner, TLearner):
        ctx = FitContext(seed=0, log=lambda _l: None)
        model = cls().fit(table.slice(0, 1000), table.slice(1000, 250), ctx)
        effects = model.predict_effects(table.slice(1250))
        assert list(effects) == ["click"] and effects["click"].shape == (250, 2)
        oslo = city[1250:] == "Oslo"
        assert effects["click"][oslo, 1].mean() > effects["click"][~oslo, 1].mean() + 0.15
        # an unseen city is a missing value, not an error
        unseen = table.slice(0, 3).set_column(2, "city", pa.array(["Rome"] * 3))
        assert model.predict(unseen).shape == (3,)


def test_an_arm_without_rows_is_refused():
    table = pa.table(
        {"label": pa.array([0, 1, 0, 1], pa.int8()), "treatment": pa.array([0, 0, 2, 2], pa.int8())}
    )
    with pytest.raises(ValueError, match=r"arm\(s\) \[1\]"):
        TLearner().fit(table, table.slice(0, 0), FitContext(log=lambda _l: None))
