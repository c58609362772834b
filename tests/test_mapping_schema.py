"""The mapping says what users need: one pydantic schema (unknown keys fail, dotted keys named, JSON
Schema for editors), columns by name / position / DuckDB expression, stable per-row ids, defaults
that never silently shadow a column, optional item_attributes, and items / users derived from the
impressions files. Every file is written by the test."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pyarrow as pa
import pytest
import yaml
from typer.testing import CliRunner

from ctr_dagster import schemas
from ctr_dagster.cli import app
from ctr_dagster.errors import MalformedInputError
from ctr_dagster.importers import MappingError, load_mapping, read_catalogue
from ctr_dagster.importers.generic import iter_file_days
from ctr_dagster.importers.mapping import ColumnExpr, ColumnPosition, json_schema

ROOT = Path(__file__).resolve().parents[1]
EPOCH = int(dt.datetime(2024, 1, 1, tzinfo=dt.UTC).timestamp())
DAY = 86_400


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def mapping_file(folder: Path, doc: dict) -> Path:
    return write(folder, "mapping.yaml", yaml.safe_dump({"start_date": "2024-01-01", **doc}))


def impressions(mapping, file: Path | None = None) -> tuple[pa.Table, pa.Table]:
    """(RAW_IMPRESSIONS rows, QUARANTINE rows) of every impressions file (or one)."""
    batches, quarantine = [], [schemas.empty(schemas.QUARANTINE)]
    for path in [file] if file else mapping.files("impressions"):
        for _day, part in iter_file_days(mapping, path):
            batches.append(part.batch)
            quarantine.append(part.quarantine)
    return pa.Table.from_batches(batches, schema=schemas.RAW_IMPRESSIONS), pa.concat_tables(quarantine)


# -- RecBole-style ratings: `name:type` headers, expressions, stable ids ----------------------------
RATINGS_HEADER = "user_id:token\titem_id:token\trating:float\ttimestamp:float"


def write_ratings(folder: Path) -> Path:
    rows = [RATINGS_HEADER]
    for i in range(12):
        rows.append(f"{1 + i % 3}\t{10 + i % 4}\t{1 + i % 5}\t{EPOCH + i * 3600}")
    write(folder, "ml.inter", "\n".join(rows) + "\n")
    write(
        folder,
        "ml.item",
        "item_id:token\ttitle\tgenres\n10\tAlpha\tComedy Drama\n11\tBeta\tHorror\n12\tGamma\t"
        "Drama Romance War\n13\tDelta\tComedy\n",
    )
    return mapping_file(
        folder,
        {
            "tables": {
                "impressions": {
                    "files": "ml.inter",
                    "format": "csv",
                    "csv": {"delimiter": "\t"},
                    "columns": {
                        "user_id": "user_id:token",
                        "item_id": "item_id:token",
                        "ts": "timestamp:float",
                        "click": {"expr": 'CAST("rating:float" >= 4 AS TINYINT)'},
                    },
                    "parse": {"ts": {"unit": "s"}},
                    "defaults": {"position": 1, "treatment": 0, "conversion": 0},
                },
                "items": {
                    "files": "ml.item",
                    "format": "csv",
                    "csv": {"delimiter": "\t"},
                    "columns": {
                        "item_id": "item_id:token",
                        "category": {"expr": "split_part(genres, ' ', 1)"},
                    },
                    "defaults": {"price": 0, "first_seen": "1990-01-01"},
                },
                "users": {"from": "impressions"},
            }
        },
    )


def test_ratings_tsv_with_name_type_headers_maps_through_expressions(tmp_path):
    mapping = load_mapping(write_ratings(tmp_path))
    assert mapping.table("impressions").columns["click"] == ColumnExpr(
        'CAST("rating:float" >= 4 AS TINYINT)', ("rating:float",)
    )
    table, quarantine = impressions(mapping)
    assert table.num_rows == 12 and quarantine.num_rows == 0
    rows = table.to_pylist()
    assert [r["click"] for r in rows] == [int(1 + i % 5 >= 4) for i in range(12)]
    assert rows[0]["user_id"] == "1" and rows[0]["item_id"] == "10"
    assert rows[0]["ts"] == dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    # no impression / request id anywhere: a stable id from file and 1-based data row
    assert [r["impression_id"] for r in rows[:2]] == ["ml.inter:1", "ml.inter:2"]
    assert all(r["request_id"] == r["impression_id"] for r in rows)

    items, rejected = read_catalogue(mapping, "items")
    assert rejected.num_rows == 0
    assert dict(zip(items["item_id"].to_pylist(), items["category"].to_pylist(), strict=True)) == {
        "10": "Comedy",
        "11": "Horror",
        "12": "Drama",
        "13": "Comedy",
    }
    users, rejected = read_catalogue(mapping, "users")  # the id mapping is the impressions'
    assert sorted(users["user_id"].to_pylist()) == ["1", "2", "3"] and rejected.num_rows == 0
    assert set(users["signup_date"].to_pylist()) == {dt.date(2024, 1, 1)}


def test_stable_ids_are_unique_across_files_and_the_same_on_every_run(tmp_path):
    for name, offset in (("logs/a.csv", 0), ("logs/b.csv", 100)):
        lines = ["uid,sku,when,slot,clicked"] + [
            f"u{i},s{i},{EPOCH + offset + i},{1 + i},{i % 2}" for i in range(5)
        ]
        write(tmp_path, name, "\n".join(lines) + "\n")
    doc = {
        "tables": {
            "impressions": {
                "files": "logs/*.csv",
                "columns": {
                    "user_id": "uid",
                    "item_id": "sku",
                    "ts": "when",
                    "position": "slot",
                    "click": "clicked",
                },
                "ts": {"unit": "s"},
                "defaults": {"treatment": 0, "conversion": 0},
            }
        }
    }
    first = impressions(load_mapping(mapping_file(tmp_path, doc)))[0]["impression_id"].to_pylist()
    again = impressions(load_mapping(mapping_file(tmp_path, doc)))[0]["impression_id"].to_pylist()
    assert first == again and len(set(first)) == 10
    assert first[:2] == ["logs/a.csv:1", "logs/a.csv:2"] and first[5] == "logs/b.csv:1"

    doc["tables"]["impressions"]["columns"]["impression_id"] = "sku"  # the log's own id, no request id
    table = impressions(load_mapping(mapping_file(tmp_path, doc)))[0]
    assert (
        table["request_id"].to_pylist()
        == table["impression_id"].to_pylist()
        == [f"s{i}" for i in range(5)] * 2
    )


# -- {position: N} --------------------------------------------------------------------------------
def test_position_addresses_a_column_with_an_empty_header(tmp_path):
    lines = [
        "uid,sku,when,,clicked",
        f"u1,s1,{EPOCH},3,1",
        f"u2,s2,{EPOCH + 5},first,0",
        f"u3,s3,{EPOCH + 9},2,0",
    ]
    write(tmp_path, "log.csv", "\n".join(lines) + "\n")
    doc = {
        "tables": {
            "impressions": {
                "files": "log.csv",
                "columns": {
                    "user_id": "uid",
                    "item_id": {"position": 2},
                    "ts": "when",
                    "position": {"position": 4},
                    "click": "clicked",
                },
                "ts": {"unit": "s"},
                "defaults": {"treatment": 0, "conversion": 0},
            }
        }
    }
    mapping = load_mapping(mapping_file(tmp_path, doc))
    assert mapping.table("impressions").columns["position"] == ColumnPosition(4)
    table, quarantine = impressions(mapping)
    assert table["position"].to_pylist() == [3, 2] and table["item_id"].to_pylist() == ["s1", "s3"]
    (bad,) = quarantine.to_pylist()
    assert (bad["source_row"], bad["column"], bad["rule"]) == (2, "#4", "unparseable")
    assert "'first' is not a valid integer" in bad["detail"] and "row 2" in bad["detail"]

    doc["tables"]["impressions"]["columns"]["position"] = {"position": 9}
    with pytest.raises(MalformedInputError, match=r"tables\.impressions\.columns\.position: position 9"):
        impressions(load_mapping(mapping_file(tmp_path, doc)))


def test_a_file_without_a_header_line_is_read_by_position(tmp_path):
    """MovieLens' own u.data: user, item, rating, unix time, tab-separated, no header line."""
    lines = [f"196\t242\t3\t{EPOCH}", f"186\t302\t5\t{EPOCH + 9}", "22\t377", f"244\t51\t4\t{EPOCH + 99}"]
    write(tmp_path, "u.data", "\n".join(lines) + "\n")
    doc = {
        "tables": {
            "impressions": {
                "files": "u.data",
                "format": "csv",
                "csv": {"delimiter": "\t", "header": False},
                "columns": {
                    "user_id": {"position": 1},
                    "item_id": "column2",
                    "ts": {"position": 4},
                    "click": {"expr": "CAST(column3 >= 4 AS TINYINT)"},
                },
                "ts": {"unit": "s"},
                "defaults": {"position": 1, "treatment": 0, "conversion": 0},
            }
        }
    }
    table, quarantine = impressions(load_mapping(mapping_file(tmp_path, doc)))
    assert table["user_id"].to_pylist() == ["196", "186", "244"]  # the first line is data, not a header
    assert table["click"].to_pylist() == [0, 1, 1]
    assert table["impression_id"].to_pylist() == ["u.data:1", "u.data:2", "u.data:4"]
    (short,) = quarantine.to_pylist()
    assert short["source_row"] == 3 and "expected 4 fields" in short["detail"]


