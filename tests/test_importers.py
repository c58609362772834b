"""Generic importer: CSV/Parquet + a YAML mapping -> canonical tables, streaming, nothing lost."""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
import yaml

from ctr_dagster import schemas
from ctr_dagster.errors import MalformedInputError
from ctr_dagster.importers import (
    MappingError,
    iter_impressions,
    load_mapping,
    read_catalogue,
    scan_days,
)

START = dt.date(2024, 1, 1)
EPOCH = int(dt.datetime(2024, 1, 1, tzinfo=dt.UTC).timestamp())
COLUMNS = {
    "impression_id": "event_id",
    "request_id": "req",
    "ts": "event_time",
    "user_id": "uid",
    "item_id": "sku",
    "position": "slot",
    "click": "clicked",
}


def write_mapping(folder: Path, impressions: dict, **extra) -> Path:
    doc = {
        "start_date": START.isoformat(),
        "tables": {"impressions": impressions, **extra.pop("tables", {})},
        **extra,
    }
    path = folder / "mapping.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def impressions_mapping(files: str, **overrides) -> dict:
    return {
        "files": files,
        "columns": dict(COLUMNS),
        "ts": {"unit": "s"},
        "defaults": {"treatment": 0, "conversion": 0},
        **overrides,
    }


def log_rows(n: int, *, days: int = 1, seconds_offset: int = 0) -> dict[str, list]:
    span = days * 86_400
    return {
        "event_id": [f"e{i}" for i in range(n)],
        "req": [f"r{i // 3}" for i in range(n)],
        "event_time": [EPOCH + seconds_offset + (i * span) // n for i in range(n)],
        "uid": [f"u{i % 7}" for i in range(n)],
        "sku": [f"i{i % 5}" for i in range(n)],
        "slot": [1 + i % 10 for i in range(n)],
        "clicked": [i % 2 for i in range(n)],
    }


def write_csv(path: Path, columns: dict[str, list]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pacsv.write_csv(pa.table(columns), path)
    return path


def collect(mapping, day: str):
    parts = list(iter_impressions(mapping, day))
    batch = pa.Table.from_batches([p.batch for p in parts], schema=schemas.RAW_IMPRESSIONS)
    quarantine = pa.concat_tables([schemas.empty(schemas.QUARANTINE), *[p.quarantine for p in parts]])
    return parts, batch, quarantine


def test_csv_import_with_mapping_defaults_and_epoch_seconds(tmp_path):
    write_csv(tmp_path / "logs" / "a.csv", {**log_rows(20), "noise": ["x"] * 20})
    mapping = load_mapping(write_mapping(tmp_path, impressions_mapping("logs/*.csv")))
    parts, table, quarantine = collect(mapping, "2024-01-01")

    assert table.num_rows == 20 and quarantine.num_rows == 0
    assert table.schema.equals(schemas.RAW_IMPRESSIONS)
    first = table.slice(0, 1).to_pylist()[0]
    assert first == {
        "impression_id": "e0",
        "request_id": "r0",
        "ts": dt.datetime(2024, 1, 1, tzinfo=dt.UTC),
        "user_id": "u0",
        "item_id": "i0",
        "position": 1,
        "device": None,
        "treatment": 0,
        "click": 0,
        "conversion": 0,
        "history_item_ids": None,
    }
    assert parts[0].source_file.endswith("a.csv")
    assert parts[0].source_rows.to_pylist()[:3] == [1, 2, 3]
    assert list(iter_impressions(mapping, "2024-01-02")) == []


def test_parquet_import_with_numeric_ids_and_formatted_time_strings(tmp_path):
    rows = log_rows(12)
    stamps = [dt.datetime.fromtimestamp(t, dt.UTC).strftime("%d/%m/%Y %H:%M:%S") for t in rows["event_time"]]
    table = pa.table(
        {
            **rows,
            "event_time": stamps,
            "uid": pa.array(range(12), pa.int64()),
            "platform": ["ios"] * 12,
            "treat": pa.array([True, False] * 6),
        }
    )
    (tmp_path / "pq").mkdir()
    pq.write_table(table, tmp_path / "pq" / "day.parquet")
    columns = {**COLUMNS, "device": "platform", "treatment": "treat"}
    mapping = load_mapping(
        write_mapping(
            tmp_path,
            impressions_mapping(
                "pq/*.parquet",
                columns=columns,
                ts={"format": "%d/%m/%Y %H:%M:%S"},
                defaults={"conversion": 0},
            ),
        )
    )
    _, out, quarantine = collect(mapping, "2024-01-01")

    assert out.num_rows == 12 and quarantine.num_rows == 0
    assert out.column("user_id").to_pylist()[:3] == ["0", "1", "2"]
    assert out.column("device").to_pylist() == ["ios"] * 12
    assert out.column("treatment").to_pylist() == [1, 0] * 6
    expected = [dt.datetime.fromtimestamp(t, dt.UTC) for t in rows["event_time"]]
    assert out.column("ts").to_pylist() == expected


def test_iso_and_zoned_times_parse(tmp_path):
    rows = log_rows(3)
    rows["event_time"] = ["2024-01-01T10:00:00Z", "2024-01-01 11:00:00", "2024-01-01T14:00:00+02:00"]
    write_csv(tmp_path / "iso.csv", rows)
    mapping = load_mapping(
        write_mapping(tmp_path, impressions_mapping("iso.csv", ts={"timezone": "Europe/Berlin"}))
    )
    _, out, _ = collect(mapping, "2024-01-01")
    hours = [t.hour for t in out.column("ts").to_pylist()]
    assert hours == [10, 10, 12]  # Z kept, naive read as Berlin (UTC+1), offset applied


def test_unparseable_cells_are_quarantined_naming_file_row_and_column(tmp_path):
    rows = log_rows(10)
    rows = {k: [str(v) for v in vals] for k, vals in rows.items()}
    rows["slot"][3] = "third"  # data row 4
    rows["event_time"][6] = "yesterday"  # data row 7: cannot be dated -> the first partition
    rows["clicked"][8] = " 1 "  # whitespace is fine
    path = write_csv(tmp_path / "bad.csv", rows)
    mapping = load_mapping(write_mapping(tmp_path, impressions_mapping("bad.csv")))
    _, out, quarantine = collect(mapping, "2024-01-01")

    assert out.num_rows == 8 and quarantine.num_rows == 2
    assert out.column("click").to_pylist()[-2] == 1
    bad = {r["source_row"]: r for r in quarantine.to_pylist()}
    assert set(bad) == {4, 7}
    assert bad[4]["column"] == "slot" and bad[4]["rule"] == "unparseable"
    assert str(path) in bad[4]["detail"] and "row 4" in bad[4]["detail"] and "'third'" in bad[4]["detail"]
    assert bad[4]["source_file"] == str(path) and bad[4]["table"] == "raw_impressions"
    assert json.loads(bad[4]["record"])["slot"] == "third"
    assert bad[7]["column"] == "event_time" and "'yesterday'" in bad[7]["detail"]


def test_ragged_line_is_quarantined_and_later_rows_keep_their_numbers(tmp_path):
    path = tmp_path / "ragged.csv"
    lines = ["event_id,req,event_time,uid,sku,slot,clicked"]
    lines += [f"e{i},r,{EPOCH + i},u1,i1,1,0" for i in range(3)]
    lines.insert(2, "broken,line")  # data row 2
    path.write_text("\n".join(lines) + "\n")
    mapping = load_mapping(write_mapping(tmp_path, impressions_mapping("ragged.csv"), max_bad_fraction=0.5))
    parts, out, quarantine = collect(mapping, "2024-01-01")
    assert out.column("impression_id").to_pylist() == ["e0", "e1", "e2"]
    assert [r for p in parts for r in p.source_rows.to_pylist()] == [1, 3, 4]
    row = quarantine.to_pylist()[0]
    assert row["source_row"] == 2 and row["column"] is None and "broken,line" in row["detail"]


def test_missing_mapped_column_raises_naming_file_and_column(tmp_path):
    rows = log_rows(5)
    del rows["slot"]
    path = write_csv(tmp_path / "noslot.csv", rows)
    mapping = load_mapping(write_mapping(tmp_path, impressions_mapping("noslot.csv")))
    with pytest.raises(MalformedInputError) as info:
        list(iter_impressions(mapping, "2024-01-01"))
    assert info.value.file == str(path) and info.value.column == "slot"
    assert str(path) in str(info.value) and "'slot'" in str(info.value)

    unmapped = impressions_mapping("noslot.csv")
    del unmapped["columns"]["position"]
    mapping = load_mapping(write_mapping(tmp_path, unmapped))
    with pytest.raises(MalformedInputError, match="required column 'position'"):
        list(iter_impressions(mapping, "2024-01-01"))


def test_garbled_files_raise_naming_the_file(tmp_path):
    rng = np.random.default_rng(0)
    (tmp_path / "g").mkdir()
    garbage = tmp_path / "g" / "garbage.csv"
    garbage.write_bytes(rng.integers(0, 256, 5000, dtype=np.uint8).tobytes())
    mapping = load_mapping(write_mapping(tmp_path, impressions_mapping("g/*.csv")))
    with pytest.raises(MalformedInputError) as info:
        list(iter_impressions(mapping, "2024-01-01"))
    assert str(garbage) in str(info.value)

    fake = tmp_path / "g" / "fake.parquet"
    fake.write_bytes(b"PAR1 this is not parquet")
    mapping = load_mapping(write_mapping(tmp_path, impressions_mapping("g/*.parquet")))
    with pytest.raises(MalformedInputError, match="fake.parquet"):
        list(iter_impressions(mapping, "2024-01-01"))


def test_mostly_unparseable_file_and_incompatible_parquet_type_are_rejected(tmp_path):
    rows = {k: [str(v) for v in vals] for k, vals in log_rows(10).items()}
    rows["slot"] = ["top"] * 6 + ["1"] * 4
    path = write_csv(tmp_path / "mostly_bad.csv", rows)
    mapping = load_mapping(write_mapping(tmp_path, impressions_mapping("mostly_bad.csv")))
    with pytest.raises(MalformedInputError) as info:
        list(iter_impressions(mapping, "2024-01-01"))
    assert (info.value.file, info.value.row, info.value.column) == (str(path), 1, "slot")
    assert "6 of 10 rows" in str(info.value)

    table = pa.table({**log_rows(4), "slot": pa.array([[1], [2], [3], [4]])})
    pq.write_table(table, tmp_path / "listy.parquet")
    mapping = load_mapping(write_mapping(tmp_path, impressions_mapping("listy.parquet")))
    with pytest.raises(MalformedInputError) as info:
        list(iter_impressions(mapping, "2024-01-01"))
    assert info.value.column == "slot" and info.value.row is None and "list" in str(info.value)


def test_import_streams_in_batches(tmp_path):
    write_csv(tmp_path / "big.csv", log_rows(5000))
    mapping = load_mapping(
        write_mapping(tmp_path, impressions_mapping("big.csv", csv={"block_size": 16_384}), batch_size=700)
    )
    parts = list(iter_impressions(mapping, "2024-01-01"))
    assert len(parts) >= 5 and max(p.batch.num_rows for p in parts) < 2000
    assert sum(p.batch.num_rows for p in parts) == 5000
    rows = np.concatenate([p.source_rows.to_numpy() for p in parts])
    assert (rows == np.arange(1, 5001)).all()

    pq.write_table(pa.table(log_rows(5000)), tmp_path / "big.parquet", row_group_size=2000)
    mapping = load_mapping(write_mapping(tmp_path, impressions_mapping("big.parquet"), batch_size=700))
    parts = list(iter_impressions(mapping, "2024-01-01"))
    assert len(parts) >= 8 and max(p.batch.num_rows for p in parts) <= 700
    assert sum(p.batch.num_rows for p in parts) == 5000


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_every_row_lands_in_exactly_one_day(tmp_path, fmt):
    n = 3000
    rows = log_rows(n, days=4, seconds_offset=-3600)  # starts one hour before start_date
    rows["event_time"][10] = None  # undated: the first partition (start_date)
    early = {f"e{i}" for i, t in enumerate(rows["event_time"]) if t is not None and t < EPOCH}
    path = tmp_path / f"multi.{fmt}"
    if fmt == "csv":
        rows["event_time"] = [str(t) if t is not None else "" for t in rows["event_time"]]
        rows["event_time"][20] = "later"  # unparseable
        early.discard("e20")
        pacsv.write_csv(pa.table(rows), path)
    else:  # integer epochs: row groups outside the day are skipped using their statistics
        pq.write_table(pa.table(rows), path, row_group_size=500)
    mapping = load_mapping(write_mapping(tmp_path, impressions_mapping(path.name)))

    seen: list[str] = []
    quarantined: list[int] = []
    days = [(START + dt.timedelta(days=d)).isoformat() for d in range(5)]
    for day in days:
        _, out, quarantine = collect(mapping, day)
        seen += out.column("impression_id").to_pylist()
        quarantined += quarantine.column("source_row").to_pylist()
        lo = dt.datetime.fromisoformat(day).replace(tzinfo=dt.UTC)
        stamps = [t for t in out.column("ts").to_pylist() if t is not None]
        if day != days[0]:
            assert all(lo <= t < lo + dt.timedelta(days=1) for t in stamps)
    assert quarantined == ([21] if fmt == "csv" else [])
    # rows dated before start_date are out of range: in no partition (the staging counts them)
    assert len(early) == (30 if fmt == "csv" else 31) and not early & set(seen)
    assert len(seen) + len(quarantined) + len(early) == n
    assert len(set(seen)) == len(seen) == n - len(quarantined) - len(early)
    assert "e10" in seen  # the undated row went to start_date's partition
    assert scan_days(mapping, path) == set(days[:4])


def test_scan_days_uses_parquet_statistics_and_timestamps(tmp_path):
    stamps = [dt.datetime(2024, 1, d, 12, tzinfo=dt.UTC) for d in (2, 2, 3, 5)]
    table = pa.table({**log_rows(4), "event_time": pa.array(stamps, pa.timestamp("us", tz="UTC"))})
    pq.write_table(table, tmp_path / "stamps.parquet", row_group_size=2)
    mapping = load_mapping(write_mapping(tmp_path, impressions_mapping("stamps.parquet", ts={})))
    assert scan_days(mapping, tmp_path / "stamps.parquet") == {"2024-01-02", "2024-01-03", "2024-01-05"}
    _, out, _ = collect(mapping, "2024-01-05")
    assert out.column("ts").to_pylist() == [stamps[3]]


def test_read_catalogue_conforms_and_quarantines(tmp_path):
    items = {
        "sku": ["a", "b", "b", "c", "d"],
        "name": ["A", "B", "B2", None, "D"],
        "cat": ["x"] * 5,
        "price_eur": ["1.5", "2", "3", "4", "cheap"],
        "listed_on": ["01/01/2024", "02/01/2024", "02/01/2024", "03/01/2024", "04/01/2024"],
    }
    write_csv(tmp_path / "items.csv", items)
    users = {"user_id": ["u1", "u2"], "created": ["2023-12-31", "2024-01-01"], "age_group": ["3", ""]}
    write_csv(tmp_path / "users.csv", users)
    mapping = load_mapping(
        write_mapping(
            tmp_path,
            impressions_mapping("logs/*.csv"),
            tables={
                "items": {
                    "files": "items.csv",
                    "columns": {
                        "item_id": "sku",
                        "title": "name",
                        "category": "cat",
                        "price": "price_eur",
                        "first_seen": "listed_on",
                    },
                    "parse": {"first_seen": {"format": "%d/%m/%Y"}},
                },
                "users": {"files": "users.csv", "columns": {"signup_date": "created"}},
            },
        )
    )
    clean, quarantine = read_catalogue(mapping, "items")
    assert clean.schema.equals(schemas.ITEMS)
    assert clean.column("item_id").to_pylist() == ["a", "b"]
    assert clean.column("first_seen").to_pylist() == [dt.date(2024, 1, 1), dt.date(2024, 1, 2)]
    rules = {r["source_row"]: (r["rule"], r["source_file"]) for r in quarantine.to_pylist()}
    assert rules == {
        3: ("item_id_unique", str(tmp_path / "items.csv")),
        4: ("title_not_null", str(tmp_path / "items.csv")),
        5: ("unparseable", str(tmp_path / "items.csv")),
    }

    users_clean, users_q = read_catalogue(mapping, "users")
    assert users_clean.schema.equals(schemas.USERS) and users_q.num_rows == 0
    assert users_clean.column("age_group").to_pylist() == [3, None]


def test_mapping_errors_name_the_bad_key(tmp_path):
    bad = impressions_mapping("x.csv")
    bad["columns"]["clicks"] = "clicked"
    with pytest.raises(MappingError, match=r"tables\.impressions\.columns\.clicks"):
        load_mapping(write_mapping(tmp_path, bad))
    with pytest.raises(MappingError, match=r"tables\.impressions\.defaults\.treatment"):
        load_mapping(write_mapping(tmp_path, impressions_mapping("x.csv", defaults={"treatment": "maybe"})))
    with pytest.raises(MappingError, match=r"'tables\.impressions\.ts\.unit'"):
        load_mapping(write_mapping(tmp_path, impressions_mapping("x.csv", ts={"unit": "days"})))
    with pytest.raises(MappingError, match=r"'end_date': 2023-12-31 is before start_date"):
        load_mapping(write_mapping(tmp_path, impressions_mapping("x.csv"), end_date="2023-12-31"))
    with pytest.raises(MappingError, match=r"'tables\.impressions\.colums': unknown key"):
        load_mapping(write_mapping(tmp_path, {**impressions_mapping("x.csv"), "colums": {}}))


def test_example_mapping_is_valid():
    example = Path(__file__).resolve().parents[1] / "examples" / "mapping.example.yaml"
    mapping = load_mapping(example)
    assert set(mapping.tables) == {"impressions", "items", "users", "item_attributes"}
    assert mapping.table("impressions").time_spec("ts").unit == "s"
    assert os.path.samefile(mapping.root, example.parent)
