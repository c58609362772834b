"""Nothing lost, one file at a time: bad files are skipped and reported, bad cells quarantine only
their row (naming file, 1-based row and column), days come from the data, rows outside the window
are counted, and every quarantine message names the user's own file and row."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pyarrow as pa
import pytest

from ctr_dagster import schemas
from ctr_dagster.errors import MalformedInputError
from ctr_dagster.importers import MappingError, iter_impressions, parse_mapping, read_catalogue
from ctr_dagster.importers import staging as staging_mod
from ctr_dagster.importers.day_index import days_by_file
from ctr_dagster.quality import split_clean

DAY1 = int(dt.datetime(2024, 3, 1, tzinfo=dt.UTC).timestamp())
HEADER = "event_id,event_time,uid,sku,slot,clicked"
COLUMNS = {
    "impression_id": "event_id",
    "request_id": "event_id",
    "ts": "event_time",
    "user_id": "uid",
    "item_id": "sku",
    "position": "slot",
    "click": "clicked",
}


def _mapping(base: Path, files="logs/*.csv", csv: dict | None = None, **extra):
    impressions = {
        "files": files,
        "columns": COLUMNS,
        "ts": {"unit": "s"},
        "defaults": {"treatment": 0, "conversion": 0},
        **({"csv": csv} if csv else {}),
    }
    tables = {"impressions": impressions, **extra.pop("tables", {})}
    return parse_mapping({"tables": tables, **extra}, base=base)


def _line(i: int, ts: int, uid: str = "u1") -> str:
    return f"e{i},{ts},{uid},s1,1,0"


def _log(path: Path, lines: list[str], header: str = HEADER) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join([header, *lines]) + "\n")
    return path


def _day(mapping, root: Path, day: str) -> tuple[pa.Table, pa.Table, pa.Table]:
    """(raw rows, unparseable rows, provenance) of one partition, as the raw_day asset gathers them."""
    parts = [staging_mod.read_day(staged, day) for _, staged in staging_mod.files_for_day(mapping, day, root)]
    if not parts:
        return (
            schemas.empty(schemas.RAW_IMPRESSIONS),
            schemas.empty(schemas.QUARANTINE),
            schemas.empty(schemas.PROVENANCE),
        )
    return tuple(pa.concat_tables(p) for p in zip(*parts, strict=True))


# -- B: bad files are skipped and reported -------------------------------------------------------
def test_empty_header_only_and_binary_files_are_skipped_and_the_good_file_imports(tmp_path):
    good = _log(tmp_path / "logs/a_good.csv", [_line(i, DAY1 + i) for i in range(5)])
    empty = tmp_path / "logs/b_empty.csv"
    empty.write_bytes(b"")
    header_only = _log(tmp_path / "logs/c_header.csv", [])
    binary = tmp_path / "logs/d_binary.csv"
    binary.write_bytes(bytes(range(256)) * 40)
    mapping = _mapping(tmp_path)
    root = tmp_path / "staging"

    plan = staging_mod.plan_import(mapping, root)  # no raise, no FileNotFoundError on _SUCCESS
    problems = dict(plan.skipped)
    assert set(problems) == {str(empty), str(header_only), str(binary)}
    assert "empty file" in problems[str(empty)]
    assert "no data rows" in problems[str(header_only)]
    assert "binary" in problems[str(binary)]
    assert plan.days == ["2024-03-01"] and plan.rows_read == 5 and len(plan.files) == 4
    data, quarantine, provenance = _day(mapping, root, "2024-03-01")
    assert data.num_rows == 5 and quarantine.num_rows == 0
    assert set(provenance.column("source_file").to_pylist()) == {str(good)}
    assert staging_mod.plan_import(mapping, root) == plan  # cached: the markers say it all


def test_only_when_every_file_is_bad_does_the_import_fail_naming_each(tmp_path):
    _log(tmp_path / "logs/a.csv", [])
    (tmp_path / "logs/b.csv").write_bytes(b"")
    _log(tmp_path / "logs/c.csv", ["e1,1709251300,u1,s1,0"], header="event_id,event_time,uid,sku,clicked")
    with pytest.raises(MalformedInputError) as info:
        staging_mod.plan_import(_mapping(tmp_path), tmp_path / "staging")
    message = str(info.value)
    assert "tables.impressions" in message
    for name, problem in [("a.csv", "no data rows"), ("b.csv", "empty file"), ("c.csv", "slot")]:
        assert f"{tmp_path / 'logs' / name}: " in message and problem in message


def test_a_bad_catalogue_file_is_skipped_and_reported(tmp_path):
    (tmp_path / "cat").mkdir()
    (tmp_path / "cat/items1.csv").write_text("sku,cat,name,price,listed\ns1,c,A,1,2024-01-01\n")
    (tmp_path / "cat/items2.csv").write_text("sku,cat,name,listed\ns2,c,B,2024-01-01\n")  # no price
    (tmp_path / "cat/items3.csv").write_text("sku,cat,name,price,listed\n")  # header only
    items = {
        "files": "cat/items*.csv",
        "columns": {
            "item_id": "sku",
            "category": "cat",
            "title": "name",
            "price": "price",
            "first_seen": "listed",
        },
    }
    mapping = _mapping(tmp_path, tables={"items": items})
    result = read_catalogue(mapping, "items")
    clean, quarantine = result  # still unpacks as the pair
    assert clean.column("item_id").to_pylist() == ["s1"] and quarantine.num_rows == 0
    problems = dict(result.skipped)
    assert "price" in problems[str(tmp_path / "cat/items2.csv")]
    assert "no data rows" in problems[str(tmp_path / "cat/items3.csv")]

    (tmp_path / "cat/items1.csv").write_text("sku,cat,name,price,listed\n")
    with pytest.raises(MalformedInputError, match="no usable file for tables.items"):
        read_catalogue(mapping, "items")


def test_a_glob_matching_no_file_is_an_error_naming_key_glob_and_root(tmp_path):
    _log(tmp_path / "logs/a.csv", [_line(0, DAY1)])
    with pytest.raises(MappingError) as info:
        staging_mod.plan_import(_mapping(tmp_path, files="inbox/*.csv"), tmp_path / "staging")
    assert "tables.impressions.files" in str(info.value)
    assert "'inbox/*.csv'" in str(info.value) and str(tmp_path) in str(info.value)

    both = _mapping(tmp_path, files=["logs/*.csv", "logz/*.csv"])  # one glob of two is empty: still an error
    with pytest.raises(MappingError, match=r"'logz/\*\.csv' matches no file"):
        staging_mod.plan_import(both, tmp_path / "staging")

    items = {"files": "catalogue/items.csv", "columns": {"item_id": "sku"}}
    with pytest.raises(MappingError, match=r"tables\.items\.files.*'catalogue/items\.csv' matches no file"):
        read_catalogue(_mapping(tmp_path, tables={"items": items}), "items")


# -- C: NUL bytes and bad encodings, per cell, wherever they sit -------------------------------------
@pytest.mark.parametrize("far", [False, True], ids=["near the top", "far down"])
def test_nul_and_invalid_utf8_cells_quarantine_only_their_row(tmp_path, far):
    n = 40_000 if far else 50  # 40k rows: ~1.2 MB, past the header probe and over several blocks
    nul_row, bad_row = (n - 10, n - 5) if far else (2, 4)
    lines = [_line(i, DAY1 + i % 80_000).encode() for i in range(n)]
    lines[nul_row - 1] = f"e{nul_row - 1},{DAY1},u\x001,s1,1,0".encode()  # NUL inside a string cell
    lines[bad_row - 1] = f"e{bad_row - 1},{DAY1},".encode() + b"u\xff\xfe" + b",s1,1,0"  # not UTF-8
    path = tmp_path / "logs/a.csv"
    path.parent.mkdir()
    path.write_bytes(b"\n".join([HEADER.encode(), *lines]) + b"\n")
    mapping = _mapping(tmp_path, csv={"block_size": 65_536} if far else {})
    root = tmp_path / "staging"

    plan = staging_mod.plan_import(mapping, root)
    assert plan.skipped == [] and plan.rows_read == n
    data, quarantine, _ = _day(mapping, root, "2024-03-01")
    assert data.num_rows == n - 2
    assert not any("\x00" in u for u in data.column("user_id").to_pylist())  # nothing passes into the data
    rows = {r["source_row"]: r for r in quarantine.to_pylist()}
    assert set(rows) == {nul_row, bad_row}
    for row in (nul_row, bad_row):
        q = rows[row]
        assert q["rule"] == "unparseable" and q["column"] == "uid" and q["source_file"] == str(path)
        assert q["detail"].startswith(f"{path}, row {row}: column 'uid'")


def test_nul_in_the_header_is_a_binary_file(tmp_path):
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs/a.csv").write_bytes(HEADER.encode().replace(b"uid", b"u\x00id") + b"\n" + b"x" * 10)
    _log(tmp_path / "logs/b.csv", [_line(0, DAY1)])
    [(file, problem)] = staging_mod.plan_import(_mapping(tmp_path), tmp_path / "staging").skipped
    assert file.endswith("a.csv") and "NUL" in problem


# -- A: the days come from the data -----------------------------------------------------------------
def test_rows_outside_the_window_are_counted_not_imported(tmp_path):
    future = int(dt.datetime(2099, 1, 2, 12, tzinfo=dt.UTC).timestamp())
    lines = [_line(i, DAY1 + 86_400 * (i % 2) + i) for i in range(10)]
    lines += [_line(10, future), _line(11, DAY1 - 86_400 * 3)]  # clock error; before start_date
    _log(tmp_path / "logs/a.csv", lines)
    mapping = _mapping(tmp_path, start_date="2024-03-01")
    root = tmp_path / "staging"

    plan = staging_mod.plan_import(mapping, root)
    assert (plan.first, plan.last) == ("2024-03-01", "2024-03-02")
    assert plan.days == ["2024-03-01", "2024-03-02"]
    assert plan.out_of_range == {"2024-02-27": 1, "2099-01-02": 1}
    assert plan.rows_read == 12
    imported = []
    for day in ["2024-02-27", *plan.days, "2099-01-02"]:
        data, quarantine, _ = _day(mapping, root, day)
        imported += data.column("impression_id").to_pylist() + quarantine.column("source_row").to_pylist()
    assert sorted(imported) == sorted(f"e{i}" for i in range(10))  # neither stray row in any partition

    # without start_date the window starts at the earliest day; the future row stays out of range
    plan = staging_mod.plan_import(_mapping(tmp_path), root)
    assert (plan.first, plan.last) == ("2024-02-27", "2024-03-02")
    assert plan.out_of_range == {"2099-01-02": 1}


def test_days_are_the_days_in_the_data_not_a_calendar(tmp_path):
    stamps = {"2024-01-01": 0, "2024-01-05": 4, "2024-03-01": 60}
    base = int(dt.datetime(2024, 1, 1, 6, tzinfo=dt.UTC).timestamp())
    _log(tmp_path / "logs/a.csv", [_line(i, base + 86_400 * d) for i, d in enumerate(stamps.values())])
    _log(tmp_path / "logs/b.csv", ["e9,,u1,s1,1,0", "e10,soon,u1,s1,1,0"])  # undated: first partition
    root = tmp_path / "staging"

    plan = staging_mod.plan_import(_mapping(tmp_path), root)
    assert plan.days == list(stamps) and (plan.first, plan.last) == ("2024-01-01", "2024-03-01")
    assert plan.undated == 2 and plan.out_of_range == {}
    data, quarantine, provenance = _day(_mapping(tmp_path), root, "2024-01-01")
    assert data.column("impression_id").to_pylist() == ["e0", "e9"]  # the null ts: the gate rules on it
    assert (
        quarantine.column("source_row").to_pylist() == [2]
        and "soon" in quarantine.column("detail")[0].as_py()
    )
    assert quarantine.column("partition").to_pylist() == ["2024-01-01"]
    direct = list(iter_impressions(_mapping(tmp_path), "2024-01-01"))  # the same, without staging
    assert [i for b in direct for i in b.batch.column("impression_id").to_pylist()] == ["e0", "e9"]
    assert [q for b in direct for q in b.quarantine.column("partition").to_pylist()] == ["2024-01-01"]
    assert list(iter_impressions(_mapping(tmp_path), "2024-01-05"))[0].batch.num_rows == 1

    mapping = _mapping(tmp_path, start_date="2023-12-25")
    plan = staging_mod.plan_import(mapping, root)
    assert plan.days == ["2023-12-25", *stamps] and plan.first == "2023-12-25"  # the undated rows' home
    assert _day(mapping, root, "2023-12-25")[0].column("impression_id").to_pylist() == ["e9"]
    assert _day(mapping, root, "2024-01-01")[0].column("impression_id").to_pylist() == ["e0"]


def test_the_sensor_assigns_days_as_the_staging_does(tmp_path):
    future = int(dt.datetime(2099, 1, 1, tzinfo=dt.UTC).timestamp())
    _log(tmp_path / "logs/a.csv", [_line(0, DAY1 + 86_400), _line(1, future)])
    _log(tmp_path / "logs/b.csv", [_line(2, DAY1), "e3,,u1,s1,1,0"])
    _log(tmp_path / "logs/c.csv", ["e4,later,u1,s1,1,0", _line(5, DAY1 + 2 * 86_400)])
    mapping = _mapping(tmp_path)
    covered = {f.name: days for f, days in days_by_file(mapping, tmp_path / "index.json").items()}
    plan = staging_mod.plan_import(mapping, tmp_path / "staging")
    staged = {}
    for day in plan.days:
        for file, _ in staging_mod.files_for_day(mapping, day, tmp_path / "staging"):
            staged.setdefault(file.name, set()).add(day)
    assert (
        covered
        == staged
        == {
            "a.csv": {"2024-03-02"},
            "b.csv": {"2024-03-01"},
            "c.csv": {"2024-03-01", "2024-03-03"},  # its undated row goes to the first partition
        }
    )


# -- D: quarantine messages name the user's own file and 1-based row -------------------------------
def test_a_repeat_across_two_files_names_both_source_rows(tmp_path):
    _log(tmp_path / "logs/a.csv", [_line(i, DAY1 + i) for i in range(5)])
    _log(tmp_path / "logs/b.csv", [_line(10 + i, DAY1 + 100 + i) for i in range(6)] + [_line(2, DAY1 + 200)])
    mapping = _mapping(tmp_path)
    root = tmp_path / "staging"
    raw, _, provenance = _day(mapping, root, "2024-03-01")
    _, quarantine, _ = split_clean("raw_impressions", raw, partition="2024-03-01", provenance=provenance)
    [row] = quarantine.to_pylist()
    a, b = tmp_path / "logs/a.csv", tmp_path / "logs/b.csv"
    assert (row["source_file"], row["source_row"], row["rule"]) == (str(b), 7, "impression_id_unique")
    assert row["detail"] == f"{b}, row 7: impression_id 'e2' repeats {a} row 3"


def test_a_catalogue_repeat_across_files_names_both_source_rows(tmp_path):
    (tmp_path / "cat").mkdir()
    (tmp_path / "cat/a.csv").write_text(
        "sku,cat,name,price,listed\ns1,c,A,1,2024-01-01\ns2,c,B,1,2024-01-01\n"
    )
    (tmp_path / "cat/b.csv").write_text(
        "sku,cat,name,price,listed\ns3,c,C,1,2024-01-01\ns2,c,B2,1,2024-01-01\n"
    )
    items = {
        "files": "cat/*.csv",
        "columns": {
            "item_id": "sku",
            "category": "cat",
            "title": "name",
            "price": "price",
            "first_seen": "listed",
        },
    }
    _, quarantine = read_catalogue(_mapping(tmp_path, tables={"items": items}), "items")
    [row] = quarantine.to_pylist()
    a, b = tmp_path / "cat/a.csv", tmp_path / "cat/b.csv"
    assert row["detail"] == f"{b}, row 2: item_id 's2' repeats {a} row 2"
