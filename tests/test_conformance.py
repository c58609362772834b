"""The conformance kit: its synthetic data, its checks (they pass a good plugin and fail bad ones),
and its pytest base classes used the way a plugin author uses them."""

from __future__ import annotations

import json
import pickle
import re
import sys
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pytest
from plugin_fixtures import FIXTURES

from ctr_dagster import schemas, testing
from ctr_dagster.testing import ConformanceError

sys.path.insert(0, str(FIXTURES))  # the fixture modules are plain files: import them directly
import ctrfix_badmodels as bad  # noqa: E402
from ctrfix_encoder import HashEncoder  # noqa: E402
from ctrfix_extractor import TitleExtractor  # noqa: E402
from ctrfix_good import GoodModel  # noqa: E402

# --- synthetic data ------------------------------------------------------------------------------


def _digest(table) -> str:
    import hashlib

    import pyarrow as pa

    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return hashlib.sha256(sink.getvalue().to_pybytes()).hexdigest()


def test_training_table_conforms_and_is_deterministic():
    from ctr_dagster.datagen import build_world
    from ctr_dagster.testing import data

    table = testing.make_training_table(1500, seed=3)
    assert table.schema.equals(schemas.TRAINING) and table.num_rows == 1500
    assert schemas.conform(table, schemas.TRAINING).equals(table)
    first = _digest(table)
    for cached in (data.make_training_table, data._training_table_of, build_world):
        cached.cache_clear()  # rebuild the world from nothing: same seed, same table
    assert _digest(testing.make_training_table(1500, seed=3)) == first
    assert not table.equals(testing.make_training_table(1500, seed=4))
    ts = table["ts"].to_numpy()
    assert (np.diff(ts.astype("int64")) >= 0).all(), "rows are in time order (time split)"
    # the split is by day, as the engine's: train days, then one valid day, then one test day
    day = pc.strftime(table["ts"], format="%Y-%m-%d").to_numpy(zero_copy_only=False)
    split = table["split"].to_numpy(zero_copy_only=False)
    days = {s: sorted(set(day[split == s])) for s in ("train", "valid", "test")}
    assert len(days["valid"]) == len(days["test"]) == 1 and len(days["train"]) >= 2
    assert days["train"][-1] < days["valid"][0] < days["test"][0]


def test_training_table_sequences_are_consistent():
    from ctr_dagster.window import DatasetConfig

    table = testing.make_training_table(2000, seed=0)
    rows = table.to_pylist()
    assert any(r["hist_item_idx"] for r in rows) and any(not r["hist_item_idx"] for r in rows)
    longest = 0
    for r in rows:
        n = len(r["hist_item_idx"])
        assert n == len(r["hist_category_idx"]) == len(r["hist_age_s"]) == len(r["hist_rel_pos"])
        assert r["hist_rel_pos"] == list(range(n, 0, -1))  # most recent last
        assert all(a > 0 for a in r["hist_age_s"])  # strictly before the row
        assert all(i >= 1 for i in r["hist_item_idx"])  # 0 = pad only
        assert r["user_click_count"] >= n
        longest = max(longest, n)
    assert longest == DatasetConfig().max_seq_len  # heavy users fill the engine's sequence length


def test_unseen_users_are_oov_and_listed_items_indexed_outside_train():
    """The engine's vocabularies: users first seen after the train split are OOV (1); items have an
    index as soon as the catalogue lists them (their content is known before any click)."""
    table = testing.make_training_table(3000, seed=0)
    train = table.filter(pc.equal(table["split"], "train"))
    rest = table.filter(pc.not_equal(table["split"], "train"))
    assert pc.min(train["item_idx"]).as_py() >= 2 and pc.min(train["user_idx"]).as_py() >= 2
    new_users = rest["is_new_user"].to_numpy(zero_copy_only=False)
    new_items = rest["is_new_item"].to_numpy(zero_copy_only=False)
    assert new_users.any() and new_items.any()
    assert (rest["user_idx"].to_numpy()[new_users] == 1).all()
    assert (rest["user_idx"].to_numpy()[~new_users] >= 2).all()
    assert (rest["item_idx"].to_numpy() >= 2).all()