def test_position_refuses_a_repeated_header_it_cannot_read(tmp_path):
    write(tmp_path, "log.csv", f"uid,sku,when,x,x\nu1,s1,{EPOCH},1,0\n")
    doc = {
        "tables": {
            "impressions": {
                "files": "log.csv",
                "columns": {
                    "user_id": "uid",
                    "item_id": "sku",
                    "ts": "when",
                    "position": {"position": 4},
                    "click": {"position": 5},
                },
                "ts": {"unit": "s"},
                "defaults": {"treatment": 0, "conversion": 0},
            }
        }
    }
    with pytest.raises(MalformedInputError, match="header 'x' repeats column 4"):
        impressions(load_mapping(mapping_file(tmp_path, doc)))


# -- expressions: load-time syntax, file-time columns, per-row failures ----------------------------
def _expr_doc(expr: str) -> dict:
    return {
        "tables": {
            "impressions": {
                "files": "log.csv",
                "columns": {
                    "user_id": "uid",
                    "item_id": "sku",
                    "ts": "when",
                    "position": "slot",
                    "click": {"expr": expr},
                },
                "ts": {"unit": "s"},
                "defaults": {"treatment": 0, "conversion": 0},
            }
        }
    }


def _write_log(folder: Path, labels: list[str]) -> None:
    lines = ["uid,sku,when,slot,label"] + [
        f"u{i},s{i},{EPOCH + i},1,{label}" for i, label in enumerate(labels)
    ]
    write(folder, "log.csv", "\n".join(lines) + "\n")


