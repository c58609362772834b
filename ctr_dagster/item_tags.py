"""Item tags: a small set of categorical ids per item, for models whose item token pools tag embeddings.

QIN's item token (MODELS.md section 1) concatenates the item id, the mean of its tag embeddings and a
projection of its multimodal vector; MicroLens ships five `item_tags` ids per item. Here a tag is an
(attribute, value) pair of the enriched `item_attributes` table (catalogue values plus extracted
ones: "colour=red", "brand=acme"), or an imported tag id (attribute `tag`), so a model sees the same
input whichever source filled it.

`ItemTags.matrix` is int32[item_idx rows, T]: row i holds the tag ids of the item with vocabulary index i
(`ctr_dagster.vocab`), 0 = padding (no tag / unknown item), real tags from 1, sorted by tag id. Tag
ids are assigned in sorted (attribute, value) order, so the same attribute table gives the same ids.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import pyarrow as pa

    from ctr_dagster.warehouse import Warehouse

#: At most this many tags per item (MicroLens has 5; the synthetic catalogue uses up to 4 attributes).
MAX_TAGS_PER_ITEM = 8


@dataclass(frozen=True)
class ItemTags:
    """Tag ids per item index: `matrix` int32[rows, T] (0 = pad) and the tag vocabulary size."""

    matrix: np.ndarray
    vocabulary_size: int  # ids 1 .. vocabulary_size - 1; 0 is padding

    def __post_init__(self) -> None:
        m = self.matrix
        if m.ndim != 2 or m.shape[1] < 1:
            raise ValueError(f"ItemTags.matrix must be int[rows, T >= 1], got shape {m.shape}")
        if m.size and (m.min() < 0 or m.max() >= self.vocabulary_size):
            raise ValueError(
                f"ItemTags.matrix holds ids outside [0, {self.vocabulary_size}): {m.min()}..{m.max()}"
            )

    @property
    def width(self) -> int:
        return int(self.matrix.shape[1])


def tags_from_attributes(
    attributes: pa.Table, item_index: dict[str, int], rows: int, max_tags: int = MAX_TAGS_PER_ITEM
) -> ItemTags:
    """Build `ItemTags` from an (item_id, attribute, value) table and an item_id -> index mapping.

    Items outside `item_index` are ignored (not in the model's vocabulary); an item with more than
    `max_tags` tags keeps the first `max_tags` in tag-id order. Null values are skipped.
    """
    columns = attributes.select(["item_id", "attribute", "value"]).to_pydict()
    pairs: dict[int, set[tuple[str, str]]] = {}
    for item, attribute, value in zip(
        columns["item_id"], columns["attribute"], columns["value"], strict=True
    ):
        index = item_index.get(item)
        if index is None or attribute is None or value is None or index >= rows:
            continue
        pairs.setdefault(index, set()).add((str(attribute), str(value)))
    vocabulary = {tag: i + 1 for i, tag in enumerate(sorted(set().union(*pairs.values()) if pairs else ()))}
    width = max(1, min(max_tags, max((len(p) for p in pairs.values()), default=1)))
    matrix = np.zeros((rows, width), dtype=np.int32)
    for index, tags in pairs.items():
        ids = sorted(vocabulary[t] for t in tags)[:width]
        matrix[index, : len(ids)] = ids
    return ItemTags(matrix, len(vocabulary) + 1)


def item_tags(warehouse: Warehouse) -> ItemTags:
    """The tags of every item in the vocabulary, from the enriched `item_attributes` table."""
    from ctr_dagster import vocab

    items = vocab.load(warehouse, "item")
    index = dict(zip(items.column("key").to_pylist(), items.column("index").to_pylist(), strict=True))
    rows = vocab.FIRST_INDEX + items.num_rows
    return tags_from_attributes(warehouse.read("item_attributes"), index, rows)
