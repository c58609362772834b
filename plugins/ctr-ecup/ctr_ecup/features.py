"""A small generic feature encoder: any tabular uplift experiment -> categorical ids + numeric values.

ECUP works on the lineage's TRAINING table and on arbitrary experiments (Criteo-uplift f0..f11,
Hillstrom's mixed columns, MT-LIFT f0..f98), so the plugin does not rely on the engine's
`FeatureSpec` (which knows the TRAINING columns only). Rules, decided on the TRAINING split only:

* never features: the targets and ids (`EXCLUDED`: label / click / conversion / treatment / split /
  impression_id / ts / user_id / item_id), the synthetic world's oracle columns, the config's
  `exclude_columns`, and every list, struct, map, binary, timestamp, date, time or duration column
  (the behaviour sequences hist_* are lists: ECUP has no sequence module);
* **categorical** fields: string / dictionary columns (vocabulary = the training values, at most
  `max_vocab` of the most frequent, ties broken by value) and integer columns named ``*_idx`` (the
  engine's indexed vocabularies: size from `ctx.cardinalities`, raised to the training maximum + 1).
  Every categorical field has one OOV slot, id 0: a null, an unknown string or an out-of-range index
  maps there; a known value v gets id 1 + its vocabulary position (``*_idx``: 1 + v);
* **numeric** fields: every other integer, float or bool column, standardised with the training mean
  and standard deviation (a constant column: std 1), nulls and NaN -> 0 after standardising
  (= the mean); +-inf is treated as NaN.

At predict time a feature column the encoder was fitted with must be present (a clear ValueError
naming it otherwise); extra columns are ignored. The encoder is stored as JSON (`to_json`/`from_json`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

#: Columns that are never features: targets, the arm, and row ids.
EXCLUDED: frozenset[str] = frozenset(
    {"label", "click", "conversion", "treatment", "split", "impression_id", "ts", "user_id", "item_id"}
)


def _oracle_columns() -> frozenset[str]:
    """The synthetic world's truth columns (never features, should a table carry them)."""
    from ctr_dagster.schemas import ORACLE_IMPRESSIONS

    return frozenset(f.name for f in ORACLE_IMPRESSIONS)


def _is_skipped_type(t: pa.DataType) -> bool:
    return bool(
        pa.types.is_list(t)
        or pa.types.is_large_list(t)
        or pa.types.is_fixed_size_list(t)
        or pa.types.is_struct(t)
        or pa.types.is_map(t)
        or pa.types.is_binary(t)
        or pa.types.is_large_binary(t)
        or pa.types.is_fixed_size_binary(t)
        or pa.types.is_temporal(t)
        or pa.types.is_null(t)
    )


def _is_string(t: pa.DataType) -> bool:
    return bool(pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_dictionary(t))


def _as_strings(column: pa.ChunkedArray | pa.Array) -> pa.ChunkedArray | pa.Array:
    if pa.types.is_dictionary(column.type):
        column = column.cast(column.type.value_type)
    return column.cast(pa.string())


@dataclass
class CategoricalField:
    name: str
    kind: str  # "index" (an engine *_idx column: id = 1 + value) or "vocab" (strings: id = 1 + position)
    size: int  # embedding rows, OOV slot 0 included
    vocab: list[str] = field(default_factory=list)  # kind "vocab" only


@dataclass
class NumericField:
    name: str
    mean: float
    std: float


