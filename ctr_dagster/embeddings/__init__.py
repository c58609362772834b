"""Multimodal item embeddings: encoder plugins -> cached per-modality vectors -> one fused vector.

The stage behind the `item_embeddings` asset (the challenge of QIN's WWW'25 multimodal CTR task 1:
turn an item's text and image into one vector that makes CTR models better):

* `cache`      content-hash cache of every encoder's vectors (only new or changed items are encoded);
* `encoding`   runs one encoder plugin through the cache (trainable encoders fitted once, stored, reloaded);
* `fusion`     per-modality L2 normalization -> concatenation -> PCA (optionally whitened) to `width` dims;
* `usefulness` linear attribute probes, same-category retrieval P@10, a 2-D projection;
* `pipeline`   all of it for a catalogue (`build_item_embeddings`), each encoder isolated (`plugin_runs`).

The output table `item_embeddings` (schema `schemas.vector_table`) holds `item_id`, one
fixed-size-list float32 column per modality (e.g. `text`, `image`) and `fused`. Models receive the
fused vectors as a matrix indexed by `item_idx` (`item_matrix`), through
`ctr_dagster.modeling.INPUT_PROVIDERS` -> `FitContext.inputs["item_embeddings"]`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # pragma: no cover - typing only
    from ctr_dagster.warehouse import Warehouse

TABLE = "item_embeddings"
#: Vectors that came with imported data (e.g. MMCTR's item_emb_d128), written by an importer.
PRECOMPUTED_TABLE = "raw_item_vectors"


def item_matrix(warehouse: Warehouse, column: str = "fused") -> np.ndarray:
    """float32[cardinality of item_idx, d]: row i = the `column` vector of the item with index i.

    Indices come from the item vocabulary (`ctr_dagster.vocab`): rows 0/1 (padding / OOV) and items
    without a vector are zero; the row count equals `modeling.cardinalities(...)["item_idx"]`.
    """
    import pyarrow.compute as pc

    from ctr_dagster import vocab
    from ctr_dagster.embeddings.cache import from_fixed_list

    table = warehouse.read(TABLE, columns=["item_id", column])
    field = table.schema.field(column)
    dim = field.type.list_size
    items = vocab.load(warehouse, "item")
    out = np.zeros((vocab.FIRST_INDEX + items.num_rows, dim), dtype=np.float32)
    if items.num_rows == 0 or table.num_rows == 0:
        return out
    position = pc.index_in(items.column("key"), value_set=table.column("item_id"))
    known = position.is_valid().to_numpy(zero_copy_only=False)
    if known.any():
        rows = items.column("index").to_numpy()[known]
        out[rows] = from_fixed_list(pc.take(table.column(column), pc.drop_null(position)), dim)
    return out
