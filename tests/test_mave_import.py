"""MAVE-style attribute JSONL -> canonical ITEMS / ITEM_ATTRIBUTES, malformed lines quarantined by line."""

import datetime as dt
import gzip
import json

import pytest

from ctr_dagster import schemas
from ctr_dagster.errors import MalformedInputError
from ctr_dagster.importers import read_mave


def _product(
    pid: str, title: str, category: str = "Guitar Strings", attributes=None, description=None
) -> dict:
    paragraphs = [{"text": title, "source": "title"}]
    if description:
        paragraphs.append({"text": description, "source": "description"})
    return {"id": pid, "category": category, "paragraphs": paragraphs, "attributes": attributes or []}


def _evidence(text: str, value: str, pid: int = 0) -> dict:
    begin = text.index(value)
    return {"value": value, "pid": pid, "begin": begin, "end": begin + len(value)}


GOOD_TITLE = "D'Addario EJ26 Phosphor Bronze Acoustic Guitar Strings, Custom Light"
GOOD = _product(
    "B0002H0A3S",
    GOOD_TITLE,
    attributes=[
        {"key": "Winding Material", "evidences": [_evidence(GOOD_TITLE, "Phosphor Bronze")]},
        {
            "key": "Gauge",
            "evidences": [
                _evidence(GOOD_TITLE, "Light"),
                _evidence("Custom Light Gauge strings", "Light Gauge", pid=1),
                _evidence(GOOD_TITLE, "Light"),  # the same value twice: one row
            ],
        },
    ],
    description="Custom Light Gauge strings",
)