@dataclass
class FeatureEncoder:
    """Which columns are fields and how each one is encoded (fitted on the training table)."""

    categorical: list[CategoricalField] = field(default_factory=list)
    numeric: list[NumericField] = field(default_factory=list)

    # -- fitting -----------------------------------------------------------------------------------
    @classmethod
    def fit(
        cls,
        table: pa.Table,
        cardinalities: dict[str, int] | None = None,
        *,
        exclude: frozenset[str] | set[str] = frozenset(),
        max_vocab: int = 10_000,
    ) -> FeatureEncoder:
        cardinalities = cardinalities or {}
        skip = EXCLUDED | _oracle_columns() | set(exclude)
        encoder = cls()
        for name in table.column_names:
            if name in skip:
                continue
            column = table.column(name)
            t = column.type
            if _is_skipped_type(t):
                continue
            if _is_string(t):
                encoder.categorical.append(_fit_vocab(name, column, max_vocab))
            elif pa.types.is_integer(t) and name.endswith("_idx"):
                top = pc.max(column).as_py() if table.num_rows else None
                size = max(int(cardinalities.get(name, 0)), int(top or 0) + 1, 1)
                encoder.categorical.append(CategoricalField(name, "index", size + 1))
            elif pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t):
                values = _float_values(column)
                finite = values[np.isfinite(values)]
                mean = float(finite.mean()) if finite.size else 0.0
                std = float(finite.std()) if finite.size else 0.0
                encoder.numeric.append(NumericField(name, mean, std if std > 1e-12 else 1.0))
            # any other type (decimal, ...) is not a feature
        if not encoder.n_fields:
            raise ValueError(
                "ecup: the training table has no feature column (every column is a target, an id, a "
                f"list or a timestamp): {table.column_names}"
            )
        return encoder

    # -- shape ---------------------------------------------------------------------------------------
    @property
    def n_fields(self) -> int:
        return len(self.categorical) + len(self.numeric)

    @property
    def columns(self) -> list[str]:
        return [f.name for f in self.categorical] + [f.name for f in self.numeric]

    @property
    def cat_sizes(self) -> list[int]:
        return [f.size for f in self.categorical]

    # -- encoding ------------------------------------------------------------------------------------
    def transform(self, table: pa.Table) -> tuple[np.ndarray, np.ndarray]:
        """(int64[n, n_categorical] ids, 0 = OOV; float32[n, n_numeric] standardised values)."""
        missing = [name for name in self.columns if name not in table.column_names]
        if missing:
            raise ValueError(
                f"ecup: feature column(s) {missing} missing from the batch (the model was fitted with "
                f"{self.columns}); has {table.column_names}"
            )
        n = table.num_rows
        cat = np.zeros((n, len(self.categorical)), dtype=np.int64)
        for j, f in enumerate(self.categorical):
            column = table.column(f.name)
            if f.kind == "index":
                if not pa.types.is_integer(column.type):
                    raise ValueError(f"ecup: column {f.name!r} must hold integer ids, got {column.type}")
                v = column.to_numpy(zero_copy_only=False) if column.null_count == 0 else None
                if v is None:
                    v = pc.fill_null(column, -1).to_numpy(zero_copy_only=False)
                v = v.astype(np.int64)
                cat[:, j] = np.where((v >= 0) & (v < f.size - 1), v + 1, 0)
            else:
                if not (_is_string(column.type) or pa.types.is_integer(column.type)):
                    raise ValueError(f"ecup: column {f.name!r} must hold strings, got {column.type}")
                pos = pc.index_in(_as_strings(column), value_set=pa.array(f.vocab, pa.string()))
                cat[:, j] = pc.fill_null(pc.add(pos, 1), 0).to_numpy(zero_copy_only=False)
        num = np.zeros((n, len(self.numeric)), dtype=np.float32)
        for j, f in enumerate(self.numeric):
            column = table.column(f.name)
            if not (
                pa.types.is_integer(column.type)
                or pa.types.is_floating(column.type)
                or pa.types.is_boolean(column.type)
            ):
                raise ValueError(f"ecup: column {f.name!r} must be numeric, got {column.type}")
            z = (_float_values(column) - f.mean) / f.std
            num[:, j] = np.where(np.isfinite(z), z, 0.0)
        return cat, num

    # -- persistence ---------------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        return {
            "categorical": [
                {"name": f.name, "kind": f.kind, "size": f.size, "vocab": f.vocab} for f in self.categorical
            ],
            "numeric": [{"name": f.name, "mean": f.mean, "std": f.std} for f in self.numeric],
        }

    @classmethod
    def from_json(cls, document: dict[str, Any]) -> FeatureEncoder:
        return cls(
            categorical=[
                CategoricalField(d["name"], d["kind"], int(d["size"]), list(d.get("vocab", [])))
                for d in document["categorical"]
            ],
            numeric=[NumericField(d["name"], float(d["mean"]), float(d["std"])) for d in document["numeric"]],
        )


def _float_values(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """float64 values, nulls as NaN, +-inf as NaN."""
    values = pc.cast(column, pa.float64()).to_numpy(zero_copy_only=False).astype(np.float64, copy=True)
    values[~np.isfinite(values)] = np.nan
    return values


def _fit_vocab(name: str, column: pa.ChunkedArray, max_vocab: int) -> CategoricalField:
    """The most frequent `max_vocab` training values (ties by value); nulls are OOV."""
    counts = pc.value_counts(_as_strings(column).drop_null() if column.null_count else _as_strings(column))
    pairs = [(c["values"], int(c["counts"])) for c in counts.to_pylist()]
    pairs.sort(key=lambda p: (-p[1], p[0]))
    vocab = sorted(v for v, _ in pairs[:max_vocab])
    return CategoricalField(name, "vocab", len(vocab) + 1, vocab)
