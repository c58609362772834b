"""Item embeddings engine: content-hash cache, trainable-encoder state, fusion, usefulness metrics,
failure isolation, the output schema and `item_matrix`. Stub encoders keep these fast; one test runs
the real minilm + image_cnn plugins on a tiny catalogue."""

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from ctr_dagster import embeddings, schemas, vocab
from ctr_dagster.embeddings import cache as cache_mod
from ctr_dagster.embeddings import fusion, usefulness
from ctr_dagster.embeddings.encoding import run_encoder
from ctr_dagster.embeddings.pipeline import EncoderSpec, build_item_embeddings
from ctr_dagster.testing import make_item_attributes_table, make_items_table
from ctr_dagster.warehouse import Warehouse


# -- stub encoders -----------------------------------------------------------------------------------
def _hash_vector(data: bytes, dim: int, salt: float = 0.0) -> np.ndarray:
    seed = int.from_bytes(hashlib.sha256(data).digest()[:8], "little")
    return (np.random.default_rng(seed).normal(size=dim) + salt).astype(np.float32)


@dataclasses.dataclass
class CountingConfig:
    dim: int = 8
    batch_size: int = 16  # a runtime field: changing it must not invalidate the cache


class CountingText:
    """A deterministic text encoder that records how many items it was asked to encode."""

    name = "count_text"
    modality = "text"
    Config = CountingConfig
    version = "1"
    runtime_fields = frozenset({"batch_size"})
    calls: ClassVar[list[int]] = []

    def __init__(self, config=None):
        self.config = config or CountingConfig()

    def encode(self, items: pa.Table) -> np.ndarray:
        type(self).calls.append(items.num_rows)
        titles = items.column("title").to_pylist()
        return np.stack([_hash_vector(t.encode(), self.config.dim) for t in titles]).reshape(
            -1, self.config.dim
        )


@dataclasses.dataclass
class TrainableConfig:
    dim: int = 4


class TrainableImage:
    """A trainable image encoder: `fit` learns an offset; records the attribute rows it was given."""

    name = "train_img"
    modality = "image"
    Config = TrainableConfig
    version = "1"
    fits: ClassVar[list[set[str]]] = []

    def __init__(self, config=None):
        self.config = config or TrainableConfig()
        self.offset = 0.0

    def fit(self, items: pa.Table, attributes: pa.Table | None):
        ids = set(attributes.column("item_id").to_pylist()) if attributes is not None else set()
        type(self).fits.append(ids)
        self.offset = float(len(type(self).fits))  # every fit gives different weights
        return self

    def encode(self, items: pa.Table) -> np.ndarray:
        images = items.column("image_png").to_pylist()
        return np.stack([_hash_vector(b or b"", self.config.dim, self.offset) for b in images]).reshape(
            -1, self.config.dim
        )

    def save(self, directory: Path) -> None:
        (Path(directory) / "state.json").write_text(
            json.dumps({"offset": self.offset, "dim": self.config.dim})
        )

    @classmethod
    def load(cls, directory: Path):
        state = json.loads((Path(directory) / "state.json").read_text())
        encoder = cls(TrainableConfig(dim=state["dim"]))
        encoder.offset = state["offset"]
        return encoder


class Exploding(CountingText):
    name = "exploding"

    def encode(self, items):
        raise RuntimeError("GPU on fire")


@pytest.fixture(autouse=True)
def _reset_stubs():
    CountingText.calls.clear()
    TrainableImage.fits.clear()


def _run(items, tmp_path, cls=CountingText, config=None, refit=False, attributes=None):
    return run_encoder(
        cls,
        config or {},
        items,
        attributes,
        cache_root=tmp_path / "cache",
        state_root=tmp_path / "state",
        refit=refit,
        log=lambda m: None,
    )


def _retitle(items: pa.Table, row: int, title: str) -> pa.Table:
    titles = items.column("title").to_pylist()
    titles[row] = title
    return items.set_column(items.schema.get_field_index("title"), "title", pa.array(titles))


