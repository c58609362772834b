"""The synthetic marketplace: determinism, schemas, oracle consistency and every planted signal.

All on the `tiny` profile; each knob test builds its own small world with the knob at 0.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import re

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from PIL import Image

from ctr_dagster import schemas
from ctr_dagster.datagen import (
    COMPONENTS,
    CORRUPTION_KINDS,
    PROFILES,
    DayData,
    Signals,
    World,
    WorldConfig,
    build_world,
    profile,
    sequence_component,
    sequence_weights,
)
from ctr_dagster.datagen.behaviour import (
    COUPON_ARMS,
    MM_AMP,
    PLACEBO_ARM,
    TAU_HOURS,
    behaviour_gate,
    history_components,
)
from ctr_dagster.datagen.catalogue import LINE_ATTRIBUTES, LINE_SIZE
from ctr_dagster.datagen.config import N_ARMS
from ctr_dagster.datagen.images import dominant_colour
from ctr_dagster.datagen.requests import coupon_arms
from ctr_dagster.datagen.vocab import COLOUR_RGB, ZERO_SHOT_VALUES, all_values


def knobs(**strengths: float) -> Signals:
    return dataclasses.replace(Signals(), **strengths)


def tiny(**overrides: object) -> World:
    return build_world(profile("tiny", **overrides))


@pytest.fixture(scope="module")
def world() -> World:
    return tiny()


@pytest.fixture(scope="module")
def days(world: World) -> list[DayData]:
    return [world.day(d) for d in world.dates()]


def generated(data: DayData) -> pa.Table:
    """The raw rows that were not corrupted (the log names every injected row)."""
    bad = set(data.corruption.column("row").to_pylist())
    keep = [i for i in range(data.impressions.num_rows) if i not in bad]
    return data.impressions.take(pa.array(keep, type=pa.int64()))


def all_components(w: World) -> pa.Table:
    return pa.concat_tables([w.day(d).components for d in w.dates()])


def index_of(ids: pa.ChunkedArray | pa.Array) -> np.ndarray:
    return np.array([int(x[1:]) for x in ids.to_pylist()])


def mapping(table: pa.Table, key: str, value: str) -> dict:
    return dict(zip(table.column(key).to_pylist(), table.column(value).to_pylist(), strict=True))


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


# -- API, determinism, schemas -------------------------------------------------------------------


def test_profiles_and_config_api() -> None:
    cfg = profile("tiny", seed=3, signals=Signals(sequence=0.0))
    assert isinstance(cfg, WorldConfig) and cfg.seed == 3 and cfg.signals.sequence == 0.0
    assert hash(cfg) == hash(profile("tiny", seed=3, signals=Signals(sequence=0.0)))
    assert set(PROFILES) == {"tiny", "small", "large", "long"}
    assert PROFILES["tiny"].n_users < PROFILES["small"].n_users < PROFILES["large"].n_users
    assert build_world(cfg) is build_world(profile("tiny", seed=3, signals=Signals(sequence=0.0)))
    with pytest.raises(ValueError, match="unknown profile"):
        profile("huge")
    with pytest.raises(ValueError, match="bad override"):
        profile("tiny", n_userz=3)
    with pytest.raises(ValueError, match="Signals.sequence"):
        Signals(sequence=-1.0)


def test_dates_and_range(world: World) -> None:
    dates = world.dates()
    assert dates[0] == "2026-11-01" and len(dates) == world.config.n_days == 6
    with pytest.raises(ValueError, match=r"2026-11-01 \.\. 2026-11-06"):
        world.day("2026-11-07")
    with pytest.raises(ValueError, match="valid dates"):
        world.day("2026-10-31")


def test_same_seed_same_world_in_any_day_order() -> None:
    cfg = profile("tiny", seed=11)
    a, b = World(cfg), World(cfg)
    for name in ("items", "item_attributes", "oracle_item_attributes", "users"):
        assert getattr(a, name)().equals(getattr(b, name)()), name
    b._cache_size, b._checkpoint_every = 1, 4  # the large-profile path: bounded cache, sparse checkpoints
    dates = a.dates()
    forward = {d: a.day(d) for d in dates}
    for d in [dates[4], dates[1], dates[5], dates[0], dates[2], dates[3], dates[5], dates[4]]:
        got = b.day(d)
        for part in ("impressions", "oracle", "components", "corruption"):
            assert getattr(got, part).equals(getattr(forward[d], part)), (d, part)


def test_different_seed_different_world(world: World) -> None:
    other = tiny(seed=world.config.seed + 1)
    assert not other.items().equals(world.items())
    day = world.dates()[0]
    assert not other.day(day).impressions.equals(world.day(day).impressions)


def test_schemas_conform_exactly(world: World, days: list[DayData]) -> None:
    assert world.items().schema.equals(schemas.ITEMS)
    assert world.item_attributes().schema.equals(schemas.ITEM_ATTRIBUTES)
    assert world.oracle_item_attributes().schema.equals(schemas.ORACLE_ITEM_ATTRIBUTES)
    assert world.users().schema.equals(schemas.USERS)
    for data in days:
        assert data.impressions.schema.equals(schemas.RAW_IMPRESSIONS)
        assert data.oracle.schema.equals(schemas.ORACLE_IMPRESSIONS)
        assert data.components.column_names == ["impression_id", *COMPONENTS]
        assert all(data.components.schema.field(c).type == pa.float32() for c in COMPONENTS)
    assert world.items().num_rows == world.config.n_items
    assert world.users().num_rows == world.config.n_users
    ages = world.users().column("age_group").to_numpy()
    assert ages.min() >= 0 and ages.max() <= 5
    total = sum(d.oracle.num_rows for d in days)
    assert 15_000 <= total <= 25_000


def test_ids_are_well_formed_and_unique(days: list[DayData]) -> None:
    for data in days:
        ids = data.oracle.column("impression_id")
        assert pc.count_distinct(ids).as_py() == len(ids)
        assert data.components.column("impression_id").equals(ids)
        raw = generated(data)
        assert all(re.fullmatch(r"imp-\d{8}-\d{7}", x) for x in ids.to_pylist()[:50])
        assert all(re.fullmatch(r"u\d{6}", x) for x in raw.column("user_id").to_pylist()[:50])
        slates = raw.group_by("request_id").aggregate([("item_id", "count_distinct"), ("item_id", "count")])
        assert slates.column("item_id_count_distinct").equals(slates.column("item_id_count"))  # no repeats


# -- the oracle ----------------------------------------------------------------------------------


def test_oracle_consistency(days: list[DayData]) -> None:
    for data in days:
        n = data.oracle.num_rows
        treat = data.impressions.column("treatment").to_numpy()[:n]  # raw rows before the duplicates
        o = {c: data.oracle.column(c).to_numpy() for c in data.oracle.column_names[1:] if c.startswith("p_")}
        arms = np.stack([o[f"p_click_arm{k}"] for k in COUPON_ARMS], axis=1)
        conv_arms = np.stack([o[f"p_conv_arm{k}"] for k in COUPON_ARMS], axis=1)
        rows, own = np.arange(n), np.where(treat > 0, treat, 1)  # treated columns: arm 1 for control rows
        assert np.array_equal(o["p_click"], arms[rows, treat])  # p_click = p_click_arm{treatment}
        assert np.array_equal(o["p_click_control"], o["p_click_arm0"])
        assert np.array_equal(o["p_conv_control"], o["p_conv_arm0"])
        assert np.array_equal(o["p_click_treated"], arms[rows, own])
        assert np.array_equal(o["p_conv_treated"], conv_arms[rows, own])
        assert np.array_equal(o["p_click"], np.where(treat > 0, o["p_click_treated"], o["p_click_control"]))
        logit = sum(data.components.column(c).to_numpy().astype(np.float64) for c in COMPONENTS)
        np.testing.assert_allclose(sigmoid(logit), o["p_click"], atol=1e-5)
        for c in COMPONENTS:  # the oracle keeps each component as it is (oracle tables only)
            assert np.array_equal(
                data.oracle.column(f"logit_{c}").to_numpy(), data.components.column(c).to_numpy()
            )
        for values in o.values():
            assert np.all((values > 0) & (values < 1))
        raw = generated(data)
        click, conv = raw.column("click").to_numpy(), raw.column("conversion").to_numpy()
        assert set(np.unique(click)) <= {0, 1} and np.all(conv <= click)


def test_rates_and_treatment_effects(days: list[DayData]) -> None:
    raw = pa.concat_tables([generated(d) for d in days])
    click, conv = raw.column("click").to_numpy(), raw.column("conversion").to_numpy()
    treat = raw.column("treatment").to_numpy()
    assert 0.05 <= click.mean() <= 0.15
    assert 0.05 <= conv.sum() / click.sum() <= 0.25
    assert 0.5 <= (treat > 0).mean() <= 0.7
    o = oracle_arrays(days)
    for k in (1, 2):  # the real coupon arms: a click and a conversion effect, different by stage
        click_uplift = logit(o[f"p_click_arm{k}"]) - logit(o["p_click_arm0"])
        conv_uplift = logit(o[f"p_conv_arm{k}"]) - logit(o["p_conv_arm0"])
        assert click_uplift.mean() > 0 and click_uplift.std() > 0.1 and (click_uplift < 0).any()
        assert conv_uplift.mean() > 0 and conv_uplift.std() > 0.1
        assert abs(np.corrcoef(click_uplift, conv_uplift)[0, 1]) < 0.8  # different stage, different users


def oracle_arrays(days: list[DayData]) -> dict[str, np.ndarray]:
    oracle = pa.concat_tables([d.oracle for d in days])
    return {c: oracle.column(c).to_numpy().astype(np.float64) for c in oracle.column_names[1:]}


def logit(p: np.ndarray) -> np.ndarray:
    return np.log(p / (1 - p))


def test_coupon_arms_occur_at_their_shares(days: list[DayData]) -> None:
    treat = np.concatenate([generated(d).column("treatment").to_numpy() for d in days])
    assert treat.dtype == np.int8 and set(np.unique(treat)) == set(COUPON_ARMS)
    shares = np.bincount(treat, minlength=len(COUPON_ARMS)) / len(treat)
    np.testing.assert_allclose(shares, [0.4, 0.2, 0.2, 0.2], atol=0.03)  # treatment_rate 0.6, even split
    assert len(COUPON_ARMS) == N_ARMS == schemas.ORACLE_ARMS == len(PROFILES["tiny"].arm_shares)
    draws = np.array([0.0, 0.19, 0.21, 0.59, 0.61, 0.99])
    assert coupon_arms(draws, (0.4, 0.2, 0.2, 0.2)).tolist() == [1, 1, 2, 3, 0, 0]
    assert coupon_arms(draws, (1.0, 0.0, 0.0, 0.0)).tolist() == [0] * 6
    assert coupon_arms(draws, ONE_COUPON).tolist() == (draws < 0.5).tolist()  # the one-coupon world
    assert profile("tiny", arm_shares=[0.25] * 4).arm_shares == (0.25,) * 4
    for bad in ((0.5, 0.5), (0.5, 0.5, 0.5, -0.5), (0.4, 0.2, 0.2, 0.1)):
        with pytest.raises(ValueError, match="arm_shares"):
            profile("tiny", arm_shares=bad)


def test_placebo_arm_has_exactly_no_effect(days: list[DayData]) -> None:
    o = oracle_arrays(days)
    assert PLACEBO_ARM == 3
    assert np.array_equal(o["p_click_arm3"], o["p_click_arm0"])
    assert np.array_equal(o["p_conv_arm3"], o["p_conv_arm0"])
    for data in days:  # placebo rows carry no click uplift either
        n = data.oracle.num_rows
        treat = data.impressions.column("treatment").to_numpy()[:n]
        uplift = data.oracle.column("logit_uplift_click").to_numpy()
        assert np.all(uplift[treat == 3] == 0) and np.all(uplift[treat == 0] == 0)
        assert np.any(uplift[treat == 1] != 0) and np.any(uplift[treat == 2] != 0)


def test_coupon_arms_have_different_effects(days: list[DayData]) -> None:
    """Arms 1 and 2 are not one effect at two strengths: their per-user click effects are not
    proportional (arm 1 also depends on the region), their conversion effects go opposite ways in
    price (arm 1 expensive, arm 2 cheap items)."""
    o = oracle_arrays(days)
    click = {k: logit(o[f"p_click_arm{k}"]) - logit(o["p_click_arm0"]) for k in (1, 2)}
    conv = {k: logit(o[f"p_conv_arm{k}"]) - logit(o["p_conv_arm0"]) for k in (1, 2)}
    scale = np.dot(click[1], click[2]) / np.dot(click[1], click[1])  # best fit click2 = scale * click1
    assert np.std(click[2] - scale * click[1]) > 0.5 * np.std(click[2])
    assert np.corrcoef(conv[1], conv[2])[0, 1] < -0.3
    for stage in ("click", "conv"):  # and on the probability scale, per stage and arm
        effect = {k: o[f"p_{stage}_arm{k}"] - o[f"p_{stage}_arm0"] for k in (1, 2)}
        assert not np.allclose(effect[1], effect[2], atol=0.01)


@pytest.mark.parametrize(
    ("knob", "off", "on"), [("uplift", "click", "conv"), ("uplift_conversion", "conv", "click")]
)
def test_uplift_knob_zero_removes_its_stage_effect(knob: str, off: str, on: str) -> None:
    """`uplift` scales every arm's click effect, `uplift_conversion` every arm's conversion effect."""
    w = tiny(signals=knobs(**{knob: 0.0}))
    oracle = pa.concat_tables([w.day(d).oracle for d in w.dates()])
    for k in COUPON_ARMS:
        assert oracle.column(f"p_{off}_arm{k}").equals(oracle.column(f"p_{off}_arm0"))
    for k in (1, 2):
        assert not oracle.column(f"p_{on}_arm{k}").equals(oracle.column(f"p_{on}_arm0"))
    assert oracle.column(f"p_{off}_treated").equals(oracle.column(f"p_{off}_control"))
    assert not oracle.column(f"p_{on}_treated").equals(oracle.column(f"p_{on}_control"))
    if knob == "uplift":
        assert np.all(oracle.column("logit_uplift_click").to_numpy() == 0)


# -- each knob plants exactly its signal ------------------------------------------------------------


@pytest.mark.parametrize(
    ("knob", "component"),
    [
        ("sequence", "sequence"),
        ("multimodal", "multimodal"),
        ("interaction", "interaction"),
        ("segment", "segment"),
        ("position_bias", "position"),
        ("scaling", "scaling"),
        ("uplift", "uplift_click"),
        ("target_time", "target_time"),
        ("profile_sequence", "profile_sequence"),
        ("behaviour_segment", "behaviour_segment"),
    ],
)
def test_knob_zero_removes_its_component(world: World, knob: str, component: str) -> None:
    on = all_components(world).column(component).to_numpy()
    assert on.std() > 0.05
    off_world = tiny(signals=knobs(**{knob: 0.0}))
    off = all_components(off_world)
    assert np.all(off.column(component).to_numpy() == 0.0)
    others = [c for c in COMPONENTS if c not in (component, "base", "sequence")]
    assert max(off.column(c).to_numpy().std() for c in others) > 0.05  # the rest is still there


def test_uplift_zero_means_no_treatment_effect() -> None:
    w = tiny(signals=knobs(uplift=0.0, uplift_conversion=0.0))
    oracle = pa.concat_tables([w.day(d).oracle for d in w.dates()])
    assert oracle.column("p_click_treated").equals(oracle.column("p_click_control"))
    assert oracle.column("p_conv_treated").equals(oracle.column("p_conv_control"))
    for k in COUPON_ARMS:
        assert oracle.column(f"p_click_arm{k}").equals(oracle.column("p_click_control"))
        assert oracle.column(f"p_conv_arm{k}").equals(oracle.column("p_conv_control"))


def test_sequence_weights_uniform_without_temporal() -> None:
    gap = np.array([[0.5, 3.0, 30.0, 200.0]])
    valid = np.array([[True, True, True, False]])
    flat = sequence_weights(gap, valid, temporal=0.0)
    np.testing.assert_allclose(flat, [[0.25, 0.25, 0.25, 0.0]])
    decayed = sequence_weights(gap, valid, temporal=1.0)
    assert decayed[0, 0] > decayed[0, 1] > decayed[0, 2] > 0 and decayed[0, 3] == 0
    same_gap = sequence_weights(np.zeros((1, 4)), np.ones((1, 4), dtype=bool), temporal=1.0)
    assert np.all(np.diff(same_gap[0]) < 0)  # recency rank alone also decays


def test_temporal_knob_changes_only_the_weights(world: World) -> None:
    flat = tiny(signals=knobs(temporal=0.0))
    seq_flat = all_components(flat).column("sequence").to_numpy()
    seq_decay = all_components(world).column("sequence").to_numpy()
    assert seq_flat.std() > 0.05 and not np.allclose(seq_flat, seq_decay)
    check_sequence_recomputes(tiny(corruption_rate=0.0, signals=knobs(temporal=0.0)))


def check_sequence_recomputes(w: World) -> None:
    """Recompute every sequence term from the clicks strictly before the impression (no leakage)."""
    raw = pa.concat_tables([w.day(d).impressions for d in w.dates()])
    comp = all_components(w).column("sequence").to_numpy()
    user, item = index_of(raw.column("user_id")), index_of(raw.column("item_id"))
    ts = raw.column("ts").cast(pa.int64()).to_numpy()
    position, click = raw.column("position").to_numpy(), raw.column("click").to_numpy()
    request = raw.column("request_id").to_numpy(zero_copy_only=False)
    order = np.lexsort((position, ts, user))
    clicks = order[click[order] == 1]
    signals, size, n = w.config.signals, w.config.slate_size, w.config.max_seq_len
    starts = np.flatnonzero(np.r_[True, request[order][1:] != request[order][:-1]])
    mismatch_if_leaky = 0
    for s in starts:
        rows = order[s : s + size]
        u, t = user[rows[0]], ts[rows[0]]
        mine = clicks[user[clicks] == u]
        for leaky in (False, True):
            cut = np.searchsorted(ts[mine], t, side="right" if leaky else "left")
            before = mine[:cut][-n:][::-1]  # most recent first
            hist_items = np.full((1, n), -1)
            hist_ts = np.zeros((1, n), dtype=np.int64)
            hist_items[0, : len(before)], hist_ts[0, : len(before)] = item[before], ts[before]
            got = sequence_component(
                w.catalogue.unit, item[rows][None, :], np.array([t]), hist_items, hist_ts,
                signals.sequence, signals.temporal,
            )[0]  # fmt: skip
            if leaky:
                mismatch_if_leaky += not np.allclose(got, comp[rows], atol=1e-5)
            else:
                np.testing.assert_allclose(got, comp[rows], atol=1e-5)
    assert mismatch_if_leaky > 0  # the check would catch a history that includes the request itself


def test_sequence_uses_only_past_clicks() -> None:
    check_sequence_recomputes(tiny(corruption_rate=0.0))


def test_drift_knob() -> None:
    still, moving = tiny(signals=knobs(drift=0.0)), tiny()
    last = moving.config.n_days - 1
    assert np.array_equal(still.user_latent(0), still.user_latent(last))
    change = np.linalg.norm(moving.user_latent(last) - moving.user_latent(0), axis=1)
    assert np.median(change) > 0.1


def test_position_bias(world: World) -> None:
    def mean_p_by_position(w: World) -> np.ndarray:
        pos = pa.concat_tables([generated(w.day(d)) for d in w.dates()])
        oracle = pa.concat_tables([w.day(d).oracle for d in w.dates()])
        ids = pos.column("impression_id")
        p = mapping(oracle, "impression_id", "p_click")
        position = pos.column("position").to_numpy()
        values = np.array([p[i] for i in ids.to_pylist()])
        return np.array([values[position == k].mean() for k in range(1, w.config.slate_size + 1)])

    on = mean_p_by_position(world)
    assert on[0] > 1.5 * on[-1]
    # decreasing like -log(position); tiny's per-position means are noisy to ~0.005 in p
    assert np.corrcoef(on, -np.log(np.arange(1, len(on) + 1)))[0, 1] > 0.95
    off = mean_p_by_position(tiny(signals=knobs(position_bias=0.0)))
    assert off.max() < 1.15 * off.min()


def test_segment_pattern_flips_with_activity() -> None:
    w = tiny(corruption_rate=0.0)
    raw = pa.concat_tables([w.day(d).impressions for d in w.dates()])
    segment = all_components(w).column("segment").to_numpy()
    heavy = w.population.heavy[index_of(raw.column("user_id"))]
    zprice = w.catalogue.zprice[index_of(raw.column("item_id"))]
    assert 0 < heavy.mean() < 1
    assert np.corrcoef(segment[heavy], zprice[heavy])[0, 1] > 0.5  # heavy users like expensive items
    assert np.corrcoef(segment[~heavy], zprice[~heavy])[0, 1] < -0.5  # light users like cheap ones


# -- the knobs of the next mechanisms: target_time, profile_sequence, behaviour_segment, long_tail ----

#: The knobs added after the tables below were fingerprinted; at 0 (and the multimodal amplitude of
#: then, 1.2) the world must be exactly the world before them.
NEW_KNOBS_OFF = {"target_time": 0.0, "profile_sequence": 0.0, "behaviour_segment": 0.0, "long_tail": 0.0}
MULTIMODAL_BEFORE = 1.2 / MM_AMP
#: the coupon assignment of then: one coupon (today's arm 1) on half the requests
ONE_COUPON = (0.5, 0.5, 0.0, 0.0)

#: Fingerprints of the default tiny world taken before these knobs existed (`fingerprint` of the
#: users table; per day of the raw impressions, and of the oracle and components columns of then).
WORLD_BEFORE_NEW_KNOBS = {
    "items": "ff6e4e3bfaecaa13",
    "users": "301367b0ada7839b",
    "2026-11-01": ["8f1a614f03cdb0b0", "db4d70bc317ef1bd", "8bf6f7ff7d5b4a0b"],
    "2026-11-02": ["8706c2c5f1d4316e", "4d8da7b529e9fa08", "20719ffb3f97c694"],
    "2026-11-03": ["aac7a44428b7c015", "a9d5cc8db2b1b820", "795a5d684aa347ba"],
    "2026-11-04": ["8969ad81be87816f", "405d3a17b083d0d8", "e699c57ac3f575fc"],
    "2026-11-05": ["ed6fce251ab92edd", "192ceb8179b0a080", "8506eae655b805f4"],
    "2026-11-06": ["00d4881d91e518a6", "4f0fd2f06482ab35", "a8b2a1f3a2956590"],
}
COMPONENTS_BEFORE = COMPONENTS[: COMPONENTS.index("uplift_click") + 1]
ORACLE_BEFORE = [
    "impression_id",
    *(f"p_{x}" for x in ("click", "click_control", "click_treated", "conv_control", "conv_treated")),
    *(f"logit_{c}" for c in COMPONENTS_BEFORE),
]


def test_new_knobs_at_zero_are_the_world_before_them() -> None:
    assert MULTIMODAL_BEFORE * MM_AMP == 1.2  # exactly the amplitude of then
    w = tiny(arm_shares=ONE_COUPON, signals=knobs(multimodal=MULTIMODAL_BEFORE, **NEW_KNOBS_OFF))
    got = {"items": fingerprint(w.items()), "users": fingerprint(w.users())}
    for date in w.dates():
        day = w.day(date)
        got[date] = [
            fingerprint(day.impressions),
            fingerprint(day.oracle.select(ORACLE_BEFORE)),
            fingerprint(day.components.select(["impression_id", *COMPONENTS_BEFORE])),
        ]
        for c in NEW_KNOBS_OFF:
            if c in COMPONENTS:
                assert np.all(day.components.column(c).to_numpy() == 0.0)
    assert got == WORLD_BEFORE_NEW_KNOBS


def test_target_time_decay_depends_on_the_target_category(world: World) -> None:
    taus = world.truth.effects.cat_tau_hours
    assert len(taus) == len(world.catalogue.specs) and taus.min() <= 6.0 and taus.max() >= 168.0
    gap = np.full((1, 1, 3), 12.0)  # the same 12-hour gap, three remembered clicks
    valid = np.ones((1, 1, 3), dtype=bool)
    per_target = sequence_weights(gap, valid, 1.0, taus[None, :, None])  # one row per target category
    assert per_target[0, :, 0].max() > 5 * per_target[0, :, 0].min()
    assert np.array_equal(np.argsort(per_target[0, :, 0]), np.argsort(taus))  # longer memory, more weight
    # the sequence weights of today are the time constant TAU_HOURS for every target
    np.testing.assert_array_equal(
        sequence_weights(gap[0], valid[0], 1.0, TAU_HOURS), sequence_weights(gap[0], valid[0], 1.0)
    )
    # in the world: the target-aware part is there, and sequence + target_time is the target-aware term
    on = all_components(world).column("target_time").to_numpy()
    assert on.std() > 0.05 and (on > 0).any() and (on < 0).any()
    flat = all_components(tiny(signals=knobs(target_time=0.0))).column("target_time").to_numpy()
    assert np.all(flat == 0.0)
    check_history_components(tiny(corruption_rate=0.0))


def check_history_components(w: World, requests: int = 150) -> None:
    """`sequence + target_time` equals the sequence term recomputed with per-target time constants."""
    from ctr_dagster.datagen.behaviour import target_tau_hours

    date = w.dates()[-1]
    raw = w.day(date).impressions
    comp = w.day(date).components
    size, n = w.config.slate_size, w.config.max_seq_len
    user, item = index_of(raw.column("user_id")), index_of(raw.column("item_id"))
    ts = raw.column("ts").cast(pa.int64()).to_numpy()
    prior = pa.concat_tables([w.day(d).impressions for d in w.dates()])
    p_user, p_item = index_of(prior.column("user_id")), index_of(prior.column("item_id"))
    p_ts, p_click = prior.column("ts").cast(pa.int64()).to_numpy(), prior.column("click").to_numpy()
    p_pos = prior.column("position").to_numpy()
    order = np.lexsort((p_pos, p_ts, p_user))
    clicks = order[p_click[order] == 1]
    seq, tt = comp.column("sequence").to_numpy(), comp.column("target_time").to_numpy()
    for start in range(0, min(requests * size, raw.num_rows), size):
        rows = np.arange(start, start + size)
        u, t = user[start], ts[start]
        mine = clicks[p_user[clicks] == u]
        before = mine[: np.searchsorted(p_ts[mine], t, side="left")][-n:][::-1]
        hist_items = np.full((1, n), -1)
        hist_ts = np.zeros((1, n), dtype=np.int64)
        hist_items[0, : len(before)], hist_ts[0, : len(before)] = p_item[before], p_ts[before]
        s = w.config.signals
        tau = target_tau_hours(w.truth.effects, w.catalogue.category[item[rows]][None, :], s.target_time)
        aware = sequence_component(
            w.catalogue.unit,
            item[rows][None, :],
            np.array([t]),
            hist_items,
            hist_ts,
            s.sequence,
            s.temporal,
            tau,
        )[0]
        np.testing.assert_allclose(seq[rows] + tt[rows], aware, atol=1e-5)


def test_profile_sequence_reweights_behaviours_by_age_and_category(world: World) -> None:
    table = world.truth.effects.age_cat_affinity
    np.testing.assert_allclose(table.mean(axis=0), 0.0, atol=1e-12)  # no main effects
    np.testing.assert_allclose(table.mean(axis=1), 0.0, atol=1e-12)
    cat = world.catalogue.category
    target = np.flatnonzero(cat == 0)[:3]
    clicked = np.flatnonzero(cat == 0)[3:8]  # behaviours of the target's category
    hist_items = np.tile(clicked, (len(table), 1))
    hist_ts = np.zeros_like(hist_items)
    users = np.array([np.flatnonzero(world.population.age_group == a)[0] for a in range(len(table))])
    out = history_components(
        world.config, world.catalogue, world.population, world.truth.effects, users,
        np.tile(target, (len(users), 1)), np.full(len(users), 3_600_000), hist_items, hist_ts,
    )  # fmt: skip
    prof = out["profile_sequence"]
    # the same behaviours, the same target: the term follows the age group's weight of category 0
    assert np.corrcoef(prof.mean(axis=1), table[:, 0])[0, 1] > 0.99
    assert np.all(np.sign(prof[:, 0]) == np.sign(table[:, 0]))
    off = dataclasses.replace(world.config, signals=knobs(profile_sequence=0.0))
    zero = history_components(
        off, world.catalogue, world.population, world.truth.effects, users,
        np.tile(target, (len(users), 1)), np.full(len(users), 3_600_000), hist_items, hist_ts,
    )["profile_sequence"]  # fmt: skip
    assert np.all(zero == 0.0)
    np.testing.assert_array_equal(out["sequence"], history_components(
        off, world.catalogue, world.population, world.truth.effects, users,
        np.tile(target, (len(users), 1)), np.full(len(users), 3_600_000), hist_items, hist_ts,
    )["sequence"])  # fmt: skip


def test_behaviour_segment_flips_with_the_premium_share_of_the_history(world: World) -> None:
    zprice = world.catalogue.zprice
    premium, cheap = np.flatnonzero(zprice > 0.5)[:10], np.flatnonzero(zprice < -0.5)[:10]
    hist = np.stack([premium, cheap, np.r_[premium[:7], cheap[:3]], np.full(10, -1)])
    gate = behaviour_gate(zprice, hist)
    assert gate[0] > 0.8 and gate[1] < -0.8 and 0 < gate[2] < gate[0] and gate[3] == 0.0
    w = tiny(corruption_rate=0.0)
    date = w.dates()[-1]
    raw, comp = w.day(date).impressions, w.day(date).components.column("behaviour_segment").to_numpy()
    z = zprice[index_of(raw.column("item_id"))]
    rows = np.arange(0, raw.num_rows, w.config.slate_size)
    # the sign of the component against the target's price is the sign of the history's gate
    slope = np.array(
        [np.dot(comp[r : r + w.config.slate_size], z[r : r + w.config.slate_size]) for r in rows]
    )
    assert (slope > 0).sum() > 20 and (slope < 0).sum() > 20
    hist_items, _ = w._checkpoints[0].recent(np.arange(3))  # empty history: no behaviour segment
    assert np.all(behaviour_gate(zprice, hist_items) == 0.0)
    assert comp.std() > 0.05


def test_long_tail_makes_many_histories_short(world: World) -> None:
    flat = tiny(signals=knobs(long_tail=0.0))

    def short_share(w: World) -> float:
        raw = pa.concat_tables([generated(w.day(d)) for d in w.dates()])
        clicked = raw.filter(pc.equal(raw.column("click"), 1))
        clicks = np.bincount(index_of(clicked.column("user_id")), minlength=w.config.n_users)
        return float((clicks <= 1).mean())

    assert short_share(world) > short_share(flat) + 0.03  # tiny: already ~half the users have <= 1 click
    assert np.array_equal(flat.population.age_group, world.population.age_group)  # other draws untouched
    heavy = flat.population.heavy
    assert np.array_equal(flat.population.activity[heavy], world.population.activity[heavy])  # untouched
    tail = world.population.activity < 0.5 * flat.population.activity
    assert 0.2 <= tail.mean() <= 0.4 and not world.population.heavy[tail].any()
    total = lambda w: sum(w.day(d).oracle.num_rows for d in w.dates())  # noqa: E731
    assert abs(total(world) / total(flat) - 1) < 0.1  # the world's traffic is kept


def test_long_profile_has_long_histories() -> None:
    w = build_world(profile("long"))
    assert w.config.max_seq_len == 200
    raw = pa.concat_tables([generated(w.day(d)) for d in w.dates()])
    click = raw.column("click").to_numpy()
    assert 0.05 <= click.mean() <= 0.15
    clicks = np.bincount(
        index_of(raw.filter(pc.equal(raw.column("click"), 1)).column("user_id")), minlength=w.config.n_users
    )
    assert (clicks >= 100).mean() >= 0.4 and clicks.max() >= 200


# -- catalogue, users, attributes --------------------------------------------------------------------


def test_zero_shot_values_only_in_heldout_categories(world: World) -> None:
    oracle = world.oracle_item_attributes()
    category = mapping(world.items(), "item_id", "category")
    heldout = {s.name for s, h in zip(world.catalogue.specs, world.catalogue.heldout, strict=True) if h}
    assert heldout
    rows = oracle.to_pylist()
    zs = [r for r in rows if r["zero_shot"]]
    assert zs and all(category[r["item_id"]] in heldout for r in zs)
    zs_values = {r["value"] for r in zs}
    assert not any(r["value"] in zs_values for r in rows if category[r["item_id"]] not in heldout)
    assert not any(r["in_catalogue"] for r in zs)  # new to the taxonomy: only titles/images carry them
    assert not set(world.item_attributes().column("value").to_pylist()) & zs_values

    off = tiny(signals=knobs(zero_shot=0.0)).oracle_item_attributes()
    assert not any(off.column("zero_shot").to_pylist())
    novel = {v for values in ZERO_SHOT_VALUES.values() for v in values}
    assert not set(off.column("value").to_pylist()) & novel


def test_catalogue_completeness(world: World) -> None:
    oracle = world.oracle_item_attributes()
    known = oracle.column("in_catalogue").to_numpy(zero_copy_only=False)
    in_title = oracle.column("in_title").to_numpy(zero_copy_only=False)
    in_image = oracle.column("in_image").to_numpy(zero_copy_only=False)
    zero_shot = oracle.column("zero_shot").to_numpy(zero_copy_only=False)
    attribute = np.array(oracle.column("attribute").to_pylist())
    hidden = oracle_hidden_by_line(world, oracle)
    assert 0.2 <= 1 - known[~zero_shot].mean() <= 0.45  # ~30%, more for new items; zero-shot: never known
    assert in_title[~known & ~hidden].mean() >= 0.65  # the neighbourhood knob hides some on purpose
    assert in_image[attribute == "colour"].all() and not in_image[attribute == "brand"].any()
    assert world.item_attributes().num_rows == known.sum()
    assert set(world.items().column("category").to_pylist()) == {s.name for s in world.catalogue.specs}
    assert len(world.catalogue.specs) >= 4


def test_titles_state_exactly_the_in_title_values(world: World) -> None:
    titles = mapping(world.items(), "item_id", "title")
    for row in world.oracle_item_attributes().to_pylist():
        stated = re.search(rf"\b{re.escape(row['value'])}\b", titles[row["item_id"]], flags=re.IGNORECASE)
        assert bool(stated) == row["in_title"], (row, titles[row["item_id"]])
    assert len(set(titles.values())) > 0.5 * len(titles)


def test_images_show_the_colour(world: World) -> None:
    colour = {
        r["item_id"]: r["value"]
        for r in world.oracle_item_attributes().to_pylist()
        if r["attribute"] == "colour"
    }
    items = world.items()
    assert len(colour) == items.num_rows
    for item_id, png in zip(
        items.column("item_id").to_pylist(), items.column("image_png").to_pylist(), strict=True
    ):
        image = Image.open(io.BytesIO(png))
        assert image.format == "PNG" and image.size == (32, 32)
        assert dominant_colour(png) == COLOUR_RGB[colour[item_id]]


def test_new_items_never_shown_before_first_seen(world: World, days: list[DayData]) -> None:
    first_seen = mapping(world.items(), "item_id", "first_seen")
    start = world.items().column("first_seen").to_pylist()
    assert sum(d > min(start) for d in start) >= 10
    shown_new = 0
    for date, data in zip(world.dates(), days, strict=True):
        raw = generated(data)
        for item_id in set(raw.column("item_id").to_pylist()):
            assert first_seen[item_id].isoformat() <= date
            shown_new += first_seen[item_id].isoformat() == date and date != world.dates()[0]
    assert shown_new > 0


def test_new_users_appear_only_after_signup(world: World, days: list[DayData]) -> None:
    signup = mapping(world.users(), "user_id", "signup_date")
    first = world.dates()[0]
    assert sum(s.isoformat() > first for s in signup.values()) >= 20
    seen_new = set()
    for date, data in zip(world.dates(), days, strict=True):
        for user_id in set(generated(data).column("user_id").to_pylist()):
            assert signup[user_id].isoformat() <= date
            if signup[user_id].isoformat() > first:
                seen_new.add(user_id)
    assert len(seen_new) >= 10


def test_power_law_activity(world: World, days: list[DayData]) -> None:
    raw = pa.concat_tables([generated(d) for d in days])
    counts = np.bincount(index_of(raw.column("user_id")), minlength=world.config.n_users)
    ranked = np.sort(counts)[::-1]
    assert ranked[: len(ranked) // 10].sum() >= 0.4 * ranked.sum()
    clicked = raw.filter(pc.equal(raw.column("click"), 1))
    clicks = np.bincount(index_of(clicked.column("user_id")), minlength=world.config.n_users)
    assert np.median(clicks) <= 3 and (clicks <= 2).mean() >= 0.3 and clicks.max() >= 30


# -- the neighbourhood knob: product lines, hidden values, co-views ---------------------------------


def oracle_hidden_by_line(w: World, oracle: pa.Table) -> np.ndarray:
    """`Catalogue.hidden_by_line` aligned with the rows of the oracle attribute table."""
    item = index_of(oracle.column("item_id"))
    attribute = oracle.column("attribute").to_pylist()
    return np.array([w.catalogue.hidden_by_line[a][i] for i, a in zip(item, attribute, strict=True)])


def fingerprint(table: pa.Table) -> str:
    """Digest of a table's values; images by their pixels (independent of the PNG encoder)."""
    digest = hashlib.sha256()
    for name in table.column_names:
        values = table.column(name).to_pylist()
        if name == "image_png":
            values = [
                hashlib.sha256(np.asarray(Image.open(io.BytesIO(v)).convert("RGB")).tobytes()).hexdigest()
                for v in values
            ]
        digest.update(name.encode() + repr(values).encode())
    return digest.hexdigest()[:16]


