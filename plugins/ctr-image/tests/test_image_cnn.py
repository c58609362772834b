"""The image_cnn encoder: conformance kit, training signal, the local-backbone load path, bad input."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import torch
from ctr_dagster.testing import EncoderConformance, make_item_attributes_table, make_items_table

from ctr_image import network, pixels
from ctr_image.encoder import ImageCnnConfig, ImageCnnEncoder
from ctr_image.training import MISSING, build_targets

FAST = {"epochs": 2, "widths": [8, 16], "dim": 16, "device": "cpu"}


class TestImageCnnConformance(EncoderConformance):
    plugin = ImageCnnEncoder
    config = FAST


def _encoder(**overrides) -> ImageCnnEncoder:
    return ImageCnnEncoder(ImageCnnConfig(**{**FAST, **overrides}))


def test_targets_use_category_and_catalogue_attributes_only():
    items = make_items_table(40, seed=1)
    attributes = make_item_attributes_table(40, seed=1)
    targets = build_targets(items, attributes, min_label_count=2)
    assert targets.heads[0] == "category" and set(targets.heads) <= {"category"} | set(
        attributes["attribute"].to_pylist()
    )
    assert targets.labels.shape == (40, len(targets.heads))
    colour = targets.heads.index("colour")
    # labelled: items with a catalogue colour whose value has >= min_label_count labelled items
    catalogue = [r["value"] for r in attributes.to_pylist() if r["attribute"] == "colour"]
    known = {
        r["item_id"]
        for r in attributes.to_pylist()
        if r["attribute"] == "colour" and catalogue.count(r["value"]) >= 2
    }
    assert 0 < len(known) < len(catalogue)  # some colours too rare to learn are masked
    ids = items.column("item_id").to_pylist()
    assert {ids[i] for i in np.flatnonzero(targets.labels[:, colour] != MISSING)} == known


def test_rare_values_are_masked():
    items = make_items_table(12, seed=2)
    targets = build_targets(items, None, min_label_count=1000)
    assert targets.heads == [] and targets.labels.shape == (12, 0)


def test_training_separates_colours():
    """The world's images are filled with the item's colour (shape = category, texture = material,
    brand not shown): after a short fit on every true value, the colour head is accurate, far more
    than the brand head, and same-colour items are closer than items of other colours."""
    items = make_items_table(96, seed=3)
    complete = make_item_attributes_table(96, seed=3, complete=True)
    encoder = _encoder(epochs=30, train_batch_size=8, learning_rate=0.01).fit(items, complete)
    accuracy = encoder.summary["train_accuracy"]
    assert encoder.summary["trained"] and accuracy["colour"] > 0.9, accuracy
    assert accuracy["colour"] > accuracy["brand"] + 0.2, accuracy
    v = encoder.encode(items)
    v = v / np.linalg.norm(v, axis=1, keepdims=True)
    colours = {r["item_id"]: r["value"] for r in complete.to_pylist() if r["attribute"] == "colour"}
    colour = np.array([colours[i] for i in items.column("item_id").to_pylist()])
    sim = v @ v.T
    same = colour[:, None] == colour[None, :]
    np.fill_diagonal(same, False)
    other = colour[:, None] != colour[None, :]
    assert sim[same].mean() > sim[other].mean() + 0.1


def test_backbone_weights_saved_and_reloaded_through_config(tmp_path):
    """A small_cnn saved as safetensors is loaded via `backbone_path`: same vectors, no training."""
    torch.manual_seed(5)
    model = network.SmallCnn((8, 16), dim=12).eval()
    path = network.save_backbone(model, tmp_path / "weights" / "cnn.safetensors", image_size=16)
    items = make_items_table(10, seed=4)
    expected = (
        model(torch.from_numpy(pixels.decode(items.column("image_png").to_pylist(), 16))).detach().numpy()
    )

    encoder = ImageCnnEncoder(ImageCnnConfig(backbone_path=str(path), device="cpu"))
    fitted = encoder.fit(items, make_item_attributes_table(10, seed=4))
    assert fitted is encoder and encoder.summary["trained"] is False
    got = encoder.encode(items)
    assert got.shape == (10, 12) and got.dtype == np.float32
    np.testing.assert_allclose(got, expected, atol=1e-5)

    encoder.save(tmp_path / "saved")  # the engine stores it; reloading needs no backbone_path file
    path.unlink()
    again = ImageCnnEncoder.load(tmp_path / "saved").encode(items)
    np.testing.assert_array_equal(again, got)


def test_plain_state_dict_needs_an_arch(tmp_path):
    from safetensors.torch import save_file

    model = network.SmallCnn((8,), dim=4)
    path = tmp_path / "plain.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))  # no metadata
    with pytest.raises(ValueError, match="unknown architecture"):
        _encoder(backbone_path=str(path)).encode(make_items_table(2))
    with pytest.raises(ValueError, match="widths"):
        _encoder(backbone_path=str(path), backbone_arch="small_cnn").encode(make_items_table(2))


def test_backbone_errors_are_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="local disk"):
        _encoder(backbone_path=str(tmp_path / "nope.safetensors")).encode(make_items_table(2))
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="not a readable safetensors"):
        _encoder(backbone_path=str(junk)).encode(make_items_table(2))
    other = network.save_backbone(network.SmallCnn((8, 16), dim=4), tmp_path / "o.safetensors", 16)
    with pytest.raises((ValueError, ImportError), match="timm|does not fit"):
        _encoder(backbone_path=str(other), backbone_arch="timm:resnet18").encode(make_items_table(2))


def test_unreadable_or_missing_images_become_grey():
    items = make_items_table(3).set_column(
        5, "image_png", pa.array([b"garbage", None, make_items_table(1).column("image_png")[0].as_py()])
    )
    decoded = pixels.decode(items.column("image_png").to_pylist(), 8)
    assert np.allclose(decoded[0], 0.0) and np.allclose(decoded[1], 0.0)  # grey = 0 after centring
    with pytest.raises(pixels.UnreadableImage, match="row 0"):
        pixels.decode(items.column("image_png").to_pylist(), 8, strict=True)
    assert np.all(np.isfinite(_encoder().encode(items)))
