"""The kit's test tables: thin views of the synthetic world (`ctr_dagster.datagen`), not a second generator.

Every table comes from a *kit world*: the `tiny` profile with a given seed and no corruption (the
kit needs clean canonical tables), built once per process (`build_world` caches it, and the tables
derived from it are cached here: pyarrow tables are immutable, so sharing them is safe). So a
plugin's conformance tests see the same generative story the demo and the benchmarks run on:
clicks driven by the planted signals, titles that state some attribute values, 32x32 images whose
fill colour is the colour and whose texture is the material, values missing from the structured
catalogue, zero-shot values that only titles and images reveal (see `ctr_dagster.datagen`).

* `synthetic_training_table(profile, **overrides)`: the TRAINING table of any world, every day used.
* `make_training_table(n_rows, seed)`: `n_rows` rows drawn from the kit world's TRAINING table
  (seeded, kept in time order, so the day-based train/valid/test split holds).
* `make_items_table`, `make_item_attributes_table`: the first `n_items` items of the kit world's
  catalogue and their structured attributes (or, with ``complete=True``, every true value).
* `make_fit_inputs`, `make_extractor_inputs`: the prepared inputs a plugin may declare in `requires`.
"""

from __future__ import annotations

import math
from functools import cache
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ctr_dagster import schemas

if TYPE_CHECKING:
    from ctr_dagster.datagen import World, WorldConfig

#: The profile every kit world is made from.
KIT_PROFILE = "tiny"
#: A drawn table uses at most this share of its world's rows (the rest make it a sample, not the world).
_MAX_SHARE = 0.6


def kit_config(seed: int = 0, *, n_users: int | None = None, n_items: int | None = None) -> WorldConfig:
    """The `tiny` profile with `seed`, no corruption, and more users/items when a table needs them."""
    from ctr_dagster.datagen import profile

    base = profile(KIT_PROFILE)
    return profile(
        KIT_PROFILE,
        seed=seed,
        corruption_rate=0.0,
        n_users=max(base.n_users, n_users or 0),
        n_items=max(base.n_items, n_items or 0),
    )


def kit_world(seed: int = 0, *, n_users: int | None = None, n_items: int | None = None) -> World:
    """The kit world of `seed` (built once per process and configuration by `build_world`)."""
    from ctr_dagster.datagen import build_world

    return build_world(kit_config(seed, n_users=n_users, n_items=n_items))


def world_training_table(world: World) -> pa.Table:
    """The TRAINING table of every day of `world`: last day test, the day before valid, the rest train."""
    from ctr_dagster.dataset import build_training_table
    from ctr_dagster.window import DatasetConfig, plan_days

    days = world.dates()
    impressions = pa.concat_tables(
        [schemas.conform(world.day(d).impressions, schemas.IMPRESSIONS) for d in days]
    )
    config = DatasetConfig(window_days=len(days), history_days=0, valid_days=1, test_days=1)
    plan = plan_days(days, config)
    return build_training_table(impressions, world.items(), world.users(), plan, config).table


def synthetic_training_table(profile_name: str = "tiny", **overrides: Any) -> pa.Table:
    """The TRAINING table of a synthetic world, built in memory (no warehouse, no Dagster).

    Every day of the world is used (last day test, the one before valid, the rest train), with no
    corruption, so a plugin's tests can measure it on the real generative story, e.g.
    ``synthetic_training_table("tiny", signals=Signals(sequence=3, temporal=0))``; `overrides` are
    `WorldConfig` fields (see `ctr_dagster.datagen.profile`).
    """
    from ctr_dagster.datagen import build_world, profile

    return world_training_table(build_world(profile(profile_name, **{"corruption_rate": 0.0, **overrides})))


@cache
def _training_table_of(config: WorldConfig) -> pa.Table:
    """`world_training_table` once per process and world configuration (frozen, hashable)."""
    from ctr_dagster.datagen import build_world

    return world_training_table(build_world(config))