#: Fingerprints of the default tiny world taken before the `neighbourhood` knob existed: at strength
#: 0 the knob must leave the world exactly so. Change them only with a deliberate change of the world.
WORLD_WITHOUT_NEIGHBOURHOOD = {
    "items": "8d22cbb0c240cf3c",
    "item_attributes": "18eab272f43fb5ab",
    "oracle_item_attributes": "2b84ec85485ed6f6",
    "impressions": "b5ce2df6257358ba",
}


@pytest.fixture(scope="module")
def no_lines() -> World:
    return tiny(signals=knobs(neighbourhood=0.0))


def test_neighbourhood_zero_is_the_world_without_the_knob(world: World, no_lines: World) -> None:
    with pytest.raises(ValueError, match="Signals.neighbourhood"):
        Signals(neighbourhood=-1.0)
    got = {name: fingerprint(getattr(no_lines, name)()) for name in ("items", "item_attributes")}
    got["oracle_item_attributes"] = fingerprint(no_lines.oracle_item_attributes())
    before = tiny(
        arm_shares=ONE_COUPON, signals=knobs(neighbourhood=0.0, multimodal=MULTIMODAL_BEFORE, **NEW_KNOBS_OFF)
    )
    got["impressions"] = fingerprint(before.day(before.dates()[0]).impressions)
    assert got == WORLD_WITHOUT_NEIGHBOURHOOD
    assert np.all(no_lines.catalogue.line == -1)
    assert not any(mask.any() for mask in no_lines.catalogue.hidden_by_line.values())
    # at strength 1 the knob leaves what it does not plant alone
    for column in ("item_id", "category", "price", "first_seen"):
        assert world.items().column(column).equals(no_lines.items().column(column)), column
    for attribute in ("brand", "colour"):
        assert np.array_equal(world.catalogue.values[attribute], no_lines.catalogue.values[attribute])


