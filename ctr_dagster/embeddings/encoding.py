"""Run one encoder plugin over the catalogue through the cache (and its stored weights, if trainable).

A trainable encoder (one with `fit`, see `ctr_dagster.contracts.EncoderPlugin`) is fitted once per
configuration and stored under ``$CTR_HOME/encoders/<name>/<fit key>/`` with its own `save`; later
runs `load` it instead of fitting again, so its weights (part of the cache identity) stay the same
and unchanged items keep hitting the cache after a catalogue change. `refit=True` fits again (the
new weights then start a new cache identity and every item is re-encoded once).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from ctr_dagster.contracts import config_from_dict
from ctr_dagster.embeddings import cache as cache_mod
from ctr_dagster.locks import exclusive
from ctr_dagster.plugin_runs import PluginReport, plugin_report

#: Items per `encode` call (bounds memory; each call is one progress line in the log).
CHUNK = 4096


@dataclass
class EncodeOutcome:
    """What one encoder did: its vectors (rows aligned with the items) and the counts for metadata."""

    name: str
    modality: str
    vectors: np.ndarray | None = None  # float32[n_items, dim]; zero rows where `present` is False
    present: np.ndarray | None = None  # bool[n_items]: the item had content and got a vector
    dim: int = 0
    encoded: int = 0  # items sent to the encoder this run (content new to this identity)
    cached: int = 0  # items served from the cache
    without_content: int = 0  # items with nothing to encode (e.g. no image): no vector
    encode_seconds: float = 0.0
    fit_seconds: float = 0.0
    state: str = "stateless"  # "stateless" | "fitted" | "loaded"
    identity: str = ""
    #: The encoder's own report (its `summary` + `report(directory)`, `contracts.PluginReporting`).
    report: PluginReport = field(default_factory=PluginReport)

    @property
    def items_per_second(self) -> float | None:
        return self.encoded / self.encode_seconds if self.encoded and self.encode_seconds > 0 else None


def _fit_key(cls: type, config: Any) -> str:
    document = {"name": cls.name, "version": str(cls.version), "config": cache_mod.output_config(cls, config)}
    return hashlib.sha256(json.dumps(document, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _with_runtime_fields(encoder: Any, cls: type, config: Any) -> Any:
    """A loaded encoder keeps this run's runtime settings (device, batch size), not the saved ones."""
    runtime = set(getattr(cls, "runtime_fields", ()) or ())
    current = getattr(encoder, "config", None)
    if runtime and dataclasses.is_dataclass(current) and type(current) is type(config):
        encoder.config = dataclasses.replace(current, **{f: getattr(config, f) for f in runtime})
    return encoder