def test_training_table_signal_is_learnable():
    from ctr_dagster.significance import auc_interval

    table = testing.make_training_table(10_000, seed=0)
    ctr = pc.mean(pc.cast(table["label"], "float64")).as_py()
    assert 0.05 < ctr < 0.3  # the tiny profile's calibrated click rate
    position = table["position"].to_numpy()
    # position bias: earlier slots get more clicks, significantly (DeLong 95 %). The world plants many
    # other components, so position alone ranks weakly (AUC ~0.55) and a small draw is noisy
    interval = auc_interval(table["label"].to_numpy(), -position.astype(float))
    assert interval is not None and interval.low > 0.5


def test_cardinalities_and_inputs():
    table = testing.make_training_table(1000, seed=0)
    card = testing.training_cardinalities(table)
    assert (
        card["item_idx"]
        == max(pc.max(table["item_idx"]).as_py(), pc.max(pc.list_flatten(table["hist_item_idx"])).as_py()) + 1
    )
    assert {"user_idx", "category_idx", "device_idx", "region_idx"} <= set(card)
    inputs = testing.make_fit_inputs(frozenset({"item_embeddings", "item_attributes"}), table)
    emb = inputs["item_embeddings"]
    assert emb.dtype == np.float32 and emb.shape == (card["item_idx"], 16) and not emb[:2].any()
    assert inputs["item_attributes"].column_names == ["item_id", "attribute", "value", "score"]
    assert testing.make_fit_inputs(frozenset({"sequence"}), table) == {}


def test_items_and_attributes_tables():
    import re

    items = testing.make_items_table(12, seed=1)
    assert items.schema.equals(schemas.ITEMS) and items.num_rows == 12
    assert all(png.startswith(b"\x89PNG") for png in items["image_png"].to_pylist())
    attributes = testing.make_item_attributes_table(12, seed=1)
    complete = testing.make_item_attributes_table(12, seed=1, complete=True)
    oracle = testing.make_oracle_item_attributes_table(12, seed=1)
    for table in (attributes, complete):
        assert table.schema.equals(schemas.ITEM_ATTRIBUTES)
        assert set(table["item_id"].to_pylist()) <= set(items["item_id"].to_pylist())
    rows = lambda t: set(zip(*(t[c].to_pylist() for c in ("item_id", "attribute", "value")), strict=True))  # noqa: E731
    assert rows(attributes) < rows(complete) == rows(oracle)  # some true values are not catalogued
    assert rows(attributes) == rows(oracle.filter(oracle["in_catalogue"]))
    # the titles state exactly the values the oracle flags in_title (whole words)
    titles = dict(zip(items["item_id"].to_pylist(), items["title"].to_pylist(), strict=True))
    for row in oracle.to_pylist():
        stated = re.search(rf"\b{re.escape(row['value'])}\b", titles[row["item_id"]], re.IGNORECASE)
        assert bool(stated) == row["in_title"], (row, titles[row["item_id"]])


def test_auc_matches_the_pairwise_definition():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400).astype(bool)
    s = np.round(rng.random(400) + 0.3 * y, 1)  # many ties
    pos, neg = s[y][:, None], s[~y][None, :]
    expected = ((pos > neg).sum() + 0.5 * (pos == neg).sum()) / (pos.size * neg.size)
    assert testing.auc(y, s) == pytest.approx(expected, abs=1e-12)
    assert testing.auc(np.ones(3), np.arange(3.0)) is None  # one class: undefined (metrics.auc)


# --- checks as functions -----------------------------------------------------------------------------


def _failed(plugin, **options) -> dict[str, str]:
    return {r.name: r.message for r in testing.check_model(plugin, **options) if not r.passed}


