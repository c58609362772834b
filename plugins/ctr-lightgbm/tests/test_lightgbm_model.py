"""Feature builder, id statistics, warm start and persistence of the `lightgbm` model."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from ctr_dagster import schemas
from ctr_dagster.contracts import FitContext, config_from_dict
from ctr_dagster.testing import assert_no_pickles, assert_scores_valid, make_training_table

from ctr_lightgbm import features, stats
from ctr_lightgbm.features import NO_CLICK_S, SEQUENCE, FeatureSpec
from ctr_lightgbm.model import META_FILE, MODEL_FILE, LightgbmModel

FAST = {
    "num_boost_round": 20,
    "early_stopping_rounds": 0,
    "min_data_in_leaf": 20,
    "min_data_per_group": 10,
    "num_leaves": 15,
}


@pytest.fixture(scope="module")
def splits() -> dict[str, pa.Table]:
    table = make_training_table(3000, seed=1)
    return {s: table.filter(pc.equal(table.column("split"), s)) for s in ("train", "valid", "test")}


def fast_model(**overrides: Any) -> LightgbmModel:
    return LightgbmModel(config_from_dict(LightgbmModel, {**FAST, **overrides}))


def hand_made(rows: list[dict[str, Any]]) -> pa.Table:
    """A TRAINING table from a few hand-written rows (unlisted columns get neutral values)."""
    n = len(rows)
    arrays = []
    for f in schemas.TRAINING:
        if f.name in rows[0]:
            arrays.append(pa.array([r[f.name] for r in rows], type=f.type))
        elif pa.types.is_list(f.type):
            arrays.append(pa.array([[] for _ in range(n)], type=f.type))
        elif pa.types.is_string(f.type):
            arrays.append(pa.array(["x"] * n, type=f.type))
        elif pa.types.is_timestamp(f.type):
            arrays.append(pa.array(np.zeros(n, dtype=np.int64)).cast(f.type))
        else:
            arrays.append(pa.array(np.ones(n)).cast(f.type))
    return schemas.conform(pa.Table.from_arrays(arrays, schema=schemas.TRAINING), schemas.TRAINING)


# features ------------------------------------------------------------------------------------


HAND_ROWS = [
    # Target item 10 in category 3; clicks oldest first: item 10 (cat 3), 11 (cat 4), 12 (cat 3).
    {
        "item_idx": 10,
        "category_idx": 3,
        "hist_item_idx": [10, 11, 12],
        "hist_category_idx": [3, 4, 3],
        "hist_age_s": [7200.0, 3600.0, 60.0],
    },
    # No history at all.
    {"item_idx": 7, "category_idx": 3, "hist_item_idx": [], "hist_category_idx": [], "hist_age_s": []},
    # Unknown (OOV) target item: an OOV click never counts as "the same item".
    {
        "item_idx": 1,
        "category_idx": 6,
        "hist_item_idx": [1, 1],
        "hist_category_idx": [6, 5],
        "hist_age_s": [100.0, 50.0],
    },
]


def seq(table: pa.Table) -> dict[str, np.ndarray]:
    matrix = features.sequence_features(table)
    return {name: matrix[:, j] for j, name in enumerate(SEQUENCE)}


def test_sequence_features_by_hand() -> None:
    f = seq(hand_made(HAND_ROWS))
    np.testing.assert_array_equal(f["hist_len"], [3, 0, 2])
    np.testing.assert_array_equal(f["hist_cat_count"], [2, 0, 1])
    np.testing.assert_allclose(f["hist_cat_share"], [2 / 3, 0, 0.5])
    np.testing.assert_array_equal(f["hist_item_count"], [1, 0, 0])
    np.testing.assert_array_equal(f["hist_cat_last_age_s"], [60.0, NO_CLICK_S, 100.0])
    np.testing.assert_array_equal(f["hist_last_age_s"], [60.0, NO_CLICK_S, 50.0])
    np.testing.assert_array_equal(f["hist_last_cat_match"], [1, 0, 0])
    np.testing.assert_array_equal(f["hist_distinct_cats"], [2, 0, 2])
    # Same-category clicks weighted by exp(-(age / 1 day + rank / 5)); rank 0 = most recent.
    expected = math.exp(-(7200 / 86400 + 2 / 5)) + math.exp(-(60 / 86400))
    assert f["hist_cat_decayed"][0] == pytest.approx(expected)
    assert f["hist_cat_decayed"][1] == 0.0


def test_features_of_a_slice_match_the_full_table() -> None:
    table = hand_made(HAND_ROWS)
    spec = FeatureSpec(use_stats=False)
    full = features.build(table, spec)
    assert full.shape == (3, len(spec.names()))
    for i in range(3):
        np.testing.assert_array_equal(features.build(table.slice(i, 1), spec), full[i : i + 1])


def test_statistics_of_a_training_row_never_see_its_own_label(splits: dict[str, pa.Table]) -> None:
    train = splits["train"].slice(0, 400)
    label = train.column("label").to_numpy().copy()
    user, item = train.column("user_idx").to_numpy(), train.column("item_idx").to_numpy()
    j = int(np.flatnonzero(label == 0)[0])
    # A clicked row sharing no key with row j: flipping both keeps the global click rate (the prior).
    k = int(np.flatnonzero((label == 1) & (user != user[j]) & (item != item[j]))[0])
    label[j], label[k] = 1, 0
    flipped = train.set_column(
        train.schema.get_field_index("label"), "label", pa.array(label, type=pa.int8())
    )
    state, before = stats.fit(train, **STATS)
    state_after, after = stats.fit(flipped, **STATS)
    assert state["prior"] == state_after["prior"]
    np.testing.assert_array_equal(before[j], after[j])  # past only: row j's own label is not used
    # ...while predict-time statistics (the full train tables) do include it.
    assert not np.array_equal(stats.transform(train, state)[j], stats.transform(flipped, state_after)[j])


STATS = {"folds": 5, "smoothing": 20.0, "user_cat_smoothing": 10.0}


def with_labels(table: pa.Table, label: np.ndarray) -> pa.Table:
    return table.set_column(table.schema.get_field_index("label"), "label", pa.array(label, type=pa.int8()))


def column(matrix: np.ndarray, name: str) -> np.ndarray:
    return matrix[:, stats.FEATURES.index(name)]


def test_train_statistics_never_see_later_rows(splits: dict[str, pa.Table]) -> None:
    """Random folds let early train rows count labels of later days; expanding time folds must not."""
    train = splits["train"]
    ts = train.column("ts").cast(pa.int64()).to_numpy()
    label = train.column("label").to_numpy().copy()
    latest = ts >= np.quantile(ts, 0.8)  # the last block of 5 (and a bit more)
    # Flip as many clicks to non-clicks as the reverse among the latest rows: the prior stays put.
    ones, zeros = np.flatnonzero(latest & (label == 1)), np.flatnonzero(latest & (label == 0))
    flip = min(len(ones), len(zeros))
    assert flip >= 20
    label[ones[:flip]], label[zeros[:flip]] = 0, 1
    perturbed = with_labels(train, label)
    state, before = stats.fit(train, **STATS)
    state_after, after = stats.fit(perturbed, **STATS)
    assert state["prior"] == state_after["prior"]
    earlier = ~latest
    # The earlier rows share users and items with the perturbed ones (so a leak would show)...
    user = train.column("user_idx").to_numpy()
    assert np.isin(user[earlier], user[latest]).sum() > 100
    # ...yet none of their features moves.
    np.testing.assert_array_equal(before[earlier], after[earlier])
    # Serving (valid/test) counts every train row, so there the perturbation is visible.
    valid = splits["valid"]
    assert not np.array_equal(stats.transform(valid, state), stats.transform(valid, state_after))


def test_train_statistics_come_from_earlier_time_blocks_by_hand() -> None:
    # One user, one item, one category; 8 impressions 1 ms apart; 4 blocks of 2 rows.
    labels = [1, 0, 1, 1, 0, 0, 1, 0]
    rows = [
        {"ts": t, "label": y, "user_idx": 5, "item_idx": 9, "category_idx": 3, "price": 10.0}
        for t, y in enumerate(labels)
    ]
    table = hand_made(rows)
    # Shuffled rows: blocks follow `ts`, not the row order.
    order = np.array([6, 2, 7, 0, 5, 3, 1, 4])
    state, f = stats.fit(table.take(order), folds=4, smoothing=20.0, user_cat_smoothing=10.0)
    prior = state["prior"]
    assert prior == pytest.approx(0.5)
    past_shows = np.array([0, 0, 2, 2, 4, 4, 6, 6], dtype=np.float64)[order]
    past_clicks = np.array([0, 0, 1, 1, 3, 3, 3, 3], dtype=np.float64)[order]
    np.testing.assert_allclose(column(f, "item_log_shows"), np.log1p(past_shows))
    np.testing.assert_allclose(column(f, "item_ctr"), (past_clicks + 20 * prior) / (past_shows + 20))
    np.testing.assert_allclose(column(f, "user_cat_log_clicks"), np.log1p(past_clicks))
    # Block 0 has no past: the priors only, as an id never seen at serving.
    first = np.isin(order, [0, 1])
    np.testing.assert_allclose(column(f, "user_ctr")[first], prior)
    np.testing.assert_allclose(column(f, "user_cat_ctr")[first], prior)


def test_rows_sharing_a_timestamp_share_a_block() -> None:
    ts = np.array([0, 0, 0, 0, 1, 1, 2, 3])
    block = stats.time_blocks(ts, 4)
    np.testing.assert_array_equal(block, [1, 1, 1, 1, 2, 2, 3, 3])  # block 0 empty: long tie
    # So rows at the same timestamp never see each other's labels.
    past = stats.past_sums(np.zeros(8, dtype=np.int64), block, np.ones(8))
    np.testing.assert_array_equal(past, [0, 0, 0, 0, 4, 4, 6, 6])


def test_past_sums_match_a_brute_force_count() -> None:
    rng = np.random.default_rng(0)
    key = rng.integers(-1, 6, 300)
    block = rng.integers(0, 7, 300)
    weights = rng.integers(0, 2, 300).astype(np.float64)
    expected = [weights[(key == key[i]) & (block < block[i])].sum() if key[i] >= 0 else 0 for i in range(300)]
    np.testing.assert_array_equal(stats.past_sums(key, block, weights), expected)


def test_valid_and_test_statistics_use_every_train_row(splits: dict[str, pa.Table]) -> None:
    train, test = splits["train"], splits["test"]
    state, train_features = stats.fit(train, **STATS)
    f = stats.transform(test, state)
    train_items = train.column("item_idx").to_numpy()
    train_labels = train.column("label").to_numpy().astype(np.float64)
    items = test.column("item_idx").to_numpy()
    shows = np.array([(train_items == i).sum() for i in items], dtype=np.float64)
    clicks = np.array([train_labels[train_items == i].sum() for i in items])
    assert (shows > 0).any()
    np.testing.assert_allclose(column(f, "item_log_shows"), np.log1p(shows))
    np.testing.assert_allclose(column(f, "item_ctr"), (clicks + 20 * state["prior"]) / (shows + 20))
    # The latest train rows are scored with counts of the earlier blocks only: fewer than serving's.
    latest = int(np.argmax(train.column("ts").cast(pa.int64()).to_numpy()))
    served = stats.transform(train.slice(latest, 1), state)[0]
    assert column(train_features, "user_log_shows")[latest] < served[stats.FEATURES.index("user_log_shows")]


# fit / predict ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "options",
    [{}, {"use_item_idx": True, "use_user_idx": True, "use_stats": False, "use_treatment": False}],
    ids=["default", "id-categoricals"],
)
def test_unseen_ids_and_empty_batches(splits: dict[str, pa.Table], options: dict[str, Any]) -> None:
    model = fast_model(**options).fit(
        splits["train"], splits["valid"], FitContext(seed=0, log=lambda m: None)
    )
    names = model.booster.feature_name()
    assert ("item_idx" in names) == bool(options.get("use_item_idx"))
    assert ("item_ctr" in names) == options.get("use_stats", True)
    batch = splits["test"].slice(0, 5)
    for name in ("item_idx", "user_idx", "category_idx", "region_idx"):
        batch = batch.set_column(
            batch.schema.get_field_index(name), name, pa.array([99_999] * 5, type=pa.int32())
        )
    assert_scores_valid(model.predict(batch), 5)
    assert model.predict(splits["test"].slice(0, 0)).shape == (0,)


def test_logs_best_iteration_and_valid_auc(splits: dict[str, pa.Table]) -> None:
    lines: list[str] = []
    fast_model(early_stopping_rounds=5).fit(splits["train"], splits["valid"], FitContext(log=lines.append))
    assert any("best iteration" in line and "valid AUC" in line for line in lines), lines


# warm start ----------------------------------------------------------------------------------


def test_warm_start_continues_boosting(splits: dict[str, pa.Table], tmp_path: Path) -> None:
    first = fast_model().fit(splits["train"], splits["valid"], FitContext(seed=0, log=lambda m: None))
    first.save(tmp_path / "champion")
    saved_trees = first.booster.num_trees()

    lines: list[str] = []
    ctx = FitContext(seed=0, log=lines.append, init_from=tmp_path / "champion")
    second = fast_model(num_boost_round=10).fit(splits["train"], splits["valid"], ctx)
    assert second.booster.num_trees() == saved_trees + 10 > saved_trees
    assert second.meta["init_trees"] == saved_trees
    assert any("warm start" in line for line in lines), lines
    assert_scores_valid(second.predict(splits["test"]), splits["test"].num_rows)

    # The continued model saves and loads like any other.
    second.save(tmp_path / "continued")
    again = LightgbmModel.load(tmp_path / "continued")
    np.testing.assert_array_equal(again.predict(splits["test"]), second.predict(splits["test"]))


def test_a_warm_start_boosts_only_on_the_rows_the_previous_booster_never_saw(
    splits: dict[str, pa.Table], tmp_path: Path
) -> None:
    """The nightly warm start (`previous_train_end` from the engine) adds trees fitted on the later
    rows only; the whole-window setting still boosts on every row."""
    train = splits["train"]
    cut = (
        pc.min(train.column("ts")).as_py()
        + (pc.max(train.column("ts")).as_py() - pc.min(train.column("ts")).as_py()) * 0.7
    )
    new_rows = int(
        pc.sum(pc.greater(train.column("ts"), pa.scalar(cut, type=train.schema.field("ts").type))).as_py()
    )
    assert 0 < new_rows < train.num_rows
    first = fast_model().fit(train, splits["valid"], FitContext(seed=0, log=lambda m: None))
    first.save(tmp_path / "previous")

    def warm(**overrides: Any) -> tuple[LightgbmModel, list[str]]:
        lines: list[str] = []
        ctx = FitContext(
            seed=0,
            log=lines.append,
            init_from=tmp_path / "previous",
            inputs={"warm_start": {"previous_train_end": cut.isoformat()}},
        )
        return fast_model(num_boost_round=10, min_data_in_leaf=5, **overrides).fit(
            train, splits["valid"], ctx
        ), lines

    model, lines = warm()
    assert model.meta["boosted_rows"] == new_rows and model.meta["train_rows"] == train.num_rows
    assert model.meta["init_trees"] == first.booster.num_trees()
    assert any(f"fine-tuning on the {new_rows} train rows" in line for line in lines), lines
    assert_scores_valid(model.predict(splits["test"]), splits["test"].num_rows)
    whole, _ = warm(warm_start_new_rows_only=False)
    assert whole.meta["boosted_rows"] == train.num_rows
    assert not np.array_equal(whole.predict(splits["test"]), model.predict(splits["test"]))


def test_warm_start_ignores_a_folder_without_a_model(splits: dict[str, pa.Table], tmp_path: Path) -> None:
    lines: list[str] = []
    ctx = FitContext(seed=0, log=lines.append, init_from=tmp_path)  # empty folder
    model = fast_model(num_boost_round=10).fit(splits["train"], splits["valid"], ctx)
    assert model.booster.num_trees() == 10
    assert any("from scratch" in line for line in lines), lines


# persistence ---------------------------------------------------------------------------------


def test_saved_files_are_lightgbm_text_and_json(splits: dict[str, pa.Table], tmp_path: Path) -> None:
    model = fast_model().fit(splits["train"], splits["valid"], FitContext(seed=0, log=lambda m: None))
    model.save(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([MODEL_FILE, META_FILE])
    assert (tmp_path / MODEL_FILE).read_text(encoding="utf-8").startswith("tree")
    document = json.loads((tmp_path / META_FILE).read_text(encoding="utf-8"))
    assert document["format_version"] == 1
    assert document["config"]["num_boost_round"] == FAST["num_boost_round"]
    assert document["features"]["names"] == model.booster.feature_name()
    assert_no_pickles(tmp_path)


def test_load_rejects_an_unknown_format(splits: dict[str, pa.Table], tmp_path: Path) -> None:
    model = fast_model().fit(splits["train"], splits["valid"], FitContext(seed=0, log=lambda m: None))
    model.save(tmp_path)
    document = json.loads((tmp_path / META_FILE).read_text(encoding="utf-8"))
    document["format_version"] = 999
    (tmp_path / META_FILE).write_text(json.dumps(document), encoding="utf-8")
    with pytest.raises(ValueError, match="unsupported model format"):
        LightgbmModel.load(tmp_path)