def prepare_encoder(
    cls: type,
    config: Any,
    items: pa.Table,
    attributes: pa.Table | None,
    state_root: Path,
    refit: bool,
    log: Callable[[str], None],
) -> tuple[Any, str, str | None, float]:
    """(encoder ready to encode, state, state digest, fit seconds)."""
    encoder = cls(config)
    if not callable(getattr(cls, "fit", None)):
        return encoder, "stateless", None, 0.0
    target = Path(state_root) / cls.name / _fit_key(cls, config)
    with exclusive(target.with_suffix(".lock")):
        if target.is_dir() and not refit:
            loaded = _with_runtime_fields(cls.load(target), cls, config)
            log(f"{cls.name}: loaded its fitted weights from {target}")
            return loaded, "loaded", cache_mod.directory_digest(target), 0.0
        started = time.perf_counter()
        fitted = encoder.fit(items, attributes)
        fitted = fitted if fitted is not None else encoder
        seconds = time.perf_counter() - started
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=target.parent))
        try:
            fitted.save(tmp)
            if target.exists():
                shutil.rmtree(target)
            os.replace(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    log(f"{cls.name}: fitted on {items.num_rows} items in {seconds:.1f} s, stored in {target}")
    return fitted, "fitted", cache_mod.directory_digest(target), seconds


def _check(name: str, out: Any, rows: int, dim: int | None) -> np.ndarray:
    if not isinstance(out, np.ndarray) or out.ndim != 2 or out.shape[0] != rows:
        raise ValueError(
            f"{name}.encode must return float32[{rows}, d], got {getattr(out, 'shape', type(out))}"
        )
    if dim is not None and out.shape[1] != dim:
        raise ValueError(f"{name}.encode returned width {out.shape[1]}, earlier batches {dim}")
    out = out.astype(np.float32, copy=False)
    bad = ~np.isfinite(out).all(axis=1)
    if bad.any():
        raise ValueError(f"{name}.encode returned non-finite values for {int(bad.sum())} item(s)")
    return out


def run_encoder(
    cls: type,
    config_values: dict[str, Any] | None,
    items: pa.Table,
    attributes: pa.Table | None,
    *,
    cache_root: Path,
    state_root: Path,
    refit: bool = False,
    report_dir: Path | None = None,
    log: Callable[[str], None] = print,
) -> EncodeOutcome:
    """Vectors of every item for one encoder: cached ones read, the rest encoded and cached.

    The encoder's report (`summary`, and `report(report_dir)` when it has one and a folder is given)
    lands in `outcome.report`."""
    config = config_from_dict(cls, config_values)
    outcome = EncodeOutcome(cls.name, cls.modality)
    columns = getattr(cls, "columns", None) or cache_mod.MODALITY_COLUMNS[cls.modality]
    missing_columns = [c for c in columns if c not in items.column_names]
    if missing_columns:
        raise ValueError(f"{cls.name} reads column(s) {missing_columns}, which the items table lacks")
    keys = cache_mod.content_hashes(items, columns)
    has_content = np.array([k is not None for k in keys], dtype=bool)
    outcome.without_content = int((~has_content).sum())

    encoder, outcome.state, digest, outcome.fit_seconds = prepare_encoder(
        cls, config, items, attributes, state_root, refit, log
    )
    outcome.identity = cache_mod.identity(cls, config, digest)
    cache = cache_mod.EmbeddingCache(cache_root, cls.name, outcome.identity)
    rows = np.flatnonzero(has_content)
    row_keys = [keys[i] for i in rows]
    found, cached_vectors = cache.lookup(row_keys)
    todo = rows[~found]
    # One encode per distinct content (items sharing a title are encoded once).
    unique_keys, first = np.unique(np.array([keys[i] for i in todo], dtype=object), return_index=True)
    todo_unique = todo[first] if len(todo) else todo
    dim = cached_vectors.shape[1] if cached_vectors is not None else None
    encoded: list[np.ndarray] = []
    started = time.perf_counter()
    for start in range(0, len(todo_unique), CHUNK):
        batch = items.take(pa.array(todo_unique[start : start + CHUNK]))
        out = _check(cls.name, encoder.encode(batch), batch.num_rows, dim)
        dim = out.shape[1]
        encoded.append(out)
        if len(todo_unique) > CHUNK:
            log(f"{cls.name}: encoded {min(start + CHUNK, len(todo_unique))}/{len(todo_unique)} items")
    outcome.encode_seconds = time.perf_counter() - started
    if dim is None:  # nothing cached and nothing to encode: ask the encoder for its width
        dim = _check(cls.name, encoder.encode(items.slice(0, 0)), 0, None).shape[1] if items.num_rows else 0
    new_vectors = np.concatenate(encoded) if encoded else np.zeros((0, dim), dtype=np.float32)
    if len(unique_keys):
        cache.add([str(k) for k in unique_keys], new_vectors)

    vectors = np.zeros((items.num_rows, dim), dtype=np.float32)
    if cached_vectors is not None:
        vectors[rows[found]] = cached_vectors[found]
    if len(todo):
        lookup = {str(k): i for i, k in enumerate(unique_keys)}
        vectors[todo] = new_vectors[[lookup[keys[i]] for i in todo]]
    outcome.vectors, outcome.present, outcome.dim = vectors, has_content, dim
    outcome.encoded, outcome.cached = len(todo), int(found.sum())
    outcome.report = plugin_report(encoder, report_dir)
    log(
        f"{cls.name}: {outcome.encoded} items encoded, {outcome.cached} from the cache, "
        f"{outcome.without_content} without content (identity {outcome.identity})"
    )
    return outcome
