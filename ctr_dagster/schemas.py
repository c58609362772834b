"""Canonical pyarrow schemas of every table: the single source of truth.

Every producer (the synthetic generator, the importers) writes exactly these schemas and every
consumer reads them; `conform()` casts a table to its schema and fails loudly on anything missing,
so a drift between producer and consumer is caught at the boundary, not three stages later.

Ids are strings in raw tables (users bring their own ids); the training dataset maps them to dense
integer indices through the versioned vocabulary (`ctr_dagster.vocab`).
"""

from __future__ import annotations

import pyarrow as pa

TS = pa.timestamp("ms", tz="UTC")

#: Item catalogue. `image_png` is a small rendered PNG (bytes); `first_seen` is the day the item
#: entered the catalogue (items appearing on later days are "new items").
ITEMS = pa.schema(
    [
        pa.field("item_id", pa.string(), nullable=False),
        pa.field("category", pa.string(), nullable=False),
        pa.field("title", pa.string(), nullable=False),
        pa.field("price", pa.float32(), nullable=False),
        pa.field("first_seen", pa.date32(), nullable=False),
        pa.field("image_png", pa.binary()),
    ]
)

#: Structured catalogue attributes in long form: one row per (item, attribute) the catalogue knows.
#: Values missing here may still be stated in the title or visible in the image.
ITEM_ATTRIBUTES = pa.schema(
    [
        pa.field("item_id", pa.string(), nullable=False),
        pa.field("attribute", pa.string(), nullable=False),
        pa.field("value", pa.string(), nullable=False),
    ]
)

#: The marketplace's published attribute-value vocabulary (every value a category may use), when
#: the source has one: the candidate values a zero-shot extractor ranks. Says nothing about items.
ATTRIBUTE_TAXONOMY = pa.schema(
    [pa.field("attribute", pa.string(), nullable=False), pa.field("value", pa.string(), nullable=False)]
)

#: Negative attribute labels (MAVE's attributes with an empty evidence list): the item is known
#: NOT to state / have `attribute`. One row per (item, attribute); never also a catalogue value.
ATTRIBUTE_NEGATIVES = pa.schema(
    [
        pa.field("item_id", pa.string(), nullable=False),
        pa.field("attribute", pa.string(), nullable=False),
    ]
)

USERS = pa.schema(
    [
        pa.field("user_id", pa.string(), nullable=False),
        pa.field("signup_date", pa.date32(), nullable=False),
        pa.field("region", pa.string()),
        pa.field("age_group", pa.int8()),
    ]
)

#: One row per shown item. `position` is the 1-based slot in the result list (position bias);
#: `treatment` is the randomized coupon arm (0 = control, > 0 = a coupon arm); `conversion` implies `click`.
IMPRESSIONS = pa.schema(
    [
        pa.field("impression_id", pa.string(), nullable=False),
        pa.field("request_id", pa.string(), nullable=False),
        pa.field("ts", TS, nullable=False),
        pa.field("user_id", pa.string(), nullable=False),
        pa.field("item_id", pa.string(), nullable=False),
        pa.field("position", pa.int16(), nullable=False),
        pa.field("device", pa.string()),
        pa.field("treatment", pa.int8(), nullable=False),
        pa.field("click", pa.int8(), nullable=False),
        pa.field("conversion", pa.int8(), nullable=False),
        # The user's behaviour sequence as the log ships it (item ids, oldest first), for logs that
        # carry one per impression (many public CTR sets do); null: rebuilt from the log's clicks.
        pa.field("history_item_ids", pa.list_(pa.string())),
    ]
)

#: Ground truth of the synthetic world, kept apart from every feature table. Probabilities of the
#: click under each arm and of the conversion given a click under each arm; `p_click` is the one
#: under the arm actually assigned. Real (imported) data has no oracle.
#: `p_click_control` / `p_conv_control` are arm 0's; `p_click_treated` / `p_conv_treated` the
#: impression's own coupon arm's (arm 1's for control rows); `p_click_arm{k}` / `p_conv_arm{k}` arm
#: k's, for every arm 0..ORACLE_ARMS-1 (`datagen.behaviour.COUPON_ARMS`): the true effect of arm k
#: on the click is p_click_arm{k} - p_click_arm0, on the conversion given a click p_conv_arm{k} -
#: p_conv_arm0, and on the whole chain p_click_arm{k} p_conv_arm{k} - p_click_arm0 p_conv_arm0.
#: The synthetic click logit's components, one per planted mechanism (`datagen.behaviour`); their sum
#: is the logit of the assigned arm. The oracle keeps each as `logit_<name>`, so the evaluation can
#: say which planted mechanism a model captures (`ctr_dagster.mechanisms`).
CLICK_COMPONENTS: tuple[str, ...] = (
    "base", "popularity", "affinity", "sequence", "multimodal", "interaction", "segment", "position",
    "scaling", "uplift_click", "target_time", "profile_sequence", "behaviour_segment",
)  # fmt: skip

