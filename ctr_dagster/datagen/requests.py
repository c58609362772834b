"""Who asks for a result list when, on which device, in which coupon arm, and what the slate shows.

Each active user makes Poisson(activity) requests a day at times drawn from a diurnal profile.
A slate mixes items from the user's currently preferred categories with globally popular items,
only among items already in the catalogue (first_seen <= day), with no repeats inside a slate.
The slate order is random, so position effects are not confounded with relevance.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ctr_dagster.datagen.catalogue import Catalogue
from ctr_dagster.datagen.config import WorldConfig
from ctr_dagster.datagen.population import Population
from ctr_dagster.datagen.vocab import DEVICES, HOURLY

INTEREST_SHARE = 0.65  # share of slate slots filled from the user's preferred categories
CATEGORY_BETA = 3.0  # sharpness of the category preference softmax
POPULARITY_EXPOSURE = 1.0  # exposure weight = exp(POPULARITY_EXPOSURE * popularity)
FRESH_BOOST = 1.0  # extra exposure weight of items in their first two days (new-item promotion)
DEVICE_LOYALTY = 0.8
WEEKEND_FACTOR = 1.15
MS_PER_HOUR = 3_600_000


@dataclass(frozen=True)
class Requests:
    """One day's requests sorted by (user, ts); `rank` = index of the request among the user's that day."""

    user: np.ndarray  # int64 [R]
    ts: np.ndarray  # int64 [R] UTC epoch ms
    hour: np.ndarray  # int64 [R]
    rank: np.ndarray  # int64 [R]
    device: np.ndarray  # int64 [R]
    treatment: np.ndarray  # int8 [R]
    items: np.ndarray  # int64 [R, S]

    @property
    def n(self) -> int:
        return len(self.user)


def exposure_weights(catalogue: Catalogue, day: int) -> np.ndarray:
    """Candidate-generation weight of each item on `day` (0 before its first_seen)."""
    available = catalogue.first_day <= day
    fresh = available & (day - catalogue.first_day < 2) & (catalogue.first_day > 0)
    return np.exp(POPULARITY_EXPOSURE * catalogue.popularity) * available * (1.0 + FRESH_BOOST * fresh)


def make_requests(
    config: WorldConfig,
    catalogue: Catalogue,
    population: Population,
    latent: np.ndarray,
    day: int,
    day_start_ms: int,
    weekday: int,
    rng: np.random.Generator,
) -> Requests:
    """Draw one day's requests and slates (vectorized over all requests)."""
    active = population.signup_day <= day
    rate = population.activity * active * (WEEKEND_FACTOR if weekday >= 5 else 1.0)
    counts = rng.poisson(rate)
    user = np.repeat(np.arange(population.n), counts)
    n = len(user)
    hourly = np.asarray(HOURLY) / np.sum(HOURLY)
    hour = rng.choice(24, size=n, p=hourly)
    ms = hour * MS_PER_HOUR + rng.integers(0, MS_PER_HOUR - 1000, size=n)
    order = np.lexsort((ms, user))
    user, hour, ms = user[order], hour[order], ms[order]
    first = np.searchsorted(user, user, side="left")
    rank = np.arange(n) - first
    ms = ms + rank  # strictly increasing per user, so "clicks before this request" is well defined
    loyal = rng.random(n) < DEVICE_LOYALTY
    device = np.where(loyal, population.device_pref[user], rng.integers(0, len(DEVICES), size=n))
    treatment = (rng.random(n) < config.treatment_rate).astype(np.int8)
    items = sample_slates(config, catalogue, latent[user], day, rng)
    return Requests(user, day_start_ms + ms, hour, rank, device, treatment, items)


def sample_slates(
    config: WorldConfig, catalogue: Catalogue, user_latent: np.ndarray, day: int, rng: np.random.Generator
) -> np.ndarray:
    """[R, slate_size] distinct available items per request (interest-driven + popular)."""
    n, size = len(user_latent), config.slate_size
    weight = exposure_weights(catalogue, day)
    order = np.argsort(catalogue.category, kind="stable")
    cum = np.cumsum(weight[order])
    n_cat = len(catalogue.specs)
    bounds = np.searchsorted(catalogue.category[order], np.arange(n_cat + 1))
    lo = np.concatenate([[0.0], cum])[bounds[:-1]]
    mass = np.concatenate([[0.0], cum])[bounds[1:]] - lo

    scores = CATEGORY_BETA * (user_latent @ catalogue.centres.T.astype(np.float32))
    scores = np.where(mass[None, :] > 0, scores, -np.inf)
    pref = np.exp(scores - scores.max(axis=1, keepdims=True))
    cum_pref = np.cumsum(pref / pref.sum(axis=1, keepdims=True), axis=1)
    draw = rng.random((n, size))
    cat = np.minimum((cum_pref[:, None, :] < draw[:, :, None]).sum(axis=2), n_cat - 1)
    target = np.where(
        rng.random((n, size)) < INTEREST_SHARE,
        lo[cat] + rng.random((n, size)) * mass[cat],
        rng.random((n, size)) * cum[-1],
    )
    items = order[np.minimum(np.searchsorted(cum, target, side="right"), len(cum) - 1)]

    available = weight > 0
    for _ in range(100):
        bad = ~available[items] | _repeats(items)
        if not bad.any():
            return rng.permuted(items, axis=1)  # random order: position is not confounded with relevance
        redraw = rng.random(int(bad.sum())) * cum[-1]
        items[bad] = order[np.minimum(np.searchsorted(cum, redraw, side="right"), len(cum) - 1)]
    raise RuntimeError("could not fill slates with distinct available items; catalogue too small?")


def _repeats(items: np.ndarray) -> np.ndarray:
    """Mask of slots holding an item already shown earlier in the same slate."""
    order = np.argsort(items, axis=1, kind="stable")
    sorted_items = np.take_along_axis(items, order, axis=1)
    dup_sorted = np.zeros_like(items, dtype=bool)
    dup_sorted[:, 1:] = sorted_items[:, 1:] == sorted_items[:, :-1]
    out = np.zeros_like(dup_sorted)
    np.put_along_axis(out, order, dup_sorted, axis=1)
    return out
