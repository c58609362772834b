"""`FeatureSpec`: which columns of the TRAINING table a torch module sees, and their sizes.

Torch-free on purpose: a plugin builds its module from a spec, and the spec is stored as JSON in the
model artifact (`model.json`) so `load` rebuilds exactly the same module.

Conventions (ctr_dagster.schemas.TRAINING, ctr_dagster.vocab): `*_idx` columns are vocabulary
indices (0 = padding, 1 = out-of-vocabulary, real ids from 2); a behaviour-sequence column
`hist_<field>` shares the vocabulary (and, in a model, usually the embedding table) of `<field>`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from ctr_dagster.window import DEFAULT_MAX_SEQ_LEN

#: Indexed columns of the TRAINING table a model may embed (vocabulary sizes from FitContext).
ID_COLUMNS = ("user_idx", "item_idx", "category_idx", "device_idx", "region_idx", "age_group_idx")
#: Small integer columns embedded as categories with a fixed size (no pad/OOV convention).
FIXED_CATEGORICAL = {"hour": 24, "day_of_week": 7}
#: Numeric columns fed as dense features (standardized with train statistics).
#: `is_new_user`/`is_new_item` are left out: they are constant (False) on the train split by definition.
DENSE_COLUMNS = ("position", "price", "item_age_days", "user_click_count", "treatment")
#: Skewed dense columns taken as log1p(max(x, 0)) before standardization.
LOG_DENSE_COLUMNS = ("price", "item_age_days", "user_click_count")
#: Behaviour-sequence list columns (most recent click last); ids share their field's vocabulary.
SEQUENCE_COLUMNS = ("hist_item_idx", "hist_category_idx", "hist_age_s", "hist_rel_pos")
ID_SEQUENCES = ("hist_item_idx", "hist_category_idx")


@dataclass
class FeatureSpec:
    """What a module is built from: embedding-table sizes, dense columns, sequence length.

    * `categorical`: column -> number of embedding rows (ids outside [0, rows) become OOV = 1 for
      `*_idx` columns, are clipped for the fixed ones such as `hour`).
    * `dense`: numeric columns, in the order of the `dense` tensor's last axis.
    * `sequence`: list columns turned into (B, max_seq_len) tensors, right-aligned (see `batching`).
    * `item_embedding_dim`: width of the frozen item vectors (`ctx.inputs["item_embeddings"]`), or
      None when the model does not use them.
    * `item_tags`: [tags per item T, tag vocabulary size] of the frozen item-tag matrix
      (`ctx.inputs["item_tags"]`, `ctr_dagster.item_tags.ItemTags`), or None when the model does
      not use tags.
    """

    categorical: dict[str, int] = field(default_factory=dict)
    dense: tuple[str, ...] = DENSE_COLUMNS
    log_dense: tuple[str, ...] = LOG_DENSE_COLUMNS
    sequence: tuple[str, ...] = ID_SEQUENCES
    max_seq_len: int = DEFAULT_MAX_SEQ_LEN
    item_embedding_dim: int | None = None
    item_tags: list[int] | None = None

    def __post_init__(self) -> None:
        if self.item_tags is not None:
            self.item_tags = [int(v) for v in self.item_tags]
            if len(self.item_tags) != 2 or min(self.item_tags) < 1:
                raise ValueError(
                    f"FeatureSpec.item_tags must be [T >= 1, vocabulary >= 1], got {self.item_tags}"
                )
        self.dense, self.log_dense, self.sequence = (
            tuple(self.dense),
            tuple(self.log_dense),
            tuple(self.sequence),
        )
        if self.max_seq_len < 1:
            raise ValueError(f"FeatureSpec.max_seq_len must be >= 1, got {self.max_seq_len}")
        for name in self.sequence:
            base = self.vocabulary_of(name)
            if base is not None and base not in self.categorical:
                raise ValueError(f"sequence column {name!r} needs the cardinality of {base!r}")

    @staticmethod
    def vocabulary_of(sequence_column: str) -> str | None:
        """The id column whose vocabulary a sequence column uses (None for float sequences)."""
        if sequence_column in ("hist_item_idx", "hist_category_idx"):
            return sequence_column.removeprefix("hist_")
        return None

    @classmethod
    def from_cardinalities(
        cls,
        cardinalities: dict[str, int],
        *,
        max_seq_len: int,
        columns: tuple[str, ...] = ID_COLUMNS + tuple(FIXED_CATEGORICAL),
        dense: tuple[str, ...] = DENSE_COLUMNS,
        sequence: tuple[str, ...] = ID_SEQUENCES,
        item_embedding_dim: int | None = None,
    ) -> FeatureSpec:
        """The spec of `columns` (vocabulary sizes from `cardinalities`, FIXED_CATEGORICAL sizes)."""
        categorical = {}
        for name in columns:
            size = FIXED_CATEGORICAL.get(name, cardinalities.get(name))
            if size is None:
                raise ValueError(f"no cardinality for {name!r}; have {sorted(cardinalities)}")
            categorical[name] = max(int(size), 2)
        return cls(
            categorical=categorical,
            dense=tuple(dense),
            log_dense=tuple(c for c in LOG_DENSE_COLUMNS if c in dense),
            sequence=tuple(sequence),
            max_seq_len=max_seq_len,
            item_embedding_dim=item_embedding_dim,
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready; `categorical` as [name, size] pairs so its order (= the module's layout)
        survives any JSON writer, sorted keys included."""
        values = dataclasses.asdict(self)
        values["categorical"] = [[name, size] for name, size in self.categorical.items()]
        return {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> FeatureSpec:
        values = dict(values)
        if "max_len" in values:  # artifacts written before the sequence length had one name
            values["max_seq_len"] = values.pop("max_len")
        categorical = values.get("categorical", {})
        if not isinstance(categorical, dict):
            values["categorical"] = {str(name): int(size) for name, size in categorical}
        return cls(**values)