# -- cache -------------------------------------------------------------------------------------------
def test_content_hash_covers_exactly_the_content():
    items = make_items_table(3)
    keys = cache_mod.content_hashes(items, ["title"])
    assert len(set(keys)) == 3 and all(len(k) == 64 for k in keys)
    assert cache_mod.content_hashes(_retitle(items, 1, "Other"), ["title"])[::2] == keys[::2]
    assert cache_mod.content_hashes(pa.table({"a": ["ab"], "b": ["c"]}), ["a", "b"]) != (
        cache_mod.content_hashes(pa.table({"a": ["a"], "b": ["bc"]}), ["a", "b"])
    )
    empty = pa.table({"image_png": pa.array([None, b""], pa.binary()), "title": ["", "x"]})
    assert cache_mod.content_hashes(empty, ["image_png"]) == [None, None]
    assert cache_mod.content_hashes(empty, ["title"])[0] is None


def test_second_run_encodes_nothing_and_a_changed_title_exactly_one_item(tmp_path):
    items = make_items_table(30)
    first = _run(items, tmp_path)
    assert (first.encoded, first.cached) == (30, 0)
    second = _run(items, tmp_path, config={"batch_size": 3})  # runtime field: same identity
    assert (second.encoded, second.cached) == (0, 30) and second.identity == first.identity
    np.testing.assert_array_equal(second.vectors, first.vectors)

    changed = _retitle(items, 7, "A brand new title")
    third = _run(changed, tmp_path)
    assert (third.encoded, third.cached) == (1, 29)
    assert CountingText.calls[-1] == 1  # only that item reached the encoder
    np.testing.assert_array_equal(np.delete(third.vectors, 7, 0), np.delete(first.vectors, 7, 0))
    assert not np.array_equal(third.vectors[7], first.vectors[7])

    wider = _run(items, tmp_path, config={"dim": 6})  # an output field: new identity, all re-encoded
    assert wider.identity != first.identity and (wider.encoded, wider.dim) == (30, 6)


def test_duplicate_content_is_encoded_once(tmp_path):
    items = _retitle(_retitle(make_items_table(5), 1, "Same"), 2, "Same")
    out = _run(items, tmp_path)
    assert out.encoded == 5 and sum(CountingText.calls) == 4
    np.testing.assert_array_equal(out.vectors[1], out.vectors[2])


def _unique_images(items: pa.Table) -> pa.Table:
    """Two world items can share an image (same colour, shape, texture and jitter; 2 of the kit's 240
    do): make each item's bytes its own, so the encode counts below are exact."""
    pngs, ids = items.column("image_png").to_pylist(), items.column("item_id").to_pylist()
    images = [b + i.encode() for b, i in zip(pngs, ids, strict=True)]
    return items.set_column(items.schema.get_field_index("image_png"), "image_png", pa.array(images))


def test_trainable_encoder_is_fitted_once_then_reloaded(tmp_path):
    catalogue = _unique_images(make_items_table(25))
    items = catalogue.slice(0, 20)
    attributes = make_item_attributes_table(20)
    first = _run(items, tmp_path, TrainableImage, attributes=attributes)
    assert first.state == "fitted" and first.encoded == 20 and len(TrainableImage.fits) == 1
    grown = catalogue  # the catalogue gains 5 items
    second = _run(grown, tmp_path, TrainableImage, attributes=attributes)
    assert second.state == "loaded" and len(TrainableImage.fits) == 1
    assert second.identity == first.identity and (second.encoded, second.cached) == (5, 20)
    np.testing.assert_array_equal(second.vectors[:20], first.vectors)
    refit = _run(grown, tmp_path, TrainableImage, refit=True, attributes=attributes)
    assert refit.state == "fitted" and refit.identity != first.identity and refit.encoded == 25


# -- fusion ------------------------------------------------------------------------------------------
def _blocks(n=60, seed=0):
    rng = np.random.default_rng(seed)
    text = rng.normal(size=(n, 12)).astype(np.float32) * 5
    image = rng.normal(size=(n, 3)).astype(np.float32)
    present = np.ones(n, dtype=bool)
    present[::7] = False
    return {"text": (text, np.ones(n, dtype=bool)), "image": (image, present)}