#: Treatment values of the synthetic world: 0 = control, 1..ORACLE_ARMS-1 = coupon arms.
ORACLE_ARMS = 4

ORACLE_IMPRESSIONS = pa.schema(
    [
        pa.field("impression_id", pa.string(), nullable=False),
        pa.field("p_click", pa.float32(), nullable=False),
        pa.field("p_click_control", pa.float32(), nullable=False),
        pa.field("p_click_treated", pa.float32(), nullable=False),
        pa.field("p_conv_control", pa.float32(), nullable=False),
        pa.field("p_conv_treated", pa.float32(), nullable=False),
        *(pa.field(f"p_click_arm{k}", pa.float32(), nullable=False) for k in range(ORACLE_ARMS)),
        *(pa.field(f"p_conv_arm{k}", pa.float32(), nullable=False) for k in range(ORACLE_ARMS)),
        *(pa.field(f"logit_{name}", pa.float32(), nullable=False) for name in CLICK_COMPONENTS),
    ]
)

#: The complete truth about item attributes: where each value is stated (catalogue / title /
#: image) and whether the value belongs to a held-out category only (zero-shot extraction target).
ORACLE_ITEM_ATTRIBUTES = pa.schema(
    [
        pa.field("item_id", pa.string(), nullable=False),
        pa.field("attribute", pa.string(), nullable=False),
        pa.field("value", pa.string(), nullable=False),
        pa.field("in_catalogue", pa.bool_(), nullable=False),
        pa.field("in_title", pa.bool_(), nullable=False),
        pa.field("in_image", pa.bool_(), nullable=False),
        pa.field("zero_shot", pa.bool_(), nullable=False),
    ]
)

#: The `item_attributes` table: the catalogue's attributes (extractor "catalogue", score 1) plus, for
#: (item, attribute) pairs the catalogue lacks, the value an extractor plugin found, its score in
#: [0, 1] and the extractor's name.
ITEM_ATTRIBUTES_ENRICHED = pa.schema(
    [
        pa.field("item_id", pa.string(), nullable=False),
        pa.field("attribute", pa.string(), nullable=False),
        pa.field("value", pa.string(), nullable=False),
        pa.field("score", pa.float32(), nullable=False),
        pa.field("extractor", pa.string(), nullable=False),
    ]
)

#: Rows rejected by a quality rule or a parser, with enough context to find and fix them.
#: `record` is the offending row as JSON so rows of any (even unparseable) shape fit one table.
QUARANTINE = pa.schema(
    [
        pa.field("table", pa.string(), nullable=False),
        pa.field("partition", pa.string()),
        pa.field("source_file", pa.string()),
        pa.field("source_row", pa.int64()),
        pa.field("column", pa.string()),
        pa.field("rule", pa.string(), nullable=False),
        pa.field("detail", pa.string()),
        pa.field("record", pa.string()),
    ]
)

#: Where each imported raw row came from (aligned with the raw partition's rows): 1-based data row.
#: The file name is dictionary-encoded: one file feeds ~all rows of a partition.
PROVENANCE = pa.schema(
    [pa.field("source_file", pa.dictionary(pa.int32(), pa.string())), pa.field("source_row", pa.int64())]
)

#: Versioned id vocabulary: indices are append-only, 0 = padding, 1 = out-of-vocabulary.
VOCAB = pa.schema(
    [
        pa.field("key", pa.string(), nullable=False),
        pa.field("index", pa.int32(), nullable=False),
        pa.field("version", pa.int32(), nullable=False),
    ]
)

#: Name of the fused column of the `item_embeddings` table (the vector models get).
FUSED = "fused"


def vector_table(widths: dict[str, int], nullable: bool = True) -> pa.Schema:
    """`item_id` + one `fixed_size_list<float32>[width]` column per name, in the given order.

    The schema of the `item_embeddings` table (one column per modality, e.g. `text`, `image`, plus
    `fused`, whose width is configurable) and of imported precomputed vectors (`raw_item_vectors`):
    widths depend on the encoders, so this is a builder rather than a constant. A modality column is
    null for an item that has no vector of it (e.g. no image); `fused` never is.
    """
    fields = [pa.field("item_id", pa.string(), nullable=False)]
    for name, width in widths.items():
        if width < 1:
            raise ValueError(f"vector column {name!r} needs a width >= 1, got {width}")
        fields.append(pa.field(name, pa.list_(pa.float32(), int(width)), nullable=nullable and name != FUSED))
    return pa.schema(fields)


_I32_LIST = pa.list_(pa.int32())