def test_good_plugin_passes_every_check():
    results = testing.check_model(GoodModel)
    assert [r.name for r in results] == list(testing.ModelHarness.CHECKS)
    assert all(r.passed for r in results), [r for r in results if not r.passed]


@pytest.mark.parametrize(
    "plugin, check, fragment",
    [
        (bad.OutOfRangeModel, "predict_output", "scores must lie in [0.0, 1.0]"),
        (bad.PickleModel, "no_pickle", "state.bin (starts with pickle protocol"),
        (bad.ChanceModel, "better_than_chance", "held-out AUC 0.5000"),
        (bad.UnseededModel, "deterministic_under_seed", "two fits with FitContext.seed=0"),
        (bad.ForgetfulModel, "save_load_round_trip", "predictions after load"),
        (bad.BatchNormalizedModel, "single_row", "1-row batch vs full batch"),
        (bad.FitReturnsNoneModel, "fit_returns_model", "fit must return the trained model"),
        (bad.UnserializableConfigModel, "config", "not JSON-serializable"),
        (bad.LabelPeekingModel, "label_blind", "predictions change when the labels are shuffled"),
        (bad.LabelReadingModel, "predict_output", "predict read 'label', which the engine never hands it"),
    ],
)
def test_kit_catches_bad_plugins(plugin, check, fragment):
    failed = _failed(plugin)
    assert check in failed, failed
    assert fragment in failed[check]


def test_predict_gets_features_only_and_must_be_label_blind():
    """Issue 14: a plugin that reads the label at predict time used to pass every check (and top the
    leaderboard). The kit now hands predict the features only, like the engine, and fails a plugin
    whose scores move when the labels are attached or shuffled; an honest plugin passes."""
    from ctr_dagster.modeling import HIDDEN_AT_PREDICT

    honest = testing.ModelHarness(GoodModel, n_rows=1500)
    assert not set(HIDDEN_AT_PREDICT) & set(honest.test_features.column_names)
    assert "treatment" in honest.test_features.column_names  # a request feature, not a label
    honest.check_label_blind()
    shuffled = testing.shuffled_labels(honest.test, seed=0)
    assert shuffled.drop_columns(["label", "conversion"]).equals(honest.test_features)
    assert not shuffled.column("label").equals(honest.test.column("label"))
    cheat = testing.ModelHarness(bad.LabelPeekingModel, n_rows=1500)
    cheat.check_better_than_chance()  # features only: the cheat's scores are honest ones
    with pytest.raises(ConformanceError, match=r"\[label_blind\] predictions change when the labels"):
        cheat.check_label_blind()


def test_contract_check_names_the_violation():
    from ctrfix_nopredict import NoPredictModel

    with pytest.raises(ConformanceError, match="missing required member 'predict'"):
        testing.check_contract("model", NoPredictModel)


def test_invalid_config_overrides_are_reported():
    assert "unknown config key" in _failed(GoodModel, config={"nope": 1})["config"]


def test_assert_scores_valid():
    testing.assert_scores_valid(np.array([0.0, 0.5, 1.0]), 3)
    testing.assert_scores_valid(np.array([-0.5, 0.5]), 2, task="uplift")
    for scores, n, fragment in [
        ([0.1, 0.2], 2, "numpy array"),
        (np.array([[0.1, 0.2]]), 2, "shape (2,)"),
        (np.array([0, 1]), 2, "floats"),
        (np.array([0.1, np.nan]), 2, "non-finite"),
        (np.array([0.1, 1.5]), 2, "[0.0, 1.0]"),
    ]:
        with pytest.raises(ConformanceError, match=re.escape(fragment)):
            testing.assert_scores_valid(scores, n)


