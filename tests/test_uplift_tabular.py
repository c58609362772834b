"""Experiment CSVs (`ctr_dagster.uplift.tabular`): Criteo-uplift, Hillstrom and MT-LIFT shapes, arms,
control rules, quarantine with file / row / column, the stratified split."""

from __future__ import annotations

import csv

import numpy as np
import pyarrow as pa
import pytest

from ctr_dagster.errors import MalformedInputError
from ctr_dagster.testing.uplift_files import write_criteo_csv, write_hillstrom_csv, write_mtlift_csv
from ctr_dagster.uplift.tabular import read_experiment


def _located(experiment):
    return sorted((q.row, q.column) for q in experiment.quarantine)


def _all_rows(experiment) -> pa.Table:
    return pa.concat_tables([experiment.train, experiment.valid, experiment.test])


def test_criteo_shape(tmp_path):
    written = write_criteo_csv(tmp_path / "criteo.csv", 1200, seed=1)
    e = read_experiment(
        written.path, treatment="treatment", outcomes=["visit", "conversion"], ignore=["exposure"]
    )
    assert _located(e) == written.bad  # every broken row, by row and column (None: the line itself)
    assert e.rows_read == 1200 and e.rows_kept + len(e.quarantine) == 1200
    assert e.arms == {0: "0", 1: "1"} and "'0'" in e.control_rule
    assert e.outcomes == ["visit", "conversion"]
    assert set(e.features) == {f"f{j}" for j in range(12)} and set(e.features.values()) == {"numeric"}
    table = _all_rows(e)
    assert table.column_names[:3] == ["label", "conversion", "treatment"]
    assert "exposure" not in table.column_names and "visit" not in table.column_names
    assert table.schema.field("label").type == pa.int8() and table.schema.field("treatment").type == pa.int8()
    # conversion is the file's own column, as it is (exposure space)
    assert set(table.column("conversion").to_pylist()) <= {0, 1}
    reasons = {q.column: q.reason for q in e.quarantine}
    assert reasons["visit"] == "outcome must be 0 or 1, got '2'"
    assert reasons["treatment"] == "missing treatment"
    assert reasons["f3"] == "not a number: 'abc'"
    assert "expected 16 fields, found 17" in reasons[None]
    assert all(q.file == str(written.path) for q in e.quarantine)


def test_hillstrom_shape_text_arms_and_features(tmp_path):
    written = write_hillstrom_csv(tmp_path / "hillstrom.csv", 1200, seed=2)
    e = read_experiment(
        written.path,
        treatment="segment",
        outcomes=["visit", "conversion"],
        control="No E-Mail",
        ignore=["spend"],
    )
    assert _located(e) == written.bad
    assert e.arms == {0: "No E-Mail", 1: "Mens E-Mail", 2: "Womens E-Mail"}  # the others in sorted order
    assert "given" in e.control_rule
    assert e.features["history_segment"] == "text" and e.features["zip_code"] == "text"
    assert e.features["channel"] == "text" and e.features["recency"] == "numeric"
    table = _all_rows(e)
    assert table.schema.field("zip_code").type == pa.string()
    assert set(table.column("treatment").to_pylist()) == {0, 1, 2}
    # the default control rule without '0' / 'control': the most frequent value, said so
    default = read_experiment(written.path, treatment="segment", outcomes=["visit"], ignore=["spend"])
    assert "most frequent" in default.control_rule and len(default.arms) == 3
    assert "conversion" not in _all_rows(default).column_names
    assert any("conversion" in n for n in default.notes)  # dropped: it is a contract column name


def test_mtlift_shape_and_stratified_split(tmp_path):
    written = write_mtlift_csv(tmp_path / "mtlift.csv", 2000, seed=3)
    e = read_experiment(written.path, treatment="treatment", outcomes=["click", "conversion"], seed=5)
    assert _located(e) == written.bad
    assert e.arms == {k: str(k) for k in range(5)}
    sizes = {name: t.num_rows for name, t in (("train", e.train), ("valid", e.valid), ("test", e.test))}
    assert sum(sizes.values()) == e.rows_kept == 2000 - 4
    assert abs(sizes["train"] / e.rows_kept - 0.6) < 0.01 and abs(sizes["test"] / e.rows_kept - 0.2) < 0.01
    for split in (e.train, e.valid, e.test):  # every arm in every split, in about the same share
        shares = np.bincount(split.column("treatment").to_numpy(), minlength=5) / split.num_rows
        assert shares.min() > 0.12
    again = read_experiment(written.path, treatment="treatment", outcomes=["click", "conversion"], seed=5)
    other = read_experiment(written.path, treatment="treatment", outcomes=["click", "conversion"], seed=6)
    assert again.test.equals(e.test) and not other.test.equals(e.test)


