"""The model-ready table: a trailing window of clean impressions, split by time, with sequences.

Why split by time: a CTR model is always used on tomorrow's traffic, so a random split leaks the
future (drifting interests, new items) into training and overstates every metric. The last
`test_days` of the window are the test split, the `valid_days` before them the validation split.

Behaviour sequences are the user's clicks strictly before each impression (same-millisecond events
excluded, so an impression never sees its own click), taken from the window plus `history_days`
of extra look-back. Everything is vectorized (searchsorted over clicks sorted by user and time);
no per-row Python.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ctr_dagster import vocab as vocab_mod
from ctr_dagster.schemas import TRAINING, conform
from ctr_dagster.warehouse import Warehouse
from ctr_dagster.window import DatasetConfig, DayPlan, plan_days

__all__ = [
    "DatasetConfig",
    "DayPlan",
    "plan_days",
    "behaviour_sequences",
    "build_training_table",
    "sequence_capacity",
    "BuildResult",
]

#: Schema metadata key of the TRAINING table: the `max_seq_len` it was built with (how many
#: behaviours a row may hold), so a model asking for more can be told (`sequence_capacity`).
SEQ_LEN_METADATA = b"ctr.max_seq_len"

MS_PER_DAY = 86_400_000

#: Fields that get a versioned vocabulary, and the raw column each is built from.
VOCAB_FIELDS = ("user", "item", "category", "device", "region", "age_group")


def _ms(ts: pa.ChunkedArray | pa.Array) -> np.ndarray:
    return pc.cast(ts, pa.int64()).to_numpy(zero_copy_only=False)


def _lookup(
    keys: pa.ChunkedArray, table: pa.Table, key: str, columns: tuple[str, ...]
) -> dict[str, pa.Array]:
    """Left join of `columns` by key (vectorized; null where the key is unknown): the key lookup is
    done once and shared by every column taken."""
    positions = pc.index_in(keys, value_set=table.column(key))
    return {column: pc.take(table.column(column), positions) for column in columns}


_INT64_MAX = int(np.iinfo(np.int64).max)


def _bounds(*arrays: np.ndarray) -> tuple[int, int] | None:
    """(min, max) over the non-empty arrays as Python ints (no int64 overflow); None if all are empty."""
    present = [a for a in arrays if len(a)]
    if not present:
        return None
    return min(int(a.min()) for a in present), max(int(a.max()) for a in present)


def check_packable(n_users: int, block: int) -> None:
    """Raise when `n_users` blocks of `block` keys cannot all be numbered inside int64.

    Why a guard: numpy wraps int64 overflow silently, and a wrapped key sorts into another user's
    block, which would hand one user's clicks to another's sequence."""
    if n_users * block - 1 > _INT64_MAX:
        raise OverflowError(
            f"behaviour sequences: {n_users} users x {block} distinct times do not fit one int64 sort key "
            f"(largest key {n_users * block - 1} > {_INT64_MAX}); split the window into smaller builds"
        )


@dataclass(frozen=True)
class _KeyPacking:
    """One int64 sort key per (user, time): ``(user - user_lo) * block + (ts - ts_lo)``.

    Why: a single key lets `np.searchsorted` find every row's clicks at once. Users and times are
    rebased to the smallest value present, and `block` is the span of times actually present, so the
    key fits whatever the number of users or the epoch of the timestamps (a fixed shift of 2^41 ms
    wrapped beyond ~4.19M users or for times after 2039). When even the rebased span does not fit
    (a huge span times many users), times and users are replaced by their dense ranks (order and
    ties kept, so "strictly before" is unchanged) at the cost of one extra sort; `check_packable`
    raises if that still cannot fit.
    """

    user_lo: int
    ts_lo: int
    block: int
    #: Dense-rank fallback: the sorted distinct users / times that ranks index into (None: rebasing).
    user_values: np.ndarray | None = None
    ts_values: np.ndarray | None = None

    @classmethod
    def of(
        cls, row_users: np.ndarray, row_ts: np.ndarray, click_users: np.ndarray, click_ts: np.ndarray
    ) -> _KeyPacking:
        users, times = _bounds(row_users, click_users), _bounds(row_ts, click_ts)
        if users is None or times is None:
            return cls(0, 0, 1)
        n_users, block = users[1] - users[0] + 1, times[1] - times[0] + 1
        if n_users * block - 1 <= _INT64_MAX:
            return cls(users[0], times[0], block)
        user_values = np.unique(np.concatenate([row_users, click_users]).astype(np.int64))
        ts_values = np.unique(np.concatenate([row_ts, click_ts]).astype(np.int64))
        check_packable(len(user_values), len(ts_values))
        return cls(0, 0, len(ts_values), user_values, ts_values)

    def _user_code(self, users: np.ndarray) -> np.ndarray:
        users = users.astype(np.int64, copy=False)
        if self.user_values is not None:
            return np.searchsorted(self.user_values, users).astype(np.int64)
        return users - np.int64(self.user_lo)

    def _ts_code(self, ts: np.ndarray) -> np.ndarray:
        ts = ts.astype(np.int64, copy=False)
        if self.ts_values is not None:
            return np.searchsorted(self.ts_values, ts).astype(np.int64)
        return ts - np.int64(self.ts_lo)

    def keys(self, users: np.ndarray, ts: np.ndarray) -> np.ndarray:
        """Keys of (user, time) pairs: clicks and rows share one numbering (both were bounded)."""
        return self._user_code(users) * np.int64(self.block) + self._ts_code(ts)

    def user_starts(self, users: np.ndarray) -> np.ndarray:
        """The smallest key of each user's block (their earliest possible click)."""
        return self._user_code(users) * np.int64(self.block)


