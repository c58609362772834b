"""The user's own files as the raw source: mapping YAML -> catalogue + daily partitions -> clean/quarantine,
and the sensor that turns new inbox files into one run per covered day.

The daily partitions follow the source, so the code location is built here, in-process, for
import settings (`build_definitions(Settings(source="import", ...))`) beside the synthetic ones the
rest of the suite uses.
"""

from pathlib import Path

import dagster as dg
import pytest

from ctr_dagster.settings import Settings

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


CATALOGUE = [
    "raw_items",
    "raw_item_attributes",
    "raw_attribute_taxonomy",
    "raw_attribute_negatives",
    "raw_users",
    "oracle_item_attributes",
    "quarantine_catalogue",
]
DAY = ["raw_impressions", "oracle_impressions", "clean_impressions", "quarantine_impressions"]


def _import_settings(base: Path) -> Settings:
    return Settings(source="import", mapping=base / "mapping.yaml", home=base / "ctr")


def test_import_source_end_to_end(tmp_path):
    from assets.definitions import build_definitions
    from ctr_dagster.warehouse import Warehouse

    _write_inputs(tmp_path)
    settings = _import_settings(tmp_path)
    defs = build_definitions(settings)
    sensor = defs.resolve_sensor_def("inbox_sensor")
    with dg.instance_for_test() as instance:
        with dg.build_sensor_context(instance=instance) as context:
            requests = sensor(context)
        days = sorted(r.partition_key for r in requests)
        with dg.build_sensor_context(instance=instance, cursor=context.cursor) as second:
            again = sensor(second)
        assets, resources = list(defs.assets), dict(defs.resources)
        dg.materialize(assets, selection=CATALOGUE, instance=instance, resources=resources)
        for day in days:
            dg.materialize(assets, selection=DAY, partition_key=day, instance=instance, resources=resources)
    wh = Warehouse(settings.ctr_home.warehouse)
    assert days == ["2024-03-01", "2024-03-02"]
    assert isinstance(again, dg.SkipReason)  # the cursor remembers the file
    assert wh.read("raw_items").column("item_id").to_pylist() == ["s1", "s2"]
    assert wh.read("quarantine_catalogue").select(["source_row", "column", "rule"]).to_pylist() == [
        {"source_row": 3, "column": "price", "rule": "unparseable"}
    ]
    assert wh.read("raw_attribute_taxonomy").num_rows == 0  # imported data publishes no taxonomy
    out = {}
    for day in days:
        q = wh.read("quarantine_impressions", [day])
        out[day] = {
            "clean": wh.read("clean_impressions", [day]).num_rows,
            "quarantined": q.num_rows,
            "rules": sorted(q.column("rule").to_pylist()),
            "details": q.column("detail").to_pylist(),
            "source_rows": q.column("source_row").to_pylist(),
            "source_files": q.column("source_file").to_pylist(),
        }
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


def test_a_bad_file_is_skipped_and_reported_while_the_others_import(tmp_path):
    from assets.definitions import build_definitions
    from ctr_dagster.sources import Source
    from ctr_dagster.warehouse import Warehouse

    _write_inputs(tmp_path)
    bad = tmp_path / "inbox/logs-0302.csv"
    bad.write_text(
        "event_id,page_id,event_time,uid,sku,clicked\ne1,p1,1709251300,u1,s1,0\n"
    )  # no `slot` column
    settings = _import_settings(tmp_path)
    [(file, problem)] = Source(settings).import_plan().skipped
    assert file == str(bad) and "slot" in problem
    defs = build_definitions(settings)
    with dg.instance_for_test() as instance:
        assets, resources = list(defs.assets), dict(defs.resources)
        dg.materialize(assets, selection=CATALOGUE, instance=instance, resources=resources)
        result = dg.materialize(
            assets,
            selection=["raw_impressions", "oracle_impressions"],
            partition_key="2024-03-01",
            instance=instance,
            resources=resources,
        )
    assert result.success  # the good file's rows import; the bad file does not fail the day
    assert Warehouse(settings.ctr_home.warehouse).read("raw_impressions", ["2024-03-01"]).num_rows == 21
    assert bad.exists()  # the file is left where it was: nothing is lost
