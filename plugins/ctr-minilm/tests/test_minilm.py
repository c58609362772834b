"""The minilm encoder: conformance kit, offline load with the network cut, and that it reads titles."""

from __future__ import annotations

import os
import socket

import numpy as np
import pyarrow as pa
import pytest
from ctr_dagster.testing import EncoderConformance

from ctr_minilm import encoder as minilm
from ctr_minilm.encoder import DIM, MinilmEncoder


class _NoNetwork:
    """Cut the network for the duration (any connect raises), and say offline to the HF libraries."""

    ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}

    def __enter__(self) -> _NoNetwork:
        self.attempts: list[object] = []
        self._saved_env = {k: os.environ.get(k) for k in self.ENV}
        os.environ.update(self.ENV)
        self._connect, self._create = socket.socket.connect, socket.create_connection

        def refuse(*args, **kwargs):
            self.attempts.append(args[1:] if len(args) > 1 else args)
            raise OSError("network disabled by the test")

        socket.socket.connect = refuse  # type: ignore[method-assign]
        socket.create_connection = refuse  # type: ignore[assignment]
        return self

    def __exit__(self, *exc) -> None:
        socket.socket.connect = self._connect  # type: ignore[method-assign]
        socket.create_connection = self._create  # type: ignore[assignment]
        for k, v in self._saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture(scope="module", autouse=True)
def offline_model():
    """Load the model once for this module, with the network cut: every test below reuses it."""
    minilm._load.cache_clear()
    with _NoNetwork() as guard:
        model = minilm.load_model("cpu")
    assert guard.attempts == [], f"loading tried to reach the network: {guard.attempts}"
    return model


class TestMinilmConformance(EncoderConformance):
    plugin = MinilmEncoder
    config = {"device": "cpu"}


def _titles(*titles: str) -> pa.Table:
    return pa.table({"title": list(titles)})


def test_offline_load_encodes_without_network(offline_model):
    with _NoNetwork() as guard:
        vectors = MinilmEncoder(minilm.MinilmConfig(device="cpu")).encode(_titles("Red cotton shirt"))
    assert guard.attempts == []
    assert vectors.shape == (1, DIM) and vectors.dtype == np.float32
    assert np.isclose(np.linalg.norm(vectors[0]), 1.0, atol=1e-5)


def test_similar_titles_are_closer_than_unrelated():
    v = MinilmEncoder(minilm.MinilmConfig(device="cpu")).encode(
        _titles(
            "Acme red cotton casual shirt", "Casual red shirt by Acme in cotton", "Steel desk lamp, black"
        )
    )
    same, other = float(v[0] @ v[1]), float(v[0] @ v[2])
    assert same > other + 0.2, (same, other)


def test_empty_batch_and_missing_title():
    empty = MinilmEncoder(minilm.MinilmConfig(device="cpu")).encode(_titles())
    assert empty.shape == (0, DIM) and empty.dtype == np.float32
    blank = MinilmEncoder(minilm.MinilmConfig(device="cpu")).encode(pa.table({"title": [None, "Mug"]}))
    assert blank.shape == (2, DIM) and np.all(np.isfinite(blank))


def test_missing_title_column_is_named():
    with pytest.raises(ValueError, match="title"):
        MinilmEncoder().encode(pa.table({"name": ["x"]}))


def test_auto_device_resolves_to_an_available_one():
    import torch

    assert minilm.resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    assert minilm.resolve_device("cpu") == "cpu"
