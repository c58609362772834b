"""Who asks for a result list when, on which device, in which coupon arm, and what the slate shows.

The coupon arm (`treatment`, 0 = control; see `behaviour.COUPON_ARMS`) is drawn per request.

Each active user makes Poisson(activity) requests a day at times drawn from a diurnal profile.
A slate mixes items from the user's currently preferred categories with globally popular items,
only among items already in the catalogue (first_seen <= day), with no repeats inside a slate.
The slate order is random, so position effects are not confounded with relevance.

With the `neighbourhood` knob, some slates carry a "more from this line" widget: several slots show
line mates of another item of the slate, and a user's widgets of one day all feature the same line
(drawn from the separate `line_widget` stream, so at strength 0 slates are exactly as without the
knob). Line mates are thus viewed, and clicked, together by the same user on the same day: the
co-view neighbourhood that HyperPAVE's also_view hyperedges read.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ctr_dagster.datagen.catalogue import Catalogue
from ctr_dagster.datagen.config import WorldConfig
from ctr_dagster.datagen.population import Population
from ctr_dagster.datagen.seeding import rng_for
from ctr_dagster.datagen.vocab import DEVICES, HOURLY

INTEREST_SHARE = 0.65  # share of slate slots filled from the user's preferred categories
CATEGORY_BETA = 3.0  # sharpness of the category preference softmax
POPULARITY_EXPOSURE = 1.0  # exposure weight = exp(POPULARITY_EXPOSURE * popularity)
FRESH_BOOST = 1.0  # extra exposure weight of items in their first two days (new-item promotion)
DEVICE_LOYALTY = 0.8
WEEKEND_FACTOR = 1.15
MS_PER_HOUR = 3_600_000
#: `neighbourhood` knob: the most line mates a "more from this line" widget adds. The share of slates
#: with one is `WorldConfig.line_widget_share` (0.3) times the strength: on the small profile that
#: makes line mates ~10% of the also_view partners (5x chance) while CTR and oracle AUC move by < 5% /
#: < 0.002. Line co-clicks grow linearly in a user's clicks of the day, other co-clicks
#: quadratically, so a much larger line share needs widgets on most slates (a different
#: marketplace: `line_widget_share` 0.9), not just stronger constants.
WIDGET_SLOTS = 5


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


def coupon_arms(draw: np.ndarray, arm_shares: tuple[float, ...]) -> np.ndarray:
    """int8 arm per request from uniform `draw`s, arm k with probability arm_shares[k].

    The coupon arms take the low draws (arm 1 first) and control the rest, so shares (1 - r, r, 0, 0)
    give exactly the one-coupon assignment ``draw < r`` of before the arms.
    """
    coupons = np.cumsum(arm_shares[1:])
    arm = 1 + np.searchsorted(coupons, draw, side="right")
    return np.where(draw < coupons[-1], arm, 0).astype(np.int8)


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
    treatment = coupon_arms(rng.random(n), config.arm_shares)
    widget_rng = rng_for(config.seed, "line_widget", day)
    items = sample_slates(config, catalogue, latent[user], day, rng, widget_rng, user)
    return Requests(user, day_start_ms + ms, hour, rank, device, treatment, items)


def sample_slates(
    config: WorldConfig,
    catalogue: Catalogue,
    user_latent: np.ndarray,
    day: int,
    rng: np.random.Generator,
    widget_rng: np.random.Generator | None = None,
    user: np.ndarray | None = None,
) -> np.ndarray:
    """[R, slate_size] distinct available items per request (interest-driven + popular).

    `widget_rng` draws the "more from this line" widgets (`neighbourhood` knob; without it, none);
    `user` (default: one user per request) groups a user's widgets of the day on one line.
    """
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
            items = rng.permuted(items, axis=1)  # random order: position is not confounded with relevance
            if widget_rng is not None and config.signals.neighbourhood > 0:
                who = np.arange(n) if user is None else np.asarray(user)
                items = line_widget(config, catalogue, items, available, user_latent, who, widget_rng)
            return items
        redraw = rng.random(int(bad.sum())) * cum[-1]
        items[bad] = order[np.minimum(np.searchsorted(cum, redraw, side="right"), len(cum) - 1)]
    raise RuntimeError("could not fill slates with distinct available items; catalogue too small?")


def line_widget(
    config: WorldConfig,
    catalogue: Catalogue,
    items: np.ndarray,
    available: np.ndarray,
    user_latent: np.ndarray,
    user: np.ndarray,
    rng: np.random.Generator,
) -> np.ndarray:
    """`items` with a "more from this line" widget in a share of the slates.

    A user's widgets of one day all feature one line: that of the item of their first widget slate
    that best matches their interests (user latent . item latent). A widget keeps (or puts) that
    item in the slate and fills up to WIDGET_SLOTS other random slots with its available line mates
    that the slate lacks. `user` holds the request's user (requests of one user are contiguous).
    """
    share = min(1.0, config.line_widget_share * config.signals.neighbourhood)
    n, size = items.shape
    rows = np.flatnonzero(rng.random(n) < share)
    if len(rows) == 0 or size < 2 or np.all(catalogue.line < 0):
        return items
    members = _line_members(catalogue.line)
    k = min(WIDGET_SLOTS, size - 1, members.shape[1] - 1)
    slate = items[rows]
    m, r = len(rows), np.arange(len(rows))
    score = np.einsum("md,msd->ms", user_latent[rows], catalogue.latent[slate])
    best = slate[r, np.argmax(score, axis=1)]
    first = np.r_[True, user[rows][1:] != user[rows][:-1]]
    focus = best[first][np.cumsum(first) - 1]  # the best item of the user's first widget slate
    here = slate == focus[:, None]
    seed_slot = np.where(here.any(axis=1), np.argmax(here, axis=1), rng.integers(0, size, size=m))
    slate[r, seed_slot] = focus
    mates = members[catalogue.line[focus]]  # [m, L], -1 = padding
    ok = (mates >= 0) & available[np.maximum(mates, 0)]
    ok &= ~(mates[:, :, None] == slate[:, None, :]).any(axis=2)  # not already in the slate
    pick = np.argsort(np.where(ok, rng.random(mates.shape), np.inf), axis=1)[:, :k]
    chosen, chosen_ok = np.take_along_axis(mates, pick, axis=1), np.take_along_axis(ok, pick, axis=1)
    slot_priority = rng.random((m, size))
    slot_priority[r, seed_slot] = np.inf  # the featured item stays
    slots = np.argsort(slot_priority, axis=1)[:, :k]
    row = np.repeat(r[:, None], k, axis=1)
    slate[row[chosen_ok], slots[chosen_ok]] = chosen[chosen_ok]
    out = items.copy()
    out[rows] = slate
    return out


def _line_members(line: np.ndarray) -> np.ndarray:
    """[n_lines, max line size] item indices of each line, padded with -1."""
    order = np.argsort(line, kind="stable")
    order = order[line[order] >= 0]
    sorted_line = line[order]
    n_lines = int(line.max()) + 1
    starts = np.searchsorted(sorted_line, np.arange(n_lines))
    counts = np.bincount(sorted_line, minlength=n_lines)
    out = np.full((n_lines, int(counts.max())), -1, dtype=np.int64)
    out[sorted_line, np.arange(len(order)) - starts[sorted_line]] = order
    return out


def _repeats(items: np.ndarray) -> np.ndarray:
    """Mask of slots holding an item already shown earlier in the same slate."""
    order = np.argsort(items, axis=1, kind="stable")
    sorted_items = np.take_along_axis(items, order, axis=1)
    dup_sorted = np.zeros_like(items, dtype=bool)
    dup_sorted[:, 1:] = sorted_items[:, 1:] == sorted_items[:, :-1]
    out = np.zeros_like(dup_sorted)
    np.put_along_axis(out, order, dup_sorted, axis=1)
    return out