def test_find_pickles(tmp_path):
    (tmp_path / "weights.json").write_text(json.dumps({"w": [1.0]}))
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "blob").write_bytes(pickle.dumps({"x": 1}, protocol=4))
    (tmp_path / "named.pkl").write_text("{}")
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    np.save(tmp_path / "floats.npy", np.zeros(3, dtype=np.float32))
    found = testing.find_pickles(tmp_path)
    assert found == [
        "named.pkl (pickle file extension)",
        "objects.npy (.npy holding Python objects: needs pickle to load)",
        "sub/blob (starts with pickle protocol 4 header)",
    ]
    with pytest.raises(ConformanceError, match="pickle"):
        testing.assert_no_pickles(tmp_path)


def test_uplift_gain_rewards_the_planted_effect():
    """Scored by the world's true coupon effect (oracle p_click treated - control), the observed gain
    is positive and close to the true gap between the halves; reversed, it is negative."""
    import pyarrow as pa

    from ctr_dagster.testing import data

    world = testing.kit_world(0)
    table = data.kit_training_table(0)
    oracle = pa.concat_tables([world.day(d).oracle for d in world.dates()])
    at = pc.index_in(table["impression_id"], value_set=oracle["impression_id"])
    true = (
        pc.take(oracle["p_click_treated"], at).to_numpy() - pc.take(oracle["p_click_control"], at).to_numpy()
    )
    order = np.argsort(-true, kind="mergesort")
    expected = true[order[: len(order) // 2]].mean() - true[order[len(order) // 2 :]].mean()
    label = table["label"].to_numpy()
    treatment = table["treatment"].to_numpy()
    gain = testing.uplift_gain(true, label, treatment)
    assert expected > 0.04 and gain == pytest.approx(expected, abs=0.015)
    assert testing.uplift_gain(-true, label, treatment) < -0.04


# --- the pytest base classes, used as a plugin author would --------------------------------------


class TestGoodModelConformance(testing.ModelConformance):
    plugin = GoodModel
    config = {"smoothing": 5.0}
    n_rows = 2000


class TestHashEncoderConformance(testing.EncoderConformance):
    plugin = HashEncoder


class TestTitleExtractorConformance(testing.ExtractorConformance):
    plugin = TitleExtractor


def test_harness_fits_once_per_class():
    harness = TestGoodModelConformance.harness()
    assert harness is TestGoodModelConformance.harness()
    assert harness.config == {"smoothing": 5.0} and harness.n_rows == 2000
    assert testing.ModelConformance.__dict__.get("_conformance_harness") is None


def test_missing_plugin_attribute_is_explained():
    class TestNothing(testing.ModelConformance):
        pass

    with pytest.raises(ConformanceError, match="set `plugin = YourModelClass`"):
        TestNothing.harness()


def test_encoder_kit_catches_wrong_dtype():
    class Float64Encoder(HashEncoder):
        def encode(self, items):
            return super().encode(items).astype(np.float64)

    class TestBad(testing.EncoderConformance):
        plugin = Float64Encoder

    with pytest.raises(ConformanceError, match="float32"):
        TestBad().test_output_shape_and_dtype()


def test_extractor_kit_catches_missing_columns():
    class NoScore(TitleExtractor):
        def extract(self, items):
            return super().extract(items).drop_columns(["score"])

    class TestBad(testing.ExtractorConformance):
        plugin = NoScore

    with pytest.raises(ConformanceError, match=r"lacks column\(s\) \['score'\]"):
        TestBad().test_fit_and_extract()


def test_extractor_kit_checks_the_optional_report():
    class GoodReport(TitleExtractor):
        def report(self, directory):
            (directory / "p.png").write_bytes(b"\x89PNG\r\n\x1a\n")
            return {"rows": 3, "picture": directory / "p.png"}

    class BadReport(TitleExtractor):
        def report(self, directory):
            return {"rows": float("nan"), "elsewhere": Path("/nonexistent/p.png")}

    class TestGood(testing.ExtractorConformance):
        plugin = GoodReport

    class TestBad(testing.ExtractorConformance):
        plugin = BadReport

    TestGood().test_report()
    with pytest.raises(ConformanceError, match=r"report 'rows'.*finite.*report 'elsewhere'.*does not exist"):
        TestBad().test_report()
