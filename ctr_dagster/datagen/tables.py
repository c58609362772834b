"""Arrow assembly of the world's tables (fast id formatting, canonical schemas via `schemas.conform`)."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa

from ctr_dagster import schemas
from ctr_dagster.datagen.behaviour import COMPONENTS
from ctr_dagster.datagen.catalogue import Catalogue
from ctr_dagster.datagen.population import Population
from ctr_dagster.datagen.simulate import DayArrays
from ctr_dagster.datagen.vocab import ATTRIBUTES, DEVICES, REGIONS, all_values

EPOCH = dt.date(1970, 1, 1)


def format_ids(prefix: str, numbers: np.ndarray, width: int) -> pa.Array:
    """``prefix + zero-padded number`` for millions of ids without a Python loop (ASCII digits)."""
    numbers = np.asarray(numbers, dtype=np.int64)
    if numbers.size and (numbers.min() < 0 or numbers.max() >= 10**width):
        raise ValueError(f"id numbers must be in [0, 10**{width}) for prefix {prefix!r}")
    head = np.frombuffer(prefix.encode("ascii"), dtype=np.uint8)
    out = np.empty((len(numbers), len(head) + width), dtype=np.uint8)
    out[:, : len(head)] = head
    powers = 10 ** np.arange(width - 1, -1, -1, dtype=np.int64)
    out[:, len(head) :] = (numbers[:, None] // powers[None, :]) % 10 + 48
    offsets = np.arange(len(numbers) + 1, dtype=np.int64) * out.shape[1]
    buffers = [None, pa.py_buffer(offsets), pa.py_buffer(out.reshape(-1))]
    return pa.Array.from_buffers(pa.large_string(), len(numbers), buffers).cast(pa.string())


def user_ids(n: int) -> pa.Array:
    return format_ids("u", np.arange(n), 6)


def item_ids(n: int) -> pa.Array:
    return format_ids("i", np.arange(n), 6)


def day_dates(start: dt.date, offsets: np.ndarray) -> pa.Array:
    return pa.array(np.asarray(offsets, dtype=np.int32) + (start - EPOCH).days, type=pa.int32()).cast(
        pa.date32()
    )


def items_table(catalogue: Catalogue, start: dt.date) -> pa.Table:
    names = [spec.name for spec in catalogue.specs]
    table = pa.table(
        {
            "item_id": item_ids(catalogue.n),
            "category": pa.array(names).take(pa.array(catalogue.category)),
            "title": pa.array(catalogue.titles, type=pa.string()),
            "price": pa.array(catalogue.price, type=pa.float32()),
            "first_seen": day_dates(start, catalogue.first_day),
            "image_png": pa.array(catalogue.images, type=pa.binary()),
        }
    )
    return schemas.conform(table, schemas.ITEMS, source="datagen items")


def oracle_attributes_table(catalogue: Catalogue) -> pa.Table:
    """Long form: one row per (item, applicable attribute), ordered by item then attribute."""
    items, attrs, values, flags = (
        [],
        [],
        [],
        {k: [] for k in ("in_catalogue", "in_title", "in_image", "zero_shot")},
    )
    for a, attribute in enumerate(ATTRIBUTES):
        has = np.flatnonzero(catalogue.values[attribute] >= 0)
        items.append(has)
        attrs.append(np.full(len(has), a))
        values.append(catalogue.values[attribute][has])
        for key, source in (
            ("in_catalogue", catalogue.in_catalogue),
            ("in_title", catalogue.in_title),
            ("in_image", catalogue.in_image),
            ("zero_shot", catalogue.zero_shot),
        ):
            flags[key].append(source[attribute][has])
    item, attr, value = np.concatenate(items), np.concatenate(attrs), np.concatenate(values)
    order = np.lexsort((attr, item))
    vocab = pa.array([v for attribute in ATTRIBUTES for v in all_values(attribute)])
    offsets = np.cumsum([0] + [len(all_values(a)) for a in ATTRIBUTES])[:-1]
    table = pa.table(
        {
            "item_id": item_ids(catalogue.n).take(pa.array(item[order])),
            "attribute": pa.array(ATTRIBUTES).take(pa.array(attr[order])),
            "value": vocab.take(pa.array((offsets[attr] + value)[order])),
            **{key: pa.array(np.concatenate(parts)[order]) for key, parts in flags.items()},
        }
    )
    return schemas.conform(table, schemas.ORACLE_ITEM_ATTRIBUTES, source="datagen oracle_item_attributes")


def catalogue_attributes_table(oracle: pa.Table) -> pa.Table:
    """What the structured catalogue knows: the oracle rows flagged in_catalogue."""
    known = oracle.filter(oracle.column("in_catalogue"))
    return schemas.conform(known, schemas.ITEM_ATTRIBUTES, source="datagen item_attributes")


def users_table(population: Population, start: dt.date) -> pa.Table:
    table = pa.table(
        {
            "user_id": user_ids(population.n),
            "signup_date": day_dates(start, population.signup_day),
            "region": pa.array(REGIONS).take(pa.array(population.region)),
            "age_group": pa.array(population.age_group, type=pa.int8()),
        }
    )
    return schemas.conform(table, schemas.USERS, source="datagen users")


def impression_columns(
    arrays: DayArrays, date_key: str, users: pa.Array, items: pa.Array
) -> dict[str, pa.Array]:
    """The generated day as RAW_IMPRESSIONS columns (before corruption)."""
    n = arrays.n
    return {
        "impression_id": format_ids(f"imp-{date_key}-", np.arange(n), 7),
        "request_id": format_ids(f"req-{date_key}-", arrays.request, 7),
        "ts": pa.array(arrays.ts, type=pa.int64()).cast(schemas.TS),
        "user_id": users.take(pa.array(arrays.user)),
        "item_id": items.take(pa.array(arrays.item)),
        "position": pa.array(arrays.position.astype(np.int16)),
        "device": pa.array(DEVICES).take(pa.array(arrays.device)),
        "treatment": pa.array(arrays.treatment.astype(np.int8)),
        "click": pa.array(arrays.click),
        "conversion": pa.array(arrays.conversion),
    }


def oracle_table(arrays: DayArrays, impression_id: pa.Array) -> pa.Table:
    columns = {"impression_id": impression_id}
    for name in ("p_click", "p_click_control", "p_click_treated", "p_conv_control", "p_conv_treated"):
        columns[name] = pa.array(getattr(arrays, name).astype(np.float32))
    for stage in ("click", "conv"):  # each arm's probability: the true effect per arm and chain stage
        per_arm = getattr(arrays, f"p_{stage}_arms").astype(np.float32)
        for k in range(per_arm.shape[1]):
            columns[f"p_{stage}_arm{k}"] = pa.array(per_arm[:, k])
    for name in COMPONENTS:  # each planted mechanism's share of the click logit (oracle only)
        columns[f"logit_{name}"] = pa.array(arrays.components[name].astype(np.float32))
    return schemas.conform(pa.table(columns), schemas.ORACLE_IMPRESSIONS, source="datagen oracle")


def components_table(arrays: DayArrays, impression_id: pa.Array) -> pa.Table:
    columns = {"impression_id": impression_id}
    for name in COMPONENTS:
        columns[name] = pa.array(arrays.components[name].astype(np.float32))
    return pa.table(columns)
