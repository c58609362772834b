"""Staging: each impressions file is parsed once into per-day shards that hold exactly the rows
(and quarantine rows) partition-by-partition import would give each day."""

import csv as pycsv

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ctr_dagster.errors import MalformedInputError
from ctr_dagster.importers import iter_impressions, load_mapping
from ctr_dagster.importers import staging as staging_mod
from tests.test_importers import EPOCH, impressions_mapping, log_rows, write_csv, write_mapping

DAYS = ["2024-01-01", "2024-01-02", "2024-01-03", "2024-01-04"]


def _messy_log(tmp_path):
    """Three days of rows plus stragglers, an unparseable cell, an undated row, a pre-start row."""
    rows = {k: [str(v) for v in vals] for k, vals in log_rows(90, days=3).items()}
    rows["event_time"][5] = str(EPOCH + 3 * 86_400 + 7)  # straggler on day 4
    rows["slot"][10] = "top"  # unparseable: quarantined on its day
    rows["event_time"][20] = ""  # undated: the first partition
    rows["event_time"][30] = str(EPOCH - 500)  # before start_date: out of range
    return write_csv(tmp_path / "logs" / "a.csv", rows)


def _direct(mapping, day):
    batches = list(iter_impressions(mapping, day))
    data = pa.Table.from_batches([b.batch for b in batches]) if batches else None
    quarantine = pa.concat_tables([b.quarantine for b in batches]) if batches else None
    return data, quarantine


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_staged_days_equal_partition_by_partition_import(tmp_path, fmt):
    path = _messy_log(tmp_path)
    if fmt == "parquet":
        pq.write_table(
            pa.csv.read_csv(
                path,
                convert_options=pa.csv.ConvertOptions(column_types={c: pa.string() for c in log_rows(1)}),
            ),
            tmp_path / "logs" / "a.parquet",
        )
        path.unlink()
    mapping = load_mapping(write_mapping(tmp_path, impressions_mapping(f"logs/*.{fmt}")))
    staged_file = next((tmp_path / "logs").iterdir())
    root = tmp_path / "staging"
    plan = staging_mod.plan_import(mapping, root)
    assert (plan.first, plan.last, plan.days) == ("2024-01-01", "2024-01-04", DAYS)
    assert plan.out_of_range == {"2023-12-31": 1} and plan.rows_read == 90 and plan.undated == 1
    total = 0
    for day in DAYS:
        [(file, staged)] = staging_mod.files_for_day(mapping, day, root)
        data, quarantine, provenance = staging_mod.read_day(staged, day)
        expected_data, expected_quarantine = _direct(mapping, day)
        assert file == staged_file and provenance.num_rows == data.num_rows
        assert set(provenance.column("source_file").to_pylist()) <= {str(staged_file)}
        assert data.to_pylist() == (expected_data.to_pylist() if expected_data is not None else [])
        assert quarantine.to_pylist() == (
            expected_quarantine.to_pylist() if expected_quarantine is not None else []
        )
        total += data.num_rows + quarantine.num_rows
    assert total + 1 == 90  # every row lands on exactly one day, in data or in quarantine, or out of range
    assert staging_mod.files_for_day(mapping, "2023-12-31", root) == []  # out of range: no partition
    staged = staging_mod.stage(mapping, staged_file, root)
    straggler, _, origin = staging_mod.read_day(staged, "2024-01-04")
    assert straggler.num_rows == 1 and origin.column("source_row").to_pylist() == [6]  # 1-based data row

    def first_day_rows(**kwargs) -> list[int]:
        _, quarantine, origin = staging_mod.read_day(staged, "2024-01-01", **kwargs)
        return origin.column("source_row").to_pylist() + quarantine.column("source_row").to_pylist()

    assert 21 in first_day_rows()  # the undated row (null, or unparseable text in Parquet): first partition
    assert 21 not in first_day_rows(undated=False)


