"""One simulated day: requests -> slates -> click logits -> clicks (in rounds) -> conversions.

Clicks feed the sequence signal of later requests, so a day is processed in rounds: round k holds
every user's k-th request of the day. Within a round each user appears once, so the history a
request sees is exactly the user's clicks at earlier timestamps (previous days and previous rounds),
never its own or later ones: the simulation is exact, not an hourly approximation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ctr_dagster.datagen.behaviour import (
    COMPONENTS,
    COUPON_ARMS,
    Effects,
    Impressions,
    click_uplift,
    conversion_logits,
    conversion_uplift,
    history_components,
    sigmoid,
    static_components,
)
from ctr_dagster.datagen.catalogue import Catalogue
from ctr_dagster.datagen.config import WorldConfig
from ctr_dagster.datagen.history import History
from ctr_dagster.datagen.population import Population
from ctr_dagster.datagen.requests import Requests, make_requests
from ctr_dagster.datagen.seeding import rng_for

#: The click-logit components that read the user's click history (`history_components`), added to
#: the static ones in this order.
HISTORY_COMPONENTS = ("sequence", "target_time", "profile_sequence", "behaviour_segment")


@dataclass(frozen=True)
class Truth:
    """Everything fixed for the world's lifetime that the click/conversion process reads."""

    config: WorldConfig
    catalogue: Catalogue
    population: Population
    effects: Effects
    base: float  # calibrated click-logit offset
    conv_base: float  # calibrated conversion-logit offset


@dataclass(frozen=True)
class DayArrays:
    """The generated (uncorrupted) day, one entry per impression, sorted by (ts, request, position)."""

    request: np.ndarray  # int64, request number within the day (ts order)
    ts: np.ndarray  # int64 epoch ms
    user: np.ndarray
    item: np.ndarray
    position: np.ndarray
    device: np.ndarray
    treatment: np.ndarray
    click: np.ndarray  # int8
    conversion: np.ndarray  # int8
    components: dict[str, np.ndarray]  # float64, keys = COMPONENTS
    p_click: np.ndarray  # under the assigned arm
    p_click_control: np.ndarray  # arm 0
    p_click_treated: np.ndarray  # the row's own coupon arm (arm 1 for control rows)
    p_conv_control: np.ndarray
    p_conv_treated: np.ndarray
    p_click_arms: np.ndarray  # float64 [n, len(COUPON_ARMS)]: under each arm
    p_conv_arms: np.ndarray  # float64 [n, len(COUPON_ARMS)]: conversion given a click under each arm

    @property
    def n(self) -> int:
        return len(self.user)


def flat_impressions(requests: Requests) -> Impressions:
    size = requests.items.shape[1]
    return Impressions(
        user=np.repeat(requests.user, size),
        item=requests.items.reshape(-1),
        position=np.tile(np.arange(1, size + 1), requests.n),
        device=np.repeat(requests.device, size),
        hour=np.repeat(requests.hour, size),
        treatment=np.repeat(requests.treatment, size),
    )


def simulate_day(
    truth: Truth, latent: np.ndarray, day: int, day_start_ms: int, weekday: int, history: History
) -> DayArrays:
    """Simulate `day` from the state `history` (updated in place with the day's clicks)."""
    config, seed = truth.config, truth.config.seed
    requests = make_requests(
        config,
        truth.catalogue,
        truth.population,
        latent,
        day,
        day_start_ms,
        weekday,
        rng_for(seed, "requests", day),
    )
    imp = flat_impressions(requests)
    size = config.slate_size
    parts = static_components(config, truth.catalogue, truth.population, truth.effects, latent, imp)
    parts["base"] = np.full(len(imp.user), truth.base)
    fixed = sum(parts.values()).reshape(requests.n, size)
    dynamic = {name: np.zeros((requests.n, size)) for name in HISTORY_COMPONENTS}
    draws = rng_for(seed, "outcomes", day)
    u_click = draws.random((requests.n, size))
    u_conv = draws.random((requests.n, size))
    click = np.zeros((requests.n, size), dtype=bool)

    by_rank = np.argsort(requests.rank, kind="stable")
    bounds = np.searchsorted(requests.rank[by_rank], np.arange(requests.rank.max(initial=-1) + 2))
    for k in range(len(bounds) - 1):
        rows = by_rank[bounds[k] : bounds[k + 1]]
        users, ts, items = requests.user[rows], requests.ts[rows], requests.items[rows]
        hist_items, hist_ts = history.recent(users)
        found = history_components(
            config, truth.catalogue, truth.population, truth.effects, users, items, ts, hist_items, hist_ts
        )
        logit = fixed[rows]
        for name in HISTORY_COMPONENTS:  # in this order, so that knobs at 0 add exact zeros
            dynamic[name][rows] = found[name]
            logit = logit + found[name]
        click[rows] = u_click[rows] < sigmoid(logit)
        history.push(users, click[rows], items, ts)

    logit = fixed.reshape(-1)
    for name in HISTORY_COMPONENTS:
        parts[name] = dynamic[name].reshape(-1)
        logit = logit + parts[name]
    # the oracle: every arm's click and conversion probabilities; arm 0 (control) and the placebo
    # add exact zeros, so their probabilities are identical
    control = logit - parts["uplift_click"]
    conv_control, _ = conversion_logits(
        config, truth.catalogue, truth.population, truth.conv_base, imp.user, imp.item, 0
    )
    pop, cat = truth.population, truth.catalogue
    p_click_arms = np.stack(
        [sigmoid(control + click_uplift(config, pop, truth.effects, imp.user, k)) for k in COUPON_ARMS],
        axis=1,
    )
    p_conv_arms = np.stack(
        [
            sigmoid(conv_control + conversion_uplift(config, cat, pop, imp.user, imp.item, k))
            for k in COUPON_ARMS
        ],
        axis=1,
    )
    rows = np.arange(len(imp.user))
    arm = imp.treatment.astype(np.int64)
    treated_arm = np.where(arm > 0, arm, 1)  # binary view: the row's coupon arm, arm 1 for control rows
    p_conv = p_conv_arms[rows, arm]
    conversion = click.reshape(-1) & (u_conv.reshape(-1) < p_conv)

    # output order: requests by time (ties by user), impressions by position within a request
    by_time = np.lexsort((requests.user, requests.ts))
    flat = (by_time[:, None] * size + np.arange(size)[None, :]).reshape(-1)
    return DayArrays(
        request=np.repeat(np.arange(requests.n), size),
        ts=np.repeat(requests.ts[by_time], size),
        user=imp.user[flat],
        item=imp.item[flat],
        position=imp.position[flat],
        device=imp.device[flat],
        treatment=imp.treatment[flat],
        click=click.reshape(-1)[flat].astype(np.int8),
        conversion=conversion[flat].astype(np.int8),
        components={name: parts[name][flat] for name in COMPONENTS},
        p_click=p_click_arms[rows, arm][flat],
        p_click_control=p_click_arms[:, 0][flat],
        p_click_treated=p_click_arms[rows, treated_arm][flat],
        p_conv_control=p_conv_arms[:, 0][flat],
        p_conv_treated=p_conv_arms[rows, treated_arm][flat],
        p_click_arms=p_click_arms[flat],
        p_conv_arms=p_conv_arms[flat],
    )