def test_neighbourhood_lines_share_values_and_hide_them(world: World) -> None:
    cat = world.catalogue
    line, n_lines = cat.line, int(cat.line.max()) + 1
    assert line.min() == 0
    sizes = np.bincount(line)
    assert sizes.min() >= LINE_SIZE[0] and sizes.max() <= LINE_SIZE[1] + LINE_SIZE[0] - 1
    first = np.unique(line, return_index=True)[1]
    assert np.array_equal(cat.category, cat.category[first][line])  # a line lies in one category
    titles = world.items().column("title").to_pylist()
    hidden_total = hidden_zero_shot = 0
    for attribute in LINE_ATTRIBUTES:
        values, has = cat.values[attribute], cat.values[attribute] >= 0
        assert np.array_equal(values, values[first][line])  # mates share the value (or its absence)
        assert np.array_equal(cat.zero_shot[attribute], cat.zero_shot[attribute][first][line])
        anchored = np.bincount(line, weights=cat.in_title[attribute], minlength=n_lines) > 0
        assert np.all(anchored[line[has]])  # every line has a member whose title states the value
        hidden = cat.hidden_by_line[attribute]
        assert hidden.sum() >= 0.25 * has.sum()
        assert not (cat.in_title[attribute] | cat.in_image[attribute])[hidden].any()
        names = all_values(attribute)
        for i in np.flatnonzero(hidden):
            assert not re.search(rf"\b{names[values[i]]}\b", titles[i], flags=re.IGNORECASE), titles[i]
        hidden_total += hidden.sum()
        hidden_zero_shot += (hidden & cat.zero_shot[attribute]).sum()
    assert hidden_zero_shot > 0  # held-out lines hide zero-shot values: only neighbours state them
    oracle = world.oracle_item_attributes()
    assert oracle_hidden_by_line(world, oracle).sum() == hidden_total
    # latents cluster by line: users who like one member like the others
    cos = cat.unit @ cat.unit.T
    same_cat = cat.category[:, None] == cat.category[None, :]
    mates = (line[:, None] == line[None, :]) & ~np.eye(cat.n, dtype=bool)
    assert cos[mates].mean() > cos[same_cat & ~mates & ~np.eye(cat.n, dtype=bool)].mean() + 0.1