def test_fusion_is_deterministic_with_the_requested_width():
    a = fusion.fuse(_blocks(), width=8)
    b = fusion.fuse(_blocks(), width=8)
    assert a.vectors.dtype == np.float32 and a.vectors.shape == (60, 8) and a.components == 8
    np.testing.assert_array_equal(a.vectors, b.vectors)
    np.testing.assert_allclose(a.vectors.mean(axis=0), 0.0, atol=1e-5)
    variances = a.vectors.var(axis=0)
    assert np.all(np.diff(variances) <= 1e-6)  # leading components first


def test_fusion_whitening_and_padding():
    white = fusion.fuse(_blocks(), width=8, whiten=True)
    np.testing.assert_allclose(white.vectors.std(axis=0, ddof=1), 1.0, rtol=1e-4)
    wide = fusion.fuse(_blocks(), width=32)  # 12 + 3 dims -> at most 15 components, rest zero
    assert wide.vectors.shape == (60, 32) and wide.components <= 15
    assert np.all(wide.vectors[:, wide.components :] == 0)
    assert wide.explained_variance == pytest.approx(1.0)


def test_fusion_normalizes_each_modality_and_fills_missing_with_its_mean():
    text, present = np.array([[10.0, 0], [0, 10.0], [10.0, 0]]), np.array([True, True, False])
    block = fusion.normalized_block(text, present)
    np.testing.assert_allclose(block, [[1, 0], [0, 1], [0.5, 0.5]])


# -- usefulness --------------------------------------------------------------------------------------
def test_linear_probe_on_a_hand_checkable_example():
    # x = class id on one axis plus noise on another; labels perfectly linear -> accuracy 1.
    x = np.array([[0, 0.1], [0, -0.2], [1, 0.3], [1, 0.0], [0, 0.2], [1, -0.1], [0, 0.0], [1, 0.1]])
    labels = ["a", "a", "b", "b", "a", "b", "a", "b"]
    heldout = np.array([False] * 6 + [True, True])
    result = usefulness.linear_probe(x, labels, heldout, alpha=1e-3)
    assert (result.accuracy, result.n_test, result.n_classes) == (1.0, 2, 2)
    assert result.majority == 0.5  # train has 3 "a" / 3 "b": tie -> first class "a", right on 1 of 2
    # an unseen test label is left out; unknown labels (None) never count
    result = usefulness.linear_probe(x, ["a", "a", "b", "b", None, "b", "c", "b"], heldout)
    assert result.n_test == 1


def test_retrieval_precision_on_a_hand_checkable_example():
    x = np.array([[1, 0], [0.9, 0.1], [1, 0.05], [0, 1], [0.1, 0.9], [0.05, 1]])
    cats = ["x", "x", "x", "y", "y", "y"]
    assert usefulness.retrieval_precision(x, cats, k=2) == 1.0
    # k=3: each item's 3 neighbours hold its 2 same-category items and 1 of the others: 2/3
    assert usefulness.retrieval_precision(x, cats, k=3) == pytest.approx(2 / 3)
    assert usefulness.retrieval_precision(x, ["x", "y", "x", "y", "x", "y"], k=2) < 0.5


def test_holdout_is_stable_and_about_a_fifth():
    ids = [f"i{j:06d}" for j in range(5000)]
    mask = usefulness.holdout_mask(ids)
    assert 0.17 < mask.mean() < 0.23
    np.testing.assert_array_equal(usefulness.holdout_mask(ids[:100]), mask[:100])  # growth moves nothing


# -- the pipeline ------------------------------------------------------------------------------------
def _items_with_missing_image(n=40) -> pa.Table:
    items = make_items_table(n)
    images = items.column("image_png").to_pylist()
    images[3] = None
    return items.set_column(
        items.schema.get_field_index("image_png"), "image_png", pa.array(images, pa.binary())
    )