def test_bad_expression_syntax_fails_at_load_naming_the_key(tmp_path):
    with pytest.raises(
        MappingError, match=r"'tables\.impressions\.columns\.click\.expr': not a valid DuckDB"
    ) as err:
        load_mapping(mapping_file(tmp_path, _expr_doc("CAST(label AS")))
    assert err.value.key == "tables.impressions.columns.click.expr"
    with pytest.raises(MappingError, match="one row at a time"):
        load_mapping(mapping_file(tmp_path, _expr_doc("max(label)")))
    with pytest.raises(MappingError, match="no FROM"):
        load_mapping(mapping_file(tmp_path, _expr_doc("label FROM other")))


def test_expression_reading_an_unknown_column_fails_naming_file_key_and_columns(tmp_path):
    _write_log(tmp_path, ["1", "0"])
    mapping = load_mapping(mapping_file(tmp_path, _expr_doc('CAST("lable" AS TINYINT)')))
    with pytest.raises(MalformedInputError) as err:
        impressions(mapping)
    message = str(err.value)
    assert "log.csv" in message and "tables.impressions.columns.click" in message
    assert "'lable'" in message and "['uid', 'sku', 'when', 'slot', 'label']" in message


def test_a_row_where_the_expression_fails_is_quarantined_with_its_row(tmp_path):
    _write_log(tmp_path, ["1", "0", "yes", "1", "oops", "0"])
    mapping = load_mapping(mapping_file(tmp_path, _expr_doc("CAST(label AS TINYINT)")))
    table, quarantine = impressions(mapping)
    assert table["click"].to_pylist() == [1, 0, 1, 0]
    bad = quarantine.to_pylist()
    assert [(q["source_row"], q["column"], q["rule"]) for q in bad] == [
        (3, "expr:click", "unparseable"),
        (5, "expr:click", "unparseable"),
    ]
    assert "row 3" in bad[0]["detail"] and "Conversion Error" in bad[0]["detail"]
    assert json.loads(bad[0]["record"])["label"] == "yes"

    # a result that is not a valid value of the canonical column: unparseable the same way
    mapping = load_mapping(
        mapping_file(tmp_path, _expr_doc("CASE WHEN label = 'yes' THEN 'y' ELSE label END"))
    )
    table, quarantine = impressions(mapping)
    assert table["click"].to_pylist() == [1, 0, 1, 0]
    assert quarantine["source_row"].to_pylist() == [3, 5]
    assert set(quarantine["column"].to_pylist()) == {"expr:click"}
    assert "'y' is not a valid integer" in quarantine["detail"][0].as_py()