def test_control_rules_and_numeric_arm_order(tmp_path):
    path = tmp_path / "arms.csv"
    rows = [["arm", "y", "x"]] + [
        [a, str(i % 2), str(i)] for i, a in enumerate(["10", "2", "control", "2"] * 5)
    ]
    with path.open("w", newline="") as fh:
        csv.writer(fh).writerows(rows)
    e = read_experiment(path, treatment="arm", outcomes=["y"])
    assert e.arms == {0: "control", 1: "10", 2: "2"}  # text values (one is not a number): sorted as text
    assert "'control'" in e.control_rule
    numeric = tmp_path / "numeric.csv"
    with numeric.open("w", newline="") as fh:
        csv.writer(fh).writerows(
            [["arm", "y"]] + [[a, str(i % 2)] for i, a in enumerate(["10", "2", "7"] * 5)]
        )
    e = read_experiment(numeric, treatment="arm", outcomes=["y"], control="7")
    assert e.arms == {0: "7", 1: "2", 2: "10"}  # numbers sorted as numbers
    with pytest.raises(MalformedInputError, match="control value '3' does not occur") as info:
        read_experiment(numeric, treatment="arm", outcomes=["y"], control="3")
    assert info.value.column == "arm"


def test_whole_file_errors_name_file_and_column(tmp_path):
    written = write_criteo_csv(tmp_path / "c.csv", 200, seed=0, bad_rows=False)
    with pytest.raises(MalformedInputError, match="no such column") as info:
        read_experiment(written.path, treatment="treat", outcomes=["visit"])
    assert info.value.column == "treat" and info.value.file == str(written.path)
    single = tmp_path / "single.csv"
    single.write_text("t,y,x\n1,0,0.5\n1,1,0.2\n")
    with pytest.raises(MalformedInputError, match="single treatment value"):
        read_experiment(single, treatment="t", outcomes=["y"])
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(MalformedInputError, match="empty file"):
        read_experiment(empty, treatment="t", outcomes=["y"])
    all_bad = tmp_path / "bad.csv"
    all_bad.write_text("t,y\n1,yes\n0,no\n")
    with pytest.raises(MalformedInputError, match="all 2 rows quarantined"):
        read_experiment(all_bad, treatment="t", outcomes=["y"])
    with pytest.raises(ValueError, match="one or two outcome"):
        read_experiment(written.path, treatment="treatment", outcomes=["visit", "conversion", "exposure"])


def test_missing_features_stay_missing_and_bad_bytes_are_quarantined(tmp_path):
    path = tmp_path / "mixed.csv"
    lines = ["t,y,x,city", "0,1,0.5,Paris", "1,0,,Oslo", "1,1,NA,", "0,0,1.5,Lima", "1,0,2.0,Lim\xff"]
    path.write_bytes(("\n".join(lines[:-1]) + "\n").encode() + b"1,0,2.0,Lim\xff\n")
    e = read_experiment(path, treatment="t", outcomes=["y"])
    assert _located(e) == [(5, "city")] and e.quarantine[0].reason == "not UTF-8 text"
    table = _all_rows(e)
    assert table.num_rows == 4
    x = table.column("x").to_numpy(zero_copy_only=False)
    assert np.isnan(x).sum() == 2  # "" and NA: missing, not errors
    assert table.column("city").null_count == 1


def test_quarantine_file(tmp_path):
    written = write_mtlift_csv(tmp_path / "m.csv", 300, seed=0)
    e = read_experiment(written.path, treatment="treatment", outcomes=["click", "conversion"])
    out = e.write_quarantine(tmp_path / "q" / "quarantine.csv")
    with out.open() as fh:
        rows = list(csv.DictReader(fh))
    assert [(int(r["row"]), r["column"] or None) for r in rows] == written.bad
    assert {r["file"] for r in rows} == {str(written.path)}
    summary = e.summary()
    assert summary["rows_quarantined"] == 4 and summary["rows_read"] == 300
    assert summary["quarantine_counts"]["treatment: missing treatment"] == 1
