"""The user's own files as the raw source: mapping YAML -> catalogue + daily partitions -> clean/quarantine,
and the sensor that turns new inbox files into one run per covered day.

The source is fixed when the code location loads, so the graph runs in a subprocess with
CTR_SOURCE=import (the rest of the suite uses the synthetic world).
"""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.integration

MAPPING = """\
start_date: 2024-03-01
tables:
  impressions:
    files: "inbox/logs-*.csv"
    columns: {impression_id: event_id, request_id: page_id, ts: event_time, user_id: uid,
              item_id: sku, position: slot, click: clicked}
    ts: {unit: s}
    defaults: {treatment: 0, conversion: 0, device: web}
  items:
    files: "catalogue/items.csv"
    columns: {item_id: sku, category: cat, title: name, price: price, first_seen: listed}
  users:
    files: "catalogue/users.csv"
    columns: {user_id: uid, signup_date: joined, region: region, age_group: age}
  item_attributes:
    files: "catalogue/attributes.csv"
    columns: {item_id: sku, attribute: attr, value: val}
"""

DAY1 = 1709251200  # 2024-03-01T00:00:00Z


def _write_inputs(base: Path) -> None:
    (base / "inbox").mkdir(parents=True)
    (base / "catalogue").mkdir()
    (base / "mapping.yaml").write_text(MAPPING)
    (base / "catalogue/items.csv").write_text(
        "sku,cat,name,price,listed\ns1,shoes,Red shoe,10.5,2024-02-01\ns2,bags,Blue bag,20,2024-02-01\n"
        "s3,bags,Broken bag,cheap,2024-02-01\n"  # unparseable price: quarantined, not dropped
    )
    (base / "catalogue/users.csv").write_text(
        "uid,joined,region,age\nu1,2024-01-01,north,2\nu2,2024-01-05,south,3\n"
    )
    (base / "catalogue/attributes.csv").write_text("sku,attr,val\ns1,colour,red\ns2,colour,blue\n")
    rows = ["event_id,page_id,event_time,uid,sku,slot,clicked"]
    for i in range(40):  # 20 rows on each of two days
        day_offset = 0 if i < 20 else 86400
        rows.append(
            f"e{i},p{i // 4},{DAY1 + day_offset + 60 * i},u{1 + i % 2},s{1 + i % 2},{1 + i % 4},{i % 3 == 0:d}"
        )
    rows.append(f"e40,p99,{DAY1 + 100},u1,s1,not-a-number,0")  # unparseable cell: quarantined
    rows.append(f"e41,p99,{DAY1 + 101},u9,s1,1,0")  # unknown user: quarantined by the quality rules
    (base / "inbox/logs-0301.csv").write_text("\n".join(rows) + "\n")


SCRIPT = textwrap.dedent(
    """
    import json, dagster as dg
    from assets.definitions import build_definitions
    from assets.sensors import inbox_sensor
    from ctr_dagster.warehouse import Warehouse

    defs = build_definitions()
    out = {}
    with dg.instance_for_test() as instance:
        context = dg.build_sensor_context(instance=instance)
        requests = inbox_sensor(context)
        out["sensor_days"] = sorted(r.partition_key for r in requests)
        again = inbox_sensor(dg.build_sensor_context(instance=instance, cursor=context.cursor))
        out["second_tick"] = type(again).__name__
        assets, resources = list(defs.assets), dict(defs.resources)
        dg.materialize(assets, selection=["raw_items", "raw_item_attributes", "raw_users", "oracle_item_attributes",
                                  "quarantine_catalogue"],
                       instance=instance, resources=resources)
        for day in out["sensor_days"]:
            dg.materialize(assets, selection=["raw_impressions", "oracle_impressions", "clean_impressions",
                                              "quarantine_impressions"], partition_key=day,
                           instance=instance, resources=resources)
    wh = Warehouse.default()
    out["items"] = wh.read("raw_items").column("item_id").to_pylist()
    out["catalogue_quarantine"] = wh.read("quarantine_catalogue").select(["source_row", "column", "rule"]).to_pylist()
    for day in out["sensor_days"]:
        q = wh.read("quarantine_impressions", [day])
        out[day] = {"clean": wh.read("clean_impressions", [day]).num_rows, "quarantined": q.num_rows,
                    "rules": sorted(q.column("rule").to_pylist()), "details": q.column("detail").to_pylist(),
                    "source_rows": q.column("source_row").to_pylist(),
                    "source_files": q.column("source_file").to_pylist()}
    print(json.dumps(out))
    """
)