def test_pipeline_output_schema_and_failure_isolation(tmp_path):
    items = _items_with_missing_image()
    attributes = make_item_attributes_table(40)
    result = build_item_embeddings(
        items,
        attributes,
        [EncoderSpec(CountingText), EncoderSpec(TrainableImage), EncoderSpec(Exploding)],
        cache_root=tmp_path / "cache",
        state_root=tmp_path / "state",
        width=6,
        log=lambda m: None,
    )
    table = result.table
    assert table.column_names == ["item_id", "text", "image", "fused"]
    assert table.schema == schemas.vector_table({"text": 8, "image": 4, "fused": 6})
    for name, width in (("text", 8), ("image", 4), ("fused", 6)):
        assert table.schema.field(name).type == pa.list_(pa.float32(), width)
    assert table.column("image").null_count == 1 and not table.column("image")[3].is_valid
    assert table.column("fused").null_count == 0
    status = {s.name: s.status for s in result.sources}
    assert status == {"count_text": "ok", "train_img": "ok", "exploding": "failed"}
    assert "GPU on fire" in next(s.error for s in result.sources if s.name == "exploding")
    # the trainable encoder never saw the held-out items' attributes
    held = {
        i
        for i, h in zip(
            items.column("item_id").to_pylist(),
            usefulness.holdout_mask(items.column("item_id").to_pylist()),
            strict=True,
        )
        if h
    }
    assert held and not (TrainableImage.fits[0] & held)
    assert set(result.probes) == {"text", "image", "fused"} and "category" in result.probes["fused"]
    assert set(result.retrieval) == {"text", "image", "fused"}
    numbers = result.numbers()
    assert numbers["encoded/count_text"] == 40 and numbers["fused_width"] == 6


def test_pipeline_with_no_working_encoder_fails_naming_the_errors(tmp_path):
    with pytest.raises(RuntimeError, match="GPU on fire"):
        build_item_embeddings(
            make_items_table(10),
            None,
            [EncoderSpec(Exploding)],
            cache_root=tmp_path / "c",
            state_root=tmp_path / "s",
            log=lambda m: None,
        )


def test_precomputed_vectors_are_fused_alongside_encoders(tmp_path):
    items = make_items_table(12)
    vectors = np.arange(12 * 3, dtype=np.float32).reshape(12, 3) % 5
    precomputed = pa.Table.from_arrays(
        [items.column("item_id").slice(0, 10), cache_mod.to_fixed_list(vectors[:10])],
        schema=schemas.vector_table({"text": 3}),
    )
    result = build_item_embeddings(
        items,
        None,
        [EncoderSpec(CountingText)],
        cache_root=tmp_path / "c",
        state_root=tmp_path / "s",
        width=4,
        precomputed=precomputed,
        log=lambda m: None,
    )
    assert result.table.column_names == ["item_id", "text", "text_precomputed", "fused"]
    assert result.table.column("text_precomputed").null_count == 2
    np.testing.assert_array_equal(
        cache_mod.from_fixed_list(result.table.column("text_precomputed"), 3)[:10], vectors[:10]
    )


def test_item_matrix_rows_follow_the_item_vocabulary(tmp_path):
    wh = Warehouse(tmp_path)
    vocab.update(wh, "item", pa.chunked_array([pa.array(["i00002", "i00000", "zz_no_vector"])]))
    fused = np.array([[1, 2], [3, 4], [5, 6]], dtype=np.float32)
    table = pa.Table.from_arrays(
        [pa.array(["i00000", "i00001", "i00002"]), cache_mod.to_fixed_list(fused)],
        schema=schemas.vector_table({"fused": 2}),
    )
    wh.write(embeddings.TABLE, table)
    matrix = embeddings.item_matrix(wh)
    index = dict(zip(*[vocab.load(wh, "item").column(c).to_pylist() for c in ("key", "index")], strict=True))
    assert matrix.shape == (vocab.FIRST_INDEX + 3, 2) and matrix.dtype == np.float32
    np.testing.assert_array_equal(matrix[:2], 0)  # padding and OOV
    np.testing.assert_array_equal(matrix[index["i00000"]], [1, 2])
    np.testing.assert_array_equal(matrix[index["i00002"]], [5, 6])
    np.testing.assert_array_equal(matrix[index["zz_no_vector"]], [0, 0])


