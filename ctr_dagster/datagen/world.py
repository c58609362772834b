"""`World`: the built synthetic marketplace, its static tables and its days (simulated lazily, in order).

Days depend on each other only through the click history (and the drifting interests, which depend
on nothing but the seed), so the world simulates from day 0 forward, keeps history checkpoints at
day boundaries and an LRU of finished days: `world.day(d)` returns the same tables whatever was
requested before it.
"""

from __future__ import annotations

import datetime as dt
import math
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from functools import cached_property, lru_cache

import numpy as np
import pyarrow as pa

from ctr_dagster.datagen import tables
from ctr_dagster.datagen.behaviour import (
    Effects,
    build_effects,
    conversion_logits,
    sigmoid,
    solve_offset,
    static_components,
)
from ctr_dagster.datagen.catalogue import Catalogue, build_catalogue
from ctr_dagster.datagen.config import WorldConfig
from ctr_dagster.datagen.corruption import CORRUPTION, corrupt
from ctr_dagster.datagen.history import History
from ctr_dagster.datagen.population import Population, build_population, drift_step
from ctr_dagster.datagen.requests import make_requests
from ctr_dagster.datagen.seeding import rng_for
from ctr_dagster.datagen.simulate import DayArrays, Truth, flat_impressions, simulate_day

CHECKPOINT_BUDGET_BYTES = 256 * 2**20  # history snapshots kept for random access to days
CACHE_ALL_ROWS = 4_000_000  # keep every finished day in memory below this many expected impressions
CALIBRATION_REQUESTS = 20_000


@dataclass(frozen=True)
class DayData:
    """One day: raw (dirty) impressions, the oracle, the per-signal logit components and the corruption log."""

    impressions: pa.Table  # schemas.RAW_IMPRESSIONS
    oracle: pa.Table  # schemas.ORACLE_IMPRESSIONS, one row per generated impression
    components: pa.Table  # impression_id + one float32 column per COMPONENTS entry
    corruption: pa.Table = field(default_factory=CORRUPTION.empty_table)  # row, impression_id, kind


