"""Arrow -> tensors, columnar: the TRAINING table becomes a dict of tensors without per-row Python.

Ids come straight from the Arrow buffers as int64; list columns are padded from their offsets and
flat values with one vectorized scatter; dense columns are standardized with the train split's
mean/std (stored in the model artifact, so predict sees the same transform).

Sequence layout (right-aligned, like Keras/FuxiCTR "pre" padding): each row keeps its `max_seq_len`
most recent entries; slot `max_seq_len - 1` is the most recent click and padding (0) fills the left.
`hist_len` (B,) is the number of real slots and `hist_mask` (B, L) is True on them. A target token
can therefore be appended on the right (SUAN) and the last real slot is always at L-1.

Batch dict keys (all tensors, first axis = rows):

* every `FeatureSpec.categorical` column: int64 (B,) (`*_idx` outside the vocabulary -> 1 = OOV)
* ``dense``: float32 (B, len(spec.dense))
* every `FeatureSpec.sequence` column: int64 (B, L) for ids, float32 (B, L) for `hist_age_s`
* ``hist_len``: int64 (B,), ``hist_mask``: bool (B, L)
* ``label``: float32 (B,) -- training batches only; ``teacher_logit``: float32 (B,) when distilling
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ctr_dagster.training.spec import FeatureSpec

if TYPE_CHECKING:
    import torch

OOV = 1

#: Slots per row block in `pad_sequences` (4 MB of int64 source indices).
PAD_BLOCK_ELEMENTS = 1 << 19


def _column(table: pa.Table, name: str) -> pa.Array:
    if name not in table.column_names:
        raise ValueError(f"column {name!r} is missing from the batch; has {table.column_names}")
    column = table.column(name)
    return column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)


def _ids(values: np.ndarray, size: int, indexed: bool) -> np.ndarray:
    """int64 ids inside [0, size): vocabulary ids out of range become OOV, fixed categories are clipped."""
    values = values.astype(np.int64, copy=False)
    if indexed:
        bad = (values < 0) | (values >= size)
        if bad.any():
            values = np.where(bad, OOV, values)
        return values
    return np.clip(values, 0, size - 1)


def pad_sequences(
    array: pa.Array, max_seq_len: int, dtype: Any, vocabulary_size: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(values (n, max_seq_len) right-aligned and zero-padded, lengths (n,)) of a list column.

    Keeps the last `max_seq_len` entries of every list (the most recent ones). Vectorized: one gather
    of (row, slot) -> flat position, masked where a row's list is shorter than the slots, done in row
    blocks of about `PAD_BLOCK_ELEMENTS` slots: the index temporaries stay cache-sized instead of
    several times the output (500k rows x 20 slots: 0.26 s instead of 0.60 s on a first call).
    With `vocabulary_size`, ids outside [0, vocabulary_size) become OOV, block by block.
    """
    if not (pa.types.is_list(array.type) or pa.types.is_large_list(array.type)):
        raise ValueError(f"expected a list column, got {array.type}")
    if array.null_count:
        array = pc.fill_null(array, pa.scalar([], type=array.type))
    n = len(array)
    offsets = array.offsets.to_numpy().astype(np.int64)  # accounts for slicing
    values = array.values.to_numpy(zero_copy_only=False)
    keep = np.minimum(np.diff(offsets), max_seq_len)
    out = np.zeros((n, max_seq_len), dtype=dtype)
    if n and len(values) and max_seq_len:
        # Slot j of row i holds the list's entry (j - max_seq_len) from its end, when that exists.
        slots = np.arange(max_seq_len) - max_seq_len
        block = max(1, PAD_BLOCK_ELEMENTS // max_seq_len)
        for start in range(0, n, block):
            stop = min(n, start + block)
            source = offsets[start + 1 : stop + 1, None] + slots[None, :]
            real = slots[None, :] >= -keep[start:stop, None]
            np.clip(source, 0, len(values) - 1, out=source)
            np.copyto(out[start:stop], values[source], where=real, casting="unsafe")
            if vocabulary_size is not None:
                part = out[start:stop]
                part[(part < 0) | (part >= vocabulary_size)] = OOV
    return out, keep


def _dense_matrix(table: pa.Table, spec: FeatureSpec) -> np.ndarray:
    columns = []
    for name in spec.dense:
        array = _column(table, name)
        if pa.types.is_boolean(array.type):
            array = pc.cast(array, pa.int8())
        x = array.to_numpy(zero_copy_only=False).astype(np.float64)
        if name in spec.log_dense:
            x = np.log1p(np.maximum(x, 0.0))
        columns.append(x)
    if not columns:
        return np.zeros((table.num_rows, 0))
    return np.column_stack(columns)


@dataclass
class BatchEncoder:
    """Turns TRAINING-schema tables into batch dicts for one `FeatureSpec` (+ train dense statistics)."""

    spec: FeatureSpec
    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, table: pa.Table, spec: FeatureSpec) -> BatchEncoder:
        """Dense mean/std from `table` (the train split); a constant column gets std 1."""
        x = _dense_matrix(table, spec)
        if x.shape[0]:
            mean, std = x.mean(axis=0), x.std(axis=0)
            if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(std))):
                bad = [spec.dense[i] for i in np.flatnonzero(~(np.isfinite(mean) & np.isfinite(std)))]
                raise ValueError(f"dense column(s) {bad} contain NaN/inf values in the training rows")
        else:
            mean, std = np.zeros(x.shape[1]), np.ones(x.shape[1])
        std = np.where(std < 1e-8, 1.0, std)
        return cls(spec, mean, std)

    def state(self) -> dict[str, Any]:
        return {"mean": self.mean.tolist(), "std": self.std.tolist()}

    @classmethod
    def from_state(cls, spec: FeatureSpec, state: dict[str, Any]) -> BatchEncoder:
        return cls(
            spec, np.asarray(state["mean"], dtype=np.float64), np.asarray(state["std"], dtype=np.float64)
        )

    def numpy(self, table: pa.Table) -> dict[str, np.ndarray]:
        """The batch dict as numpy arrays (no label)."""
        spec = self.spec
        out: dict[str, np.ndarray] = {}
        for name, size in spec.categorical.items():
            raw = _column(table, name).to_numpy(zero_copy_only=False)
            out[name] = _ids(raw, size, name.endswith("_idx"))
        dense = (_dense_matrix(table, spec) - self.mean) / self.std
        if not np.all(np.isfinite(dense)):
            rows, cols = np.nonzero(~np.isfinite(dense))
            raise ValueError(
                f"dense column {spec.dense[int(cols[0])]!r} has a NaN/inf value (row {int(rows[0])} of the batch)"
            )
        out["dense"] = dense.astype(np.float32)
        hist_len = None
        for name in spec.sequence:
            base = spec.vocabulary_of(name)
            dtype = np.int64 if base is not None or name == "hist_rel_pos" else np.float32
            size = spec.categorical[base] if base is not None else None
            values, lengths = pad_sequences(_column(table, name), spec.max_seq_len, dtype, size)
            if hist_len is None:
                hist_len = lengths
            elif not np.array_equal(hist_len, lengths):
                raise ValueError(
                    f"sequence column {name!r} has list lengths that differ from {spec.sequence[0]!r}"
                )
            out[name] = values
        if hist_len is not None:
            out["hist_len"] = hist_len.astype(np.int64)
            out["hist_mask"] = np.arange(spec.max_seq_len)[None, :] >= (spec.max_seq_len - hist_len)[:, None]
        return out

    def tensors(self, table: pa.Table, device: Any = None) -> dict[str, torch.Tensor]:
        """The batch dict as tensors (on `device`, default CPU)."""
        import torch

        out = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in self.numpy(table).items()}
        if device is not None and str(device) != "cpu":
            out = {k: v.to(device, non_blocking=True) for k, v in out.items()}
        return out


def labels(table: pa.Table) -> np.ndarray:
    """The click labels as float32 0/1 (ValueError naming the first bad row otherwise)."""
    y = _column(table, "label").to_numpy(zero_copy_only=False).astype(np.float32)
    bad = np.flatnonzero((y != 0) & (y != 1))
    if len(bad):
        raise ValueError(f"column 'label' must be 0/1; row {int(bad[0])} has {y[bad[0]]}")
    return y


def take(batch: dict[str, torch.Tensor], index: torch.Tensor) -> dict[str, torch.Tensor]:
    """Rows `index` of every tensor of a batch dict."""
    return {k: v.index_select(0, index) for k, v in batch.items()}


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """The row order of one epoch: a permutation that depends only on (seed, epoch).

    Deterministic without any saved RNG state, so a run resumed at epoch k sees exactly the order an
    uninterrupted run would, and every DDP rank computes the same one.
    """
    return np.random.default_rng([int(seed), int(epoch), 0x5EED]).permutation(n)


def batches(n: int, batch_size: int) -> Iterator[slice]:
    for start in range(0, n, batch_size):
        yield slice(start, min(start + batch_size, n))