#: The model-ready table: one row per impression, with a `split` column (train/valid/test, split by
#: time), dense indices and the behaviour sequence built only from clicks *before* the impression
#: (most recent last; `hist_rel_pos` counts back from the target: 1 = most recent). Where the log
#: shipped the sequence itself (`history_item_ids`), its behaviours have no time: `hist_age_s` is -1.
TRAINING = pa.schema(
    [
        pa.field("split", pa.string(), nullable=False),
        pa.field("impression_id", pa.string(), nullable=False),
        pa.field("ts", TS, nullable=False),
        pa.field("user_id", pa.string(), nullable=False),
        pa.field("item_id", pa.string(), nullable=False),
        pa.field("label", pa.int8(), nullable=False),
        pa.field("conversion", pa.int8(), nullable=False),
        pa.field("treatment", pa.int8(), nullable=False),
        pa.field("user_idx", pa.int32(), nullable=False),
        pa.field("item_idx", pa.int32(), nullable=False),
        pa.field("category_idx", pa.int32(), nullable=False),
        pa.field("device_idx", pa.int32(), nullable=False),
        pa.field("region_idx", pa.int32(), nullable=False),
        pa.field("age_group_idx", pa.int32(), nullable=False),
        pa.field("position", pa.int16(), nullable=False),
        pa.field("hour", pa.int8(), nullable=False),
        pa.field("day_of_week", pa.int8(), nullable=False),
        pa.field("price", pa.float32(), nullable=False),
        pa.field("item_age_days", pa.float32(), nullable=False),
        pa.field("user_click_count", pa.int32(), nullable=False),
        pa.field("is_new_user", pa.bool_(), nullable=False),
        pa.field("is_new_item", pa.bool_(), nullable=False),
        pa.field("hist_item_idx", _I32_LIST, nullable=False),
        pa.field("hist_category_idx", _I32_LIST, nullable=False),
        pa.field("hist_age_s", pa.list_(pa.float32()), nullable=False),
        pa.field("hist_rel_pos", _I32_LIST, nullable=False),
    ]
)

#: Raw logs are dirty by nature: every column may be null there; `clean_impressions` is IMPRESSIONS
#: (required columns enforced) after the quality rules have moved bad rows to the quarantine.
RAW_IMPRESSIONS = pa.schema([f.with_nullable(True) for f in IMPRESSIONS])

TABLES: dict[str, pa.Schema] = {
    "raw_items": ITEMS,
    "raw_item_attributes": ITEM_ATTRIBUTES,
    "raw_attribute_taxonomy": ATTRIBUTE_TAXONOMY,
    "raw_attribute_negatives": ATTRIBUTE_NEGATIVES,
    "raw_users": USERS,
    "raw_impressions": RAW_IMPRESSIONS,
    "clean_impressions": IMPRESSIONS,
    "oracle_impressions": ORACLE_IMPRESSIONS,
    "oracle_item_attributes": ORACLE_ITEM_ATTRIBUTES,
    "item_attributes": ITEM_ATTRIBUTES_ENRICHED,
    "quarantine": QUARANTINE,
    "training_dataset": TRAINING,
}


class SchemaError(ValueError):
    """A table does not match its canonical schema (missing column or uncastable type)."""


def conform(table: pa.Table, schema: pa.Schema, *, source: str = "<table>") -> pa.Table:
    """Select and cast `table` to `schema` (column order, types), naming what does not fit.

    Extra columns are dropped on purpose: canonical tables carry exactly the documented columns.
    A missing optional column that no source fills (e.g. `history_item_ids`) becomes all null.
    """
    absent = {f.name for f in schema if f.name not in table.column_names}
    missing = [f.name for f in schema if f.name in absent and not (f.nullable and f.name in _FILLABLE)]
    if missing:
        raise SchemaError(f"{source}: missing required column(s) {missing}; has {table.column_names}")
    columns = []
    for field in schema:
        if field.name in absent:
            columns.append(pa.nulls(table.num_rows, field.type))
            continue
        column = table.column(field.name)
        if not column.type.equals(field.type):
            try:
                column = column.cast(field.type)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                raise SchemaError(
                    f"{source}: column {field.name!r} has type {column.type}, cannot cast to {field.type}: {exc}"
                ) from exc
        if not field.nullable and column.null_count:
            raise SchemaError(
                f"{source}: column {field.name!r} has {column.null_count} null(s) but is required"
            )
        columns.append(column)
    return pa.Table.from_arrays(columns, schema=schema)


#: Optional columns `conform` may add as nulls (columns sources were never required to produce).
_FILLABLE = frozenset({"history_item_ids"})


def empty(schema: pa.Schema) -> pa.Table:
    """An empty table of `schema` (e.g. the oracle of imported data, which has none)."""
    return schema.empty_table()