def co_clicks(w: World, line: np.ndarray) -> dict[str, float]:
    """Line-mate shares of slates and of co-clicked pairs (same request; same user and UTC day)."""
    widget_slates, same_request, same_day = [], [], []
    for date in w.dates():
        raw = generated(w.day(date))
        request = np.unique(raw.column("request_id").to_numpy(zero_copy_only=False), return_inverse=True)[1]
        user = np.unique(raw.column("user_id").to_numpy(zero_copy_only=False), return_inverse=True)[1]
        item, click = index_of(raw.column("item_id")), raw.column("click").to_numpy() == 1
        for r in np.unique(request):
            widget_slates.append(np.bincount(line[item[request == r]]).max() >= 4)
        for key, out in ((request, same_request), (user, same_day)):
            for k in np.unique(key[click]):
                group = np.unique(item[click & (key == k)])
                a, b = np.triu_indices(len(group), 1)
                out.extend(line[group[a]] == line[group[b]])
    return {
        "widget_slates": float(np.mean(widget_slates)),
        "same_request": float(np.mean(same_request)),
        "same_day": float(np.mean(same_day)),
    }


def test_neighbourhood_line_mates_are_co_viewed_and_co_clicked(world: World, no_lines: World) -> None:
    on, off = co_clicks(world, world.catalogue.line), co_clicks(no_lines, world.catalogue.line)
    assert on["widget_slates"] > 0.25 and on["widget_slates"] > 3 * off["widget_slates"]
    assert on["same_request"] > 3 * off["same_request"]
    # over a user's whole day the other co-clicks grow quadratically with their clicks: a smaller margin
    assert on["same_day"] > 1.4 * off["same_day"]