def _write(path, lines) -> None:
    path.write_text("\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines) + "\n")


def test_good_lines_become_canonical_tables(tmp_path):
    second = _product(
        "B01",
        "Red cotton shirt",
        "Shirts",
        [{"key": "Color", "evidences": [_evidence("Red cotton shirt", "Red")]}],
    )
    labels_only = {
        "id": "B02",
        "category": "Shirts",
        "attributes": [{"key": "Color", "evidences": [{"value": "Blue"}]}],
    }
    path = tmp_path / "mave.jsonl"
    _write(path, [GOOD, "", second, labels_only])
    out = read_mave(path, first_seen=dt.date(2024, 1, 1))
    assert out.items.schema.equals(schemas.ITEMS) and out.item_attributes.schema.equals(
        schemas.ITEM_ATTRIBUTES
    )
    assert out.lines == 3 and out.quarantine.num_rows == 0
    assert out.items.column("item_id").to_pylist() == ["B0002H0A3S", "B01", "B02"]
    assert out.items.column("title").to_pylist() == [GOOD_TITLE, "Red cotton shirt", ""]
    assert out.items.column("first_seen").to_pylist() == [dt.date(2024, 1, 1)] * 3
    assert list(zip(*out.item_attributes.to_pydict().values(), strict=True)) == [
        ("B0002H0A3S", "Winding Material", "Phosphor Bronze"),
        ("B0002H0A3S", "Gauge", "Light"),
        ("B0002H0A3S", "Gauge", "Light Gauge"),
        ("B01", "Color", "Red"),
        ("B02", "Color", "Blue"),
    ]
    with_description = read_mave(path, text="title+description")
    assert with_description.items.column("title")[0].as_py() == GOOD_TITLE + " Custom Light Gauge strings"


def test_malformed_lines_are_quarantined_with_their_line_numbers(tmp_path):
    bad_span = _product(
        "B10",
        "Blue shirt",
        attributes=[{"key": "Color", "evidences": [{"value": "Blue", "pid": 0, "begin": 1, "end": 5}]}],
    )
    bad_pid = _product(
        "B11",
        "Blue shirt",
        attributes=[{"key": "Color", "evidences": [{"value": "Blue", "pid": 3, "begin": 0, "end": 4}]}],
    )
    lines = [
        GOOD,  # line 1
        '{"id": "B03", "category": ',  # line 2: truncated JSON
        {"category": "Shirts", "attributes": []},  # line 3: no id
        bad_span,  # line 4: span spells "lue " not "Blue"
        bad_pid,  # line 5: paragraph 3 does not exist
        {"id": "B12", "category": "Shirts", "attributes": "Color=Blue"},  # line 6: attributes not a list
        GOOD,  # line 7: duplicate id
        "[1, 2]",  # line 8: not an object
    ]
    path = tmp_path / "bad.jsonl.gz"
    with gzip.open(path, "wt") as fh:
        fh.write("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines))  # no final newline
    out = read_mave(path)
    assert out.lines == 8 and out.items.num_rows == 1
    q = out.quarantine
    assert q.schema.equals(schemas.QUARANTINE)
    assert q.num_rows + out.items.num_rows == out.lines  # nothing lost
    assert q.column("source_row").to_pylist() == [2, 3, 4, 5, 6, 7, 8]
    assert q.column("rule").to_pylist() == [
        "unparseable",
        "bad_field",
        "bad_span",
        "bad_span",
        "bad_field",
        "duplicate_id",
        "unparseable",
    ]
    assert q.column("column").to_pylist()[1:6] == [
        "id",
        "attributes[0].evidences[0].begin",
        "attributes[0].evidences[0].pid",
        "attributes",
        "id",
    ]
    assert set(q.column("source_file").to_pylist()) == {str(path)}
    details = q.column("detail").to_pylist()
    assert details[2].startswith(f"{path}, line 4: ") and "'lue ' not the value 'Blue'" in details[2].replace(
        ",", ""
    )
    assert "already read at" in details[5] and "line 1" in details[5]
    assert json.loads(q.column("record")[0].as_py())["text"] == '{"id": "B03", "category": '


def test_unreadable_input_raises_naming_the_file(tmp_path):
    with pytest.raises(MalformedInputError, match="missing.jsonl"):
        read_mave(tmp_path / "missing.jsonl")
    with pytest.raises(ValueError, match="text must be one of"):
        read_mave(tmp_path / "missing.jsonl", text="everything")


def test_negatives_are_kept_beside_the_positives_of_their_line(tmp_path):
    title = "Red cotton shirt"
    mixed = _product(
        "N1",
        title,
        "Shirts",
        [
            {"key": "Color", "evidences": [_evidence(title, "Red")]},
            {"key": "Sleeve Style", "evidences": []},  # negative
            {"key": "Material", "evidences": []},  # negative, then positive below: the positive wins
            {"key": "Material", "evidences": [_evidence(title, "cotton")]},
            {"key": "Sleeve Style", "evidences": []},  # the same negative twice: one row
        ],
    )
    only_negatives = _product(
        "N2", "Plain mug", "Mugs", [{"key": "Color", "evidences": []}, {"key": "Capacity", "evidences": []}]
    )
    label_only = {  # MAVE's label-only layout: no paragraphs, values without spans, negatives
        "id": "N3",
        "category": "Shirts",
        "attributes": [{"key": "Color", "evidences": [{"value": "Blue"}]}, {"key": "Neck", "evidences": []}],
    }
    value_without_span = _product(  # paragraphs, but an evidence with no span at all: not checked
        "N4", "Green shirt", "Shirts", [{"key": "Color", "evidences": [{"value": "Green"}]}]
    )
    path = tmp_path / "mixed.jsonl"
    _write(path, [mixed, only_negatives, "", label_only, value_without_span])
    out = read_mave(path)
    assert out.lines == 4 and out.quarantine.num_rows == 0
    assert out.items.column("item_id").to_pylist() == ["N1", "N2", "N3", "N4"]  # N2: only negatives
    assert out.negatives.schema.equals(schemas.ATTRIBUTE_NEGATIVES)
    assert list(zip(*out.negatives.to_pydict().values(), strict=True)) == [
        ("N1", "Sleeve Style"),
        ("N2", "Color"),
        ("N2", "Capacity"),
        ("N3", "Neck"),
    ]
    assert list(zip(*out.item_attributes.to_pydict().values(), strict=True)) == [
        ("N1", "Color", "Red"),
        ("N1", "Material", "cotton"),
        ("N3", "Color", "Blue"),
        ("N4", "Color", "Green"),
    ]
    plain = tmp_path / "plain.jsonl"
    _write(plain, [GOOD])
    assert read_mave(plain).negatives.num_rows == 0


def test_bad_evidences_are_still_rejected_naming_file_line_and_field(tmp_path):
    lines = [
        {"id": "E1", "category": "Shirts", "attributes": [{"key": "Color"}]},  # no evidences at all
        {"id": "E2", "category": "Shirts", "attributes": [{"key": "Color", "evidences": "Blue"}]},
        {"id": "E3", "category": "Shirts", "attributes": [{"key": "Color", "evidences": [{}]}]},
        _product(
            "E4", "Blue shirt", attributes=[{"key": "Color", "evidences": [{"value": "Blue", "pid": 0}]}]
        ),
        {"id": "E5", "category": "Shirts", "attributes": [{"key": "Color", "evidences": []}, {"key": ""}]},
        {"id": "E6", "category": "Shirts", "attributes": [{"key": "Color", "evidences": []}]},  # fine
    ]
    path = tmp_path / "evidences.jsonl"
    _write(path, lines)
    out = read_mave(path)
    assert out.lines == 6 and out.items.column("item_id").to_pylist() == ["E6"]
    assert out.items.num_rows + out.quarantine.num_rows == out.lines
    q = out.quarantine.to_pydict()
    assert q["source_row"] == [1, 2, 3, 4, 5]
    assert q["rule"] == ["bad_field"] * 5
    assert q["column"] == [
        "attributes[0].evidences",
        "attributes[0].evidences",
        "attributes[0].evidences[0].value",
        "attributes[0].evidences[0].begin",  # a span given in part
        "attributes[1].key",
    ]
    assert set(q["source_file"]) == {str(path)}
    assert q["detail"][0].startswith(f"{path}, line 1: ") and "must be a list" in q["detail"][0]
    assert out.negatives.to_pylist() == [{"item_id": "E6", "attribute": "Color"}]  # rejected lines give none
