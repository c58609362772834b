"""Training-dataset construction: time split, leakage-free sequences, stable vocabularies."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from ctr_dagster import vocab
from ctr_dagster.dataset import (
    DatasetConfig,
    behaviour_sequences,
    build_training_table,
    plan_days,
    sequence_capacity,
)
from ctr_dagster.schemas import IMPRESSIONS, ITEMS, TRAINING, USERS, conform
from ctr_dagster.warehouse import Warehouse

DAYS = ["2026-11-01", "2026-11-02", "2026-11-03", "2026-11-04"]


def _ts(day: str, seconds: int) -> dt.datetime:
    return dt.datetime.fromisoformat(day).replace(tzinfo=dt.UTC) + dt.timedelta(seconds=seconds)


def _impressions(events: list[tuple[str, int, str, str, int]]) -> pa.Table:
    """events: (day, second of day, user, item, click)."""
    rows = {
        "impression_id": [f"imp{i}" for i in range(len(events))],
        "request_id": [f"req{i}" for i in range(len(events))],
        "ts": [_ts(d, s) for d, s, *_ in events],
        "user_id": [e[2] for e in events],
        "item_id": [e[3] for e in events],
        "position": [1] * len(events),
        "device": ["app"] * len(events),
        "treatment": [0] * len(events),
        "click": [e[4] for e in events],
        "conversion": [0] * len(events),
    }
    return conform(pa.table(rows), IMPRESSIONS)


def _catalogue(items: list[str], users: list[str]) -> tuple[pa.Table, pa.Table]:
    item_table = conform(
        pa.table(
            {
                "item_id": items,
                "category": [f"c{int(i[1:]) % 2}" for i in items],
                "title": items,
                "price": [1.0] * len(items),
                "first_seen": [dt.date(2026, 11, 1)] * len(items),
                "image_png": [None] * len(items),
            }
        ),
        ITEMS,
    )
    user_table = conform(
        pa.table(
            {
                "user_id": users,
                "signup_date": [dt.date(2026, 10, 1)] * len(users),
                "region": ["north"] * len(users),
                "age_group": [1] * len(users),
            }
        ),
        USERS,
    )
    return item_table, user_table


def test_plan_days_splits_by_time_and_keeps_history():
    plan = plan_days(DAYS, DatasetConfig(window_days=3, valid_days=1, test_days=1, history_days=5))
    assert plan.history == ["2026-11-01"]
    assert plan.train == ["2026-11-02"]
    assert plan.valid == ["2026-11-03"]
    assert plan.test == ["2026-11-04"]
    with pytest.raises(ValueError, match="need at least 3"):
        plan_days(DAYS[:2], DatasetConfig(window_days=14, valid_days=1, test_days=1))
    with pytest.raises(ValueError, match="leaves no training day"):
        plan_days(DAYS, DatasetConfig(window_days=2, valid_days=1, test_days=1))


def test_unset_sizes_come_from_the_data_volume():
    days = [f"2026-11-{d:02d}" for d in range(1, 31)]
    rows = {d: 100 for d in days}
    plan = plan_days(days, DatasetConfig(), rows)
    assert plan.cut_shares is None
    assert plan.test == days[-3:] and plan.valid == days[-6:-3]  # 3 of 30 equal days = 10 %
    assert plan.train == days[:-6] and "10.0% of impressions" in plan.rule
    # A heavy last week: the test split follows the volume, not the day count.
    heavy = {**rows, **{d: 1000 for d in days[-7:]}}
    plan = plan_days(days, DatasetConfig(), heavy)
    assert plan.test == days[-1:] and plan.valid == days[-2:-1]
    # Explicit sizes win.
    plan = plan_days(days, DatasetConfig(window_days=10, valid_days=2, test_days=1), rows)
    assert plan.test == days[-1:] and plan.valid == days[-3:-1] and len(plan.train) == 7


def test_few_days_split_by_time_inside_days(tmp_path):
    plan = plan_days(DAYS[:2], DatasetConfig(), {DAYS[0]: 10, DAYS[1]: 10})
    assert plan.cut_shares == (0.1, 0.1) and plan.train == DAYS[:2] and "cuts by time" in plan.rule
    events = [("2026-11-01", 1000 + i, f"u{i % 3}", f"i{i % 4}", i % 2) for i in range(50)]
    events += [("2026-11-02", 1000 + i, f"u{i % 3}", f"i{i % 4}", i % 2) for i in range(50)]
    items, users = _catalogue(["i0", "i1", "i2", "i3"], ["u0", "u1", "u2"])
    table = build_training_table(_impressions(events), items, users, plan, DatasetConfig()).table
    split = table.column("split").to_pylist()
    assert split.count("test") == 10 and split.count("valid") == 10 and split.count("train") == 80
    times = {
        name: [t for t, s in zip(table.column("ts").to_pylist(), split, strict=True) if s == name]
        for name in ("train", "valid", "test")
    }
    assert max(times["train"]) < min(times["valid"]) and max(times["valid"]) < min(times["test"])


def test_sequences_use_only_strictly_earlier_clicks_of_the_same_user():
    click_users = np.array([0, 0, 0, 1])
    click_ts = np.array([10, 20, 30, 5])
    values = {"item": np.array([100, 200, 300, 900])}
    row_users = np.array([0, 0, 1, 0, 2])
    row_ts = np.array([20, 31, 6, 5, 100])  # row at ts=20 must not see the click at ts=20
    lengths, lists, counts = behaviour_sequences(
        row_users, row_ts, click_users, click_ts, values, max_seq_len=2
    )
    assert lists["item"].to_pylist() == [[100], [200, 300], [900], [], []]
    assert lists["rel_pos"].to_pylist() == [[1], [2, 1], [1], [], []]
    ages = lists["age_s"].to_pylist()
    assert [len(a) for a in ages] == [1, 2, 1, 0, 0]
    assert ages[0] + ages[1] + ages[2] == pytest.approx([0.01, 0.011, 0.001, 0.001])
    assert counts.tolist() == [1, 3, 1, 0, 0]
    assert lengths.tolist() == [1, 2, 1, 0, 0]


def test_build_training_table_end_to_end(tmp_path):
    events = [
        ("2026-11-01", 100, "u1", "i1", 1),
        ("2026-11-02", 100, "u1", "i2", 1),
        ("2026-11-02", 200, "u2", "i1", 0),
        ("2026-11-03", 100, "u1", "i3", 0),
        ("2026-11-04", 100, "u1", "i4", 1),
        ("2026-11-04", 150, "u3", "i2", 0),
    ]
    items, users = _catalogue(["i1", "i2", "i3", "i4"], ["u1", "u2", "u3"])
    plan = plan_days(DAYS, DatasetConfig(window_days=3, valid_days=1, test_days=1, history_days=1))
    result = build_training_table(
        _impressions(events), items, users, plan, DatasetConfig(window_days=3), Warehouse(tmp_path)
    )
    table = result.table
    assert table.schema.equals(TRAINING)
    assert table.column("split").to_pylist() == ["train", "train", "valid", "test", "test"]
    # u1's 11-04 impression sees the two earlier clicks (i1 from the look-back day, i2), in order.
    item_vocab = result.vocabs["item"]
    hist = table.column("hist_item_idx").to_pylist()
    assert hist[3] == item_vocab.encode(pa.array(["i1", "i2"])).tolist()
    assert table.column("is_new_user").to_pylist() == [False, False, False, False, True]
    assert table.column("is_new_item").to_pylist() == [False, False, True, True, False]
    assert table.column("user_idx").to_pylist()[-1] == vocab.OOV
    assert result.stats["rows_test"] == 2
    # the table says how many behaviours a row may hold, and the warehouse keeps it
    Warehouse(tmp_path).write("training_dataset", table)
    assert sequence_capacity(Warehouse(tmp_path).read("training_dataset")) == DatasetConfig().max_seq_len


def test_vocabulary_is_append_only_across_nightly_runs(tmp_path):
    wh = Warehouse(tmp_path)
    first = vocab.update(wh, "item", pa.chunked_array([["b", "a", "a"]]))
    assert first.added == 2 and first.version == 1
    assert first.encode(pa.array(["a", "b", "zzz", None])).tolist() == [2, 3, vocab.OOV, vocab.OOV]
    again = vocab.update(wh, "item", pa.chunked_array([["a"]]))
    assert again.added == 0 and again.version == 1
    second = vocab.update(wh, "item", pa.chunked_array([["c", "a", "0"]]))
    assert second.added == 2 and second.version == 2
    # old ids keep their indices; new ones are appended
    assert second.encode(pa.array(["a", "b", "0", "c"])).tolist() == [2, 3, 4, 5]
    assert vocab.load(wh, "item").num_rows == 4


def _extend_many(root: str, prefix: str, rounds: int) -> None:
    wh = Warehouse(Path(root))
    for i in range(rounds):
        vocab.update(wh, "item", pa.chunked_array([[f"{prefix}{i}", "shared"]]))


def test_concurrent_runs_never_hand_one_index_to_two_keys(tmp_path):
    """Two processes (parallel runs) extend the same vocabulary: the lock keeps indices unique."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    workers = [ctx.Process(target=_extend_many, args=(str(tmp_path), p, 25)) for p in ("a", "b")]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=120)
        assert w.exitcode == 0
    table = vocab.load(Warehouse(tmp_path), "item").to_pydict()
    assert sorted(table["key"]) == sorted(
        [f"a{i}" for i in range(25)] + [f"b{i}" for i in range(25)] + ["shared"]
    )
    assert sorted(table["index"]) == list(range(vocab.FIRST_INDEX, vocab.FIRST_INDEX + 51))


