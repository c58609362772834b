"""The scaling study's summaries (`ctr_dagster.studies`): least squares on log10 axes, the fits over a
study's cells, the plot and the stored document; and the `suan_scaling` asset's presence rule. No
model is trained here (and ctr-suan need not be installed)."""

import json

import numpy as np
import pytest
from scipy import stats

from ctr_dagster import studies


def test_exact_points_give_the_known_slope_and_intercept():
    x = [1e3, 1e4, 1e5, 1e6]
    y = [0.70 + 0.02 * np.log10(v) for v in x]
    fit = studies.log_linear_fit(x, y)
    assert fit["slope"] == pytest.approx(0.02, abs=1e-12)
    assert fit["intercept"] == pytest.approx(0.70, abs=1e-12)
    assert fit["r2"] == pytest.approx(1.0)
    assert fit["se"] == pytest.approx(0.0, abs=1e-10)
    assert (fit["n"], fit["df"]) == (4, 2)


def test_noisy_points_match_scipy_linregress_and_the_interval_uses_t():
    rng = np.random.default_rng(0)
    x = np.array([3e3, 1e4, 3e4, 1e5, 3e5, 1e6])
    y = 0.75 + 0.01 * np.log10(x) + rng.normal(0, 0.003, x.size)
    fit = studies.log_linear_fit(x, y)
    ref = stats.linregress(np.log10(x), y)
    assert fit["slope"] == pytest.approx(ref.slope)
    assert fit["intercept"] == pytest.approx(ref.intercept)
    assert fit["se"] == pytest.approx(ref.stderr)
    assert fit["r2"] == pytest.approx(ref.rvalue**2)
    half = stats.t.ppf(0.975, x.size - 2) * ref.stderr
    assert fit["ci"] == pytest.approx([ref.slope - half, ref.slope + half])


def test_two_points_have_a_slope_but_no_interval_and_bad_input_is_refused():
    fit = studies.log_linear_fit([10, 100], [0.6, 0.7])
    assert fit["slope"] == pytest.approx(0.1) and fit["se"] is None and fit["ci"] is None
    assert "no interval" in studies.describe_slope(fit["slope"], fit["ci"])
    with pytest.raises(ValueError, match="positive"):
        studies.log_linear_fit([0, 10, 100], [0.5, 0.6, 0.7])
    with pytest.raises(ValueError, match="do not vary"):
        studies.log_linear_fit([10, 10, 10], [0.5, 0.6, 0.7])


def test_describe_slope_says_whether_the_interval_excludes_zero():
    assert studies.describe_slope(0.01, [0.004, 0.016]).endswith("rises (interval above 0)")
    assert studies.describe_slope(-0.01, [-0.02, -0.001]).endswith("falls (interval below 0)")
    assert studies.describe_slope(0.001, [-0.002, 0.004]).endswith("no trend shown (interval holds 0)")


def test_mean_t_interval_over_seeds():
    values = [0.010, -0.004, 0.003]
    out = studies.mean_t_interval(values)
    sem = stats.sem(values)
    half = stats.t.ppf(0.975, 2) * sem
    assert out["mean"] == pytest.approx(np.mean(values))
    assert out["ci"] == pytest.approx([np.mean(values) - half, np.mean(values) + half])
    assert studies.mean_t_interval([0.5])["ci"] is None


def test_lift_kept_is_a_share_only_of_a_lift_that_is_shown():
    kept = studies.lift_kept(0.009, 0.010, [0.004, 0.016])
    assert kept["share"] == pytest.approx(0.9) and kept["meets_goal"] is True
    assert studies.lift_kept(0.008, 0.010, [0.004, 0.016])["meets_goal"] is False
    # a student above a shown teacher lift keeps more than all of it
    assert studies.lift_kept(0.015, 0.010, [0.004, 0.016])["share"] == pytest.approx(1.5)
    # the teacher's lift is noise (its interval reaches 0), or negative: no share, whatever the ratio says
    for ci in ([-0.001, 0.009], [0.0, 0.02]):
        noise = studies.lift_kept(0.012, 0.004, ci)
        assert noise["share"] is None and noise["meets_goal"] is None
    below = studies.lift_kept(-0.02, -0.01, [-0.015, -0.005])
    assert below["share"] is None and below["teacher_lift"] == -0.01


def _cells(b_params=0.03, b_rows=0.02, noise=0.0, seeds=(0,)):
    """Synthetic study cells: metric = 0.5 + b_params log10 P + b_rows log10 N (+ noise)."""
    rng = np.random.default_rng(1)
    params = {1: 5_000, 2: 17_000, 3: 40_000}
    cells = []
    for seed in seeds:
        for size in (1_000, 3_000, 10_000):
            for grade, p in params.items():
                auc = 0.5 + b_params * np.log10(p) + b_rows * np.log10(size) + rng.normal(0, noise)
                cells.append(
                    {
                        "seed": seed,
                        "grade": grade,
                        "train_size": size,
                        "train_rows": size,
                        "parameters": p,
                        "test_auc": auc,
                        "test_auc_ci": [auc - 0.01, auc + 0.01],
                        "test_logloss": 0.5 - auc / 4,
                        "valid_auc": auc,
                        "epochs_run": 3,
                        "best_epoch": 2,
                        "fit_s": 1.0,
                    }
                )
    return cells


