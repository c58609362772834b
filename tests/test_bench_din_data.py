"""The DIN benchmark's data plumbing: the peer must get exactly our rows, padded the way it expects.

Only the pure data functions are tested (no training, no timing, no peer venv).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from ctr_dagster.testing import make_training_table

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import bench_din  # noqa: E402
import din_data  # noqa: E402


def test_padded_keeps_the_most_recent_values_right_aligned():
    column = pa.chunked_array([pa.array([[5, 6, 7], [], [1, 2, 3, 4, 9]], pa.list_(pa.int32()))])
    out = din_data.padded(column.slice(0, 3), 4)
    assert out.dtype == np.int64
    assert out.tolist() == [[0, 5, 6, 7], [0, 0, 0, 0], [2, 3, 4, 9]]


def test_padded_respects_a_sliced_list_array():
    arr = pa.array([[1], [2, 3], [4, 5, 6]], pa.list_(pa.int32())).slice(1)
    assert din_data.padded(arr, 3).tolist() == [[0, 2, 3], [4, 5, 6]]


@pytest.fixture(scope="module")
def table() -> pa.Table:
    return make_training_table(3000, seed=3)


def test_load_splits_takes_the_most_recent_train_rows_and_spreads_eval_rows(tmp_path, table):
    path = tmp_path / "training.parquet"
    pq.write_table(table, path)
    train, valid, test = din_data.load_splits(path, 100, 50)
    all_train = table.filter(pc.equal(table.column("split"), "train"))
    assert train.num_rows == 100
    assert train.column("impression_id").to_pylist() == all_train.column("impression_id").to_pylist()[-100:]
    all_test = table.filter(pc.equal(table.column("split"), "test"))
    assert test.num_rows == 50 and valid.num_rows == 50
    ids = test.column("impression_id").to_pylist()
    assert ids[0] == all_test.column("impression_id")[0].as_py()
    assert ids[-1] == all_test.column("impression_id")[-1].as_py()


def test_export_npz_holds_the_same_rows_with_buckets(tmp_path, table):
    edges = din_data.bucket_edges(table)
    path = din_data.export_npz(table, tmp_path / "x.npz", 10, edges)
    with np.load(path) as npz:
        assert npz["label"].tolist() == table.column("label").to_numpy().astype(float).tolist()
        assert npz["item_idx"].tolist() == table.column("item_idx").to_pylist()
        assert npz["hist_item_idx"].shape == (table.num_rows, 10)
        for name in din_data.BUCKETED:
            buckets = npz[f"{name}_bucket"]
            assert buckets.min() >= 0 and buckets.max() <= din_data.N_BUCKETS
            assert len(np.unique(buckets)) > 2  # quantile buckets actually split the column
        for name in din_data.ID_COLUMNS:
            assert npz[name].tolist() == table.column(name).to_numpy().astype(np.int64).tolist()


def test_candidates_table_is_one_user_times_distinct_items(table):
    test = table.filter(pc.equal(table.column("split"), "test"))
    cand = bench_din.candidates_table(test, n=25)
    from ctr_dagster.modeling import features_only

    assert cand.schema == features_only(test).schema and cand.num_rows == 25  # served without labels
    assert len(set(cand.column("item_idx").to_pylist())) == 25
    for column in ("user_idx", "hist_item_idx", "hist_category_idx", "ts", "device_idx"):
        assert len({str(v) for v in cand.column(column).to_pylist()}) == 1, column
    longest = max(len(h) for h in test.column("hist_item_idx").to_pylist())
    assert len(cand.column("hist_item_idx")[0]) == longest
    with pytest.raises(ValueError, match="distinct items"):
        bench_din.candidates_table(test, n=test.num_rows + 1)


@dataclass
class _Config:
    epochs: int = 6
    batch_size: int = 512
    embedding_dim: int = 12
    tower_units: list[int] = field(default_factory=lambda: [32, 16])
    num_threads: int = 0


class _Plugin:
    name = "fake"
    Config = _Config


class _Info:  # what the registry hands out: the plugin class under `cls`
    cls = _Plugin


def test_peer_copies_our_hyper_parameters_and_falls_back_for_missing_knobs():
    args = argparse.Namespace(epochs=1, batch_size=None, threads=2, set=["embedding_dim=8"], seed=3)
    config, values = bench_din.our_config(_Info, args)
    assert values == {
        "epochs": 1,
        "batch_size": 512,
        "embedding_dim": 8,
        "tower_units": [32, 16],
        "num_threads": 2,
    }
    spec = bench_din.peer_spec(config, args, {"item_idx": 10})
    assert (spec["epochs"], spec["batch_size"], spec["embed_dim"], spec["tower_units"]) == (
        1,
        512,
        8,
        [32, 16],
    )
    assert spec["attention_units"] == bench_din.FALLBACK["attention_units"]  # our config has no such knob
    assert spec["seed"] == 3 and spec["cardinalities"] == {"item_idx": 10}
