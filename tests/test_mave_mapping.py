"""MAVE files through the import mapping: items and item_attributes from MAVE JSONL (`format: mave`),
the negatives carried to `Catalogue.attribute_negatives` / `raw_attribute_negatives`, and a published
taxonomy (`attribute_taxonomy`) for imported data. Every file is written by the test."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import dagster as dg
import pytest
import yaml

from ctr_dagster import schemas
from ctr_dagster.errors import MalformedInputError
from ctr_dagster.importers import MappingError, load_mapping, read_catalogue
from ctr_dagster.settings import Settings
from ctr_dagster.sources import Source

DAY1 = 1709251200  # 2024-03-01T00:00:00Z


def _line(pid: str, title: str, category: str, positives: dict[str, str], negatives=()) -> dict:
    attributes = []
    for key, value in positives.items():
        begin = title.index(value)
        attributes.append(
            {"key": key, "evidences": [{"value": value, "pid": 0, "begin": begin, "end": begin + len(value)}]}
        )
    attributes += [{"key": key, "evidences": []} for key in negatives]
    paragraphs = [{"text": title, "source": "title"}, {"text": f"About {title}", "source": "description"}]
    return {"id": pid, "category": category, "paragraphs": paragraphs, "attributes": attributes}


def _write_inputs(base: Path, taxonomy: bool = True) -> Path:
    lines = [
        _line("s1", "Red cotton shirt", "Shirts", {"Color": "Red", "Material": "cotton"}, ["Sleeve Style"]),
        _line("s2", "Blue mug", "Mugs", {"Color": "Blue"}, ["Capacity", "Material"]),
        _line("s3", "Plain bag", "Bags", {}, ["Color"]),  # only negatives: still an item
        '{"id": "s4", "category": ',  # truncated: quarantined once, with its line
    ]
    (base / "catalogue").mkdir(parents=True)
    (base / "catalogue/products.jsonl").write_text(
        "\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n"
    )
    (base / "catalogue/users.csv").write_text("uid,joined\nu1,2024-01-01\nu2,2024-01-05\n")
    (base / "catalogue/values.csv").write_text("attribute,value\nColor,Green\nColor,Red\nColor,\n")
    rows = ["event_id,event_time,uid,sku,slot,clicked"]
    rows += [f"e{i},{DAY1 + 60 * i},u{1 + i % 2},s{1 + i % 3},1,{i % 2}" for i in range(12)]
    (base / "logs.csv").write_text("\n".join(rows) + "\n")
    doc: dict = {
        "tables": {
            "impressions": {
                "files": "logs.csv",
                "columns": {
                    "impression_id": "event_id",
                    "ts": "event_time",
                    "user_id": "uid",
                    "item_id": "sku",
                    "position": "slot",
                    "click": "clicked",
                },
                "ts": {"unit": "s"},
                "defaults": {"treatment": 0, "conversion": 0},
            },
            "items": {
                "files": "catalogue/products.jsonl",
                "format": "mave",
                "mave": {"text": "title+description"},
                "defaults": {"first_seen": "2024-02-01", "price": 9.5},
            },
            "item_attributes": {"files": "catalogue/products.jsonl", "format": "mave"},
            "users": {"files": "catalogue/users.csv", "columns": {"user_id": "uid", "signup_date": "joined"}},
        }
    }
    if taxonomy:  # a value list and the MAVE file itself as a value list
        doc["attribute_taxonomy"] = {"files": ["catalogue/values.csv", "catalogue/products.jsonl"]}
    path = base / "mapping.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def _settings(base: Path) -> Settings:
    return Settings(source="import", mapping=base / "mapping.yaml", home=base / "ctr")


def _rows(table) -> list[tuple]:
    return list(zip(*table.to_pydict().values(), strict=True))


def test_mave_items_attributes_negatives_and_taxonomy_through_the_mapping(tmp_path):
    _write_inputs(tmp_path)
    source = Source(_settings(tmp_path))
    catalogue = source.catalogue()
    items = catalogue.items
    assert items.schema.equals(schemas.ITEMS)
    assert items.column("item_id").to_pylist() == ["s1", "s2", "s3"]
    assert items.column("category").to_pylist() == ["Shirts", "Mugs", "Bags"]
    assert items.column("title")[0].as_py() == "Red cotton shirt About Red cotton shirt"  # title+description
    assert set(items.column("first_seen").to_pylist()) == {dt.date(2024, 2, 1)}
    assert set(items.column("price").to_pylist()) == {9.5}
    assert _rows(catalogue.item_attributes) == [
        ("s1", "Color", "Red"),
        ("s1", "Material", "cotton"),
        ("s2", "Color", "Blue"),
    ]
    negatives = catalogue.attribute_negatives
    assert negatives.schema.equals(schemas.ATTRIBUTE_NEGATIVES)
    assert _rows(negatives) == [
        ("s1", "Sleeve Style"),
        ("s2", "Capacity"),
        ("s2", "Material"),
        ("s3", "Color"),
    ]
    assert _rows(catalogue.attribute_taxonomy) == [  # files in name order, duplicates collapsed
        ("Color", "Red"),
        ("Material", "cotton"),
        ("Color", "Blue"),
        ("Color", "Green"),
    ]
    assert _rows(source.attribute_taxonomy()) == _rows(catalogue.attribute_taxonomy)
    # the truncated MAVE line is reported once for items + item_attributes (under raw_items, the
    # table read first) and once more by the taxonomy, which reads the file as a value list; the
    # empty taxonomy value once; each names its file and line
    q = catalogue.quarantine.to_pydict()
    assert list(zip(q["table"], q["source_row"], q["column"], q["rule"], strict=True)) == [
        ("raw_items", 4, None, "unparseable"),
        ("raw_attribute_taxonomy", 4, None, "unparseable"),
        ("raw_attribute_taxonomy", 4, "value", "bad_field"),
    ]
    files = [Path(f).name for f in q["source_file"]]
    assert files == ["products.jsonl", "products.jsonl", "values.csv"]
    assert catalogue.skipped_files == ()
    # read alone (no shared cache), item_attributes reports the MAVE file's bad line under its own name
    mapping = load_mapping(tmp_path / "mapping.yaml")
    alone = read_catalogue(mapping, "item_attributes")
    assert alone[1].column("table").to_pylist() == ["raw_item_attributes"]
    assert alone.negatives.num_rows == 4


def test_without_mave_or_taxonomy_the_new_tables_are_empty(tmp_path):
    _write_inputs(tmp_path, taxonomy=False)
    doc = yaml.safe_load((tmp_path / "mapping.yaml").read_text())
    (tmp_path / "catalogue/attributes.csv").write_text("sku,attr,val\ns1,Color,Red\n")
    doc["tables"]["item_attributes"] = {
        "files": "catalogue/attributes.csv",
        "columns": {"item_id": "sku", "attribute": "attr", "value": "val"},
    }
    (tmp_path / "mapping.yaml").write_text(yaml.safe_dump(doc))
    source = Source(_settings(tmp_path))
    catalogue = source.catalogue()
    assert catalogue.items.num_rows == 3  # still from the MAVE file
    assert _rows(catalogue.item_attributes) == [("s1", "Color", "Red")]
    assert catalogue.attribute_negatives.num_rows == 0
    assert catalogue.attribute_negatives.schema.equals(schemas.ATTRIBUTE_NEGATIVES)
    assert catalogue.attribute_taxonomy.num_rows == 0 and source.attribute_taxonomy().num_rows == 0
    synthetic = Source(Settings(profile="tiny", home=tmp_path / "synthetic")).catalogue()
    assert synthetic.attribute_negatives.num_rows == 0
    assert synthetic.attribute_negatives.schema.equals(schemas.ATTRIBUTE_NEGATIVES)


def test_a_bad_mave_or_taxonomy_file_is_skipped_and_reported(tmp_path):
    _write_inputs(tmp_path)
    doc = yaml.safe_load((tmp_path / "mapping.yaml").read_text())
    (tmp_path / "catalogue/broken.csv").write_text("key,val\nColor,Red\n")  # no attribute/value header
    doc["attribute_taxonomy"]["files"].append("catalogue/broken.csv")
    (tmp_path / "catalogue/more.jsonl.gz").write_bytes(b"\x1f\x8b\x08\x00garbage")  # a broken gzip
    for table in ("items", "item_attributes"):
        doc["tables"][table]["files"] = ["catalogue/products.jsonl", "catalogue/more.jsonl.gz"]
    (tmp_path / "mapping.yaml").write_text(yaml.safe_dump(doc))
    catalogue = Source(_settings(tmp_path)).catalogue()
    assert catalogue.items.num_rows == 3 and catalogue.attribute_negatives.num_rows == 4
    skipped = {(table, Path(file).name) for table, file, _problem in catalogue.skipped_files}
    assert skipped == {
        ("items", "more.jsonl.gz"),
        ("item_attributes", "more.jsonl.gz"),
        ("attribute_taxonomy", "broken.csv"),
    }
    problem = next(p for t, _f, p in catalogue.skipped_files if t == "attribute_taxonomy")
    assert "attribute and value" in problem
    doc["tables"]["item_attributes"]["files"] = ["catalogue/more.jsonl.gz"]  # nothing usable: fails
    (tmp_path / "mapping.yaml").write_text(yaml.safe_dump(doc))
    with pytest.raises(MalformedInputError, match="more.jsonl.gz"):
        Source(_settings(tmp_path)).catalogue()


@pytest.mark.parametrize(
    ("change", "key", "message"),
    [
        (lambda d: d["tables"]["users"].update(format="mave"), "tables.users.format", "must be one of"),
        (
            lambda d: d["tables"]["items"].update(columns={"item_id": "id"}),
            "tables.items.columns",
            "fields are fixed",
        ),
        (
            lambda d: d["tables"]["item_attributes"].update(defaults={"value": "x"}),
            "tables.item_attributes.defaults.value",
            "none may be given",
        ),
        (
            lambda d: d["tables"]["items"].update(defaults={"title": "x"}),
            "tables.items.defaults.title",
            "first_seen",
        ),
        (lambda d: d["tables"]["items"].pop("format"), "tables.items.mave", "format: mave only"),
        (
            lambda d: d["attribute_taxonomy"].update(format="xml"),
            "attribute_taxonomy.format",
            "must be one of",
        ),
        (lambda d: d["attribute_taxonomy"].update(colour=1), "attribute_taxonomy.colour", "unknown key"),
    ],
)
def test_mapping_errors_name_the_key(tmp_path, change, key, message):
    path = _write_inputs(tmp_path)
    doc = yaml.safe_load(path.read_text())
    change(doc)
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(MappingError, match=message) as err:
        load_mapping(path)
    assert err.value.key == key


def test_a_taxonomy_glob_matching_no_file_names_the_key(tmp_path):
    path = _write_inputs(tmp_path)
    doc = yaml.safe_load(path.read_text())
    doc["attribute_taxonomy"] = {"files": "catalogue/nothing-*.csv"}
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(MappingError, match="nothing-") as err:
        Source(_settings(tmp_path)).attribute_taxonomy()
    assert err.value.key == "attribute_taxonomy.files"


@pytest.mark.integration
def test_raw_catalogue_writes_the_negatives_and_the_taxonomy(tmp_path):
    from assets.definitions import build_definitions
    from assets.raw import CATALOGUE_TABLES
    from ctr_dagster.warehouse import Warehouse

    _write_inputs(tmp_path)
    settings = _settings(tmp_path)
    defs = build_definitions(settings)
    assert "raw_attribute_negatives" in CATALOGUE_TABLES
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            list(defs.assets),
            selection=list(CATALOGUE_TABLES),
            instance=instance,
            resources=dict(defs.resources),
        )
    assert result.success
    wh = Warehouse(settings.ctr_home.warehouse)
    negatives = wh.read("raw_attribute_negatives")
    assert negatives.schema.equals(schemas.ATTRIBUTE_NEGATIVES) and negatives.num_rows == 4
    assert wh.read("raw_attribute_taxonomy").num_rows == 4
    assert wh.read("raw_item_attributes").num_rows == 3
    assert wh.read("quarantine_catalogue").num_rows == 3