def _run_import_location(script: str, base: Path) -> dict:
    """Run `script` with the code location on the import source of `base`; its last line is JSON."""
    env = {
        **os.environ,
        "CTR_SOURCE": "import",
        "CTR_MAPPING": str(base / "mapping.yaml"),
        "CTR_HOME": str(base / "ctr"),
        "PYTHONPATH": str(ROOT),
    }
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_import_source_end_to_end(tmp_path):
    _write_inputs(tmp_path)
    out = _run_import_location(SCRIPT, tmp_path)
    assert out["sensor_days"] == ["2024-03-01", "2024-03-02"]
    assert out["second_tick"] == "SkipReason"  # the cursor remembers the file
    assert out["items"] == ["s1", "s2"]
    assert out["catalogue_quarantine"] == [{"source_row": 3, "column": "price", "rule": "unparseable"}]
    day1, day2 = out["2024-03-01"], out["2024-03-02"]
    assert day2 == {**day2, "clean": 20, "quarantined": 0}
    # 22 rows belong to day 1: 20 clean, one unparseable position, one unknown user; none lost
    assert day1["clean"] == 20 and day1["quarantined"] == 2
    assert any("unparseable" in r for r in day1["rules"]) and any("user_id" in r for r in day1["rules"])
    # both quarantined rows name the user's own file and its 1-based data row (41: e40, 42: e41)
    assert sorted(day1["source_rows"]) == [41, 42]
    assert all(f.endswith("logs-0301.csv") for f in day1["source_files"])
    unparseable = next(d for d, r in zip(day1["details"], day1["rules"], strict=True) if "unparseable" in r)
    assert "position" in unparseable and "not-a-number" in unparseable


FAIL_SCRIPT = textwrap.dedent(
    """
    import json, dagster as dg
    from assets.definitions import build_definitions

    defs = build_definitions()
    with dg.instance_for_test() as instance:
        assets, resources = list(defs.assets), dict(defs.resources)
        dg.materialize(assets, selection=["raw_items", "raw_item_attributes", "raw_users", "oracle_item_attributes",
                                          "quarantine_catalogue"], instance=instance, resources=resources)
        result = dg.materialize(assets, selection=["raw_impressions", "oracle_impressions"], partition_key="2024-03-01",
                                instance=instance, resources=resources, raise_on_error=False)
        failure = next(e for e in result.all_events if e.is_step_failure)
        error, messages = failure.step_failure_data.error, []
        while error is not None:  # Dagster wraps the user error: walk the cause chain
            messages.append(error.message)
            error = error.cause
        print(json.dumps({"success": result.success, "error": " | ".join(messages)}))
    """
)


def test_malformed_file_fails_the_day_naming_file_and_column(tmp_path):
    _write_inputs(tmp_path)
    bad = tmp_path / "inbox/logs-0302.csv"
    bad.write_text(
        "event_id,page_id,event_time,uid,sku,clicked\ne1,p1,1709251300,u1,s1,0\n"
    )  # no `slot` column
    out = _run_import_location(FAIL_SCRIPT, tmp_path)
    assert out["success"] is False
    assert "logs-0302.csv" in out["error"] and "slot" in out["error"]
    assert bad.exists()  # the file is left where it was: nothing is lost
    assert not (tmp_path / "ctr/warehouse/raw_impressions/dt=2024-03-01").exists()
