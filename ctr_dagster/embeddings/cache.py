"""The embedding cache: one vector per (encoder identity, item content hash), kept as Parquet.

Encoding is the expensive part of the stage (a transformer over every title, a CNN over every
image), and a nightly catalogue changes a few items at a time. So every vector is stored under the
hash of exactly what the encoder reads (the title for text, the PNG bytes for images) in a file per
encoder *identity*: ``$CTR_HOME/embedding_cache/<encoder>/<identity>.parquet``. The identity hashes
the encoder's name, `version`, its Config minus `runtime_fields` (batch size, device) and, for a
trainable encoder, the stored weights: any change that can change a vector starts a new file, and a
re-run after a catalogue change encodes only items whose content is new.

Keys are content hashes, not item ids: an item whose title changes is re-encoded, and two items
with the same title share one entry. Writes merge with what is on disk under a file lock and land
by atomic rename, so parallel runs never lose each other's vectors.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ctr_dagster.locks import exclusive

#: Columns each modality's encoders read (what the content hash covers).
MODALITY_COLUMNS: dict[str, tuple[str, ...]] = {"text": ("title",), "image": ("image_png",)}
#: Cache files kept per encoder (the newest identities); older ones are removed.
KEEP_IDENTITIES = 3


def content_hashes(items: pa.Table, columns: Sequence[str]) -> list[str | None]:
    """sha256 (hex) of each row's `columns` (length-prefixed, so ("ab","c") != ("a","bc")); None when
    every one of them is null or empty (the item has nothing to encode, e.g. an imported item with
    no title: it gets no vector of that modality rather than the vector of an empty string)."""
    values = [items.column(c).to_pylist() for c in columns]
    out: list[str | None] = []
    for row in zip(*values, strict=True):
        if all(v is None or v == "" or v == b"" for v in row):
            out.append(None)
            continue
        digest = hashlib.sha256()
        for v in row:
            data = b"" if v is None else v if isinstance(v, bytes) else str(v).encode("utf-8")
            digest.update(len(data).to_bytes(8, "little") + (b"\x01" if v is not None else b"\x00"))
            digest.update(data)
        out.append(digest.hexdigest())
    return out


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def directory_digest(directory: Path) -> str:
    """sha256 over every file's relative path and bytes (a stored encoder's weights and metadata)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in Path(directory).rglob("*") if p.is_file()):
        digest.update(path.relative_to(directory).as_posix().encode() + b"\x00")
        digest.update(file_digest(path).encode())
    return digest.hexdigest()


def output_config(cls: type, config: Any) -> dict[str, Any]:
    """The Config values that can change the vectors: all fields but the plugin's `runtime_fields`.

    Fields named ``*_path`` that point at a file (e.g. local backbone weights) also carry the file's
    content hash, so replacing the file under the same name is noticed.
    """
    runtime = set(getattr(cls, "runtime_fields", ()) or ())
    values = {k: v for k, v in dataclasses.asdict(config).items() if k not in runtime}
    for key, value in list(values.items()):
        if key.endswith("_path") and isinstance(value, str) and value and Path(value).expanduser().is_file():
            values[f"{key}#sha256"] = file_digest(Path(value).expanduser())
    return values


def identity(cls: type, config: Any, state_digest: str | None = None) -> str:
    """16 hex digits naming everything that determines an encoder's vectors."""
    document = {
        "name": cls.name,
        "version": str(cls.version),
        "modality": cls.modality,
        "config": output_config(cls, config),
        "state": state_digest,
    }
    return hashlib.sha256(json.dumps(document, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _vector_type(dim: int) -> pa.DataType:
    return pa.list_(pa.float32(), dim)


def to_fixed_list(matrix: np.ndarray) -> pa.FixedSizeListArray:
    matrix = np.ascontiguousarray(matrix, dtype=np.float32)
    return pa.FixedSizeListArray.from_arrays(pa.array(matrix.reshape(-1)), int(matrix.shape[1]))


def from_fixed_list(column: pa.Array | pa.ChunkedArray, dim: int) -> np.ndarray:
    """float32[n, dim] from a fixed_size_list<float32> column; null rows become zeros."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks() if column.num_chunks else pa.array([], type=_vector_type(dim))
    out = np.zeros((len(column), dim), dtype=np.float32)
    valid = column.is_valid().to_numpy(zero_copy_only=False)
    if valid.any():
        values = column.filter(pa.array(valid)).flatten().to_numpy(zero_copy_only=False)
        out[valid] = values.astype(np.float32).reshape(-1, dim)
    return out


class EmbeddingCache:
    """The vectors of one encoder identity, keyed by content hash."""

    def __init__(self, root: Path, encoder: str, identity_: str):
        self.dir = Path(root) / encoder
        self.path = self.dir / f"{identity_}.parquet"
        self.lock = self.dir / ".lock"

    def lookup(self, keys: Sequence[str]) -> tuple[np.ndarray, np.ndarray | None]:
        """(found mask, float32[n, d] vectors with zeros where not found; None if nothing is cached)."""
        found = np.zeros(len(keys), dtype=bool)
        if not self.path.exists() or not keys:
            return found, None
        table = pq.read_table(self.path)
        dim = table.schema.field("vector").type.list_size
        position = pc.index_in(pa.array(keys, pa.string()), value_set=table.column("content_sha"))
        found = position.is_valid().to_numpy(zero_copy_only=False)
        vectors = np.zeros((len(keys), dim), dtype=np.float32)
        if found.any():
            taken = pc.take(table.column("vector"), pc.drop_null(position))
            vectors[found] = from_fixed_list(taken, dim)
        return found, vectors

    def add(self, keys: Sequence[str], vectors: np.ndarray) -> int:
        """Merge new (key, vector) pairs into the file (under the lock); returns the entries stored."""
        if not len(keys):
            return self.size()
        new = pa.table({"content_sha": pa.array(list(keys), pa.string()), "vector": to_fixed_list(vectors)})
        self.dir.mkdir(parents=True, exist_ok=True)
        with exclusive(self.lock):
            if self.path.exists():
                old = pq.read_table(self.path)
                if old.schema.field("vector").type != new.schema.field("vector").type:
                    raise ValueError(
                        f"{self.path}: cached vectors are {old.schema.field('vector').type}, "
                        f"the encoder now returns {new.schema.field('vector').type} under the same identity "
                        "(bump the encoder's `version` when its output width changes)"
                    )
                keep = pc.invert(pc.is_in(old.column("content_sha"), value_set=new.column("content_sha")))
                new = pa.concat_tables([old.filter(keep), new])
            fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".parquet", dir=self.dir)
            os.close(fd)
            try:
                pq.write_table(new, tmp, compression="zstd")
                os.replace(tmp, self.path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
            self._prune()
        return new.num_rows

    def size(self) -> int:
        return pq.ParquetFile(self.path).metadata.num_rows if self.path.exists() else 0

    def _prune(self) -> None:
        files = sorted(self.dir.glob("*.parquet"), key=lambda p: p.stat().st_mtime, reverse=True)
        for old in _without(files, self.path)[KEEP_IDENTITIES - 1 :]:
            old.unlink(missing_ok=True)


def _without(files: Iterable[Path], keep: Path) -> list[Path]:
    return [f for f in files if f != keep]