def _users_for(n_rows: int) -> int:
    """Users a kit world needs so that `n_rows` is at most `_MAX_SHARE` of its expected rows."""
    cfg = kit_config()
    rows_per_user = cfg.requests_per_user_day * cfg.slate_size * cfg.n_days
    return max(cfg.n_users, math.ceil(n_rows / (_MAX_SHARE * rows_per_user)))


def kit_training_table(seed: int = 0) -> pa.Table:
    """The whole TRAINING table of the kit world of `seed` (every day; cached)."""
    return _training_table_of(kit_config(seed))


@cache
def make_training_table(n_rows: int = 3000, seed: int = 0) -> pa.Table:
    """`n_rows` rows of the kit world's TRAINING table (world seed `seed`), drawn without replacement
    with a generator seeded by `seed`, kept in time order.

    The split is by day as in the engine (the world's last day is "test", the day before "valid");
    sequences, `user_click_count` and the new-user/new-item flags are the full world's (a drawn row's
    history may hold clicks of rows not drawn, as a real dataset's look-back does). Indices follow
    the engine's vocabularies: 0 = padding, 1 = OOV (users first seen after the train split), real
    ids from 2 (items listed by the last day all have one). Clicks come from the world's planted
    signals: sequence relevance, position bias, affinity, coupon uplift by region and age, ...
    """
    if n_rows < 1:
        raise ValueError(f"n_rows must be >= 1, got {n_rows}")
    full = _training_table_of(kit_config(seed, n_users=_users_for(n_rows)))
    if n_rows > full.num_rows:
        raise ValueError(f"the kit world of seed {seed} has only {full.num_rows} rows, asked for {n_rows}")
    keep = np.sort(np.random.default_rng(seed).choice(full.num_rows, size=n_rows, replace=False))
    return full.take(pa.array(keep))


def training_cardinalities(table: pa.Table) -> dict[str, int]:
    """Vocabulary sizes (max index + 1) of every `*_idx` column, counting the matching `hist_*` lists."""
    out: dict[str, int] = {}
    for name in table.column_names:
        if not name.endswith("_idx") or name.startswith("hist_"):
            continue
        column = table.column(name)
        if not pa.types.is_integer(column.type):
            continue
        top = pc.max(column).as_py() or 0
        hist = f"hist_{name}"
        if hist in table.column_names:
            top = max(top, pc.max(pc.list_flatten(table.column(hist))).as_py() or 0)
        out[name] = int(top) + 1
    return out


def make_fit_inputs(
    requires: frozenset[str] | set[str], table: pa.Table, seed: int = 0, dim: int = 16
) -> dict[str, Any]:
    """Stand-ins for the prepared inputs a model may declare in `requires`.

    * "item_embeddings": float32[cardinality of item_idx, dim], row = item_idx (rows 0/1 = pad/OOV
      are zero); rows carry the item's category so they are informative.
    * "item_attributes": a table (item_id, attribute, value, score) like an extractor's output.
    * "item_tags": `ctr_dagster.item_tags.ItemTags` with each item's category and a price-band tag
      (two tags per item, informative like catalogue attributes).
    "sequence", "treatment" and "conversion" are columns of the TRAINING table itself: nothing extra.
    Override `inputs` on the conformance class if your plugin expects something else.
    """
    inputs: dict[str, Any] = {}
    if "item_embeddings" in requires:
        rng = np.random.default_rng(seed + 1)
        n = training_cardinalities(table).get("item_idx", 2)
        item = table.column("item_idx").to_numpy()
        cat = table.column("category_idx").to_numpy()
        cat_of = np.zeros(n, dtype=np.int64)
        cat_of[item] = cat
        centers = rng.normal(0.0, 1.0, (int(cat.max()) + 1, dim))
        emb = centers[cat_of] + rng.normal(0.0, 0.3, (n, dim))
        emb[:2] = 0.0
        inputs["item_embeddings"] = emb.astype(np.float32)
    if "item_tags" in requires:
        from ctr_dagster.item_tags import tags_from_attributes

        index = dict(
            zip(table.column("item_id").to_pylist(), table.column("item_idx").to_pylist(), strict=True)
        )
        price = table.column("price").to_numpy()
        band = np.digitize(price, np.quantile(price, [0.33, 0.66]))
        tags = pa.table(
            {
                "item_id": pa.concat_arrays([table.column("item_id").combine_chunks()] * 2),
                "attribute": ["category"] * table.num_rows + ["price_band"] * table.num_rows,
                "value": [str(v) for v in table.column("category_idx").to_pylist()] + [str(b) for b in band],
            }
        )
        n = training_cardinalities(table).get("item_idx", 2)
        inputs["item_tags"] = tags_from_attributes(tags, index, n)
    if "item_attributes" in requires:
        item_ids = pc.unique(table.column("item_id"))
        cats = pc.take(table.column("category_idx"), pc.index_in(item_ids, value_set=table.column("item_id")))
        inputs["item_attributes"] = pa.table(
            {
                "item_id": item_ids,
                "attribute": pa.array(["category"] * len(item_ids)),
                "value": pc.cast(cats, pa.string()),
                "score": pa.array(np.ones(len(item_ids), dtype=np.float32)),
            }
        )
    return inputs


