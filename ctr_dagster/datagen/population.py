"""The users: demographics, heavy-tailed activity, latent interests (drifting) and taste for attributes."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ctr_dagster.datagen.catalogue import Catalogue
from ctr_dagster.datagen.config import WorldConfig
from ctr_dagster.datagen.seeding import rng_for
from ctr_dagster.datagen.vocab import AGE_P, DEVICE_P, REGION_P, all_values

MAX_ACTIVITY_FACTOR = 30.0  # cap on a user's activity relative to the mean (keeps rounds bounded)
INTEREST_SCALE = 1.2
INTEREST_NOISE = 0.4
DRIFT_STEP = 0.25  # mixing weight of a new interest direction per day at drift=1
#: long_tail: at strength 1 this share of all users, drawn (own stream) among the light ones, is made
#: LONG_TAIL_FACTOR times as active, so many users have only a handful of behaviours (the long tail
#: a behaviour-gated mixture of experts must serve); the other light users take over their traffic,
#: so the world's traffic and the heavy users are unchanged.
LONG_TAIL_SHARE = 0.3
LONG_TAIL_FACTOR = 0.15


@dataclass(frozen=True)
class Population:
    """Array-of-columns truth about the users (index = user number, id = ``u%06d``)."""

    signup_day: np.ndarray  # int32 [n], day index of signup (negative = before the world starts)
    region: np.ndarray  # int8 [n], index into vocab.REGIONS
    age_group: np.ndarray  # int8 [n], 0..5
    activity: np.ndarray  # float64 [n], expected requests per day
    activity_z: np.ndarray  # float64 [n], standardized log activity
    heavy: np.ndarray  # bool [n], the heavy segment (top `heavy_share` by activity)
    latent0: np.ndarray  # float32 [n, d], interest on day 0
    fav_colour: np.ndarray  # int32 [n], index into all_values("colour")
    fav_material: np.ndarray  # int32 [n], index into all_values("material")
    taste: np.ndarray  # float64 [n], how much the user cares about colour/material
    device_pref: np.ndarray  # int8 [n], index into vocab.DEVICES
    propensity: np.ndarray  # float64 [n], conversion propensity (logit offset)

    @property
    def n(self) -> int:
        return len(self.region)


def build_population(config: WorldConfig, catalogue: Catalogue) -> Population:
    """Draw all users from the `users` random stream of the seed."""
    rng = rng_for(config.seed, "users")
    n, d = config.n_users, config.latent_dim
    signup_day = -rng.integers(1, 900, size=n).astype(np.int32)
    if config.n_days > 1:
        late = rng.random(n) < config.new_user_rate
        signup_day[late] = rng.integers(1, config.n_days, size=int(late.sum()))

    sigma = config.activity_sigma
    activity = config.requests_per_user_day * rng.lognormal(-0.5 * sigma**2, sigma, size=n)
    activity = np.minimum(activity, MAX_ACTIVITY_FACTOR * config.requests_per_user_day)
    if config.signals.long_tail > 0:
        activity = long_tail_activity(activity, config)
    log_activity = np.log(activity)
    activity_z = (log_activity - log_activity.mean()) / (log_activity.std() or 1.0)
    heavy = activity >= np.quantile(activity, 1.0 - config.heavy_share)

    n_cat = len(catalogue.specs)
    n_liked = rng.integers(1, 4, size=n)
    liked = np.argsort(rng.random((n, n_cat)), axis=1)[:, :3]
    weights = rng.dirichlet(np.ones(3), size=n) * (np.arange(3)[None, :] < n_liked[:, None])
    weights /= weights.sum(axis=1, keepdims=True)
    latent0 = INTEREST_SCALE * np.einsum("nk,nkd->nd", weights, catalogue.centres[liked])
    latent0 += rng.normal(size=(n, d)) * (INTEREST_NOISE / np.sqrt(d))

    return Population(
        signup_day=signup_day,
        region=rng.choice(len(REGION_P), size=n, p=REGION_P).astype(np.int8),
        age_group=rng.choice(len(AGE_P), size=n, p=AGE_P).astype(np.int8),
        activity=activity,
        activity_z=activity_z,
        heavy=heavy,
        latent0=latent0.astype(np.float32),
        fav_colour=rng.integers(0, len(all_values("colour")), size=n).astype(np.int32),
        fav_material=rng.integers(0, len(all_values("material")), size=n).astype(np.int32),
        taste=rng.uniform(0.4, 1.6, size=n),
        device_pref=rng.choice(len(DEVICE_P), size=n, p=DEVICE_P).astype(np.int8),
        propensity=rng.normal(0.0, 0.5, size=n),
    )


def long_tail_activity(activity: np.ndarray, config: WorldConfig) -> np.ndarray:
    """Make a `long_tail`-scaled share of users much less active (own stream, light users only).

    The other light users take over the traffic the tail loses, so the world's traffic and the heavy
    users (their activity, hence their histories and the CTR) stay as they were.
    """
    share = min(1.0 - config.heavy_share, config.signals.long_tail * LONG_TAIL_SHARE)
    light = activity < np.quantile(activity, 1.0 - config.heavy_share)
    draw = rng_for(config.seed, "long_tail").random(len(activity))
    tail = light & (draw < share / max(light.mean(), 1e-9))
    rest = light & ~tail
    reduced = np.where(tail, LONG_TAIL_FACTOR * activity, activity)
    if rest.any():
        lost = activity[tail].sum() - reduced[tail].sum()
        reduced[rest] *= 1.0 + lost / activity[rest].sum()
    return np.minimum(reduced, MAX_ACTIVITY_FACTOR * config.requests_per_user_day)


def drift_step(latent: np.ndarray, centres: np.ndarray, drift: float, rng: np.random.Generator) -> np.ndarray:
    """Next day's interests: a random walk that leans towards a random category (interest shift)."""
    if drift <= 0:
        return latent
    a = min(0.9, DRIFT_STEP * drift)
    n, d = latent.shape
    target = INTEREST_SCALE * centres[rng.integers(0, len(centres), size=n)]
    target += rng.normal(size=(n, d)) * (INTEREST_NOISE / np.sqrt(d))
    return (np.sqrt(1.0 - a * a) * latent + a * target).astype(np.float32)
