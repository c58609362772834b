"""`ctr uplift --csv FILE ...`: experiment files in Criteo-uplift, Hillstrom and MT-LIFT shape (with broken
rows), the printed table, --json, the quarantine file, exit codes. Fits the two meta-learners only
(`--models`), which ctr-metalearners installs."""

from __future__ import annotations

import csv
import json

import pytest
from typer.testing import CliRunner

from ctr_dagster.cli import app
from ctr_dagster.testing.uplift_files import write_criteo_csv, write_hillstrom_csv, write_mtlift_csv

runner = CliRunner()
LEARNERS = "s_learner,t_learner"


def _run(tmp_path, *args: str):
    return runner.invoke(app, ["--home", str(tmp_path / "home"), "uplift", *args, "--models", LEARNERS])


def test_hillstrom_table_and_quarantine(tmp_path):
    written = write_hillstrom_csv(tmp_path / "hillstrom.csv", 1500, seed=0)
    result = _run(
        tmp_path,
        "--csv", str(written.path), "--treatment", "segment", "--outcome", "visit", "--outcome", "conversion",
        "--control", "No E-Mail", "--ignore", "spend", "--plots", str(tmp_path / "plots"),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "1500 rows read, 1496 kept, 4 quarantined" in out
    assert "control = 'No E-Mail': given" in out and "arm 1 = 'Mens E-Mail', arm 2 = 'Womens E-Mail'" in out
    assert "AUUC [95% CI]" in out and "Qini [95% CI]" in out
    for model in ("s_learner", "t_learner"):
        for arm in ("1 (Mens E-Mail)", "2 (Womens E-Mail)"):
            for stage in ("click", "conversion"):
                assert any(model in line and arm in line and stage in line for line in out.splitlines())
    # every broken row is named with its file, row and column
    for row, column in written.bad:
        place = f"file {written.path}, row {row}" + (f", column '{column}'" if column else "")
        assert place in out
    quarantine = tmp_path / "home" / "uplift" / "hillstrom-quarantine.csv"
    assert f"quarantined 4 row(s) -> {quarantine}" in out
    with quarantine.open() as fh:
        assert [(int(r["row"]), r["column"] or None) for r in csv.DictReader(fh)] == written.bad
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == [
        "uplift_hillstrom_click.png",
        "uplift_hillstrom_conversion.png",
    ]


def test_criteo_json(tmp_path):
    written = write_criteo_csv(tmp_path / "criteo.csv", 1500, seed=1)
    result = _run(
        tmp_path, "--csv", str(written.path), "--treatment", "treatment", "--outcome", "visit",
        "--outcome", "conversion", "--ignore", "exposure", "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["scored"] == ["s_learner", "t_learner"] and doc["failed"] == {}
    assert doc["experiment"]["rows_read"] == 1500 and doc["experiment"]["rows_quarantined"] == 4
    assert doc["experiment"]["arms"] == {"0": "0", "1": "1"}
    assert sorted((q["row"], q["column"]) for q in doc["experiment"]["quarantine"]) == written.bad
    rows = doc["uplift"]["rows"]
    assert {(r["model"], r["arm"], r["stage"]) for r in rows} == {
        (m, 1, s) for m in ("s_learner", "t_learner") for s in ("click", "conversion")
    }
    for r in rows:
        assert r["auuc_low"] <= r["auuc"] <= r["auuc_high"] or r["auuc"] is None
        assert r["n_treated"] > 0 and r["n_control"] > 0 and r["verdict"]
    assert doc["quarantine_file"].endswith("criteo-quarantine.csv")


def test_mtlift_five_arms_one_outcome(tmp_path):
    written = write_mtlift_csv(tmp_path / "mtlift.csv", 2000, seed=2)
    result = _run(
        tmp_path, "--csv", str(written.path), "--treatment", "treatment", "--outcome", "click", "--json"
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["uplift"]["stages"] == ["click"]
    assert {r["arm"] for r in doc["uplift"]["rows"]} == {1, 2, 3, 4}
    # one outcome: the file's conversion column is not a feature (it would collide with the contract's)
    assert "conversion" not in doc["experiment"]["features"]
    # the conversion column's broken row is not a problem any more: 3 rows quarantined
    assert doc["experiment"]["rows_quarantined"] == 3


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--treatment", "arm", "--outcome", "visit"], "column 'arm': no such column"),
        (["--treatment", "treatment", "--outcome", "visit", "--outcome", "conversion", "--outcome", "f0"],
         "give --outcome once or twice"),
        (["--treatment", "treatment", "--outcome", "visit", "--control", "9"], "control value '9' does not occur"),
    ],
)  # fmt: skip
def test_bad_options_exit_2(tmp_path, args, message):
    written = write_criteo_csv(tmp_path / "criteo.csv", 200, seed=0, bad_rows=False)
    result = _run(tmp_path, "--csv", str(written.path), *args)
    assert result.exit_code == 2 and message in result.output


def test_unknown_model_and_missing_file_exit_2(tmp_path):
    written = write_criteo_csv(tmp_path / "criteo.csv", 200, seed=0, bad_rows=False)
    result = runner.invoke(
        app, ["uplift", "--csv", str(written.path), "--treatment", "treatment", "--outcome", "visit",
              "--models", "nope"],
    )  # fmt: skip
    assert result.exit_code == 2 and "unknown uplift model(s) ['nope']" in result.output
    assert "s_learner" in result.output and "t_learner" in result.output
    missing = _run(tmp_path, "--csv", str(tmp_path / "none.csv"), "--treatment", "t", "--outcome", "y")
    assert missing.exit_code == 2 and "none.csv" in missing.output


def test_installed_uplift_plugins_are_found():
    from ctr_dagster.uplift.experiment import uplift_plugins

    plugins, _broken = uplift_plugins()
    names = [p.name for p in plugins]
    assert {"s_learner", "t_learner"} <= set(names)
    assert all(p.cls.task == "uplift" for p in plugins)
