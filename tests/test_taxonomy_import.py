"""A published attribute-value taxonomy (CSV / TSV / JSONL / MAVE JSONL) -> ATTRIBUTE_TAXONOMY, bad
lines quarantined naming file, line and column. Every file is written by the test."""

import gzip
import json

import pytest

from ctr_dagster import schemas
from ctr_dagster.errors import MalformedInputError
from ctr_dagster.importers.taxonomy import read_taxonomy


def _pairs(table) -> list[tuple[str, str]]:
    return list(zip(table.column("attribute").to_pylist(), table.column("value").to_pylist(), strict=True))


def test_csv_and_tsv_with_a_header_naming_attribute_and_value(tmp_path):
    csv_file = tmp_path / "values.csv"
    csv_file.write_text(
        '\ufeffValue, Attribute ,note\nRed,Color,x\n"Navy, dark",Color,\nRed,Color,again\n\nS,Size\n'
    )
    tsv_file = tmp_path / "values.tsv.gz"
    with gzip.open(tsv_file, "wt") as fh:
        fh.write("attribute\tvalue\nColor\tGreen\nSize\tS\n")
    taxonomy, quarantine = read_taxonomy([csv_file, tsv_file])
    assert taxonomy.schema.equals(schemas.ATTRIBUTE_TAXONOMY)
    assert quarantine.schema.equals(schemas.QUARANTINE) and quarantine.num_rows == 0
    # duplicates collapsed (within and across files), first-read order
    assert _pairs(taxonomy) == [("Color", "Red"), ("Color", "Navy, dark"), ("Size", "S"), ("Color", "Green")]
    sniffed = tmp_path / "values.txt"  # no telling extension: the header line says TSV
    sniffed.write_text("attribute\tvalue\nColor\tBlue\n")
    assert _pairs(read_taxonomy(sniffed).taxonomy) == [("Color", "Blue")]


def test_jsonl_entries_and_mave_lines_mixed(tmp_path):
    mave_line = {
        "id": "B1",
        "category": "Shirts",
        "paragraphs": [{"text": "Red cotton shirt", "source": "title"}],
        "attributes": [
            {"key": "Color", "evidences": [{"value": "Red", "pid": 0, "begin": 0, "end": 3}]},
            {"key": "Material", "evidences": [{"value": "cotton"}, {"value": "Cotton"}]},
            {"key": "Sleeve", "evidences": []},  # a negative: no value
        ],
    }
    path = tmp_path / "values.jsonl"
    lines = [{"attribute": "Color", "value": "Blue"}, mave_line, {"attribute": "Color", "value": "Red"}]
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    taxonomy, quarantine = read_taxonomy(path)
    assert quarantine.num_rows == 0
    assert _pairs(taxonomy) == [
        ("Color", "Blue"),
        ("Color", "Red"),
        ("Material", "cotton"),
        ("Material", "Cotton"),
    ]
    as_mave = tmp_path / "products.data"  # a MAVE file under any name: sniffed from its first line
    as_mave.write_text(json.dumps(mave_line) + "\n")
    assert _pairs(read_taxonomy(as_mave).taxonomy)[0] == ("Color", "Red")
    assert _pairs(read_taxonomy(as_mave, format="jsonl").taxonomy)[0] == ("Color", "Red")


def test_bad_lines_are_quarantined_naming_file_line_and_column(tmp_path):
    csv_file = tmp_path / "values.csv"
    csv_file.write_text('attribute,value\nColor,Red\nColor,\nColor\n,Blue\n"Color,Red\nSize,M\n')
    jsonl = tmp_path / "values.jsonl"
    jsonl.write_text(
        "\n".join(
            [
                '{"attribute": "Color", "value": "Red"}',
                '{"attribute": "Color"',  # truncated JSON
                '{"attribute": "Color", "value": 3}',
                '{"attributes": [{"key": "Color", "evidences": [{"value": ""}]}]}',
                '{"attributes": [{"key": "Color"}]}',
                "[1, 2]",
            ]
        )
    )
    taxonomy, quarantine = read_taxonomy([csv_file, jsonl])
    assert _pairs(taxonomy) == [("Color", "Red"), ("Size", "M")]
    q = quarantine.to_pydict()
    assert set(q["table"]) == {"raw_attribute_taxonomy"}
    assert q["source_file"] == [str(csv_file)] * 4 + [str(jsonl)] * 5
    assert q["source_row"] == [3, 4, 5, 6, 2, 3, 4, 5, 6]
    assert q["column"] == [
        "value",
        "value",
        "attribute",
        None,
        None,
        "value",
        "attributes[0].evidences[0].value",
        "attributes[0].evidences",
        None,
    ]
    assert q["rule"] == ["bad_field"] * 3 + ["unparseable"] * 2 + ["bad_field"] * 3 + ["unparseable"]
    assert q["detail"][0].startswith(f"{csv_file}, line 3, column 'value': value is empty")
    assert q["detail"][1].startswith(f"{csv_file}, line 4, column 'value': value is missing")
    assert json.loads(q["record"][4])["text"] == '{"attribute": "Color"'


def test_unusable_files_raise_naming_the_file(tmp_path):
    with pytest.raises(MalformedInputError, match="missing.csv"):
        read_taxonomy(tmp_path / "missing.csv")
    header = tmp_path / "header.csv"
    header.write_text("key,val\nColor,Red\n")
    with pytest.raises(MalformedInputError, match="header.csv.*row 1.*attribute and value"):
        read_taxonomy(header)
    with pytest.raises(ValueError, match="format must be one of"):
        read_taxonomy(header, format="xml")
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    taxonomy, quarantine = read_taxonomy(empty)
    assert taxonomy.num_rows == 0 and quarantine.num_rows == 0