def test_text_columns_are_typed_per_batch_and_a_type_error_names_the_fix(tmp_path):
    _write_log(tmp_path, ["12", "7"])  # all digits: the expression sees BIGINT
    mapping = load_mapping(mapping_file(tmp_path, _expr_doc("CAST(length(label) > 1 AS TINYINT)")))
    with pytest.raises(MalformedInputError, match=r"'label' BIGINT: CAST or TRY_CAST"):
        impressions(mapping)
    fixed = load_mapping(
        mapping_file(tmp_path, _expr_doc("CAST(length(CAST(label AS VARCHAR)) > 1 AS TINYINT)"))
    )
    assert impressions(fixed)[0]["click"].to_pylist() == [1, 0]


# -- defaults -------------------------------------------------------------------------------------
def test_a_default_that_shadows_a_column_of_the_file_is_an_error(tmp_path):
    write(tmp_path, "log.csv", f"uid,sku,when,position,clicked\nu1,s1,{EPOCH},3,1\n")
    doc = {
        "tables": {
            "impressions": {
                "files": "log.csv",
                "columns": {"user_id": "uid", "item_id": "sku", "ts": "when", "click": "clicked"},
                "ts": {"unit": "s"},
                "defaults": {"position": 1, "treatment": 0, "conversion": 0},
            }
        }
    }
    with pytest.raises(MalformedInputError) as err:
        impressions(load_mapping(mapping_file(tmp_path, doc)))
    message = str(err.value)
    assert "log.csv" in message and "'position'" in message
    assert "tables.impressions.defaults.position" in message
    # the same column read by another mapping is no collision
    doc["tables"]["impressions"]["columns"]["device"] = "position"
    table, _ = impressions(load_mapping(mapping_file(tmp_path, doc)))
    assert table.to_pylist()[0]["position"] == 1 and table.to_pylist()[0]["device"] == "3"


