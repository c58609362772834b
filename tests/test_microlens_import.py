"""MicroLens / MMCTR-style item tables -> canonical ITEMS + precomputed vectors, bad rows quarantined."""

import io

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ctr_dagster import embeddings, schemas
from ctr_dagster.embeddings.cache import from_fixed_list
from ctr_dagster.errors import MalformedInputError
from ctr_dagster.importers.microlens import MicrolensSpec, read_items, write
from ctr_dagster.warehouse import Warehouse


def _mmctr_file(path, rows, row_group_size=None):
    table = pa.table(
        {
            "item_id": pa.array([r[0] for r in rows], pa.int64()),
            "item_tags": pa.array([r[1] for r in rows], pa.list_(pa.int64())),
            "item_emb_d128": pa.array([r[2] for r in rows], pa.list_(pa.float32())),
        }
    )
    pq.write_table(table, path, row_group_size=row_group_size)
    return path


def _vec(seed: int, width: int = 128) -> list[float]:
    return np.random.default_rng(seed).normal(size=width).astype(np.float32).tolist()


def test_mmctr_item_info_imports_with_bad_rows_quarantined(tmp_path):
    nan = _vec(4)
    nan[7] = float("nan")
    rows = [
        (1, [11, 12], _vec(1)),
        (2, [], _vec(2)),  # no tags: default category
        (None, [13], _vec(3)),  # missing id
        (4, [14], nan),  # non-finite value
        (5, [15], _vec(5, width=64)),  # wrong width
        (1, [11], _vec(6)),  # duplicate id
        (7, [17], None),  # no embedding: imported without a vector
    ]
    path = _mmctr_file(tmp_path / "item_info.parquet", rows, row_group_size=3)
    result = read_items([path], MicrolensSpec.mmctr())

    assert result.rows_read == 7 == result.items.num_rows + result.quarantine.num_rows
    assert result.items.schema == schemas.ITEMS
    assert result.items.column("item_id").to_pylist() == ["1", "2", "7"]
    assert result.items.column("category").to_pylist() == ["11", "unknown", "17"]
    assert result.vectors.schema == schemas.vector_table({"mm": 128})
    np.testing.assert_allclose(from_fixed_list(result.vectors.column("mm"), 128)[0], _vec(1))
    assert result.vectors.column("mm").null_count == 1  # item 7

    q = {r["source_row"]: r for r in result.quarantine.to_pylist()}
    assert {row: (q[row]["rule"], q[row]["column"]) for row in q} == {
        3: ("missing_id", "item_id"),
        4: ("non_finite", "item_emb_d128"),
        5: ("wrong_width", "item_emb_d128"),
        6: ("duplicate_id", "item_id"),
    }
    assert all(r["source_file"] == str(path) and r["table"] == "raw_items" for r in q.values())
    assert "row 5, column 'item_emb_d128': expected 128 values, got 64" in q[5]["detail"]
    assert '"item_emb_d128": "<64 values>"' in q[5]["record"]


def test_padding_row_tags_and_first_non_zero_category(tmp_path):
    """MMCTR's item_info: row 0 is the padding item (id 0), tag lists are padded with 0."""
    rows = [
        (0, [0, 0, 0, 0, 0], [0.0] * 128),  # padding: skipped and counted, not an item
        (1, [0, 12, 11, 12, 0], _vec(1)),  # first non-zero tag 12; tags deduplicated
        (2, [0, 0, 0, 0, 0], _vec(2)),  # no tag: default category, no attribute row
        (3, [13], _vec(3, width=64)),  # quarantined: its tags are not imported either
    ]
    path = _mmctr_file(tmp_path / "item_info.parquet", rows)
    result = read_items([path], MicrolensSpec.mmctr())
    assert (result.rows_read, result.padding, result.items.num_rows, result.quarantine.num_rows) == (
        4,
        1,
        2,
        1,
    )
    assert result.items.column("item_id").to_pylist() == ["1", "2"]
    assert result.items.column("category").to_pylist() == ["12", "unknown"]
    assert result.attributes.schema == schemas.ITEM_ATTRIBUTES
    assert sorted(result.attributes.to_pylist(), key=lambda r: r["value"]) == [
        {"item_id": "1", "attribute": "tag", "value": "11"},
        {"item_id": "1", "attribute": "tag", "value": "12"},
    ]
    assert result.vectors.column("item_id").to_pylist() == ["1", "2"]
    [bad] = result.quarantine.to_pylist()
    assert (bad["source_row"], bad["rule"]) == (4, "wrong_width")
    # without padding_id, id 0 is an item like any other
    plain = read_items([path], MicrolensSpec(category_column="item_tags", tags_column="item_tags"))
    assert plain.padding == 0 and plain.items.column("item_id").to_pylist()[0] == "0"


