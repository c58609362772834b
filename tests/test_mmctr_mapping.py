"""The MMCTR challenge's own format through a mapping: `file_defaults` (constants per file, e.g. a day
per file), `format: microlens` for item_info.parquet (items, tags as item_attributes, precomputed
vectors as raw_item_vectors), and examples/mmctr/ from files to a leaderboard. Every file is written
by the test (examples/mmctr/make_standin.py into tmp_path)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import yaml

from ctr_dagster import schemas
from ctr_dagster.importers import MappingError, load_mapping, read_catalogue
from ctr_dagster.importers.generic import iter_file_days, scan_file, table_files
from ctr_dagster.importers.staging import mapping_key

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples/mmctr"
DAYS = {"train.parquet": "2025-01-01", "valid.parquet": "2025-01-02", "test.parquet": "2025-01-03"}


def _standin():
    spec = importlib.util.spec_from_file_location("mmctr_standin", EXAMPLE / "make_standin.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_example(folder: Path, **sizes: int) -> Path:
    """The stand-in files (small unless `sizes` say otherwise) and the shipped mapping, in `folder`."""
    sizes = {"users": 120, "items": 150, "train": 1_500, "valid": 300, "test": 300, **sizes}
    _standin().write_standin(folder, **sizes)
    mapping = folder / "mapping.yaml"
    mapping.write_text((EXAMPLE / "mapping.yaml").read_text())
    return mapping


def edit(mapping: Path, change) -> Path:
    doc = yaml.safe_load(mapping.read_text())
    change(doc)
    mapping.write_text(yaml.safe_dump(doc, sort_keys=False))
    return mapping


def impressions_table(doc: dict) -> dict:
    return doc["tables"]["impressions"]


# -- file_defaults -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("change", "key", "message"),
    [
        (
            lambda d: impressions_table(d)["file_defaults"]["train.parquet"].update(colour="red"),
            "tables.impressions.file_defaults.train.parquet.colour",
            "not a column of impressions",
        ),
        (
            lambda d: impressions_table(d)["file_defaults"]["valid.parquet"].update(click=1),
            "tables.impressions.file_defaults.valid.parquet.click",
            "also mapped under columns",
        ),
        (
            lambda d: impressions_table(d)["file_defaults"]["test.parquet"].update(ts="yesterday"),
            "tables.impressions.file_defaults.test.parquet.ts",
            "'yesterday' is not a valid",
        ),
        (
            lambda d: impressions_table(d)["file_defaults"]["train.parquet"].update(impression_id="x"),
            "tables.impressions.file_defaults.train.parquet.impression_id",
            "cannot be a constant",
        ),
        (
            lambda d: impressions_table(d)["file_defaults"].update({"tset.parquet": {"conversion": 1}}),
            "tables.impressions.file_defaults.tset.parquet",
            "matches none of the files",
        ),
        (
            lambda d: impressions_table(d).update(file_defaults=["train.parquet"]),
            "tables.impressions.file_defaults",
            "must be a mapping",
        ),
        (
            lambda d: d["tables"]["items"].update(file_defaults={"item_info.parquet": {"price": 1}}),
            "tables.items.file_defaults",
            "read whole",
        ),
    ],
)
def test_file_defaults_errors_name_the_key(tmp_path, change, key, message):
    mapping = edit(write_example(tmp_path, train=50, valid=10, test=10), change)
    with pytest.raises(MappingError, match=message) as err:
        load_mapping(mapping)
    assert err.value.key == key


def test_file_defaults_are_checked_against_the_files_when_the_import_plans(tmp_path):
    """A glob that matched at load time but matches none of the files the import reads is an error
    then too (here: valid.parquet was removed after the mapping loaded)."""
    path = write_example(tmp_path, train=50, valid=10, test=10)
    mapping = load_mapping(edit(path, lambda d: impressions_table(d).update(files="[tv]*.parquet")))
    (tmp_path / "valid.parquet").unlink()
    with pytest.raises(MappingError, match="matches none") as err:
        table_files(mapping, "impressions")
    assert err.value.key == "tables.impressions.file_defaults.valid.parquet"


def test_two_globs_setting_one_column_of_a_file_conflict(tmp_path):
    path = edit(
        write_example(tmp_path, train=50, valid=10, test=10),
        lambda d: impressions_table(d)["file_defaults"].update({"*.parquet": {"ts": "2025-02-01"}}),
    )
    mapping = load_mapping(path)
    with pytest.raises(MappingError, match="also matches") as err:
        list(iter_file_days(mapping, tmp_path / "train.parquet"))
    assert err.value.key.startswith("tables.impressions.file_defaults.")


def test_a_files_constant_wins_over_the_tables_default_and_keys_the_staging(tmp_path):
    path = write_example(tmp_path, train=50, valid=10, test=10)
    mapping = load_mapping(
        edit(
            path,
            lambda d: (
                impressions_table(d)["defaults"].update(ts="2024-06-01", device="app"),
                impressions_table(d)["columns"].pop("device"),
                impressions_table(d)["file_defaults"]["test.parquet"].update(device="web"),
            ),
        )
    )
    for name, day in DAYS.items():
        assert scan_file(mapping, tmp_path / name) == ({day}, False)  # the day index's scan
        [(staged_day, part)] = list(iter_file_days(mapping, tmp_path / name))  # the staging's pass
        assert staged_day == day
        assert set(part.batch.column("device").to_pylist()) == {"web" if name == "test.parquet" else "app"}
    moved = load_mapping(
        edit(path, lambda d: impressions_table(d)["file_defaults"]["test.parquet"].update(ts="2025-01-04"))
    )
    assert mapping_key(moved) != mapping_key(mapping)  # a changed constant restages the files


# -- format: microlens -------------------------------------------------------------------------------
def test_microlens_options_are_validated(tmp_path):
    path = write_example(tmp_path, train=50, valid=10, test=10)
    cases = [
        (lambda d: d["tables"]["items"].pop("format"), "tables.items.microlens", "format: microlens only"),
        (
            lambda d: d["tables"]["items"]["microlens"].update(widths={"emb": 8}),
            "tables.items.microlens.widths.emb",
            "not one of the vectors",
        ),
        (
            lambda d: d["tables"]["items"].update(columns={"item_id": "item_id"}),
            "tables.items.columns",
            "read whole",
        ),
        (
            lambda d: d["tables"]["item_attributes"].update(defaults={"value": "x"}),
            "tables.item_attributes.defaults.value",
            "none may be given",
        ),
        (
            lambda d: d["tables"]["item_attributes"].update(microlens={"tags": None}),
            "tables.item_attributes.microlens.tags",
            "tags column",
        ),
    ]
    text = path.read_text()
    for change, key, message in cases:
        path.write_text(text)
        with pytest.raises(MappingError, match=message) as err:
            load_mapping(edit(path, change))
        assert err.value.key == key, message


def test_item_info_bad_rows_are_quarantined_with_file_row_and_column(tmp_path):
    path = write_example(tmp_path, train=50, valid=10, test=10, items=20)
    info = pq.read_table(tmp_path / "item_info.parquet")
    rows = info.to_pylist()
    nan = list(rows[3]["item_emb_d128"])
    nan[5] = float("nan")
    rows += [
        {"item_id": 900, "item_tags": [7, 0, 0, 0, 0], "item_emb_d128": nan},
        {"item_id": None, "item_tags": [8, 0, 0, 0, 0], "item_emb_d128": rows[4]["item_emb_d128"]},
    ]
    pq.write_table(pa.Table.from_pylist(rows, schema=info.schema), tmp_path / "item_info.parquet")
    mapping = load_mapping(path)
    cache: dict = {}
    items = read_catalogue(mapping, "items", cache=cache)
    attributes = read_catalogue(mapping, "item_attributes", cache=cache)
    assert items.padding == 1 and items[0].num_rows == 20  # row 1 (item_id 0) is padding
    assert items[0].num_rows + items[1].num_rows + items.padding == len(rows)  # every row counted
    q = {r["source_row"]: r for r in items[1].to_pylist()}
    assert {r: (q[r]["rule"], q[r]["column"], q[r]["table"]) for r in q} == {
        22: ("non_finite", "item_emb_d128", "raw_items"),
        23: ("missing_id", "item_id", "raw_items"),
    }
    assert all(r["source_file"] == str(tmp_path / "item_info.parquet") for r in q.values())
    assert "row 22, column 'item_emb_d128'" in q[22]["detail"]
    assert attributes[1].num_rows == 0  # read once, reported once (under raw_items)
    assert "900" not in set(attributes[0].column("item_id").to_pylist())
    assert items.vectors.num_rows == 20 and items.vectors.schema == schemas.vector_table({"mm": 128})


def test_raw_catalogue_writes_the_vectors_only_when_there_are_some(tmp_path):
    import dagster as dg

    from assets.raw import _write_item_vectors
    from ctr_dagster.embeddings import PRECOMPUTED_TABLE
    from ctr_dagster.warehouse import Warehouse

    wh, context = Warehouse(tmp_path / "wh"), dg.build_asset_context()
    assert _write_item_vectors(context, wh, None) == {} and not wh.exists(PRECOMPUTED_TABLE)
    vectors = pa.table(
        {"item_id": ["1", "2"], "mm": pa.FixedSizeListArray.from_arrays(pa.array(np.ones(8, np.float32)), 4)},
        schema=schemas.vector_table({"mm": 4}),
    )
    meta = _write_item_vectors(context, wh, vectors)
    assert (
        meta["precomputed_vectors"].value["widths"] == {"mm": 4} and wh.read(PRECOMPUTED_TABLE).num_rows == 2
    )
    _write_item_vectors(context, wh, None)  # a later source without vectors: no stale ones fused
    assert wh.read(PRECOMPUTED_TABLE).num_rows == 0


# -- examples/mmctr end to end -----------------------------------------------------------------------
def test_the_shipped_mapping_loads_and_conforms_to_the_schema():
    import datetime as dt
    import json

    jsonschema = pytest.importorskip("jsonschema")
    mapping = load_mapping(EXAMPLE / "mapping.yaml")  # on the shipped stand-in files
    spec = mapping.table("impressions")
    assert {glob: values["ts"].value for glob, values in spec.file_defaults.items()} == {
        name: int(dt.datetime.fromisoformat(f"{day}T00:00:00+00:00").timestamp() * 1000)
        for name, day in DAYS.items()
    }
    assert mapping.table("items").format == mapping.table("item_attributes").format == "microlens"
    assert mapping.table("item_attributes").microlens == mapping.table("items").microlens  # one read
    doc = yaml.safe_load((EXAMPLE / "mapping.yaml").read_text())
    plain = json.loads(json.dumps(doc, default=lambda v: v.isoformat()))  # YAML dates as an editor sees them
    jsonschema.validate(plain, json.loads((ROOT / "examples/mapping.schema.json").read_text()))


def test_the_shipped_standin_is_what_make_standin_writes(tmp_path):
    _standin().write_standin(tmp_path)
    for name in ("train", "valid", "test", "item_info"):
        assert pq.read_table(tmp_path / f"{name}.parquet").equals(pq.read_table(EXAMPLE / f"{name}.parquet"))


@pytest.mark.integration
def test_mmctr_mapping_imports_and_reaches_a_leaderboard(tmp_path):
    """The stand-in through the shipped mapping, in-process as `ctr run` does it, with two cheap models
    and QIN (the challenge's model on the challenge's schema): three days split like the files, tags,
    128-wide vectors, sequences from item_seq."""
    import dagster as dg

    from assets.definitions import build_definitions
    from assets.raw import CATALOGUE_TABLES
    from assets.run import summary
    from assets.schedules import DAY_ASSETS, EVALUATION_ASSETS
    from ctr_dagster import vocab
    from ctr_dagster.embeddings.cache import from_fixed_list
    from ctr_dagster.evaluation import report
    from ctr_dagster.settings import Settings
    from ctr_dagster.sources import Source
    from ctr_dagster.warehouse import Warehouse

    data = tmp_path / "data"
    mapping = write_example(data)
    info = pq.read_table(data / "item_info.parquet")  # row k (0-based) is item k; row 0 is padding
    shown = pq.read_table(data / "train.parquet").column("item_id").value_counts().to_pylist()
    bad = max(shown, key=lambda c: c["counts"])["values"]  # a much-shown item gets a NaN vector
    rows = info.to_pylist()
    rows[bad]["item_emb_d128"] = [float("nan")] * 128
    pq.write_table(pa.Table.from_pylist(rows, schema=info.schema), data / "item_info.parquet")
    settings = Settings(source="import", mapping=mapping, home=tmp_path / "ctr")
    plan = Source(settings).import_plan()
    assert plan.days == sorted(DAYS.values()) and not plan.skipped and not plan.out_of_range
    defs = build_definitions(settings)
    assets, resources = list(defs.assets) + list(defs.asset_checks or []), dict(defs.resources)
    with dg.instance_for_test() as instance:

        def run(selection, partition=None):
            result = dg.materialize(
                assets, selection=selection, partition_key=partition, instance=instance, resources=resources
            )
            assert result.success

        run(list(CATALOGUE_TABLES))
        for day in plan.days:
            run(DAY_ASSETS, day)
        models = [dg.AssetKey(["models", name]) for name in ("baseline_lr", "lightgbm", "qin")]
        # one run: dataset and QIN's inputs (item vectors, tags) -> the models -> leaderboard, champion
        inputs = [dg.AssetKey("item_embeddings"), dg.AssetKey("item_attributes")]
        run([dg.AssetKey("training_dataset"), *inputs, *models, *map(dg.AssetKey, EVALUATION_ASSETS)])
    wh = Warehouse(settings.ctr_home.warehouse)

    # catalogue: items without the padding row, tags, vectors, the bad row quarantined and counted
    items = wh.read("raw_items")
    assert items.num_rows == info.num_rows - 2  # the padding row and the bad row
    assert not {"0", str(bad)} & set(items.column("item_id").to_pylist())
    [quarantined] = wh.read("quarantine_catalogue").to_pylist()
    assert (quarantined["source_file"], quarantined["source_row"], quarantined["column"]) == (
        str(data / "item_info.parquet"),
        bad + 1,  # 1-based
        "item_emb_d128",
    )
    assert quarantined["rule"] == "non_finite" and f"row {bad + 1}" in quarantined["detail"]
    vectors = wh.read("raw_item_vectors")
    assert vectors.schema == schemas.vector_table({"mm": 128}) and vectors.num_rows == items.num_rows
    first = info.slice(1, 1).to_pylist()[0]  # item_info's first real item
    row = vectors.column("item_id").to_pylist().index(str(first["item_id"]))
    np.testing.assert_allclose(from_fixed_list(vectors.column("mm"), 128)[row], first["item_emb_d128"])
    tags = wh.read("raw_item_attributes")
    assert set(tags.column("attribute").to_pylist()) == {"tag"}
    mine = tags.filter(pc.equal(tags.column("item_id"), str(first["item_id"])))
    assert sorted(mine.column("value").to_pylist()) == sorted(str(t) for t in first["item_tags"] if t)
    assert items.column("category").to_pylist()[0] == str(next(t for t in first["item_tags"] if t))

    # training rows: three days split like the files, sequences from item_seq (padding dropped)
    dataset = wh.read("training_dataset")
    split_days = {
        s: sorted(
            set(
                pc.strftime(
                    dataset.filter(pc.equal(dataset.column("split"), s)).column("ts"), "%Y-%m-%d"
                ).to_pylist()
            )
        )
        for s in ("train", "valid", "test")
    }
    assert split_days == {"train": ["2025-01-01"], "valid": ["2025-01-02"], "test": ["2025-01-03"]}
    valid = pq.read_table(data / "valid.parquet").to_pylist()
    row = next(
        r for r, v in enumerate(valid, 1) if v["item_id"] != bad and sum(1 for i in v["item_seq"] if i) > 2
    )
    [target] = dataset.filter(pc.equal(dataset.column("impression_id"), f"valid.parquet:{row}")).to_pylist()
    index = vocab.load(wh, "item").to_pydict()
    item_index = dict(zip(index["key"], index["index"], strict=True))
    expected = [item_index.get(str(i), vocab.OOV) for i in valid[row - 1]["item_seq"] if i != 0]
    assert target["hist_item_idx"] == expected  # most recent last, padding zeros dropped
    assert target["label"] == valid[row - 1]["label"]

    # the run's accounting and leaderboard
    figures = summary(settings)
    assert figures["rows_accounted"].endswith(
        f"of {figures['rows_read']} (clean + quarantined + out of range)"
    )
    assert figures["rows_read"] == 2_100 and figures["quarantined"] > 0  # impressions of the bad item
    doc = report(settings.ctr_home)
    ranked = {r["name"]: r for r in doc["models"]}
    assert {"baseline_lr", "lightgbm"} <= set(ranked)
    assert max(r["auc"] for r in ranked.values()) > 0.55  # the stand-in's labels are learnable
    # QIN on the challenge schema: its item token read the item_emb_d128 vectors and item_tags (its
    # fit raises when an input it is set to read is missing), and its row carries the cost columns
    qin = ranked["qin"]
    assert qin["status"] == "ok" and 0.0 <= qin["auc"] <= 1.0
    record = json.loads(Path(qin["record"]).read_text())
    assert record["config"]["use_item_embeddings"] and record["config"]["use_item_tags"]
    assert qin["parameters"] > 0 and qin["train_rows_per_s"] > 0
    assert 0 < qin["latency_p50_ms"] <= qin["latency_p99_ms"]
