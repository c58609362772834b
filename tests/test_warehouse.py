"""Warehouse: atomic writes, idempotent partition replacement, parameterized SQL over Parquet."""

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ctr_dagster.schemas import SchemaError, conform
from ctr_dagster.warehouse import Warehouse


def _table(n: int, offset: int = 0) -> pa.Table:
    return pa.table({"id": list(range(offset, offset + n)), "click": [i % 2 for i in range(n)]})


def test_rematerializing_a_partition_replaces_it(tmp_path):
    wh = Warehouse(tmp_path)
    wh.write("events", _table(10), "2026-11-01")
    wh.write("events", _table(5), "2026-11-02")
    wh.write("events", _table(3, offset=100), "2026-11-01")  # re-run of the same day
    assert wh.partitions("events") == ["2026-11-01", "2026-11-02"]
    assert wh.read("events", ["2026-11-01"]).column("id").to_pylist() == [100, 101, 102]
    assert wh.read("events").num_rows == 8
    # no temporary files are left behind
    assert not [p for p in tmp_path.rglob("*") if p.name.startswith(".tmp-")]


def test_failed_write_keeps_the_previous_file(tmp_path):
    wh = Warehouse(tmp_path)
    wh.write("events", _table(4), "2026-11-01")

    def broken_batches():
        yield pa.RecordBatch.from_pylist([{"id": 1, "click": 0}])
        raise RuntimeError("process died mid-write")

    with pytest.raises(RuntimeError):
        wh.write_batches("events", _table(1).schema, broken_batches(), "2026-11-01")
    assert wh.read("events", ["2026-11-01"]).num_rows == 4
    assert not [p for p in tmp_path.rglob("*") if p.name.startswith(".tmp-")]


def test_streaming_write_counts_rows(tmp_path):
    wh = Warehouse(tmp_path)
    batches = (b for b in _table(10).to_batches(max_chunksize=3))
    path, rows = wh.write_batches("events", _table(1).schema, batches)
    assert rows == 10 and pq.ParquetFile(path).metadata.num_rows == 10


def test_query_is_parameterized(tmp_path):
    wh = Warehouse(tmp_path)
    wh.write("events", _table(10), "2026-11-01")
    wh.write("events", _table(10, offset=10), "2026-11-02")
    out = wh.query("select count(*) as n from ev where click = ? and id >= ?", [1, 5], ev=wh.files("events"))
    assert out.column("n").to_pylist() == [8]
    hostile = "1; drop table ev"
    assert wh.query(
        "select count(*) as n from ev where cast(id as varchar) = ?", [hostile], ev=wh.files("events")
    ).column("n").to_pylist() == [0]


def test_names_are_validated(tmp_path):
    wh = Warehouse(tmp_path)
    with pytest.raises(ValueError, match="invalid table name"):
        wh.path("../escape")
    with pytest.raises(ValueError, match="invalid daily partition"):
        wh.path("events", "2026/11/01")
    with pytest.raises(FileNotFoundError, match="missing partition"):
        wh.read("events", ["2026-11-09"])


def test_conform_names_missing_columns_and_bad_types():
    schema = pa.schema([pa.field("id", pa.int64(), nullable=False), pa.field("name", pa.string())])
    with pytest.raises(SchemaError, match=r"missing required column\(s\) \['name'\]"):
        conform(pa.table({"id": [1]}), schema, source="items.csv")
    with pytest.raises(SchemaError, match="column 'id' has type string"):
        conform(pa.table({"id": ["x"], "name": ["a"]}), schema, source="items.csv")
    with pytest.raises(SchemaError, match="null"):
        conform(pa.table({"id": pa.array([None], pa.int64()), "name": ["a"]}), schema)
    assert conform(pa.table({"name": ["a"], "id": [1], "extra": [0]}), schema).column_names == ["id", "name"]
