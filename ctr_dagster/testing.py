"""Plugin conformance kit: the checks every plugin must pass, runnable from the plugin's own tests.

Model plugins subclass `ModelConformance` in their test suite (pytest collects the `test_*` methods)::

    from ctr_dagster.testing import ModelConformance
    from ctr_mymodel.model import MyModel

    class TestMyModel(ModelConformance):
        plugin = MyModel
        config = {"epochs": 1}      # optional overrides that keep the test fast
        # n_rows = 3000, seed = 0, min_auc = 0.55, tolerance = 0.0, inputs = None: see the class

Encoders and extractors have `EncoderConformance` and `ExtractorConformance` (same pattern).

The data is synthetic and self-contained (`make_training_table`, `make_items_table`,
`make_item_attributes_table`): small, seeded, with a planted learnable signal, in the canonical
schemas of `ctr_dagster.schemas`. Every check is also a plain function or `ModelHarness` method that
raises `ConformanceError` (an AssertionError), and `check_model(plugin)` runs them all and returns
`CheckResult`s, so the kit can be used outside pytest too (e.g. from the CLI).

Checks on a model plugin: contract (`contract_violations` empty); config (dataclass with defaults,
JSON-serializable, `config_from_dict` round trip, unknown key rejected, constructible); `fit`
returns the model; `predict` gives a float array of shape (n,), finite, in [0, 1] ([-1, 1] for
uplift models); better than chance on held-out rows (AUC > `min_auc`; positive uplift gain for
uplift models); save/load round trip in a fresh directory gives identical predictions; saved files
are not pickles; two fits with the same `FitContext.seed` give identical predictions; a 1-row batch
works and matches the full-batch score; `predict` does not mutate its input.

Nothing here imports pytest, Dagster or torch.
"""

from __future__ import annotations

import dataclasses
import json
import math
import struct
import tempfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ctr_dagster import schemas
from ctr_dagster.contracts import FitContext, config_from_dict, config_to_dict, contract_violations
from ctr_dagster.metrics import auc

__all__ = [
    "CheckResult",
    "ConformanceError",
    "EncoderConformance",
    "ExtractorConformance",
    "ModelConformance",
    "ModelHarness",
    "assert_no_pickles",
    "assert_scores_valid",
    "auc",
    "check_config",
    "check_contract",
    "check_model",
    "find_pickles",
    "make_extractor_inputs",
    "make_fit_inputs",
    "make_item_attributes_table",
    "make_items_table",
    "make_training_table",
    "synthetic_training_table",
    "training_cardinalities",
    "uplift_gain",
]


class ConformanceError(AssertionError):
    """A plugin does not conform; the message says which check and why."""


@dataclass(frozen=True)
class CheckResult:
    name: str
    passed: bool
    message: str = ""


# --------------------------------------------------------------------------------------------------
# Synthetic data
# --------------------------------------------------------------------------------------------------

_EPOCH_MS = 1_704_067_200_000  # 2024-01-01T00:00:00Z, a Monday
_DAY_S = 86_400


def _default_column(f: pa.Field, n: int) -> pa.Array:
    """A neutral column for a schema field this generator does not know (keeps the kit schema-proof)."""
    t = f.type
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return pa.array([[] for _ in range(n)], type=t)
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return pa.array([""] * n, type=t)
    if pa.types.is_boolean(t):
        return pa.array(np.zeros(n, dtype=bool), type=t)
    if pa.types.is_timestamp(t):
        return pa.array(np.zeros(n, dtype=np.int64)).cast(t)
    if pa.types.is_date(t):
        return pa.array(np.zeros(n, dtype=np.int32)).cast(pa.date32()).cast(t)
    return pa.array(np.zeros(n), type=pa.float64()).cast(t)


def _to_schema(columns: dict[str, Any], schema: pa.Schema, n: int, source: str) -> pa.Table:
    arrays = []
    for f in schema:
        value = columns.get(f.name)
        if value is None:
            arrays.append(_default_column(f, n))
        elif isinstance(value, pa.Array | pa.ChunkedArray):
            arrays.append(value.cast(f.type))
        else:
            arrays.append(pa.array(value).cast(f.type))
    return schemas.conform(pa.Table.from_arrays(arrays, schema=schema), schema, source=source)


def synthetic_training_table(profile_name: str = "tiny", **overrides: Any) -> pa.Table:
    """The TRAINING table of a synthetic world, built in memory (no warehouse, no Dagster).

    Every day of the world is used (last day test, the one before valid, the rest train), with no
    corruption, so a plugin's tests can measure it on the real generative story, e.g.
    ``synthetic_training_table("tiny", signals=Signals(sequence=3, temporal=0))``; `overrides` are
    `WorldConfig` fields (see `ctr_dagster.datagen.profile`).
    """
    from ctr_dagster.datagen import build_world, profile
    from ctr_dagster.dataset import build_training_table
    from ctr_dagster.window import DatasetConfig, plan_days

    world = build_world(profile(profile_name, **{"corruption_rate": 0.0, **overrides}))
    days = world.dates()
    impressions = pa.concat_tables(
        [schemas.conform(world.day(d).impressions, schemas.IMPRESSIONS) for d in days]
    )
    config = DatasetConfig(window_days=len(days), history_days=0, valid_days=1, test_days=1)
    plan = plan_days(days, config)
    return build_training_table(impressions, world.items(), world.users(), plan, config).table


