"""Mechanism attribution: a model handed a component exactly captures nearly all of it, a model
blind to it nearly none; the oracle keeps each component, and a knob at 0 zeroes its column."""

import dataclasses

import numpy as np
import pytest

from ctr_dagster import mechanisms


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


@pytest.fixture(scope="module")
def world():
    rng = np.random.default_rng(0)
    n = 40_000
    components = {
        "popularity": rng.normal(0, 0.8, n),
        "sequence": rng.normal(0, 1.0, n),
        "multimodal": rng.normal(0, 0.7, n),
        "segment": np.zeros(n),  # a knob at 0: worth nothing
    }
    total = sum(components.values()) - 2.0
    labels = (rng.random(n) < _sigmoid(total)).astype(np.int8)
    return labels, components, total


def test_a_model_with_the_component_captures_it_and_a_blind_one_does_not(world):
    labels, components, total = world
    models = {
        "has_everything": _sigmoid(total),
        "blind_to_sequence": _sigmoid(total - components["sequence"]),
        "half_scale": _sigmoid(0.5 * total),  # same ranking, another scale: still has everything
    }
    report = mechanisms.attribution(labels, components, models)
    worth = {r["component"]: r["worth"] for r in report["components"]}
    assert worth["sequence"] > 0.05 and worth["multimodal"] > 0.02 and worth["segment"] == 0.0
    got = report["models"]
    assert got["has_everything"]["sequence"]["captured"] >= 0.95
    assert got["has_everything"]["multimodal"]["captured"] >= 0.95
    assert got["half_scale"]["sequence"]["captured"] >= 0.95
    assert got["blind_to_sequence"]["sequence"]["captured"] <= 0.1
    assert got["blind_to_sequence"]["multimodal"]["captured"] >= 0.9  # it has the other mechanism
    assert got["has_everything"]["segment"] == {"gain": None, "captured": None, "loading": None}
    # loadings: the logit's least-squares coefficient per component (1 = moves with it as the truth)
    assert got["has_everything"]["sequence"]["loading"] == pytest.approx(1.0, abs=1e-3)
    assert got["half_scale"]["multimodal"]["loading"] == pytest.approx(0.5, abs=1e-3)
    assert abs(got["blind_to_sequence"]["sequence"]["loading"]) < 0.05
    assert got["blind_to_sequence"]["multimodal"]["loading"] == pytest.approx(1.0, abs=1e-3)


def test_table_rows_have_a_worth_row_and_one_per_model(world):
    labels, components, total = world
    report = mechanisms.attribution(labels, components, {"m": _sigmoid(total)})
    rows = mechanisms.table_rows(report)
    assert rows[0]["model"].startswith("worth") and rows[1]["model"] == "m"
    assert rows[1]["segment"] == ""
    assert rows[1]["sequence"].endswith("(1.00)")  # captured share, then the loading in parentheses


def test_the_oracle_keeps_each_component_and_a_knob_at_zero_zeroes_it():
    from ctr_dagster import schemas
    from ctr_dagster.datagen import build_world, profile
    from ctr_dagster.datagen.config import Signals

    def oracle(signals):
        w = build_world(profile("tiny", signals=signals))
        return w.day(w.dates()[1]).oracle

    table = oracle(Signals())
    logits = sum(table.column(f"logit_{c}").to_numpy().astype(np.float64) for c in schemas.CLICK_COMPONENTS)
    p = table.column("p_click").to_numpy().astype(np.float64)
    assert np.allclose(_sigmoid(logits), p, atol=1e-4)  # the components add up to the true p_click
    off = oracle(dataclasses.replace(Signals(), multimodal=0.0))
    assert np.all(off.column("logit_multimodal").to_numpy() == 0)
    assert np.any(table.column("logit_multimodal").to_numpy() != 0)