def test_a_sequence_shipped_with_the_log_replaces_the_rebuilt_one():
    events = [
        ("2026-11-01", 100, "u1", "i1", 1),
        ("2026-11-02", 100, "u1", "i2", 1),
        ("2026-11-03", 100, "u1", "i3", 0),
        ("2026-11-04", 100, "u1", "i4", 1),
        ("2026-11-04", 200, "u2", "i1", 0),
    ]
    table = _impressions(events)
    shipped = [["i3", "i2", "i1"], None, ["i4"], ["i9", "i1", "i2", "i3"], None]
    table = table.set_column(
        table.schema.get_field_index("history_item_ids"),
        "history_item_ids",
        pa.array(shipped, pa.list_(pa.string())),
    )
    items, users = _catalogue(["i1", "i2", "i3", "i4"], ["u1", "u2"])
    plan = plan_days(DAYS, DatasetConfig(window_days=4, valid_days=1, test_days=1))
    result = build_training_table(table, items, users, plan, DatasetConfig(max_seq_len=2))
    encode = result.vocabs["item"].encode
    hist = result.table.column("hist_item_idx").to_pylist()
    assert hist[0] == encode(pa.array(["i2", "i1"])).tolist()  # shipped: the 2 most recent kept
    assert hist[1] == encode(pa.array(["i1"])).tolist()  # no shipped sequence: rebuilt from clicks
    assert hist[3] == encode(pa.array(["i2", "i3"])).tolist()
    assert result.table.column("hist_rel_pos").to_pylist()[3] == [2, 1]
    assert result.table.column("hist_age_s").to_pylist()[0] == [-1.0, -1.0]
    assert result.table.column("hist_age_s").to_pylist()[1] != [-1.0]


