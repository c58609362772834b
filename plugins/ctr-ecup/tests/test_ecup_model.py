"""ECUP's own behaviour: counterfactual scoring, effect shapes and the entire-space chain, the bit-level
treatment gate, the ablation switches, the generic feature encoder on a one-outcome tabular
experiment, persistence and clear errors. Small fits (1-2 epochs on the kit table), ~15 s on 2 cores."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
import torch
from ctr_dagster.contracts import FitContext
from ctr_dagster.modeling import features_only
from ctr_dagster.testing import assert_no_pickles, make_training_table, training_cardinalities

from ctr_ecup.features import FeatureEncoder
from ctr_ecup.model import EcupConfig, EcupModel

FAST = {"epochs": 2, "num_threads": 1}


def _split(table: pa.Table, name: str) -> pa.Table:
    return table.filter(pc.equal(table.column("split"), name))


@pytest.fixture(scope="module")
def kit() -> pa.Table:
    return make_training_table(3000, 0)


def _fit(table: pa.Table, **config) -> EcupModel:
    ctx = FitContext(seed=0, cardinalities=training_cardinalities(table), log=lambda _m: None)
    return EcupModel(EcupConfig(**{**FAST, **config})).fit(
        _split(table, "train"), _split(table, "valid"), ctx
    )


@pytest.fixture(scope="module")
def fitted(kit) -> EcupModel:
    return _fit(kit)


@pytest.fixture(scope="module")
def test_rows(kit) -> pa.Table:
    return features_only(_split(kit, "test"))


def _with_treatment(table: pa.Table, values: np.ndarray) -> pa.Table:
    at = table.column_names.index("treatment")
    return table.set_column(at, "treatment", pa.array(values.astype(np.int8)))


# -- counterfactual scoring ---------------------------------------------------------------------------
def test_scores_do_not_depend_on_the_rows_own_treatment(fitted, test_rows):
    rng = np.random.default_rng(1)
    arms = test_rows.column("treatment").to_numpy()
    permuted = _with_treatment(test_rows, rng.permutation(arms))
    all_control = _with_treatment(test_rows, np.zeros_like(arms))
    no_treatment = test_rows.drop_columns(["treatment"])
    base = fitted.predict(test_rows)
    effects = fitted.predict_effects(test_rows)
    for other in (permuted, all_control, no_treatment):
        assert np.array_equal(fitted.predict(other), base)
        again = fitted.predict_effects(other)
        assert again.keys() == effects.keys()
        for stage in effects:
            assert np.array_equal(again[stage], effects[stage])


def test_effects_shapes_and_entire_space_chain(fitted, test_rows):
    n, k1 = test_rows.num_rows, fitted.n_arms
    assert k1 == 4  # control + arms 1..3 of the synthetic world
    outcomes = fitted.predict_outcomes(test_rows)
    effects = fitted.predict_effects(test_rows)
    assert set(effects) == set(outcomes) == {"click", "conversion"}
    for stage in effects:
        assert effects[stage].shape == outcomes[stage].shape == (n, k1)
        assert effects[stage].dtype.kind == "f"
        assert np.all(effects[stage][:, 0] == 0.0)
        assert np.all((outcomes[stage] >= 0) & (outcomes[stage] <= 1))
        assert np.allclose(effects[stage], outcomes[stage] - outcomes[stage][:, :1], atol=1e-12)
    # conversion is the entire-space CTCVR: p_ctr * p_cvr, never above p_ctr
    assert np.all(outcomes["conversion"] <= outcomes["click"] + 1e-7)
    cat, num = fitted.encoder.transform(test_rows)
    with torch.no_grad():
        for a in range(k1):
            arm = torch.full((n,), a, dtype=torch.long)
            p = (
                torch.sigmoid(fitted.module(torch.from_numpy(cat), torch.from_numpy(num), arm))
                .double()
                .numpy()
            )
            assert np.allclose(outcomes["click"][:, a], p[0], atol=1e-6)
            assert np.allclose(outcomes["conversion"][:, a], p[0] * p[1], atol=1e-6)
    ctcvr_diff = outcomes["conversion"][:, 1:] - outcomes["conversion"][:, :1]
    assert np.allclose(effects["conversion"][:, 1:], ctcvr_diff, atol=1e-12)
    # predict = mean click effect over the coupon arms
    assert np.allclose(fitted.predict(test_rows), effects["click"][:, 1:].mean(axis=1), atol=1e-12)


def test_bit_level_gate_mixes_original_and_treatment_aware_embeddings(fitted, test_rows):
    net = fitted.module
    cat, num = fitted.encoder.transform(test_rows.slice(0, 64))
    with torch.no_grad():
        E = net.embedding(torch.from_numpy(cat), torch.from_numpy(num))
        arm = torch.full((64,), 1, dtype=torch.long)
        parts = net.treatment_enhance(E, arm)
        n_fields, d = fitted.encoder.n_fields, fitted.config.embedding_dim
        W_b, E_tau, E_r = parts["W_b"], parts["E_tau"], parts["E_r"]
        assert W_b.shape == E_tau.shape == E_r.shape == (64, n_fields, d)
        assert torch.all((W_b > 0) & (W_b < 1))
        # the gate by hand: sigmoid(W_g [E; E_TAU] + b_g), then the element-wise mix
        by_hand = torch.sigmoid(torch.cat([E, E_tau], dim=-1) @ net.gate.weight.T + net.gate.bias)
        assert torch.allclose(W_b, by_hand, atol=1e-6)
        assert torch.allclose(E_r, W_b * E + (1 - W_b) * E_tau, atol=1e-6)
        # it mixes: E_r is neither input, and the gate is not saturated
        assert not torch.allclose(E_r, E) and not torch.allclose(E_r, E_tau)
        assert 0.05 < float(W_b.mean()) < 0.95
        # the treatment-aware part depends on the arm; the treatment embedding is the last token
        other = net.treatment_enhance(E, torch.zeros(64, dtype=torch.long))
        assert not torch.allclose(other["E_tau"], E_tau)
        assert parts["tokens"].shape == (64, n_fields + 1, d)
        assert torch.equal(parts["tokens"][:, -1], net.arm_embedding.weight[1].expand(64, -1))


def test_ablations(kit, test_rows):
    no_gate = _fit(kit, epochs=1, treatment_gate=False)
    assert not hasattr(no_gate.module, "gate") and not hasattr(no_gate.module, "field_attention")
    cat, num = no_gate.encoder.transform(test_rows.slice(0, 8))
    E = no_gate.module.embedding(torch.from_numpy(cat), torch.from_numpy(num))
    parts = no_gate.module.treatment_enhance(E, torch.ones(8, dtype=torch.long))
    assert parts["E_r"] is E and parts["tokens"] is E  # the treatment enters only through the towers
    no_prior = _fit(kit, epochs=1, task_prior=False)
    assert no_prior.module.task_scaling(parts["tokens"]) is None
    assert not hasattr(no_prior.module, "task_embedding")
    full = no_prior.parameter_count() + sum(
        p.numel() for p in _fit(kit, epochs=1).module.task_attention.parameters()
    )
    assert no_prior.parameter_count() < full
    for model in (no_gate, no_prior):
        scores = model.predict(test_rows)
        assert scores.shape == (test_rows.num_rows,) and np.all(np.abs(scores) <= 1)
        assert set(model.predict_effects(test_rows)) == {"click", "conversion"}


def test_task_prior_scales_hidden_units_per_task(fitted, test_rows):
    net = fitted.module
    cat, num = fitted.encoder.transform(test_rows.slice(0, 16))
    with torch.no_grad():
        E = net.embedding(torch.from_numpy(cat), torch.from_numpy(num))
        tokens = net.treatment_enhance(E, torch.ones(16, dtype=torch.long))["tokens"]
        scales = net.task_scaling(tokens)
    assert [tuple(s.shape) for s in scales] == [(2, 16, u) for u in fitted.config.tower_units]
    assert all(torch.all((s > 0) & (s < 2)) for s in scales)
    assert not torch.allclose(scales[0][0], scales[0][1])  # the click and conversion priors differ


# -- a generic one-outcome tabular experiment --------------------------------------------------------
def _tabular(n: int, seed: int, with_label: bool = True) -> pa.Table:
    rng = np.random.default_rng(seed)
    x0, x1 = rng.normal(size=n), rng.normal(size=n)
    segment = rng.choice(["web", "phone", "multichannel"], size=n)
    treatment = rng.integers(0, 2, size=n)
    logit = -0.5 + 0.8 * x1 + treatment * 1.2 * (x0 > 0) + 0.3 * (segment == "web")
    columns = {
        "recency": pa.array(rng.integers(1, 13, size=n), pa.int64()),
        "f0": pa.array(x0, pa.float64()),
        "f1": pa.array(np.where(rng.random(n) < 0.05, np.nan, x1), pa.float32()),
        "channel": pa.array(segment),
        "newbie": pa.array(rng.random(n) < 0.5),
        "treatment": pa.array(treatment, pa.int64()),
    }
    if with_label:
        columns["label"] = pa.array((rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.int8))
    return pa.table(columns)


@pytest.fixture(scope="module")
def tabular_model() -> EcupModel:
    ctx = FitContext(seed=0, log=lambda _m: None)
    return EcupModel(EcupConfig(**FAST)).fit(_tabular(3000, 0), _tabular(800, 1), ctx)


def test_generic_tabular_experiment_with_one_outcome(tabular_model, tmp_path):
    model = tabular_model
    assert model.stages == ("click",) and model.n_arms == 2
    assert [f.name for f in model.encoder.categorical] == ["channel"]
    assert [f.name for f in model.encoder.numeric] == ["recency", "f0", "f1", "newbie"]
    rows = _tabular(500, 2, with_label=False)
    effects = model.predict_effects(rows)
    assert set(effects) == {"click"} and effects["click"].shape == (500, 2)
    assert set(model.predict_outcomes(rows)) == {"click"}
    scores = model.predict(rows)
    assert np.array_equal(scores, effects["click"][:, 1])
    # unknown categories map to the OOV slot instead of failing
    at = rows.column_names.index("channel")
    unseen = rows.set_column(at, "channel", pa.array(["fax"] * 500))
    assert np.all(np.isfinite(model.predict(unseen)))
    # persistence: JSON + safetensors, identical predictions
    model.save(tmp_path)
    assert_no_pickles(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.json", "weights.safetensors"]
    loaded = EcupModel.load(tmp_path)
    assert np.array_equal(loaded.predict(rows), scores)
    assert loaded.stages == ("click",) and loaded.parameter_count() == model.parameter_count() > 0


def test_missing_feature_column_is_a_clear_error(tabular_model):
    rows = _tabular(20, 3, with_label=False).drop_columns(["channel"])
    with pytest.raises(ValueError, match="'channel'"):
        tabular_model.predict(rows)


def test_encoder_rules_and_json_round_trip(kit):
    train = _split(kit, "train")
    encoder = FeatureEncoder.fit(train, training_cardinalities(kit))
    categorical = {f.name: f for f in encoder.categorical}
    assert set(categorical) == {
        n for n in kit.column_names if n.endswith("_idx") and not n.startswith("hist_")
    }
    assert all(f.kind == "index" for f in categorical.values())
    numeric = {f.name for f in encoder.numeric}
    assert {"price", "position", "hour", "is_new_user"} <= numeric
    for never in ("label", "conversion", "treatment", "split", "ts", "user_id", "item_id", "impression_id"):
        assert never not in categorical and never not in numeric
    assert not any(name.startswith("hist_") for name in encoder.columns)
    again = FeatureEncoder.from_json(json.loads(json.dumps(encoder.to_json())))
    assert again == encoder
    cat, num = encoder.transform(train)
    assert cat.min() >= 0 and all((cat[:, j] < f.size).all() for j, f in enumerate(encoder.categorical))
    assert np.allclose(num.mean(axis=0), 0, atol=1e-3)
    # an index beyond the vocabulary -> OOV slot 0; a known index v -> 1 + v
    j = encoder.columns.index("item_idx")
    big = train.slice(0, 2).set_column(
        train.column_names.index("item_idx"), "item_idx", pa.array([10**6, 2], pa.int32())
    )
    assert encoder.transform(big)[0][:, j].tolist() == [0, 3]


def test_exclude_columns(kit):
    model = _fit(kit, epochs=1, exclude_columns=["user_idx", "price"])
    assert "user_idx" not in model.encoder.columns and "price" not in model.encoder.columns


def test_fit_needs_control_and_a_coupon_arm(kit):
    train = _split(kit, "train")
    ctx = FitContext(seed=0, log=lambda _m: None)
    only_control = _with_treatment(train, np.zeros(train.num_rows))
    with pytest.raises(ValueError, match="control rows"):
        EcupModel(EcupConfig(**FAST)).fit(only_control, only_control, ctx)
    no_control = _with_treatment(train, np.ones(train.num_rows))
    with pytest.raises(ValueError, match="control rows"):
        EcupModel(EcupConfig(**FAST)).fit(no_control, no_control, ctx)


def test_config_validation():
    with pytest.raises(ValueError, match="multiple of num_heads"):
        EcupConfig(embedding_dim=15, num_heads=2)
    with pytest.raises(ValueError, match="tower_units"):
        EcupConfig(tower_units=[])


def test_discovery_imports_nothing_heavy():
    code = (
        "import sys, json; import ctr_ecup; from ctr_ecup.model import EcupModel; "
        "print(json.dumps([m for m in ('numpy', 'pyarrow', 'torch') if m in sys.modules]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []


# -- the nightly warm start ----------------------------------------------------------------------------
def test_warm_start_continues_from_the_previous_weights_on_the_new_rows(fitted, kit, test_rows, tmp_path):
    """`ctx.init_from` (the engine's nightly warm start): the previous encoder and weights, fine-tuned
    on the train rows after `previous_train_end` only. Proof that the weights are continued: with a
    vanishing learning rate the warm fit scores as the previous model does, while a fresh fit does not."""
    fitted.save(tmp_path / "yesterday")
    train = _split(kit, "train")
    ts = train.column("ts").to_numpy()
    cutoff = np.sort(ts)[int(0.8 * len(ts))]
    lines: list[str] = []
    ctx = FitContext(
        seed=1,
        cardinalities=training_cardinalities(kit),
        log=lines.append,
        init_from=tmp_path / "yesterday",
        inputs={"warm_start": {"previous_train_end": cutoff.astype("datetime64[us]").item().isoformat()}},
    )
    config = EcupConfig(**{**FAST, "epochs": 1, "lr": 1e-12, "batch_size": 64})
    warm = EcupModel(config).fit(train, _split(kit, "valid"), ctx)
    text = "\n".join(lines)
    assert "ecup: warm start from" in text and "fine-tuning on the" in text
    assert f"(of {train.num_rows})" in text
    assert warm.encoder.to_json() == fitted.encoder.to_json()
    previous = fitted.predict_effects(test_rows)["click"]
    np.testing.assert_allclose(warm.predict_effects(test_rows)["click"], previous, atol=1e-5)
    fresh = _fit(kit, lr=1e-12, epochs=1)
    assert not np.allclose(fresh.predict_effects(test_rows)["click"], previous, atol=1e-3)
    assert EcupModel.supports_warm_start


def test_warm_start_from_an_incompatible_artifact_trains_from_scratch(kit, tmp_path):
    small = _fit(kit, embedding_dim=8, num_heads=2, epochs=1)
    small.save(tmp_path / "other")
    lines: list[str] = []
    ctx = FitContext(
        seed=0, cardinalities=training_cardinalities(kit), log=lines.append, init_from=tmp_path / "other"
    )
    EcupModel(EcupConfig(**{**FAST, "epochs": 1})).fit(_split(kit, "train"), _split(kit, "valid"), ctx)
    assert any("cannot warm-start" in line and "from scratch" in line for line in lines)
