"""Quality rules: each kind of bad row lands in the quarantine with its rule; nothing is lost."""

from __future__ import annotations

import datetime as dt
import json

import pyarrow as pa
import pytest

from ctr_dagster import schemas
from ctr_dagster.quality import split_clean, split_clean_impressions, validate_table

DAY = "2024-03-10"
T0 = dt.datetime(2024, 3, 10, 12, 0, tzinfo=dt.UTC)


@pytest.fixture(scope="module")
def items() -> pa.Table:
    return pa.table(
        {
            "item_id": ["i1", "i2", "i_new"],
            "category": ["c", "c", "c"],
            "title": ["a", "b", "c"],
            "price": pa.array([1.0, 2.0, 3.0], pa.float32()),
            "first_seen": pa.array([dt.date(2024, 1, 1), dt.date(2024, 1, 1), dt.date(2024, 3, 11)]),
            "image_png": pa.array([None, None, None], pa.binary()),
        },
        schema=schemas.ITEMS,
    )


@pytest.fixture(scope="module")
def users() -> pa.Table:
    return pa.table(
        {
            "user_id": ["u1", "u2"],
            "signup_date": pa.array([dt.date(2024, 1, 1)] * 2),
            "region": ["x", None],
            "age_group": pa.array([1, None], pa.int8()),
        },
        schema=schemas.USERS,
    )


GOOD = {
    "impression_id": "g",
    "request_id": "r",
    "ts": T0,
    "user_id": "u1",
    "item_id": "i1",
    "position": 1,
    "device": "mobile",
    "treatment": 0,
    "click": 1,
    "conversion": 0,
}

#: (change to a good row, the rules it must break) — one example of each bad-row kind.
BAD_KINDS = [
    ({"user_id": None}, {"user_id_not_null"}),
    ({"request_id": None}, {"request_id_not_null"}),
    ({"ts": None}, {"ts_not_null"}),
    ({"impression_id": "good-0"}, {"impression_id_unique"}),  # repeats row 0
    ({"position": 0}, {"position_positive"}),
    ({"click": 2}, {"click_binary"}),
    ({"treatment": -1}, {"treatment_arm"}),
    ({"click": 0, "conversion": 1}, {"conversion_implies_click"}),
    ({"click": 1, "conversion": 5}, {"conversion_binary", "conversion_implies_click"}),  # two rules, one row
    ({"ts": T0 + dt.timedelta(days=1)}, {"ts_in_partition"}),
    ({"ts": dt.datetime(2024, 3, 10, tzinfo=dt.UTC) - dt.timedelta(milliseconds=1)}, {"ts_in_partition"}),
    ({"user_id": "ghost"}, {"user_id_known"}),
    ({"item_id": "i404"}, {"item_id_known"}),
    ({"item_id": "i_new"}, {"item_not_yet_listed"}),
]


def _raw(rows: list[dict]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=schemas.RAW_IMPRESSIONS)


def _partition() -> tuple[pa.Table, dict[int, set[str]]]:
    """Good rows 0-2, then one row per bad kind; returns the table and the expected rules per row."""
    rows = [{**GOOD, "impression_id": f"good-{i}"} for i in range(3)]
    expected = {}
    for k, (change, rules) in enumerate(BAD_KINDS):
        expected[len(rows)] = rules
        rows.append({**GOOD, "impression_id": f"bad-{k}", **change})
    rows.append(
        {
            **GOOD,
            "impression_id": "good-last",
            "ts": dt.datetime(2024, 3, 10, 23, 59, 59, 999000, tzinfo=dt.UTC),
        }
    )
    return _raw(rows), expected


def test_each_bad_kind_is_quarantined_with_its_rule(items, users):
    raw, expected = _partition()
    clean, quarantine, report = split_clean_impressions(
        raw, partition=DAY, items=items, users=users, source_file="day.parquet"
    )

    assert report.rows_in == raw.num_rows == report.rows_clean + report.rows_quarantined
    assert clean.num_rows == report.rows_clean == 4 and quarantine.num_rows == len(BAD_KINDS)
    assert clean.schema.equals(schemas.IMPRESSIONS)
    assert quarantine.schema.equals(schemas.QUARANTINE)
    assert sorted(clean.column("impression_id").to_pylist()) == ["good-0", "good-1", "good-2", "good-last"]

    got = {row["source_row"]: row for row in quarantine.to_pylist()}
    assert set(got) == set(expected)  # one quarantine row per distinct bad row
    for source_row, rules in expected.items():
        row = got[source_row]
        assert set(row["rule"].split(";")) == rules, row
        assert (
            row["table"] == "raw_impressions"
            and row["partition"] == DAY
            and row["source_file"] == "day.parquet"
        )
        assert row["detail"]
    by_rule = {r["rule"]: r for r in got.values()}
    assert by_rule["user_id_known"]["column"] == "user_id" and "'ghost'" in by_rule["user_id_known"]["detail"]
    assert "row 0" in by_rule["impression_id_unique"]["detail"]
    assert "2024-03-11" in by_rule["item_not_yet_listed"]["detail"]
    assert report.rule_counts["conversion_implies_click"] == 2
    assert report.rule_counts["ts_in_partition"] == 2
    assert not report.success
    meta = report.as_metadata()
    json.dumps(meta)
    assert meta["rows_quarantined"] == len(BAD_KINDS) and meta["rule.item_id_known"] == 1