class World:
    """A built world; use `build_world(config)` (cached) rather than constructing it directly."""

    def __init__(self, config: WorldConfig) -> None:
        self.config = config
        self.start: dt.date = config.start()
        self.catalogue: Catalogue = build_catalogue(config)
        self.population: Population = build_population(config, self.catalogue)
        effects = build_effects(config, len(self.catalogue.specs))
        self._latents: list[np.ndarray] = [self.population.latent0]
        base, conv_base = self._calibrate(effects)
        self.truth = Truth(config, self.catalogue, self.population, effects, base, conv_base)
        self._lock = threading.RLock()
        self._checkpoints: dict[int, History] = {0: History.empty(config.n_users, config.max_seq_len)}
        self._frontier: tuple[int, History] | None = None  # (day, history at the start of that day)
        state_bytes = self._checkpoints[0].nbytes()
        self._checkpoint_every = max(1, math.ceil(state_bytes * config.n_days / CHECKPOINT_BUDGET_BYTES))
        expected_rows = config.n_users * config.requests_per_user_day * config.slate_size * config.n_days
        self._cache_size = config.n_days if expected_rows <= CACHE_ALL_ROWS else 2
        self._cache: OrderedDict[int, DayData] = OrderedDict()
        self._user_ids = tables.user_ids(config.n_users)
        self._item_ids = tables.item_ids(config.n_items)

    # -- calendar ------------------------------------------------------------------------------
    def dates(self) -> list[str]:
        return [(self.start + dt.timedelta(days=d)).isoformat() for d in range(self.config.n_days)]

    def day_index(self, date: str | dt.date) -> int:
        """0-based day of `date`; ValueError naming the valid range when it is outside the world."""
        try:
            day = (dt.date.fromisoformat(str(date)) - self.start).days
        except ValueError as exc:
            raise ValueError(f"date must be 'YYYY-MM-DD', got {date!r}") from exc
        if not 0 <= day < self.config.n_days:
            dates = self.dates()
            raise ValueError(
                f"date {date} is outside the synthetic world: valid dates are {dates[0]} .. {dates[-1]}"
            )
        return day

    def _day_start_ms(self, day: int) -> int:
        return ((self.start - tables.EPOCH).days + day) * 86_400_000

    # -- static tables -------------------------------------------------------------------------
    @cached_property
    def _items(self) -> pa.Table:
        return tables.items_table(self.catalogue, self.start)

    @cached_property
    def _oracle_attributes(self) -> pa.Table:
        return tables.oracle_attributes_table(self.catalogue)

    @cached_property
    def _catalogue_attributes(self) -> pa.Table:
        return tables.catalogue_attributes_table(self._oracle_attributes)

    @cached_property
    def _users(self) -> pa.Table:
        return tables.users_table(self.population, self.start)

    def items(self) -> pa.Table:
        return self._items

    def oracle_item_attributes(self) -> pa.Table:
        return self._oracle_attributes

    def item_attributes(self) -> pa.Table:
        return self._catalogue_attributes

    def users(self) -> pa.Table:
        return self._users

    # -- truth helpers -------------------------------------------------------------------------
    def user_latent(self, day: int) -> np.ndarray:
        """The users' interest vectors on day index `day` (a seeded random walk when drift > 0)."""
        with self._lock:
            while len(self._latents) <= day:
                d = len(self._latents)
                rng = rng_for(self.config.seed, "drift", d)
                step = drift_step(self._latents[-1], self.catalogue.centres, self.config.signals.drift, rng)
                self._latents.append(step)
            return self._latents[day]

    def _calibrate(self, effects: Effects) -> tuple[float, float]:
        """Offsets giving roughly the target CTR and conversion rate on a day-0 pilot sample."""
        cfg = self.config
        rng = rng_for(cfg.seed, "calibration")
        requests = make_requests(cfg, self.catalogue, self.population, self._latents[0], 0, 0, 0, rng)
        keep = rng.permutation(requests.n)[:CALIBRATION_REQUESTS]
        if len(keep) == 0:
            return float(np.log(cfg.target_ctr / (1 - cfg.target_ctr))), 0.0
        imp = flat_impressions(requests)
        size = cfg.slate_size
        rows = (keep[:, None] * size + np.arange(size)).reshape(-1)
        sample = imp.take(rows)
        parts = static_components(cfg, self.catalogue, self.population, effects, self._latents[0], sample)
        logits = sum(parts.values())
        base = solve_offset(logits, cfg.target_ctr)
        _, conv = conversion_logits(
            cfg, self.catalogue, self.population, 0.0, sample.user, sample.item, sample.treatment
        )  # under each row's assigned arm
        return base, solve_offset(conv, cfg.target_cvr, weights=sigmoid(logits + base))

    # -- days ----------------------------------------------------------------------------------
    def day(self, date: str | dt.date) -> DayData:
        """Raw impressions, oracle and components of `date` (deterministic, any request order)."""
        day = self.day_index(date)
        with self._lock:
            if day in self._cache:
                self._cache.move_to_end(day)
                return self._cache[day]
            start = max(k for k in self._checkpoints if k <= day)
            if self._frontier is not None and start < self._frontier[0] <= day:
                start, history = self._frontier
                self._frontier = None  # mutated below; restored only once the day completed
            else:
                history = self._checkpoints[start].copy()
            data = None
            for d in range(start, day + 1):
                if d % self._checkpoint_every == 0 and d not in self._checkpoints:
                    self._checkpoints[d] = history.copy()
                arrays = self._simulate(d, history)
                if d == day or self._cache_size >= self.config.n_days:
                    data = self._tables(d, arrays)
                    self._cache[d] = data
                    self._cache.move_to_end(d)
                    while len(self._cache) > self._cache_size:
                        self._cache.popitem(last=False)
            self._frontier = (day + 1, history)
            assert data is not None
            return data

    def _simulate(self, day: int, history: History) -> DayArrays:
        weekday = (self.start + dt.timedelta(days=day)).weekday()
        return simulate_day(self.truth, self.user_latent(day), day, self._day_start_ms(day), weekday, history)

    def _tables(self, day: int, arrays: DayArrays) -> DayData:
        date_key = (self.start + dt.timedelta(days=day)).strftime("%Y%m%d")
        columns = tables.impression_columns(arrays, date_key, self._user_ids, self._item_ids)
        rng = rng_for(self.config.seed, "corruption", day)
        raw, log = corrupt(columns, self.config.corruption_rate, self.config.n_items, rng)
        ids = columns["impression_id"]
        return DayData(raw, tables.oracle_table(arrays, ids), tables.components_table(arrays, ids), log)


@lru_cache(maxsize=8)
def build_world(config: WorldConfig) -> World:
    """The world of `config`, built once per process and configuration."""
    return World(config)