def test_a_constant_impression_id_is_refused_at_load(tmp_path):
    doc = _expr_doc("label")
    doc["tables"]["impressions"]["defaults"]["impression_id"] = "x"
    with pytest.raises(MappingError, match="stable id from its file and row") as err:
        load_mapping(mapping_file(tmp_path, doc))
    assert err.value.key == "tables.impressions.defaults.impression_id"


# -- the catalogue ---------------------------------------------------------------------------------
def write_log_with_catalogue_columns(folder: Path, rows: int = 300) -> None:
    """A log whose rows carry each item's current category and price (changing on day 2) and each
    user's region; row 7 has no item and row 8 no user."""
    lines = ["uid,sku,when,slot,clicked,cat,price,region"]
    for i in range(rows):
        day = i * 3 // rows  # three days
        item, user = i % 5, i % 7
        sku = "" if i == 6 else f"s{item}"
        uid = "" if i == 7 else f"u{user}"
        cat = f"c{item}-{'new' if day >= 1 else 'old'}"
        lines.append(
            f"{uid},{sku},{EPOCH + day * DAY + i},{1 + i % 4},{i % 2},{cat},{item + day}.5,r{user % 2}"
        )
    write(folder, "log.csv", "\n".join(lines) + "\n")


def _derived_doc() -> dict:
    return {
        "tables": {
            "impressions": {
                "files": "log.csv",
                "columns": {
                    "user_id": "uid",
                    "item_id": "sku",
                    "ts": "when",
                    "position": "slot",
                    "click": "clicked",
                },
                "ts": {"unit": "s"},
                "defaults": {"treatment": 0, "conversion": 0},
            },
            "items": {
                "from": "impressions",
                "columns": {"category": "cat", "title": {"expr": "'item ' || sku"}},
            },
            "users": {"from": "impressions", "columns": {"user_id": "uid"}},
        }
    }


def test_items_and_users_derived_from_the_impressions_take_latest_values_without_repeats(tmp_path):
    write_log_with_catalogue_columns(tmp_path)
    mapping = load_mapping(mapping_file(tmp_path, _derived_doc()))
    items, rejected = read_catalogue(mapping, "items")
    assert rejected.num_rows == 0  # 300 rows, 5 items: no "repeats" flood
    rows = {r["item_id"]: r for r in items.to_pylist()}
    assert sorted(rows) == ["s0", "s1", "s2", "s3", "s4"]
    assert rows["s2"]["category"] == "c2-new" and rows["s2"]["price"] == pytest.approx(4.5)  # latest row
    assert rows["s2"]["title"] == "item s2"
    assert {r["first_seen"] for r in rows.values()} == {dt.date(2024, 1, 1)}  # the first impression

    users, rejected = read_catalogue(mapping, "users")
    assert rejected.num_rows == 0 and sorted(users["user_id"].to_pylist()) == [f"u{i}" for i in range(7)]
    assert set(users["signup_date"].to_pylist()) == {dt.date(2024, 1, 1)}
    assert {r["user_id"]: r["region"] for r in users.to_pylist()}["u3"] == "r1"  # same-named column


def test_a_derived_id_without_a_valid_row_is_quarantined_once(tmp_path):
    write_log_with_catalogue_columns(tmp_path, rows=60)
    doc = _derived_doc()
    doc["tables"]["items"]["columns"]["price"] = {
        "expr": "CASE WHEN sku = 's3' THEN error('no price') ELSE price END"
    }
    items, rejected = read_catalogue(load_mapping(mapping_file(tmp_path, doc)), "items")
    assert sorted(items["item_id"].to_pylist()) == ["s0", "s1", "s2", "s4"]
    (bad,) = rejected.to_pylist()
    assert bad["column"] == "expr:price" and "no price" in bad["detail"] and bad["table"] == "raw_items"