def test_titles_images_and_numpy_bytes_across_files(tmp_path):
    a = np.arange(4, dtype=np.float32)
    npy = io.BytesIO()
    np.save(npy, a + 10)
    first = pa.table(
        {
            "id": ["x1", "x2", "x3"],
            "title": ["Red mug", None, "Blue lamp"],
            "text_vec": [a.tobytes(), npy.getvalue(), b"\x00\x01\x02"],  # raw float32 / .npy / garbage
        }
    )
    second = pa.table({"id": ["x4"], "title": ["Green hat"], "text_vec": [(a * 2).tobytes()]})
    pq.write_table(first, tmp_path / "a.parquet")
    pq.write_table(second, tmp_path / "b.parquet")
    spec = MicrolensSpec(id_column="id", title_column="title", vectors={"text_vec": "text"})
    result = read_items([tmp_path / "a.parquet", tmp_path / "b.parquet"], spec)

    assert result.items.column("item_id").to_pylist() == ["x1", "x2", "x4"]
    assert result.items.column("title").to_pylist() == ["Red mug", "", "Green hat"]
    np.testing.assert_array_equal(from_fixed_list(result.vectors.column("text"), 4), [a, a + 10, a * 2])
    [bad] = result.quarantine.to_pylist()
    assert (bad["source_file"], bad["source_row"], bad["rule"]) == (
        str(tmp_path / "a.parquet"),
        3,
        "unparseable",
    )


def test_file_level_problems_name_file_and_column(tmp_path):
    pq.write_table(pa.table({"item_id": [1], "emb": ["not a vector"]}), tmp_path / "t.parquet")
    with pytest.raises(MalformedInputError, match="column 'emb'.*cannot hold embeddings"):
        read_items([tmp_path / "t.parquet"], MicrolensSpec(vectors={"emb": "mm"}))
    with pytest.raises(MalformedInputError, match="item_emb_d128"):
        read_items([tmp_path / "t.parquet"], MicrolensSpec())
    (tmp_path / "junk.parquet").write_bytes(b"PAR1 nope")
    with pytest.raises(MalformedInputError, match="junk.parquet"):
        read_items([tmp_path / "junk.parquet"], MicrolensSpec())


def test_written_vectors_feed_the_embedding_stage(tmp_path):
    from ctr_dagster.embeddings.pipeline import build_item_embeddings

    rows = [(i, [i % 3], _vec(i, width=16)) for i in range(1, 31)]
    spec = MicrolensSpec(category_column="item_tags")  # widths inferred (16)
    result = read_items([_mmctr_file(tmp_path / "items.parquet", rows)], spec)
    wh = Warehouse(tmp_path / "wh")
    assert write(wh, result) == {"rows_read": 30, "items": 30, "quarantined": 0}
    built = build_item_embeddings(
        wh.read("raw_items"),
        None,
        [],  # no encoder: the imported vectors alone
        cache_root=tmp_path / "c",
        state_root=tmp_path / "s",
        width=8,
        precomputed=wh.read(embeddings.PRECOMPUTED_TABLE),
        log=lambda m: None,
    )
    assert built.table.column_names == ["item_id", "mm", "fused"]
    assert built.table.schema.field("fused").type == pa.list_(pa.float32(), 8)