def synthetic_item_inputs(
    profile_name: str = "tiny", *, dim_noise: float = 0.1, **overrides: Any
) -> dict[str, Any]:
    """{"item_embeddings", "item_tags"} for `synthetic_training_table(profile_name, **overrides)`.

    What the real upstream assets would hand a model, without running them: `item_tags` from the
    world's structured catalogue (`World.item_attributes`: about 30 % of values missing), and item
    vectors that carry what the multimodal encoders can see -- a one-hot of every attribute value the
    world's oracle marks as stated in the title or visible in the image, plus Gaussian noise of std
    `dim_noise` (seeded). Rows follow the training table's item_idx (0/1 = pad/OOV stay zero).
    """
    from ctr_dagster.datagen import build_world, profile
    from ctr_dagster.item_tags import tags_from_attributes

    config = profile(profile_name, **{"corruption_rate": 0.0, **overrides})
    world = build_world(config)
    table = _training_table_of(config)
    index = dict(zip(table.column("item_id").to_pylist(), table.column("item_idx").to_pylist(), strict=True))
    rows = training_cardinalities(table).get("item_idx", 2)
    oracle = world.oracle_item_attributes()
    visible = oracle.filter(pc.or_(oracle.column("in_title"), oracle.column("in_image"))).to_pydict()
    values = sorted({(a, v) for a, v in zip(visible["attribute"], visible["value"], strict=True)})
    column = {pair: i for i, pair in enumerate(values)}
    vectors = np.zeros((rows, max(len(values), 1)), dtype=np.float32)
    for item, attribute, value in zip(
        visible["item_id"], visible["attribute"], visible["value"], strict=True
    ):
        if item in index:
            vectors[index[item], column[(attribute, value)]] = 1.0
    vectors[2:] += np.random.default_rng(config.seed + 11).normal(0.0, dim_noise, vectors[2:].shape)
    return {
        "item_embeddings": vectors,
        "item_tags": tags_from_attributes(world.item_attributes(), index, rows),
    }


def _catalogue_world(n_items: int, seed: int) -> World:
    from ctr_dagster.datagen import build_world

    return build_world(_catalogue_config(n_items, seed))


def _catalogue_config(n_items: int, seed: int) -> WorldConfig:
    if n_items < 1:
        raise ValueError(f"n_items must be >= 1, got {n_items}")
    return kit_config(seed, n_items=n_items)


def _of_items(table: pa.Table, items: pa.Table) -> pa.Table:
    return table.filter(pc.is_in(table.column("item_id"), value_set=items.column("item_id")))