def test_a_file_is_parsed_once_and_restaged_when_it_changes(tmp_path, monkeypatch):
    path = _messy_log(tmp_path)
    mapping = load_mapping(write_mapping(tmp_path, impressions_mapping("logs/*.csv")))
    passes = []
    real = staging_mod.iter_file_days
    monkeypatch.setattr(staging_mod, "iter_file_days", lambda m, f: passes.append(f) or real(m, f))
    root = tmp_path / "staging"
    first = staging_mod.stage(mapping, path, root)
    for day in DAYS:
        assert staging_mod.stage(mapping, path, root) == first
        staging_mod.read_day(first, day)
    assert len(passes) == 1

    write_csv(path, log_rows(12))  # the file changes: staged again, the old shards go
    second = staging_mod.stage(mapping, path, root)
    assert second != first and not first.exists() and len(passes) == 2
    assert staging_mod.read_day(second, "2024-01-01")[0].num_rows == 12


def test_a_malformed_file_is_staged_as_its_problem(tmp_path):
    rows = log_rows(10)
    del rows["slot"]
    path = write_csv(tmp_path / "logs" / "bad.csv", rows)
    mapping = load_mapping(write_mapping(tmp_path, impressions_mapping("logs/*.csv")))
    staged = staging_mod.stage(mapping, path, tmp_path / "staging")  # does not raise
    assert "slot" in staging_mod.marker(staged)["skipped"]
    assert [p.name for p in staged.iterdir()] == [staging_mod.DONE]  # no shard, nothing half-staged
    with pytest.raises(MalformedInputError, match="slot") as info:  # the only file: the import fails
        staging_mod.plan_import(mapping, tmp_path / "staging")
    assert info.value.file == str(path) and info.value.column == "slot"


def test_provenance_names_the_file_and_row_of_every_staged_row(tmp_path):
    """Rows of several days interleaved, spread over many parse blocks, with a bad cell and a line
    of the wrong width: every staged row (data or quarantine) names its own file and 1-based data
    row, and each day keeps its rows in file order."""
    rng = np.random.default_rng(3)
    n = 3000
    rows = {k: [str(v) for v in vals] for k, vals in log_rows(n).items()}
    rows["event_time"] = [str(EPOCH + int(d) * 86_400 + 60) for d in rng.integers(0, 4, n)]
    rows["slot"][1234] = "top"  # unparseable: quarantined with its row
    lines = [",".join(rows)] + [",".join(r) for r in zip(*rows.values(), strict=True)]
    lines.insert(700, "only,three,fields")  # data row 700: rejected; later rows shift by one
    folder = tmp_path / "logs"
    folder.mkdir()
    (folder / "a.csv").write_text("\n".join(lines) + "\n")
    write_csv(folder / "b.csv", log_rows(50))
    mapping = load_mapping(
        write_mapping(tmp_path, impressions_mapping("logs/*.csv", csv={"block_size": 4096}))
    )
    by_id = {}  # impression id -> (file, 1-based data row) as written
    for file in ("a.csv", "b.csv"):
        with open(folder / file) as handle:
            for number, record in enumerate(pycsv.DictReader(handle), start=1):
                if record.get("event_id") and record.get("clicked") is not None:
                    by_id.setdefault((file, record["event_id"]), number)
    seen, rejected = [], []
    for day in DAYS:
        for file, staged in staging_mod.files_for_day(mapping, day, tmp_path / "staging"):
            data, quarantine, provenance = staging_mod.read_day(staged, day)
            assert provenance.column("source_file").to_pylist() == [str(file)] * data.num_rows
            source_rows = provenance.column("source_row").to_pylist()
            assert source_rows == sorted(source_rows)  # file order within the day
            ids = data.column("impression_id").to_pylist()
            assert source_rows == [by_id[(file.name, i)] for i in ids]
            seen += [(file.name, r) for r in source_rows]
            seen += [(file.name, r) for r in quarantine.column("source_row").to_pylist()]
            rejected += quarantine.to_pylist()
    expected = [("a.csv", r) for r in range(1, n + 2)] + [("b.csv", r) for r in range(1, 51)]
    assert sorted(seen) == expected  # every line once: n rows + the rejected line, and b's 50
    assert sorted((q["source_row"], q["column"]) for q in rejected) == [(700, None), (1236, "slot")]
    assert all(q["source_file"] == str(folder / "a.csv") for q in rejected)
