"""Issue 22: the nightly keeps the attribute table while only the logs changed, and refits when the
catalogue, the config or the code changed, or when the cadence is due."""

import datetime as dt
import json

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from ctr_dagster import attribute_refresh
from ctr_dagster.attribute_refresh import plan_refresh, record_fit


def test_the_plan_keeps_only_the_same_key_within_the_cadence(tmp_path):
    assert not plan_refresh(tmp_path, "k", "2026-11-05", 7, True).keep  # no previous fit
    record_fit(tmp_path, "k", "2026-11-05", {"markdown": {"evaluation": "table"}})
    kept = plan_refresh(tmp_path, "k", "2026-11-06", 7, True)
    assert kept.keep and "1 day(s) of new logs" in kept.reason
    assert kept.previous["shown"]["markdown"]["evaluation"] == "table"
    assert not plan_refresh(tmp_path, "other", "2026-11-06", 7, True).keep  # catalogue/config/code
    assert not plan_refresh(tmp_path, None, "2026-11-06", 7, True).keep  # not fingerprintable
    due = plan_refresh(tmp_path, "k", "2026-11-12", 7, True)
    assert not due.keep and "cadence 7" in due.reason
    assert not plan_refresh(tmp_path, "k", "2026-11-06", 0, True).keep  # 0: refit every run
    assert not plan_refresh(tmp_path, "k", "2026-11-06", 7, False).keep  # the table is gone
    assert not plan_refresh(tmp_path, "k", "2026-11-04", 7, True).keep  # the data went back in time


@pytest.mark.integration
def test_the_asset_keeps_its_table_and_scores_and_refits_on_a_catalogue_change(tmp_path):
    pytest.importorskip("ctr_title_match")
    import dagster as dg

    from assets.attributes import item_attributes
    from assets.resources import WarehouseResource
    from ctr_dagster.datagen import build_world, profile
    from ctr_dagster.testing import synthetic_training_table

    world = build_world(profile("tiny"))
    resource = WarehouseResource(home=str(tmp_path))
    wh = resource.get()
    wh.write("raw_items", world.items())
    wh.write("raw_item_attributes", world.item_attributes())
    wh.write("oracle_item_attributes", world.oracle_item_attributes())
    training = synthetic_training_table("tiny")
    wh.write("training_dataset", training)

    def materialize(refresh_every_days: int = 3) -> dict:
        config = {
            "extractors": ["title_match"],
            "downstream": False,
            "refresh_every_days": refresh_every_days,
        }
        result = dg.materialize(
            [item_attributes],
            resources={"warehouse": resource},
            instance=dg.DagsterInstance.ephemeral(),
            run_config={"ops": {"item_attributes": {"config": config}}},
        )
        (check,) = result.get_asset_check_evaluations()
        assert check.passed
        return result.asset_materializations_for_node("item_attributes")[0].metadata

    first = materialize(0)  # a full build (refit every run) records its fit too
    assert "refresh" not in first and "title_match" in first["evaluation"].value
    record = json.loads((tmp_path / "reports" / "item_attributes" / "fit.json").read_text())
    assert record["data_day"] == pc.max(training.column("ts")).as_py().date().isoformat()
    table = wh.read("item_attributes")

    # one more day of logs, nothing else changed: the table and its scores are kept
    later = training.set_column(
        training.schema.get_field_index("ts"),
        "ts",
        pc.add(training.column("ts"), pa.scalar(dt.timedelta(days=1), pa.duration("us"))).cast(
            training.schema.field("ts").type
        ),
    )
    wh.write("training_dataset", later)
    kept = materialize()
    assert "kept the fit of" in kept["refresh"].value
    assert kept["evaluation"].value == first["evaluation"].value
    assert wh.read("item_attributes").equals(table)

    # a changed catalogue refits
    items = world.items()
    wh.write("raw_items", items.slice(0, items.num_rows - 1))
    refit = materialize()
    assert "refresh" not in refit
    assert attribute_refresh.read_record(tmp_path / "reports" / "item_attributes")["key"] != record["key"]