@cache
def make_items_table(n_items: int = 40, seed: int = 0) -> pa.Table:
    """The first `n_items` items (ITEMS schema) of the kit world's catalogue: titles that state some
    attribute values (the oracle's `in_title`), PNG images showing colour (fill) and material (texture)."""
    return _catalogue_world(n_items, seed).items().slice(0, n_items)


@cache
def make_item_attributes_table(n_items: int = 40, seed: int = 0, *, complete: bool = False) -> pa.Table:
    """The structured attributes (ITEM_ATTRIBUTES schema) of `make_items_table(n_items, seed)`: about
    30 % of the values are missing from the catalogue (most still stated in the title or visible in
    the image) and zero-shot values never appear. ``complete=True``: every true value instead (the
    world's oracle), the ground truth an extractor is judged against."""
    world = _catalogue_world(n_items, seed)
    items = make_items_table(n_items, seed)
    if complete:
        return schemas.conform(
            _of_items(world.oracle_item_attributes(), items).select(["item_id", "attribute", "value"]),
            schemas.ITEM_ATTRIBUTES,
            source="kit complete item attributes",
        )
    return _of_items(world.item_attributes(), items)


def make_oracle_item_attributes_table(n_items: int = 40, seed: int = 0) -> pa.Table:
    """The oracle rows (ORACLE_ITEM_ATTRIBUTES: value + in_catalogue / in_title / in_image / zero_shot)
    of `make_items_table(n_items, seed)`: where each true value shows."""
    return _of_items(
        _catalogue_world(n_items, seed).oracle_item_attributes(), make_items_table(n_items, seed)
    )


def make_extractor_inputs(
    requires: frozenset[str] | set[str], n_items: int = 40, seed: int = 0
) -> dict[str, Any]:
    """The inputs an extractor may declare in `requires` (see `KNOWN_EXTRACTOR_INPUTS`), for the items
    of `make_items_table(n_items, seed)`, as the engine prepares them:

    * "interactions": (user_id, item_id, ts, click, conversion) of the kit world's train split,
      restricted to those items (`extraction.interactions_from_training`);
    * "candidates": the world's published value taxonomy (every (attribute, value) any category may
      use, zero-shot values included), as the attribute stage hands it over;
    * "negatives": (item_id, attribute) pairs known to have no value: every attribute of the world
      that an item's category does not use.
    """
    from ctr_dagster.datagen.vocab import ATTRIBUTES, all_values

    inputs: dict[str, Any] = {}
    if "interactions" in requires:
        from ctr_dagster.extraction import interactions_from_training

        training = _of_items(
            _training_table_of(_catalogue_config(n_items, seed)), make_items_table(n_items, seed)
        )
        inputs["interactions"] = interactions_from_training(training)
    if "candidates" in requires:
        pairs = [(a, v) for a in ATTRIBUTES for v in all_values(a)]
        inputs["candidates"] = pa.table(
            {"attribute": pa.array([a for a, _ in pairs]), "value": pa.array([v for _, v in pairs])}
        )
    if "negatives" in requires:
        inputs["negatives"] = _negatives_of(make_items_table(n_items, seed))
    return inputs


def _negatives_of(items: pa.Table) -> pa.Table:
    """(item_id, attribute) for every world attribute the item's category does not use."""
    from ctr_dagster.datagen.vocab import ATTRIBUTES, HELDOUT_CATEGORIES, REGULAR_CATEGORIES

    uses = {spec.name: set(spec.attributes) for spec in REGULAR_CATEGORIES + HELDOUT_CATEGORIES}
    rows = [
        (item, a)
        for item, category in zip(
            items.column("item_id").to_pylist(), items.column("category").to_pylist(), strict=True
        )
        for a in ATTRIBUTES
        if a not in uses.get(category, set(ATTRIBUTES))
    ]
    return pa.table(
        {
            "item_id": pa.array([i for i, _ in rows], pa.string()),
            "attribute": pa.array([a for _, a in rows], pa.string()),
        }
    )