def test_scaling_fits_recover_the_planted_slopes():
    fits = studies.scaling_fits(_cells())
    auc = fits["test_auc"]
    assert auc["params"]["slope"] == pytest.approx(0.03)
    assert auc["samples"]["slope"] == pytest.approx(0.02)
    joint = auc["joint"]["coefficients"]
    assert joint["log10_parameters"]["estimate"] == pytest.approx(0.03)
    assert joint["log10_train_rows"]["estimate"] == pytest.approx(0.02)
    assert set(auc["params_by_size"]) == {"1000", "3000", "10000"}
    assert fits["test_logloss"]["samples"]["slope"] == pytest.approx(-0.005)
    assert studies.headline(fits).startswith("test_auc per tenfold parameters: +0.0300")
    rows = studies.fit_rows(fits)
    assert {r["against"] for r in rows} == {
        "log10 parameters (10,000 rows)",
        "log10 samples (grade 3)",
        "joint: parameters",
        "joint: samples",
    }


def test_the_joint_fit_intervals_cover_the_planted_slope_about_95_percent_of_the_time():
    fits = studies.scaling_fits(_cells(noise=0.002, seeds=(0, 1, 2)))
    assert (fits["test_auc"]["joint"]["n"], fits["test_auc"]["joint"]["df"]) == (27, 24)
    base = _cells()
    x = {
        "log10_parameters": np.log10([c["parameters"] for c in base]),
        "log10_train_rows": np.log10([c["train_rows"] for c in base]),
    }
    clean = np.array([c["test_auc"] for c in base])
    rng = np.random.default_rng(0)
    covered = 0
    for _ in range(400):
        fit = studies.least_squares(x, clean + rng.normal(0, 0.002, clean.size))
        low, high = fit["coefficients"]["log10_parameters"]["ci"]
        covered += low < 0.03 < high
    assert 0.91 <= covered / 400 <= 0.99


def test_study_document_round_trips_with_its_plot(tmp_path):
    cells = _cells()
    doc = {
        "study": "scaling",
        "title": "test",
        "seeds": [0],
        "cells": cells,
        "fits": studies.scaling_fits(cells),
    }
    path, png = studies.write_study(doc, tmp_path, stem="s")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    loaded, loaded_png = studies.load_scaling(path)
    assert loaded["cells"][0]["parameters"] == cells[0]["parameters"] and loaded_png == png
    # a benchmark record (benchmarks/common.write_result) holds it under figures.scaling
    record = tmp_path / "suan.json"
    record.write_text(json.dumps({"benchmark": "suan", "figures": {"scaling": {**doc, "png": "s.png"}}}))
    assert studies.load_scaling(record)[1] == png
    assert "| seed | grade |" in studies.markdown(studies.cell_rows(cells))


def test_smaller_training_sets_get_more_epochs_up_to_the_cap():
    rule = studies.ScalingSettings(epochs=4, min_steps=200, max_epochs=20)
    assert rule.epochs_for(100_000, 512) == 4  # 195 steps an epoch: the floor
    assert rule.epochs_for(10_000, 512) == 11  # ceil(200 * 512 / 10,000)
    assert rule.epochs_for(1_000, 512) == 20  # capped
    assert studies.ScalingSettings(min_steps=0).epochs_for(10, 512) == 4
    with pytest.raises(ValueError):
        studies.ScalingSettings(epochs=5, max_epochs=4)


def test_subsample_is_nested_and_in_order():
    import pyarrow as pa

    table = pa.table({"ts": np.arange(100)})
    small, large = studies.subsample(table, 10, 3), studies.subsample(table, 40, 3)
    assert set(small.column("ts").to_pylist()) <= set(large.column("ts").to_pylist())
    assert small.column("ts").to_pylist() == sorted(small.column("ts").to_pylist())
    with pytest.raises(ValueError, match="holds 100"):
        studies.subsample(table, 101, 0)


def test_the_scaling_asset_exists_only_with_the_suan_plugin(monkeypatch):
    import assets.studies as module

    monkeypatch.setattr(module, "default_registry", lambda: set())
    assert module.study_assets() == []
    monkeypatch.setattr(module, "default_registry", lambda: {("model", "suan")})
    (asset,) = module.study_assets()
    assert asset.key.to_user_string() == "suan_scaling"
    assert asset.group_names_by_key[asset.key] == "studies"