def behaviour_sequences(
    row_users: np.ndarray,
    row_ts: np.ndarray,
    click_users: np.ndarray,
    click_ts: np.ndarray,
    click_values: dict[str, np.ndarray],
    max_seq_len: int,
    chunk_rows: int = 500_000,
) -> tuple[np.ndarray, dict[str, pa.ListArray], np.ndarray]:
    """For every row, the last `max_seq_len` clicks of the same user strictly before the row's time.

    Users are integer codes, times int64 ms. Returns (offsets-derived lengths, list arrays of each
    `click_values` entry in chronological order plus `age_s` (seconds before the row) and `rel_pos`, total prior click count).
    """
    packing = _KeyPacking.of(row_users, row_ts, click_users, click_ts)
    order = np.lexsort((click_ts, click_users))
    keys = packing.keys(click_users[order], click_ts[order])
    sorted_values = {name: values[order] for name, values in click_values.items()}
    sorted_ts = click_ts[order]

    lengths_all, counts_all = [], []
    pieces: dict[str, list[np.ndarray]] = {name: [] for name in [*click_values, "age_s", "rel_pos"]}
    steps = np.arange(max_seq_len, dtype=np.int64)
    for start in range(0, len(row_users), chunk_rows):
        users = row_users[start : start + chunk_rows]
        ts = row_ts[start : start + chunk_rows]
        end = np.searchsorted(keys, packing.keys(users, ts), side="left")
        first = np.searchsorted(keys, packing.user_starts(users), side="left")
        count = end - first
        length = np.minimum(count, max_seq_len)
        idx = end[:, None] - max_seq_len + steps[None, :]
        valid = steps[None, :] >= (max_seq_len - length)[:, None]
        flat = idx[valid]  # row-major: each row's slots oldest -> most recent
        for name, values in sorted_values.items():
            pieces[name].append(values[flat])
        row_of_slot = np.repeat(np.arange(len(users)), length)
        pieces["age_s"].append(((ts[row_of_slot] - sorted_ts[flat]) / 1000.0).astype(np.float32))
        rank_in_row = np.arange(len(flat)) - np.repeat(np.cumsum(length) - length, length)
        pieces["rel_pos"].append((np.repeat(length, length) - rank_in_row).astype(np.int32))
        lengths_all.append(length)
        counts_all.append(count)

    lengths = np.concatenate(lengths_all) if lengths_all else np.zeros(0, dtype=np.int64)
    offsets = np.zeros(len(lengths) + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    lists = {
        name: pa.ListArray.from_arrays(pa.array(offsets), pa.array(np.concatenate(chunks) if chunks else []))
        for name, chunks in pieces.items()
    }
    counts = np.concatenate(counts_all) if counts_all else np.zeros(0, dtype=np.int64)
    return lengths, lists, counts


def _split(rows: pa.Table, plan: DayPlan) -> pa.Array:
    """train / valid / test of each row (rows sorted by ts): by day, or by time cuts inside days."""
    if plan.cut_shares is None:
        return pc.if_else(
            pc.is_in(rows.column("_day"), value_set=pa.array(plan.test)),
            "test",
            pc.if_else(pc.is_in(rows.column("_day"), value_set=pa.array(plan.valid)), "valid", "train"),
        )
    ms = _ms(rows.column("ts"))
    n = len(ms)
    valid_share, test_share = plan.cut_shares
    # Rows sharing a timestamp stay on one side: the cut is a time, placed at the row quantile.
    test_from = ms[min(n - 1, int(n * (1 - test_share)))] if n else 0
    valid_from = ms[min(n - 1, int(n * (1 - test_share - valid_share)))] if n else 0
    labels = np.where(ms >= test_from, "test", np.where(ms >= valid_from, "valid", "train"))
    missing = [name for name in ("train", "valid", "test") if not (labels == name).any()]
    if missing:
        raise ValueError(
            f"cannot split {n} impressions by time into train/valid/test ({', '.join(missing)} would be "
            "empty: too few distinct timestamps); import more data or set valid_days / test_days"
        )
    return pa.array(labels)


def _given_sequences(
    rows: pa.Table, items: pa.Table, vocabs: dict[str, vocab_mod.VocabUpdate], max_seq_len: int
) -> tuple[pa.Array, dict[str, pa.ListArray]] | None:
    """Sequence lists from the log's own `history_item_ids` (rows where it is not null), or None.

    Public CTR logs often ship each impression's behaviour sequence (e.g. Taobao's `^`-separated
    clicked items), sometimes reaching back before the log starts: then that sequence is the
    truth and rebuilding it from the log would cut it short. Kept: the most recent `max_seq_len`
    ids (the list is oldest first), encoded with the same vocabularies; their times are unknown
    (`hist_age_s` = -1).
    """
    if "history_item_ids" not in rows.column_names:
        return None
    column = rows.column("history_item_ids").combine_chunks()
    if column.null_count == len(column):
        return None
    has = pc.is_valid(column)
    column = pc.if_else(has, column, pa.scalar([], column.type))
    lengths = pc.list_value_length(column).to_numpy(zero_copy_only=False).astype(np.int64)
    keep = np.minimum(lengths, max_seq_len)
    ids = pc.list_flatten(column)
    starts = np.repeat(np.cumsum(lengths) - lengths, lengths)
    rank_from_end = np.repeat(lengths, lengths) - (np.arange(len(ids)) - starts)  # 1 = most recent
    kept = rank_from_end <= max_seq_len
    ids = ids.filter(pa.array(kept))
    offsets = np.zeros(len(keep) + 1, dtype=np.int32)
    np.cumsum(keep, out=offsets[1:])
    category = _lookup(ids, items, "item_id", ("category",))["category"]
    values = {
        "item": pa.array(vocabs["item"].encode(ids), pa.int32()),
        "category": pa.array(vocabs["category"].encode(category), pa.int32()),
        "age_s": pa.array(np.full(len(ids), -1.0, dtype=np.float32)),
        "rel_pos": pa.array(rank_from_end[kept].astype(np.int32)),
    }
    return has, {name: pa.ListArray.from_arrays(pa.array(offsets), v) for name, v in values.items()}


@dataclass(frozen=True)
class BuildResult:
    table: pa.Table
    vocabs: dict[str, vocab_mod.VocabUpdate]
    plan: DayPlan
    stats: dict[str, float]


def build_training_table(
    impressions: pa.Table,
    items: pa.Table,
    users: pa.Table,
    plan: DayPlan,
    config: DatasetConfig,
    warehouse: Warehouse | None = None,
) -> BuildResult:
    """Turn clean impressions of `plan.all` days (IMPRESSIONS schema) into the TRAINING table.

    With a `warehouse`, vocabularies are extended from the train split and persisted; without one
    they are built in memory (tests, dry runs).
    """
    day = pc.strftime(impressions.column("ts"), format="%Y-%m-%d")
    is_row = pc.is_in(day, value_set=pa.array(plan.rows))
    rows = impressions.filter(is_row)
    rows = rows.append_column("_day", pc.filter(day, is_row))
    rows = rows.sort_by([("ts", "ascending"), ("impression_id", "ascending")])
    split = _split(rows, plan)
    train_mask = pc.equal(split, "train")
    train = rows.filter(train_mask)

    # Catalogue joins (raw values; vocabularies encode them below).
    row_item = _lookup(rows.column("item_id"), items, "item_id", ("category", "price", "first_seen"))
    row_user = _lookup(rows.column("user_id"), users, "user_id", ("region", "age_group"))
    row_category, row_first_seen, row_region = (
        row_item["category"],
        row_item["first_seen"],
        row_user["region"],
    )
    row_price = pc.fill_null(row_item["price"], 0.0)
    row_age = pc.cast(row_user["age_group"], pa.string())

    train_category = _lookup(train.column("item_id"), items, "item_id", ("category",))["category"]
    train_user = _lookup(train.column("user_id"), users, "user_id", ("region", "age_group"))
    train_region, train_age = train_user["region"], pc.cast(train_user["age_group"], pa.string())
    # Items: every item catalogued by the last day too, not only those shown in train. A listed item
    # is known before anyone clicks it (its title, image and attributes are), so content features
    # (item embeddings, extracted attributes) can reach new items through their own index instead of
    # all of them collapsing onto OOV. Users, whose only content is their clicks, stay train-only.
    listed = pc.less_equal(pc.strftime(items.column("first_seen"), format="%Y-%m-%d"), plan.rows[-1])
    sources = {
        "user": train.column("user_id"),
        "item": pa.chunked_array(
            [*train.column("item_id").chunks, *items.filter(listed).column("item_id").chunks], pa.string()
        ),
        "category": train_category,
        "device": train.column("device"),
        "region": train_region,
        "age_group": train_age,
    }
    vocabs: dict[str, vocab_mod.VocabUpdate] = {}
    for name in VOCAB_FIELDS:
        keys = pa.chunked_array([sources[name]]) if isinstance(sources[name], pa.Array) else sources[name]
        if warehouse is not None:
            vocabs[name] = vocab_mod.update(warehouse, name, keys)
        else:
            vocabs[name] = vocab_mod.extend(vocab_mod.VOCAB.empty_table(), name, keys)

    # Behaviour sequences from clicks of every loaded day (window + look-back).
    clicks = impressions.filter(pc.equal(impressions.column("click"), 1))
    all_users = pa.chunked_array(rows.column("user_id").chunks + clicks.column("user_id").chunks)
    _, codes = np.unique(all_users.to_numpy(zero_copy_only=False).astype(str), return_inverse=True)
    row_codes, click_codes = codes[: rows.num_rows], codes[rows.num_rows :]
    click_category = _lookup(clicks.column("item_id"), items, "item_id", ("category",))["category"]
    row_ts = _ms(rows.column("ts"))
    _, lists, prior_clicks = behaviour_sequences(
        row_codes,
        row_ts,
        click_codes,
        _ms(clicks.column("ts")),
        {
            "item": vocabs["item"].encode(clicks.column("item_id")),
            "category": vocabs["category"].encode(click_category),
        },
        config.max_seq_len,
    )

    given = _given_sequences(rows, items, vocabs, config.max_seq_len)
    if given is not None:  # the log ships each impression's sequence: it wins where present
        has, given_lists = given
        lists = {
            name: pc.if_else(has, given_lists[name], lists[name].cast(given_lists[name].type))
            for name in given_lists
        }

    hours = pc.hour(rows.column("ts"))
    first_seen_ms = pc.cast(pc.cast(row_first_seen, pa.timestamp("ms", tz="UTC")), pa.int64())
    item_age = (row_ts - pc.fill_null(first_seen_ms, 0).to_numpy(zero_copy_only=False)) / MS_PER_DAY
    train_users = pc.unique(train.column("user_id"))
    train_items = pc.unique(train.column("item_id"))
    table = pa.table(
        {
            "split": split,
            "impression_id": rows.column("impression_id"),
            "ts": rows.column("ts"),
            "user_id": rows.column("user_id"),
            "item_id": rows.column("item_id"),
            "label": rows.column("click"),
            "conversion": rows.column("conversion"),
            "treatment": rows.column("treatment"),
            "user_idx": vocabs["user"].encode(rows.column("user_id")),
            "item_idx": vocabs["item"].encode(rows.column("item_id")),
            "category_idx": vocabs["category"].encode(row_category),
            "device_idx": vocabs["device"].encode(rows.column("device")),
            "region_idx": vocabs["region"].encode(row_region),
            "age_group_idx": vocabs["age_group"].encode(row_age),
            "position": rows.column("position"),
            "hour": pc.cast(hours, pa.int8()),
            "day_of_week": pc.cast(pc.day_of_week(rows.column("ts")), pa.int8()),
            "price": pc.cast(row_price, pa.float32()),
            "item_age_days": pa.array(item_age.astype(np.float32)),
            "user_click_count": pa.array(prior_clicks.astype(np.int32)),
            "is_new_user": pc.invert(pc.is_in(rows.column("user_id"), value_set=train_users)),
            "is_new_item": pc.invert(pc.is_in(rows.column("item_id"), value_set=train_items)),
            "hist_item_idx": lists["item"].cast(pa.list_(pa.int32())),
            "hist_category_idx": lists["category"].cast(pa.list_(pa.int32())),
            "hist_age_s": lists["age_s"],
            "hist_rel_pos": lists["rel_pos"].cast(pa.list_(pa.int32())),
        }
    )
    table = conform(table, TRAINING, source="training_dataset")
    table = table.replace_schema_metadata(
        {**(table.schema.metadata or {}), SEQ_LEN_METADATA: str(config.max_seq_len).encode()}
    )

    evaluation = pc.invert(train_mask)
    n_eval = max(1, int(pc.sum(pc.cast(evaluation, pa.int64())).as_py() or 0))
    eval_table = table.filter(evaluation)
    stats = {
        "rows_train": float(train.num_rows),
        "rows_valid": float(pc.sum(pc.cast(pc.equal(split, "valid"), pa.int64())).as_py() or 0),
        "rows_test": float(pc.sum(pc.cast(pc.equal(split, "test"), pa.int64())).as_py() or 0),
        "oov_item_rate_eval": float(
            pc.sum(pc.cast(pc.equal(eval_table.column("item_idx"), 1), pa.int64())).as_py() or 0
        )
        / n_eval,
        "oov_user_rate_eval": float(
            pc.sum(pc.cast(pc.equal(eval_table.column("user_idx"), 1), pa.int64())).as_py() or 0
        )
        / n_eval,
        "mean_seq_len": float(pc.mean(pc.list_value_length(table.column("hist_item_idx"))).as_py() or 0.0),
        "ctr_train": float(pc.mean(pc.cast(train.column("click"), pa.float64())).as_py() or 0.0),
    }
    for name, update in vocabs.items():
        stats[f"vocab_{name}_size"] = float(update.size)
        stats[f"vocab_{name}_added"] = float(update.added)
        stats[f"vocab_{name}_new_id_rate"] = update.added / max(1, update.table.num_rows)
    return BuildResult(table=table, vocabs=vocabs, plan=plan, stats=stats)


def sequence_capacity(table: pa.Table) -> int | None:
    """How many behaviours per row `table`'s sequences may hold: the `max_seq_len` the training
    dataset was built with (schema metadata), else the longest `hist_item_idx` list in it (a table
    made elsewhere); None when it has no sequences."""
    recorded = (table.schema.metadata or {}).get(SEQ_LEN_METADATA)
    if recorded is not None:
        return int(recorded)
    if "hist_item_idx" not in table.column_names or table.num_rows == 0:
        return None
    return int(pc.max(pc.list_value_length(table.column("hist_item_idx"))).as_py() or 0)


#: Schema metadata key of the TRAINING table: `inputs_fingerprint` of what it was built from, so an
#: unchanged rebuild can be skipped (`built_from`).
INPUTS_METADATA = b"ctr.inputs_sha256"
#: The engine modules whose code decides the table's content (their source joins the fingerprint).
_BUILD_MODULES = ("dataset.py", "window.py", "vocab.py", "schemas.py")


def inputs_fingerprint(
    warehouse: Warehouse, plan: DayPlan, config: DatasetConfig, code_version: str = ""
) -> str | None:
    """sha256 over everything the training table is built from: the content of each clean day of the
    plan and of the catalogue tables it joins, the plan, the config, the asset's code version and the
    building modules' source (each table's content hash from the warehouse, local or object storage).
    None when an input table is missing."""
    import hashlib
    import json
    from dataclasses import asdict
    from pathlib import Path

    digest = hashlib.sha256()
    document = {"plan": asdict(plan), "config": asdict(config), "code_version": code_version}
    digest.update(json.dumps(document, sort_keys=True, default=str).encode())
    here = Path(__file__).parent
    for name in _BUILD_MODULES:
        digest.update((here / name).read_bytes())
    parts = [("clean_impressions", day) for day in plan.all]
    parts += [
        (table, p) for table in ("raw_items", "raw_users") for p in warehouse.partitions(table) or [None]
    ]
    return digest.hexdigest() if warehouse.hash_contents(digest, parts) else None


def with_fingerprint(table: pa.Table, fingerprint: str | None) -> pa.Table:
    """`table` with `fingerprint` in its schema metadata (`INPUTS_METADATA`)."""
    if fingerprint is None:
        return table
    return table.replace_schema_metadata(
        {**(table.schema.metadata or {}), INPUTS_METADATA: fingerprint.encode()}
    )


def built_from(warehouse: Warehouse) -> str | None:
    """The fingerprint the stored training table was built from (None: no table, or none recorded)."""
    if not warehouse.exists("training_dataset"):
        return None
    try:
        metadata = warehouse.read_schema("training_dataset").metadata or {}
    except (OSError, pa.ArrowInvalid):
        return None
    value = metadata.get(INPUTS_METADATA)
    return value.decode() if value else None