def make_training_table(
    n_rows: int = 3000,
    seed: int = 0,
    *,
    n_users: int | None = None,
    n_items: int | None = None,
    n_categories: int = 6,
    n_days: int = 14,
    max_hist: int = 10,
    split: tuple[float, float] = (0.7, 0.15),
) -> pa.Table:
    """A small seeded table in the TRAINING schema with a planted, learnable click signal.

    Clicks follow p = σ(logit) with logit = base + item quality + user-category affinity
    − position bias + affinity of the target's category to the user's recent clicks (behaviour
    sequence) + treatment × heterogeneous uplift (coupon works for young users, slightly hurts old).
    Rows are in time order; the first `split[0]` share is "train", the next `split[1]` "valid", the
    rest "test". Indices follow the vocabulary convention (0 = padding, 1 = OOV, real ids from 2);
    users and items first seen after the train split are OOV, as in the engine's training table.
    Sequences hold the user's clicks strictly before each row, most recent last (at most `max_hist`).
    """
    rng = np.random.default_rng(seed)
    n_users = n_users or max(20, n_rows // 25)
    n_items = n_items or max(30, n_rows // 20)
    n_devices, n_regions = 3, 4

    item_cat = rng.integers(0, n_categories, n_items)
    item_quality = rng.normal(0.0, 0.9, n_items)
    item_price = rng.lognormal(3.0, 0.6, n_items).astype(np.float32)
    item_first_day = np.where(rng.random(n_items) < 0.8, 0, rng.integers(1, n_days, n_items))
    user_pref = rng.integers(0, n_categories, n_users)
    user_region = rng.integers(0, n_regions, n_users)
    user_age = rng.integers(1, 7, n_users)  # 1..6
    activity = rng.lognormal(0.0, 1.0, n_users)  # skewed: a few heavy users, a long tail
    user_tau = np.where(user_age <= 2, 1.0, -0.3)  # planted heterogeneous treatment effect

    ts_s = np.sort(rng.integers(0, n_days * _DAY_S, n_rows))
    day = ts_s // _DAY_S
    users = rng.choice(n_users, size=n_rows, p=activity / activity.sum())
    items = rng.integers(0, n_items, n_rows)
    day0_items = np.flatnonzero(item_first_day == 0)
    too_early = item_first_day[items] > day
    items[too_early] = rng.choice(day0_items, size=int(too_early.sum()))
    position = rng.integers(1, 11, n_rows)
    device = rng.integers(0, n_devices, n_rows)
    treatment = rng.integers(0, 2, n_rows)
    u_click = rng.random(n_rows)
    u_conv = rng.random(n_rows)

    label = np.zeros(n_rows, dtype=np.int8)
    conversion = np.zeros(n_rows, dtype=np.int8)
    click_count = np.zeros(n_rows, dtype=np.int32)
    hist_item: list[list[int]] = []
    hist_cat: list[list[int]] = []
    hist_age: list[list[float]] = []
    hist_pos: list[list[int]] = []
    history: dict[int, list[tuple[int, int]]] = {}  # user -> [(item, ts_s)] of clicks, oldest first
    item_cat_l, item_quality_l, user_pref_l, user_tau_l = (
        item_cat.tolist(),
        item_quality.tolist(),
        user_pref.tolist(),
        user_tau.tolist(),
    )
    for i in range(n_rows):
        u, it, t = int(users[i]), int(items[i]), int(ts_s[i])
        clicks = history.setdefault(u, [])
        past = [(j, s) for j, s in clicks[-(max_hist + 4) :] if s < t][-max_hist:]
        cats = [item_cat_l[j] for j, _ in past]
        target_cat = item_cat_l[it]
        seq_affinity = sum(c == target_cat for c in cats) / len(cats) if cats else 0.0
        logit = (
            -1.3
            + item_quality_l[it]
            + 1.0 * (target_cat == user_pref_l[u])
            - 0.12 * (int(position[i]) - 1)
            + 1.2 * seq_affinity
            + int(treatment[i]) * user_tau_l[u]
        )
        clicked = bool(u_click[i] < 1.0 / (1.0 + math.exp(-logit)))
        label[i] = clicked
        conversion[i] = clicked and u_conv[i] < 1.0 / (1.0 + math.exp(1.0 - 0.6 * int(treatment[i])))
        click_count[i] = len(clicks)
        hist_item.append([j + 2 for j, _ in past])
        hist_cat.append([c + 2 for c in cats])
        hist_age.append([float(t - s) for _, s in past])
        hist_pos.append(list(range(len(past), 0, -1)))
        if clicked:
            clicks.append((it, t))

    n_train = int(round(n_rows * split[0]))
    n_valid = int(round(n_rows * split[1]))
    split_col = np.array(["train"] * n_train + ["valid"] * n_valid + ["test"] * (n_rows - n_train - n_valid))
    train_users = set(users[:n_train].tolist())
    train_items = set(items[:n_train].tolist())
    # Like the engine's vocabularies (built on the train split): ids unseen in training map to OOV = 1.
    user_idx = np.array([u + 2 if u in train_users else 1 for u in users.tolist()], dtype=np.int32)
    item_idx = np.array([j + 2 if j in train_items else 1 for j in items.tolist()], dtype=np.int32)
    hist_item = [[j if j - 2 in train_items else 1 for j in row] for row in hist_item]
    ts_ms = _EPOCH_MS + ts_s * 1000
    columns: dict[str, Any] = {
        "split": split_col,
        "impression_id": [f"imp{i:07d}" for i in range(n_rows)],
        "ts": pa.array(ts_ms, type=pa.int64()).cast(schemas.TS),
        "user_id": [f"u{u:05d}" for u in users],
        "item_id": [f"i{j:05d}" for j in items],
        "label": label,
        "conversion": conversion,
        "treatment": treatment.astype(np.int8),
        "user_idx": user_idx,
        "item_idx": item_idx,
        "category_idx": (item_cat[items] + 2).astype(np.int32),
        "device_idx": (device + 2).astype(np.int32),
        "region_idx": (user_region[users] + 2).astype(np.int32),
        "age_group_idx": (user_age[users] + 1).astype(np.int32),  # ages 1..6 -> indices 2..7
        "age_group": user_age[users].astype(np.int8),
        "position": position.astype(np.int16),
        "hour": ((ts_s // 3600) % 24).astype(np.int8),
        "day_of_week": (day % 7).astype(np.int8),
        "price": item_price[items],
        "item_age_days": ((ts_s - item_first_day[items] * _DAY_S) / _DAY_S).astype(np.float32),
        "user_click_count": click_count,
        "is_new_user": np.array([u not in train_users for u in users]),
        "is_new_item": np.array([j not in train_items for j in items]),
        "hist_item_idx": pa.array(hist_item, type=pa.list_(pa.int32())),
        "hist_category_idx": pa.array(hist_cat, type=pa.list_(pa.int32())),
        "hist_age_s": pa.array(hist_age, type=pa.list_(pa.float32())),
        "hist_rel_pos": pa.array(hist_pos, type=pa.list_(pa.int32())),
    }
    return _to_schema(columns, schemas.TRAINING, n_rows, "make_training_table")


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


_CATEGORIES = ("shirt", "shoe", "bag", "lamp", "mug", "hat")
_COLOURS = {"red": (200, 30, 30), "blue": (30, 60, 200), "green": (30, 160, 60), "black": (15, 15, 15)}
_MATERIALS = ("cotton", "leather", "steel", "wool")
_BRANDS = ("acme", "globex", "initech", "umbrella")


def _png(rgb: tuple[int, int, int], size: int = 8) -> bytes:
    """A tiny solid-colour RGB PNG, written by hand (no imaging library needed)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    row = b"\x00" + bytes(rgb) * size
    header = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(row * size))
        + chunk(b"IEND", b"")
    )


def _item_facts(n_items: int, seed: int) -> list[dict[str, str]]:
    rng = np.random.default_rng(seed)
    colours = list(_COLOURS)
    return [
        {
            "category": _CATEGORIES[rng.integers(len(_CATEGORIES))],
            "colour": colours[rng.integers(len(colours))],
            "material": _MATERIALS[rng.integers(len(_MATERIALS))],
            "brand": _BRANDS[rng.integers(len(_BRANDS))],
        }
        for _ in range(n_items)
    ]


def make_items_table(n_items: int = 40, seed: int = 0) -> pa.Table:
    """A small catalogue in the ITEMS schema: titles state brand, colour, material and category;
    images are solid squares of the item's colour."""
    facts = _item_facts(n_items, seed)
    rng = np.random.default_rng(seed + 7)
    columns = {
        "item_id": [f"i{j:05d}" for j in range(n_items)],
        "category": [f["category"] for f in facts],
        "title": [f"{f['brand'].title()} {f['colour']} {f['material']} {f['category']}" for f in facts],
        "price": rng.lognormal(3.0, 0.5, n_items).astype(np.float32),
        "first_seen": pa.array(rng.integers(19723, 19737, n_items).astype(np.int32)).cast(pa.date32()),
        "image_png": [_png(_COLOURS[f["colour"]]) for f in facts],
    }
    return _to_schema(columns, schemas.ITEMS, n_items, "make_items_table")


def make_item_attributes_table(n_items: int = 40, seed: int = 0, missing_rate: float = 0.3) -> pa.Table:
    """The structured attributes (ITEM_ATTRIBUTES schema) of `make_items_table(n_items, seed)`, with
    `missing_rate` of (item, attribute) pairs left out of the catalogue (stated only in the title)."""
    facts = _item_facts(n_items, seed)
    rng = np.random.default_rng(seed + 11)
    rows = [
        (f"i{j:05d}", attribute, f[attribute])
        for j, f in enumerate(facts)
        for attribute in ("colour", "material", "brand")
        if rng.random() >= missing_rate
    ]
    columns = {
        "item_id": [r[0] for r in rows],
        "attribute": [r[1] for r in rows],
        "value": [r[2] for r in rows],
    }
    return _to_schema(columns, schemas.ITEM_ATTRIBUTES, len(rows), "make_item_attributes_table")


# --------------------------------------------------------------------------------------------------
# Check functions (each raises ConformanceError with a readable message)
# --------------------------------------------------------------------------------------------------


def _fail(check: str, message: str) -> ConformanceError:
    return ConformanceError(f"[{check}] {message}")


def check_contract(kind: str, plugin: Any) -> None:
    problems = contract_violations(kind, plugin)
    if problems:
        raise _fail("contract", f"{getattr(plugin, '__name__', plugin)!r}: " + "; ".join(problems))


def _json_normalized(values: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(values))


def check_config(plugin: type) -> None:
    """Config is a dataclass with defaults, JSON-serializable, round-trips, rejects unknown keys,
    and the plugin can be constructed from it."""
    config_cls = getattr(plugin, "Config", None)
    if not (isinstance(config_cls, type) and dataclasses.is_dataclass(config_cls)):
        raise _fail("config", f"Config must be a dataclass, got {config_cls!r}")
    try:
        default = config_cls()
    except TypeError as exc:
        raise _fail("config", f"Config() must work with defaults only: {exc}") from exc
    values = config_to_dict(default)
    try:
        encoded = json.dumps(values)
    except (TypeError, ValueError) as exc:
        raise _fail("config", f"Config defaults are not JSON-serializable ({exc}): {values!r}") from exc
    rebuilt = config_from_dict(plugin, json.loads(encoded))
    if _json_normalized(config_to_dict(rebuilt)) != _json_normalized(values):
        raise _fail(
            "config", f"config_from_dict(to_dict(default)) changed the values: {config_to_dict(rebuilt)!r}"
        )
    try:
        config_from_dict(plugin, {**values, "__not_a_config_key__": 1})
    except ValueError:
        pass
    else:
        raise _fail("config", "an unknown config key was accepted (Config must reject unknown fields)")
    try:
        plugin(default)
    except Exception as exc:
        raise _fail("config", f"{plugin.__name__}(Config()) failed: {type(exc).__name__}: {exc}") from exc


def assert_scores_valid(scores: Any, n: int, task: str = "ctr") -> np.ndarray:
    """Scores are a float ndarray of shape (n,), finite, within [0, 1] (ctr) or [-1, 1] (uplift)."""
    if not isinstance(scores, np.ndarray):
        raise _fail("predict", f"predict must return a numpy array, got {type(scores).__name__}")
    if scores.shape != (n,):
        raise _fail("predict", f"predict must return shape ({n},), got {scores.shape}")
    if scores.dtype.kind != "f":
        raise _fail("predict", f"predict must return floats, got dtype {scores.dtype}")
    if not np.all(np.isfinite(scores)):
        raise _fail("predict", f"predict returned {int((~np.isfinite(scores)).sum())} non-finite score(s)")
    low, high = (-1.0, 1.0) if task == "uplift" else (0.0, 1.0)
    if scores.min() < low or scores.max() > high:
        raise _fail(
            "predict", f"scores must lie in [{low}, {high}], got [{scores.min():.4g}, {scores.max():.4g}]"
        )
    return scores


def uplift_gain(scores: np.ndarray, outcome: np.ndarray, treatment: np.ndarray) -> float:
    """Observed uplift (treated − control outcome rate) in the top half by score minus the bottom half."""
    order = np.argsort(-np.asarray(scores), kind="mergesort")
    half = len(order) // 2

    def uplift(idx: np.ndarray) -> float:
        t = treatment[idx] == 1
        if t.all() or (~t).all():
            return 0.0
        return float(outcome[idx][t].mean() - outcome[idx][~t].mean())

    return uplift(order[:half]) - uplift(order[half:])


_PICKLE_SUFFIXES = (".pkl", ".pickle", ".joblib")


def _npy_holds_objects(path: Path) -> bool:
    """Whether a .npy file stores Python objects (which np.load can only read through pickle)."""
    readers = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
    with path.open("rb") as fh:
        try:
            version = np.lib.format.read_magic(fh)
            if version in readers:
                return bool(readers[version](fh)[2].hasobject)
        except (ValueError, OSError):
            return False
    try:
        np.load(path, allow_pickle=False)
    except ValueError:
        return True
    except OSError:
        return False
    return False


def find_pickles(directory: Path) -> list[str]:
    """Files under `directory` that are (or are named like) pickles, with the reason."""
    found = []
    for path in sorted(Path(directory).rglob("*")):
        if not path.is_file():
            continue
        rel = path.relative_to(directory).as_posix()
        if path.suffix.lower() in _PICKLE_SUFFIXES:
            found.append(f"{rel} (pickle file extension)")
            continue
        with path.open("rb") as fh:
            head = fh.read(2)
        if len(head) == 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
            found.append(f"{rel} (starts with pickle protocol {head[1]} header)")
        elif path.suffix.lower() == ".npy" and _npy_holds_objects(path):
            found.append(f"{rel} (.npy holding Python objects: needs pickle to load)")
    return found


def assert_no_pickles(directory: Path) -> None:
    found = find_pickles(directory)
    if found:
        raise _fail(
            "no_pickle",
            "saved model contains pickle data (unsafe to load from untrusted files); use JSON, "
            "safetensors, torch.save of a state_dict loaded with weights_only=True, or LightGBM text: "
            + ", ".join(found),
        )


def _snapshot(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def _assert_close(check: str, expected: np.ndarray, actual: np.ndarray, tolerance: float, what: str) -> None:
    actual = np.asarray(actual)
    if actual.shape != expected.shape:
        raise _fail(check, f"{what}: shape {actual.shape} != {expected.shape}")
    diff = (
        float(np.max(np.abs(actual.astype(np.float64) - expected.astype(np.float64))))
        if len(expected)
        else 0.0
    )
    if not diff <= tolerance:
        raise _fail(check, f"{what}: max abs difference {diff:.3g} > tolerance {tolerance:g}")


@contextmanager
def _tempdir(prefix: str) -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix=prefix) as d:
        yield Path(d)


# --------------------------------------------------------------------------------------------------
# Model harness
# --------------------------------------------------------------------------------------------------


class ModelHarness:
    """Fits a model plugin once on synthetic data and runs every model check against it.

    Each `check_*` method raises ConformanceError; `run_all()` returns a CheckResult per check.
    """

    CHECKS: ClassVar[tuple[str, ...]] = (
        "contract",
        "config",
        "fit_returns_model",
        "predict_output",
        "better_than_chance",
        "save_load_round_trip",
        "no_pickle",
        "deterministic_under_seed",
        "single_row",
        "no_input_mutation",
    )

    def __init__(
        self,
        plugin: type,
        config: dict[str, Any] | None = None,
        *,
        n_rows: int = 3000,
        seed: int = 0,
        min_auc: float = 0.55,
        tolerance: float = 0.0,
        batch_tolerance: float = 1e-5,
        inputs: dict[str, Any] | None = None,
        log: Callable[[str], None] | None = None,
    ):
        if plugin is None:
            raise ConformanceError("set `plugin = YourModelClass` on the conformance test class")
        self.plugin = plugin
        self.config = dict(config or {})
        self.n_rows = n_rows
        self.seed = seed
        self.min_auc = min_auc
        self.tolerance = tolerance
        self.batch_tolerance = batch_tolerance
        self._inputs = inputs
        self._log = log or (lambda message: None)
        self._fit_error: BaseException | None = None

    # data -------------------------------------------------------------------------------------
    @cached_property
    def table(self) -> pa.Table:
        return make_training_table(self.n_rows, self.seed)

    def _split(self, name: str) -> pa.Table:
        return self.table.filter(pc.equal(self.table.column("split"), name))

    @cached_property
    def train(self) -> pa.Table:
        return self._split("train")

    @cached_property
    def valid(self) -> pa.Table:
        return self._split("valid")

    @cached_property
    def test(self) -> pa.Table:
        return self._split("test")

    @property
    def task(self) -> str:
        return getattr(self.plugin, "task", "ctr")

    def context(self, workdir: Path | None = None) -> FitContext:
        requires = frozenset(getattr(self.plugin, "requires", frozenset()))
        inputs = (
            self._inputs if self._inputs is not None else make_fit_inputs(requires, self.table, self.seed)
        )
        return FitContext(
            seed=self.seed,
            device="cpu",
            workdir=workdir,
            cardinalities=training_cardinalities(self.table),
            inputs=inputs,
            log=self._log,
        )

    def new_model(self) -> Any:
        return self.plugin(config_from_dict(self.plugin, self.config))

    def fit_new(self) -> tuple[Any, Any]:
        """(instance, what its fit returned), fitted on the train/valid splits in a scratch dir."""
        model = self.new_model()
        with _tempdir("ctr-conformance-fit-") as workdir:
            result = model.fit(self.train, self.valid, self.context(workdir))
        return model, result

    @cached_property
    def _fit(self) -> tuple[Any, Any]:
        if self._fit_error is not None:
            raise self._fit_error
        try:
            return self.fit_new()
        except BaseException as exc:
            self._fit_error = exc
            raise

    @property
    def fitted(self) -> Any:
        """The trained model (what fit returned, if it is an instance of the plugin)."""
        model, result = self._fit
        return result if isinstance(result, self.plugin) else model

    @cached_property
    def test_scores(self) -> np.ndarray:
        return np.asarray(self.fitted.predict(self.test))

    # checks -----------------------------------------------------------------------------------
    def check_contract(self) -> None:
        check_contract("model", self.plugin)

    def check_config(self) -> None:
        check_config(self.plugin)
        try:
            config_from_dict(self.plugin, self.config)
        except ValueError as exc:
            raise _fail("config", f"the test's config overrides are invalid: {exc}") from exc

    def check_fit_returns_model(self) -> None:
        model, result = self._fit
        if not isinstance(result, self.plugin):
            raise _fail(
                "fit",
                f"fit must return the trained model (an instance of {self.plugin.__name__}), got {result!r}",
            )

    def check_predict_output(self) -> None:
        assert_scores_valid(self.test_scores, self.test.num_rows, self.task)

    def check_better_than_chance(self) -> None:
        scores = assert_scores_valid(self.test_scores, self.test.num_rows, self.task)
        label = self.test.column("label").to_numpy().astype(np.float64)
        if self.task == "uplift":
            gain = uplift_gain(scores, label, self.test.column("treatment").to_numpy())
            if not gain > 0.0:
                raise _fail(
                    "signal",
                    f"uplift ranking is no better than chance on held-out rows (top-half minus bottom-half "
                    f"uplift {gain:.4f} <= 0)",
                )
            return
        score = auc(label, scores)
        if score is None:
            raise _fail("signal", f"the held-out split ({self.test.num_rows} rows) has one class: no AUC")
        if not score > self.min_auc:
            raise _fail(
                "signal",
                f"held-out AUC {score:.4f} <= {self.min_auc} on the synthetic table "
                f"({self.test.num_rows} rows; the planted signal is learnable)",
            )

    def check_save_load_round_trip(self) -> None:
        with _tempdir("ctr-conformance-save-") as tmp:
            directory = tmp / "model"
            directory.mkdir()
            self.fitted.save(directory)
            loaded = self.plugin.load(directory)
            if not isinstance(loaded, self.plugin):
                raise _fail(
                    "save_load", f"load must return a {self.plugin.__name__}, got {type(loaded).__name__}"
                )
            _assert_close(
                "save_load",
                self.test_scores,
                loaded.predict(self.test),
                self.tolerance,
                "predictions after load",
            )

    def check_no_pickle(self) -> None:
        with _tempdir("ctr-conformance-pickle-") as tmp:
            directory = tmp / "model"
            directory.mkdir()
            self.fitted.save(directory)
            if not any(p.is_file() for p in directory.rglob("*")):
                raise _fail("no_pickle", "save wrote no file into the directory it was given")
            assert_no_pickles(directory)

    def check_deterministic_under_seed(self) -> None:
        model, result = self.fit_new()
        again = result if isinstance(result, self.plugin) else model
        _assert_close(
            "determinism",
            self.test_scores,
            np.asarray(again.predict(self.test)),
            self.tolerance,
            f"two fits with FitContext.seed={self.seed}",
        )

    def check_single_row(self) -> None:
        row = self.test.slice(0, 1)
        scores = assert_scores_valid(np.asarray(self.fitted.predict(row)), 1, self.task)
        _assert_close(
            "single_row",
            self.test_scores[:1],
            scores,
            self.batch_tolerance,
            "1-row batch vs full batch score",
        )

    def check_no_input_mutation(self) -> None:
        batch = self.test.slice(0, min(64, self.test.num_rows))
        before = _snapshot(batch)
        self.fitted.predict(batch)
        if _snapshot(batch) != before:
            raise _fail("no_mutation", "predict modified its input batch")

    # runner -----------------------------------------------------------------------------------
    def run_all(self) -> list[CheckResult]:
        results = []
        for name in self.CHECKS:
            try:
                getattr(self, f"check_{name}")()
            except Exception as exc:  # one failing check must not hide the others
                results.append(CheckResult(name, False, f"{type(exc).__name__}: {exc}"))
            else:
                results.append(CheckResult(name, True))
        return results


def check_model(plugin: type, config: dict[str, Any] | None = None, **options: Any) -> list[CheckResult]:
    """Run every model check; `options` are ModelHarness keyword arguments (n_rows, seed, min_auc, ...)."""
    return ModelHarness(plugin, config, **options).run_all()


# --------------------------------------------------------------------------------------------------
# pytest base classes (no pytest import needed: pytest collects the test_* methods of subclasses)
# --------------------------------------------------------------------------------------------------


class ModelConformance:
    """Subclass as `class TestMyModel(ModelConformance): plugin = MyModel`.

    Class attributes to override: `config` (dict of Config overrides, e.g. {"epochs": 1}),
    `n_rows` (size of the synthetic table), `seed`, `min_auc` (held-out AUC to beat), `tolerance`
    (max abs difference allowed between "identical" predictions: save/load and same-seed refit;
    0.0 = bitwise), `batch_tolerance` (1-row vs full-batch score), `inputs` (replaces the stand-in
    prepared inputs of `make_fit_inputs`). The model is fitted once per class (twice with the
    determinism check).
    """

    plugin: ClassVar[type | None] = None
    config: ClassVar[dict[str, Any]] = {}
    n_rows: ClassVar[int] = 3000
    seed: ClassVar[int] = 0
    min_auc: ClassVar[float] = 0.55
    tolerance: ClassVar[float] = 0.0
    batch_tolerance: ClassVar[float] = 1e-5
    inputs: ClassVar[dict[str, Any] | None] = None

    @classmethod
    def harness(cls) -> ModelHarness:
        cached = cls.__dict__.get("_conformance_harness")
        if cached is None:
            cached = ModelHarness(
                cls.plugin,  # type: ignore[arg-type]
                cls.config,
                n_rows=cls.n_rows,
                seed=cls.seed,
                min_auc=cls.min_auc,
                tolerance=cls.tolerance,
                batch_tolerance=cls.batch_tolerance,
                inputs=cls.inputs,
            )
            cls._conformance_harness = cached
        return cached

    def test_contract(self) -> None:
        self.harness().check_contract()

    def test_config_schema(self) -> None:
        self.harness().check_config()

    def test_fit_returns_model(self) -> None:
        self.harness().check_fit_returns_model()

    def test_predict_shape_and_range(self) -> None:
        self.harness().check_predict_output()

    def test_better_than_chance(self) -> None:
        self.harness().check_better_than_chance()

    def test_save_load_round_trip(self) -> None:
        self.harness().check_save_load_round_trip()

    def test_saved_files_are_not_pickles(self) -> None:
        self.harness().check_no_pickle()

    def test_deterministic_under_seed(self) -> None:
        self.harness().check_deterministic_under_seed()

    def test_predict_single_row(self) -> None:
        self.harness().check_single_row()

    def test_predict_does_not_mutate_input(self) -> None:
        self.harness().check_no_input_mutation()


class EncoderConformance:
    """Subclass as `class TestMyEncoder(EncoderConformance): plugin = MyEncoder`.

    Checks: contract, config, `encode` returns float32[n, d] (d > 0, finite), deterministic across two
    instances, and a 1-row batch matches the full-batch row (within `batch_tolerance`). A trainable
    encoder (one with `fit`) is first fitted on `make_items_table` / `make_item_attributes_table`;
    then `fit` must return the encoder, two fits must agree (within `tolerance`), and `save` / `load`
    must round-trip its vectors without pickle files.
    """

    plugin: ClassVar[type | None] = None
    config: ClassVar[dict[str, Any]] = {}
    n_items: ClassVar[int] = 24
    seed: ClassVar[int] = 0
    tolerance: ClassVar[float] = 0.0
    batch_tolerance: ClassVar[float] = 1e-5

    @classmethod
    def _trainable(cls) -> bool:
        return callable(getattr(cls.plugin, "fit", None))

    def _new_encoder(self) -> Any:
        encoder = self.plugin(config_from_dict(self.plugin, self.config))  # type: ignore[misc]
        if self._trainable():
            fitted = encoder.fit(self._items(), make_item_attributes_table(self.n_items, self.seed))
            if fitted is not encoder and not isinstance(fitted, self.plugin):  # type: ignore[arg-type]
                raise _fail("fit", f"fit must return the encoder, got {fitted!r}")
            encoder = fitted
        return encoder

    def _encoder(self) -> Any:
        """One (fitted) encoder per test class, reused by the checks that only call `encode`."""
        cls = type(self)
        cached = cls.__dict__.get("_conformance_encoder")
        if cached is None:
            cached = self._new_encoder()
            cls._conformance_encoder = cached
        return cached

    def _encode(self, items: pa.Table) -> np.ndarray:
        return self._encoder().encode(items)

    def _items(self) -> pa.Table:
        return make_items_table(self.n_items, self.seed)

    def test_fit_and_persistence(self) -> None:
        """Trainable encoders only: save/load gives the same vectors, and nothing saved is a pickle."""
        if not self._trainable():
            return
        items = self._items()
        encoder = self._encoder()
        with _tempdir("ctr-conformance-encoder-") as tmp:
            encoder.save(tmp)
            if not any(p.is_file() for p in tmp.rglob("*")):
                raise _fail("save_load", "save wrote no file into the directory it was given")
            assert_no_pickles(tmp)
            loaded = self.plugin.load(tmp)  # type: ignore[union-attr]
            _assert_close(
                "save_load",
                encoder.encode(items).ravel(),
                np.asarray(loaded.encode(items)).ravel(),
                self.tolerance,
                "vectors after load",
            )

    def test_contract(self) -> None:
        check_contract("encoder", self.plugin)

    def test_config_schema(self) -> None:
        check_config(self.plugin)  # type: ignore[arg-type]

    def test_output_shape_and_dtype(self) -> None:
        out = self._encode(self._items())
        if (
            not isinstance(out, np.ndarray)
            or out.ndim != 2
            or out.shape[0] != self.n_items
            or out.shape[1] < 1
        ):
            raise _fail(
                "encode", f"encode must return float32[{self.n_items}, d], got {getattr(out, 'shape', out)!r}"
            )
        if out.dtype != np.float32:
            raise _fail("encode", f"encode must return float32, got {out.dtype}")
        if not np.all(np.isfinite(out)):
            raise _fail("encode", "encode returned non-finite values")

    def test_deterministic(self) -> None:
        items = self._items()
        first = self._encode(items)
        again = self._new_encoder().encode(items)
        _assert_close("determinism", first.ravel(), np.asarray(again).ravel(), self.tolerance, "two encoders")

    def test_single_row(self) -> None:
        items = self._items()
        full = self._encode(items)
        one = self._encode(items.slice(0, 1))
        if one.shape != (1, full.shape[1]):
            raise _fail("single_row", f"1-row batch gave shape {one.shape}, expected (1, {full.shape[1]})")
        _assert_close("single_row", full[0], one[0], self.batch_tolerance, "1-row batch vs full batch")


def make_extractor_inputs(
    requires: frozenset[str] | set[str], n_items: int = 40, seed: int = 0
) -> dict[str, Any]:
    """Stand-ins for the inputs an extractor may declare in `requires` (see `KNOWN_EXTRACTOR_INPUTS`).

    * "interactions": (user_id, item_id, ts, click, conversion) rows where each user clicks items of
      one category on one day (so co-click groups exist) and converts on some of them;
    * "candidates": every (attribute, value) of `make_items_table(n_items, seed)`'s true facts,
      including values `make_item_attributes_table` left out of the catalogue.
    """
    inputs: dict[str, Any] = {}
    facts = _item_facts(n_items, seed)
    if "interactions" in requires:
        rng = np.random.default_rng(seed + 13)
        by_category: dict[str, list[int]] = {}
        for j, f in enumerate(facts):
            by_category.setdefault(f["category"], []).append(j)
        rows = []
        for u in range(max(8, n_items // 2)):
            members = by_category[_CATEGORIES[u % len(_CATEGORIES)]] if by_category else []
            members = members or list(range(n_items))
            for j in rng.choice(members, size=min(3, len(members)), replace=False).tolist():
                rows.append((f"u{u:05d}", f"i{j:05d}", u // 4, int(rng.random() < 0.5)))
        inputs["interactions"] = pa.table(
            {
                "user_id": pa.array([r[0] for r in rows], pa.string()),
                "item_id": pa.array([r[1] for r in rows], pa.string()),
                "ts": pa.array([_EPOCH_MS + r[2] * _DAY_S * 1000 for r in rows], pa.int64()).cast(schemas.TS),
                "click": pa.array([1] * len(rows), pa.int8()),
                "conversion": pa.array([r[3] for r in rows], pa.int8()),
            }
        )
    if "candidates" in requires:
        pairs = sorted({(a, f[a]) for f in facts for a in ("colour", "material", "brand")})
        inputs["candidates"] = pa.table(
            {"attribute": pa.array([a for a, _ in pairs]), "value": pa.array([v for _, v in pairs])}
        )
    return inputs


class ExtractorConformance:
    """Subclass as `class TestMyExtractor(ExtractorConformance): plugin = MyExtractor`.

    Checks: contract, config, `fit` returns the extractor, `extract` returns a table with the columns
    item_id, attribute, value (strings) and score (float in [0, 1]) about the given items only, and
    two fits with the same `FitContext.seed` extract the same rows. An extractor declaring `requires`
    gets `fit(items, attributes, ctx)` with `make_extractor_inputs` stand-ins (override `inputs`).
    """

    plugin: ClassVar[type | None] = None
    config: ClassVar[dict[str, Any]] = {}
    n_items: ClassVar[int] = 40
    seed: ClassVar[int] = 0
    #: Prepared inputs for an extractor declaring `requires`; None = `make_extractor_inputs` stand-ins.
    inputs: ClassVar[dict[str, Any] | None] = None

    def test_contract(self) -> None:
        check_contract("extractor", self.plugin)

    def test_config_schema(self) -> None:
        check_config(self.plugin)  # type: ignore[arg-type]

    def _fit_extract(self) -> tuple[Any, pa.Table, pa.Table]:
        from ctr_dagster.contracts import extractor_fit

        items = make_items_table(self.n_items, self.seed)
        attributes = make_item_attributes_table(self.n_items, self.seed)
        requires = frozenset(getattr(self.plugin, "requires", ()))
        inputs = (
            self.inputs
            if self.inputs is not None
            else make_extractor_inputs(requires, self.n_items, self.seed)
        )
        ctx = FitContext(seed=self.seed, inputs=dict(inputs), log=lambda _m: None)
        extractor = self.plugin(config_from_dict(self.plugin, self.config))  # type: ignore[misc]
        fitted = extractor_fit(extractor, items, attributes, ctx)
        if not isinstance(fitted, self.plugin):  # type: ignore[arg-type]
            raise _fail("fit", f"fit must return the extractor, got {fitted!r}")
        return fitted, items, fitted.extract(items)

    def test_deterministic(self) -> None:
        _, _, first = self._fit_extract()
        _, _, second = self._fit_extract()
        if isinstance(first, pa.Table) and isinstance(second, pa.Table) and not first.equals(second):
            raise _fail("deterministic", "two fits with the same seed extracted different rows")

    def test_fit_and_extract(self) -> None:
        _fitted, items, out = self._fit_extract()
        if not isinstance(out, pa.Table):
            raise _fail("extract", f"extract must return a pyarrow Table, got {type(out).__name__}")
        missing = [c for c in ("item_id", "attribute", "value", "score") if c not in out.column_names]
        if missing:
            raise _fail("extract", f"extract output lacks column(s) {missing}; has {out.column_names}")
        for name in ("item_id", "attribute", "value"):
            if not pa.types.is_string(out.column(name).type):
                raise _fail("extract", f"column {name!r} must be strings, got {out.column(name).type}")
        if not pa.types.is_floating(out.column("score").type):
            raise _fail("extract", f"column 'score' must be float, got {out.column('score').type}")
        score = out.column("score").to_numpy(zero_copy_only=False)
        if len(score) and (not np.all(np.isfinite(score)) or score.min() < 0 or score.max() > 1):
            raise _fail("extract", "scores must be finite and in [0, 1]")
        unknown = set(out.column("item_id").to_pylist()) - set(items.column("item_id").to_pylist())
        if unknown:
            raise _fail("extract", f"extract returned rows for unknown item(s) {sorted(unknown)[:5]}")