def test_line_widget_share_moves_the_co_views_not_the_catalogue(world: World) -> None:
    """`line_widget_share` (the graph-only world's dose knob) changes who is viewed with whom, never
    what the items are or what their titles state: the text-only extractor's world stays the same."""
    with pytest.raises(ValueError, match="line_widget_share"):
        profile("tiny", line_widget_share=1.5)
    more = tiny(line_widget_share=0.9)
    assert fingerprint(more.items()) == fingerprint(world.items())
    assert fingerprint(more.oracle_item_attributes()) == fingerprint(world.oracle_item_attributes())
    assert np.array_equal(more.catalogue.line, world.catalogue.line)
    base, dosed = co_clicks(world, world.catalogue.line), co_clicks(more, world.catalogue.line)
    assert dosed["widget_slates"] > 2 * base["widget_slates"]
    assert dosed["same_request"] > 1.5 * base["same_request"]


# -- corruption --------------------------------------------------------------------------------------


def test_corruption_kinds_are_real(world: World, days: list[DayData]) -> None:
    known_items = set(world.items().column("item_id").to_pylist())
    seen = set()
    for date, data in zip(world.dates(), days, strict=True):
        raw = data.impressions.to_pylist()
        day_ids = pc.value_counts(data.impressions.column("impression_id"))
        repeated = {v["values"] for v in day_ids.to_pylist() if v["counts"] > 1}
        for entry in data.corruption.to_pylist():
            row, kind = raw[entry["row"]], entry["kind"]
            seen.add(kind)
            assert row["impression_id"] == entry["impression_id"]
            if kind == "null_user_id":
                assert row["user_id"] is None
            elif kind == "unknown_item_id":
                assert row["item_id"] not in known_items
            elif kind == "bad_position":
                assert row["position"] <= 0
            elif kind == "ts_outside_day":
                assert row["ts"].date().isoformat() != date
            elif kind == "conversion_without_click":
                assert row["conversion"] == 1 and row["click"] == 0
            elif kind == "invalid_click":
                assert row["click"] == 2
            else:
                assert row["impression_id"] in repeated
        assert data.impressions.num_rows == data.oracle.num_rows + sum(
            k == "duplicate_impression_id" for k in data.corruption.column("kind").to_pylist()
        )
    assert seen == set(CORRUPTION_KINDS)


def test_no_corruption_when_rate_zero() -> None:
    w = tiny(corruption_rate=0.0)
    for date in w.dates():
        data = w.day(date)
        raw = data.impressions
        assert data.corruption.num_rows == 0 and raw.num_rows == data.oracle.num_rows
        assert raw.column("user_id").null_count == 0
        assert pc.min(raw.column("position")).as_py() >= 1
        assert set(raw.column("item_id").to_pylist()) <= set(w.items().column("item_id").to_pylist())
        assert {t.date().isoformat() for t in raw.column("ts").to_pylist()} == {date}
        assert np.all(raw.column("conversion").to_numpy() <= raw.column("click").to_numpy())
        assert pc.count_distinct(raw.column("impression_id")).as_py() == raw.num_rows