def test_quarantine_record_round_trips_the_original_values(items, users):
    raw, _ = _partition()
    _, quarantine, _ = split_clean_impressions(raw, partition=DAY, items=items, users=users)
    originals = raw.to_pylist()
    for row in quarantine.to_pylist():
        record = json.loads(row["record"])
        original = originals[row["source_row"]]
        assert record.keys() == original.keys()
        for key, value in original.items():
            if isinstance(value, dt.datetime):
                assert dt.datetime.fromisoformat(record[key]) == value
            else:
                assert record[key] == value


def test_clean_partition_quarantines_nothing(items, users):
    raw = _raw(
        [
            {**GOOD, "impression_id": f"ok-{i}", "user_id": f"u{1 + i % 2}", "position": 1 + i % 5}
            for i in range(50)
        ]
    )
    clean, quarantine, report = split_clean_impressions(raw, partition=DAY, items=items, users=users)
    assert (clean.num_rows, quarantine.num_rows) == (50, 0)
    assert report.success and report.rows_quarantined == 0 and not any(report.rule_counts.values())
    assert clean.column("impression_id").to_pylist() == raw.column("impression_id").to_pylist()

    empty_clean, empty_q, empty_report = split_clean_impressions(
        schemas.empty(schemas.RAW_IMPRESSIONS), partition=DAY, items=items, users=users
    )
    assert (empty_clean.num_rows, empty_q.num_rows, empty_report.rows_in) == (0, 0, 0)


def test_validate_table_on_items_and_users(items, users):
    bad_items = pa.concat_tables(
        [
            items,
            pa.Table.from_pylist(
                [
                    {
                        "item_id": "i1",
                        "category": "c",
                        "title": "dup",
                        "price": 1.0,
                        "first_seen": dt.date(2024, 1, 1),
                    },
                    {
                        "item_id": "i9",
                        "category": "c",
                        "title": "cheap",
                        "price": -2.0,
                        "first_seen": dt.date(2024, 1, 1),
                    },
                ],
                schema=schemas.ITEMS,
            ),
        ]
    )
    report = validate_table("raw_items", bad_items)
    assert report.rows_in == 5 and report.rows_quarantined == 2 and not report.success
    assert report.rule_counts["item_id_unique"] == 1 and report.rule_counts["price_non_negative"] == 1
    assert validate_table("raw_items", items).success

    loose_users = pa.table(
        {
            "user_id": ["u1", "u1", "u3", None],
            "signup_date": pa.array([dt.date(2024, 1, 1)] * 4),
            "region": [None] * 4,
            "age_group": pa.array([0, 5, 7, None], pa.int8()),
        },
        schema=schemas.USERS.remove(0).insert(0, pa.field("user_id", pa.string())),
    )
    report = validate_table("raw_users", loose_users)
    assert report.rule_counts == {
        "user_id_not_null": 1,
        "signup_date_not_null": 0,
        "user_id_unique": 1,
        "age_group_in_range": 1,
    }
    assert report.rows_quarantined == 3 and report.rows_clean == 1
    assert validate_table("raw_users", users).success


def test_item_attributes_reference_items_and_split_keeps_provenance(items):
    attributes = pa.table(
        {
            "item_id": ["i1", "i404", "i2"],
            "attribute": ["colour", "colour", None],
            "value": ["red", "blue", "green"],
        }
    )
    report = validate_table("raw_item_attributes", attributes, items=items)
    assert report.rule_counts == {
        "item_id_not_null": 0,
        "attribute_not_null": 1,
        "value_not_null": 0,
        "item_id_known": 1,
    }
    provenance = pa.table({"source_file": ["a.csv"] * 3, "source_row": pa.array([10, 11, 12], pa.int64())})
    clean, quarantine, _ = split_clean("raw_item_attributes", attributes, provenance=provenance, items=items)
    assert clean.schema.equals(schemas.ITEM_ATTRIBUTES) and clean.num_rows == 1
    assert quarantine.column("source_row").to_pylist() == [11, 12]
    assert quarantine.column("source_file").to_pylist() == ["a.csv", "a.csv"]


def test_validate_clean_impressions_without_references_skips_reference_rules():
    raw = _raw([{**GOOD, "user_id": "anyone", "impression_id": "x"}])
    report = validate_table("clean_impressions", raw)
    assert (
        report.success
        and "user_id_known" not in report.rule_counts
        and "ts_in_partition" not in report.rule_counts
    )
    with pytest.raises(ValueError, match="no quality suite"):
        validate_table("training_dataset", raw)


def test_rules_see_across_chunks(items, users):
    """Partitions assembled from importer batches are multi-chunk: a repeat in a later chunk counts."""
    first = _raw([{**GOOD, "impression_id": "a"}, {**GOOD, "impression_id": "b"}])
    second = _raw([{**GOOD, "impression_id": "a"}, {**GOOD, "impression_id": "c", "user_id": "ghost"}])
    raw = pa.concat_tables([first, second])
    assert raw.column("impression_id").num_chunks == 2
    clean, quarantine, report = split_clean_impressions(raw, partition=DAY, items=items, users=users)
    assert clean.column("impression_id").to_pylist() == ["a", "b"]
    assert dict(
        zip(quarantine.column("source_row").to_pylist(), quarantine.column("rule").to_pylist(), strict=True)
    ) == {
        2: "impression_id_unique",
        3: "user_id_known",
    }
    assert report.rows_in == report.rows_clean + report.rows_quarantined == 4