def _sequences_by_hand(row_users, row_ts, click_users, click_ts, items, max_seq_len):
    """The definition, one row at a time: the user's clicks strictly before the row, oldest first."""
    out = []
    for user, ts in zip(row_users.tolist(), row_ts.tolist(), strict=True):
        mine = sorted(
            (int(t), i)
            for i, (u, t) in enumerate(zip(click_users.tolist(), click_ts.tolist(), strict=True))
            if u == user and t < ts
        )
        out.append([int(items[i]) for _, i in mine][-max_seq_len:] if max_seq_len else [])
    return out


# 2^41 ms after the epoch is 2039-09-07: the old fixed key shift (user * 2^41 + ts) spilt over there.
_AFTER_2039 = 2**41 + 1_000


@pytest.mark.parametrize(
    "row_users, row_ts, click_users, click_ts",
    [
        # timestamps after 2039: user 1 must not inherit user 0's clicks
        (
            [0, 1, 1],
            [_AFTER_2039 + 50, _AFTER_2039 + 60, _AFTER_2039 + 70],
            [0, 0, 1],
            [_AFTER_2039 + 1, _AFTER_2039 + 2, _AFTER_2039 + 65],
        ),
        # user codes around 2^22 (the old limit: ~4.19M users in a window) with 2026 timestamps
        (
            [2**22 - 1, 2**22, 2**22 + 1, 5_000_000, 0],
            [1_790_000_000_900] * 5,
            [2**22 - 1, 2**22, 2**22, 5_000_000, 0, 2**22 + 1],
            [
                1_790_000_000_100,
                1_790_000_000_200,
                1_790_000_000_300,
                1_790_000_000_400,
                1_790_000_000_500,
                1_790_000_000_950,
            ],
        ),
        # a key space that not even rebasing fits (2^40 users x 2^30 ms): the dense-rank fallback
        ([0, 2**40, 2**40], [2**30, 2**30, 5], [2**40, 0, 2**40], [1, 2**30 - 1, 0]),
    ],
    ids=["after-2039", "users-around-2^22", "dense-rank-fallback"],
)
def test_sequence_keys_never_overflow(row_users, row_ts, click_users, click_ts):
    """Issue 14: `user * 2^41 + ts` wrapped silently in int64 beyond ~4.19M users or after 2039,
    mixing users' histories; every boundary case must match the row-by-row definition."""
    arrays = [np.array(a, dtype=np.int64) for a in (row_users, row_ts, click_users, click_ts)]
    items = np.arange(100, 100 + len(click_users))
    lengths, lists, counts = behaviour_sequences(*arrays, {"item": items}, max_seq_len=3)
    expected = _sequences_by_hand(*arrays, items, 3)
    assert lists["item"].to_pylist() == expected
    assert lengths.tolist() == [len(e) for e in expected]


def test_unpackable_sequence_keys_raise_instead_of_wrapping():
    from ctr_dagster.dataset import check_packable

    check_packable(2**22, 2**41)  # the old layout's limit exactly fits
    with pytest.raises(OverflowError, match="do not fit one int64 sort key"):
        check_packable(2**22 + 1, 2**41)