def test_files_and_from_are_mutually_exclusive(tmp_path):
    doc = _derived_doc()
    doc["tables"]["items"]["files"] = "items.csv"
    with pytest.raises(MappingError, match="give either files or from") as err:
        load_mapping(mapping_file(tmp_path, doc))
    assert err.value.key == "tables.items.from"


def test_item_attributes_unmapped_is_an_empty_table(tmp_path):
    from ctr_dagster.settings import Settings
    from ctr_dagster.sources import Source

    write_log_with_catalogue_columns(tmp_path, rows=30)
    path = mapping_file(tmp_path, _derived_doc())
    catalogue = Source(Settings(source="import", mapping=path, home=tmp_path / "home")).catalogue()
    assert catalogue.item_attributes.num_rows == 0
    assert catalogue.item_attributes.schema.equals(schemas.ITEM_ATTRIBUTES)
    assert catalogue.items.num_rows == 5 and catalogue.users.num_rows == 7


# -- the schema ------------------------------------------------------------------------------------
def test_start_date_is_optional_and_end_date_not_before_it(tmp_path):
    doc = _derived_doc()
    path = write(tmp_path, "nostart.yaml", yaml.safe_dump(doc))
    mapping = load_mapping(path)
    assert mapping.start_date is None and mapping.end_date is None
    path.write_text(yaml.safe_dump({**doc, "start_date": "2024-01-05", "end_date": "2024-01-01"}))
    with pytest.raises(MappingError, match="is before start_date") as err:
        load_mapping(path)
    assert err.value.key == "end_date"


@pytest.mark.parametrize(
    ("where", "key"),
    [
        (
            lambda d: d["tables"]["impressions"].update(csv={"delimeter": ";"}),
            "tables.impressions.csv.delimeter",
        ),
        (
            lambda d: d["tables"]["impressions"].update(ts={"unit": "s", "zone": "UTC"}),
            "tables.impressions.ts.zone",
        ),
        (
            lambda d: d["tables"]["items"]["columns"].update(title={"expr": "sku", "as": "x"}),
            "tables.items.columns.title.as",
        ),
        (lambda d: d.update(window=3), "window"),
        (lambda d: d["tables"]["users"].update(columns={"nickname": "uid"}), "tables.users.columns.nickname"),
    ],
)
def test_unknown_keys_fail_everywhere(tmp_path, where, key):
    doc = _derived_doc()
    where(doc)
    with pytest.raises(MappingError) as err:
        load_mapping(mapping_file(tmp_path, doc))
    assert err.value.key == key


def test_ctr_mapping_schema_prints_the_json_schema():
    result = CliRunner().invoke(app, ["mapping-schema"])
    assert result.exit_code == 0, result.output
    schema = json.loads(result.output)
    assert "tables" in schema["properties"] and schema["additionalProperties"] is False
    assert schema == json.loads(json.dumps(json_schema()))


def test_the_shipped_schema_is_current_and_the_examples_conform():
    """examples/mapping.schema.json is what the example's `yaml-language-server` line points at."""
    jsonschema = pytest.importorskip("jsonschema")
    shipped = json.loads((ROOT / "examples" / "mapping.schema.json").read_text())
    assert shipped == json_schema(), "regenerate: ctr mapping-schema -o examples/mapping.schema.json"

    def plain(value):  # YAML dates -> the strings an editor sees
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, list):
            return [plain(v) for v in value]
        return value.isoformat() if isinstance(value, dt.date) else value

    for example in ("mapping.example.yaml", "ratings/mapping.yaml"):
        jsonschema.validate(plain(yaml.safe_load((ROOT / "examples" / example).read_text())), shipped)
    objects = [d for d in shipped["$defs"].values() if d.get("type") == "object"]
    assert objects and all(d.get("additionalProperties") is False for d in objects)  # extra="forbid"