def test_real_plugins_on_a_tiny_catalogue(tmp_path):
    """minilm + image_cnn end to end: shapes and dtypes, then a re-run served from the cache."""
    pytest.importorskip("ctr_minilm")
    pytest.importorskip("ctr_image")
    from ctr_image.encoder import ImageCnnEncoder
    from ctr_minilm.encoder import MinilmEncoder

    items, attributes = make_items_table(60, seed=5), make_item_attributes_table(60, seed=5)
    specs = [
        EncoderSpec(MinilmEncoder, {"device": "cpu"}),
        EncoderSpec(ImageCnnEncoder, {"epochs": 1, "widths": [8, 16], "dim": 16, "device": "cpu"}),
    ]

    def build():
        return build_item_embeddings(
            items,
            attributes,
            specs,
            cache_root=tmp_path / "c",
            state_root=tmp_path / "s",
            width=32,
            log=print,
        )

    first = build()
    assert first.table.schema == schemas.vector_table({"text": 384, "image": 16, "fused": 32})
    text = cache_mod.from_fixed_list(first.table.column("text"), 384)
    np.testing.assert_allclose(np.linalg.norm(text, axis=1), 1.0, atol=1e-5)
    assert [s.outcome.encoded for s in first.sources] == [60, 60]
    again = build()
    assert [(s.outcome.encoded, s.outcome.cached) for s in again.sources] == [(0, 60), (0, 60)]
    assert pc.all(
        pc.equal(
            again.table.column("fused").combine_chunks().flatten(),
            first.table.column("fused").combine_chunks().flatten(),
        )
    ).as_py()
    # the title says the colour, the image shows it: both probes beat the majority class
    for column in ("text", "image", "fused"):
        probe = first.probes[column]["colour"]
        assert probe.accuracy > probe.majority, (column, probe)


@pytest.mark.integration
def test_item_embeddings_asset_materializes_with_metadata(tmp_path):
    """The asset in a temporary instance: table written, counts/probes/PNG in metadata, check passes."""
    pytest.importorskip("ctr_image")
    import dagster as dg

    from assets.embeddings import item_embeddings
    from assets.resources import WarehouseResource

    resource = WarehouseResource(home=str(tmp_path))
    wh = resource.get()
    wh.write("raw_items", make_items_table(50, seed=9))
    wh.write("raw_item_attributes", make_item_attributes_table(50, seed=9))
    config = {"encoders": ["image_cnn"], "width": 8}
    config["encoder_config"] = {"image_cnn": {"epochs": 1, "widths": [8], "dim": 8, "device": "cpu"}}

    def materialize():
        return dg.materialize(
            [item_embeddings],
            resources={"warehouse": resource},
            instance=dg.DagsterInstance.ephemeral(),
            run_config={"ops": {"item_embeddings": {"config": config}}},
        )

    result = materialize()
    meta = result.asset_materializations_for_node("item_embeddings")[0].metadata
    assert wh.read(embeddings.TABLE).schema == schemas.vector_table({"image": 8, "fused": 8})
    assert meta["encoded/image_cnn"].value == 50 and meta["cached/image_cnn"].value == 0
    assert "probe/fused/category" in meta and "retrieval_p10/fused" in meta
    assert meta["projection"].value.startswith("![") and Path(meta["plot_path"].value).is_file()
    assert Path(meta["plot_path"].value).is_relative_to(tmp_path)  # reports live under the resource's home
    assert [c.passed for c in result.get_asset_check_evaluations()] == [True]
    again = materialize().asset_materializations_for_node("item_embeddings")[0].metadata
    assert again["encoded/image_cnn"].value == 0 and again["cached/image_cnn"].value == 50


def test_contract_requires_save_and_load_of_a_trainable_encoder():
    from ctr_dagster.contracts import contract_violations

    assert contract_violations("encoder", TrainableImage) == []

    class NoSave(CountingText):
        def fit(self, items, attributes):
            return self

    problems = contract_violations("encoder", NoSave)
    assert any("'save'" in p for p in problems) and any("'load'" in p for p in problems)
