"""The click and conversion model: one additive logit component per planted signal.

Everything here is a pure function of arrays (no hidden state), so the tests, the oracle and any
notebook can recompute a component from explicit inputs, e.g. the sequence term from an explicit
click history (`sequence_component`), which is how "no future leakage" is checked.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ctr_dagster.datagen.catalogue import Catalogue
from ctr_dagster.datagen.config import WorldConfig
from ctr_dagster.datagen.population import Population
from ctr_dagster.datagen.seeding import rng_for
from ctr_dagster.datagen.vocab import AGE_P, DEVICES, REGIONS
from ctr_dagster.schemas import CLICK_COMPONENTS, ORACLE_ARMS

#: Columns of `DayData.components`, in order; their sum is the click logit of the assigned arm
#: (declared with the oracle schema, which keeps each as `logit_<name>`).
COMPONENTS: tuple[str, ...] = CLICK_COMPONENTS

# -- the coupon arms (the one place that defines them) ---------------------------------------------
#: Treatment values: 0 = control (no coupon), 1..3 = coupon arms, drawn per request with
#: probabilities `WorldConfig.arm_shares` (default 0.4, 0.2, 0.2, 0.2). Each arm adds ``uplift x click
#: effect`` to the click logit (component `uplift_click`) and ``uplift_conversion x conversion
#: effect`` to the conversion logit given a click; the effects differ by user (click) and by user and
#: item (conversion):
#:
#: * arm 1, "discount": click by region + age group (`Effects.uplift_region` + `uplift_age`, random
#:   tables, mean ~0.25, negative for the oldest groups), conversion on expensive items and light
#:   users (``ARM_CONVERSION[1]``).
#: * arm 2, "youth deal": click by age group only, much steeper towards the young (`ARM2_CLICK_AGE`,
#:   no region effect: not proportional to arm 1's), conversion on cheap items and active users.
#: * arm 3, "placebo": a coupon with no effect on either stage (exactly 0).
COUPON_ARMS: tuple[int, ...] = tuple(range(ORACLE_ARMS))  # (0, 1, 2, 3); the oracle has one column each
PLACEBO_ARM = 3
#: arm 2's click effect by age group 0 (youngest) .. 5 (oldest); weighted mean ~0.24 (arm 1's ~0.25).
ARM2_CLICK_AGE: tuple[float, ...] = (0.9, 0.6, 0.3, 0.0, -0.2, -0.3)
#: conversion effect of each coupon arm: ``a + b zprice(item) + c activity_z(user)`` for (a, b, c).
ARM_CONVERSION: dict[int, tuple[float, float, float]] = {
    1: (0.45, 0.5, -0.3),  # expensive items, light users
    2: (0.2, -0.4, 0.15),  # cheap items, active users
    3: (0.0, 0.0, 0.0),  # placebo
}

POP_AMP = 0.4
AFF_AMP = 1.5
SEQ_AMP = 3.0
MM_AMP = 1.6  # 1.2 before; raised so the multimodal term is worth >= 0.01 oracle AUC on `small`
MM_MATERIAL = 0.8  # material match counts a bit less than colour match
INT_AMP = 0.6
SEG_AMP = 0.7
POS_AMP = 0.6
SCALE_AMP = 0.6
TAU_HOURS = 24.0  # time-gap decay of the sequence weights at temporal=1
TAU_RANK = 5.0  # recency-rank decay of the sequence weights at temporal=1
#: target_time: the time constant of the gap decay depends on the target's category, log-spaced over
#: this range (hours) and dealt to the categories by a seeded permutation: fast-moving categories
#: forget a click within hours, durable ones remember it for weeks. The range's geometric centre
#: (~32h) is near TAU_HOURS, so the average relevance (and the CTR) moves little.
TARGET_TAU_RANGE = (3.0, 336.0)
#: profile_sequence: amplitude of the (age group x behaviour category) re-weighting of each remembered
#: click's relevance; the table is double-centred (no age or category main effect), unit std.
PROFILE_SEQ_AMP = 2.5
#: behaviour_segment: amplitude of the price/popularity response gated by the history's premium share
#: (the `segment` term's response, gated by behaviour instead of the heavy flag).
BSEG_AMP = 1.0
#: pseudo-clicks shrinking the gate of short histories towards 0: 2 premium clicks out of 2 give a
#: gate of 0.5, 20 out of 20 give 0.91; users without clicks have no behaviour segment.
BSEG_PRIOR = 2.0


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


@dataclass(frozen=True)
class Effects:
    """Random tables of the interaction, uplift and fine-grained (scaling) terms."""

    age_f: np.ndarray  # [6]      } 3-way term 1: age_group x category x daypart
    cat_f: np.ndarray  # [C]      }
    daypart_f: np.ndarray  # [4]  }
    region_f: np.ndarray  # [R]   } 3-way term 2: region x category x device
    cat_g: np.ndarray  # [C]      }
    device_f: np.ndarray  # [3]   }
    uplift_region: np.ndarray  # [R] click uplift by region
    uplift_age: np.ndarray  # [6] click uplift by age group
    user_factors: np.ndarray  # float32 [n_users, rank]
    item_factors: np.ndarray  # float32 [n_items, rank]
    cat_tau_hours: np.ndarray  # [C] gap time constant of behaviours for a target of each category
    age_cat_affinity: np.ndarray  # [6, C] profile_sequence: age group x behaviour category weight


def build_effects(config: WorldConfig, n_categories: int) -> Effects:
    rng = rng_for(config.seed, "effects")

    def centred(k: int) -> np.ndarray:
        v = rng.normal(size=k)
        return (v - v.mean()) / (v.std() or 1.0)

    rank = config.scaling_rank
    return Effects(
        age_f=centred(len(AGE_P)),
        cat_f=centred(n_categories),
        daypart_f=centred(4),
        region_f=centred(len(REGIONS)),
        cat_g=centred(n_categories),
        device_f=centred(len(DEVICES)),
        uplift_region=0.25 + 0.35 * centred(len(REGIONS)),
        uplift_age=np.linspace(0.3, -0.3, len(AGE_P)) + rng.normal(0.0, 0.05, size=len(AGE_P)),
        user_factors=rng.normal(size=(config.n_users, rank)).astype(np.float32),
        item_factors=rng.normal(size=(config.n_items, rank)).astype(np.float32),
        # own streams, so these tables leave every earlier draw of the world untouched
        cat_tau_hours=category_time_constants(config.seed, n_categories),
        age_cat_affinity=age_category_affinity(config.seed, n_categories),
    )


def category_time_constants(seed: int, n_categories: int) -> np.ndarray:
    """Per target category, the time constant (hours) of the gap decay at target_time=1."""
    lo, hi = TARGET_TAU_RANGE
    taus = np.geomspace(lo, hi, n_categories)
    return taus[rng_for(seed, "target_time").permutation(n_categories)]


def age_category_affinity(seed: int, n_categories: int) -> np.ndarray:
    """[age group, behaviour category] weights, double-centred to no main effects, unit std."""
    table = rng_for(seed, "profile_sequence").normal(size=(len(AGE_P), n_categories))
    table = table - table.mean(axis=0, keepdims=True) - table.mean(axis=1, keepdims=True) + table.mean()
    return table / (table.std() or 1.0)


# -- sequence ------------------------------------------------------------------------------------


def sequence_weights(
    gap_hours: np.ndarray, valid: np.ndarray, temporal: float, tau_hours: float | np.ndarray = TAU_HOURS
) -> np.ndarray:
    """Weight of each remembered click; column j (last axis) is the (j+1)-th most recent click.

    ``w_j = exp(-temporal * (gap_j / tau + j / TAU_RANK)) / Z`` with Z the rank-decay mass of a
    full window, so temporal=0 gives uniform weights 1/N over the window and a full window of very
    recent clicks has total weight ~1 at any `temporal`. `tau_hours` (default TAU_HOURS) broadcasts
    against `gap_hours`, e.g. one time constant per target (`target_tau_hours`).
    """
    n = gap_hours.shape[-1]
    rank = np.arange(n, dtype=np.float64)
    decay = np.exp(-temporal * (np.maximum(gap_hours, 0.0) / tau_hours + rank / TAU_RANK))
    norm = np.exp(-temporal * rank / TAU_RANK).sum()
    return np.where(valid, decay, 0.0) / norm


def sequence_component(
    unit: np.ndarray,
    targets: np.ndarray,
    request_ts_ms: np.ndarray,
    hist_items: np.ndarray,
    hist_ts_ms: np.ndarray,
    strength: float,
    temporal: float,
    tau_hours: np.ndarray | None = None,
) -> np.ndarray:
    """Sequence logit term of each target: ``strength * SEQ_AMP * sum_j w_j * relu(cos(target, click_j))``.

    unit: [n_items, d] unit item vectors; targets: [m, S] item indices; request_ts_ms: [m];
    hist_items / hist_ts_ms: [m, N] the user's clicks strictly before the request, most recent first,
    item -1 = empty slot; tau_hours: None (TAU_HOURS for all) or [m, S], each target's time constant
    of the gap decay (`target_time`). Returns float64 [m, S].
    """
    targets = np.asarray(targets)
    if strength == 0 or hist_items.shape[1] == 0:
        return np.zeros(targets.shape, dtype=np.float64)
    valid, relevance = _relevance(unit, targets, hist_items)
    return _sequence_term(
        relevance, valid, _gap_hours(request_ts_ms, hist_ts_ms), strength, temporal, tau_hours
    )


def _sequence_term(
    relevance: np.ndarray,
    valid: np.ndarray,
    gap_hours: np.ndarray,
    strength: float,
    temporal: float,
    tau_hours: np.ndarray | None = None,
) -> np.ndarray:
    """`sequence_component` from the relevance and gaps already computed (shared by the history terms)."""
    if tau_hours is None:
        weights = sequence_weights(gap_hours, valid, temporal)
        return strength * SEQ_AMP * np.einsum("msn,mn->ms", relevance, weights)
    weights = sequence_weights(gap_hours[:, None, :], valid[:, None, :], temporal, tau_hours[:, :, None])
    return strength * SEQ_AMP * np.einsum("msn,msn->ms", relevance, weights)


def _relevance(
    unit: np.ndarray, targets: np.ndarray, hist_items: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(valid [m, N], relu(cos(target, click_j)) [m, S, N])."""
    valid = hist_items >= 0
    sims = np.einsum("msd,mnd->msn", unit[targets], unit[np.where(valid, hist_items, 0)])
    return valid, np.maximum(sims, 0.0)


def _gap_hours(request_ts_ms: np.ndarray, hist_ts_ms: np.ndarray) -> np.ndarray:
    return (np.asarray(request_ts_ms)[:, None] - hist_ts_ms) / 3.6e6


def target_tau_hours(effects: Effects, target_category: np.ndarray, target_time: float) -> np.ndarray:
    """Gap time constant of each target: TAU_HOURS at target_time=0, its category's at 1 (geometric)."""
    return TAU_HOURS * (effects.cat_tau_hours[target_category] / TAU_HOURS) ** target_time


def behaviour_gate(zprice: np.ndarray, hist_items: np.ndarray) -> np.ndarray:
    """Per request, the behaviour segment in [-1, 1]: (premium - cheap clicks) / (clicks + BSEG_PRIOR).

    Premium = zprice > 0 among the remembered clicks; > 0 exactly when most remembered clicks were
    premium, 0 without history.
    """
    valid = hist_items >= 0
    premium = np.where(valid, zprice[np.where(valid, hist_items, 0)] > 0, False)
    n = valid.sum(axis=1)
    return (2.0 * premium.sum(axis=1) - n) / (n + BSEG_PRIOR)


def history_components(
    config: WorldConfig,
    catalogue: Catalogue,
    population: Population,
    effects: Effects,
    users: np.ndarray,
    targets: np.ndarray,
    request_ts_ms: np.ndarray,
    hist_items: np.ndarray,
    hist_ts_ms: np.ndarray,
) -> dict[str, np.ndarray]:
    """The components that read the user's clicks before the request, each float64 [m, S].

    * ``sequence``: `sequence_component` (today's decay, time constant TAU_HOURS for every target).
    * ``target_time``: what the target-dependent time constant changes in the sequence term:
      ``sequence_component(tau = target_tau_hours(...)) - sequence``, so ``sequence + target_time``
      is the sequence term with a target-aware decay; 0 at target_time=0, temporal=0 or sequence=0.
    * ``profile_sequence``: ``PROFILE_SEQ_AMP sum_j w_j relu(cos(target, click_j)) A[age, cat_j]``,
      each behaviour's relevance re-weighted by the user's age group and the behaviour's category.
    * ``behaviour_segment``: ``BSEG_AMP gate (zprice - 0.5 popularity)`` with `behaviour_gate`.
    """
    s = config.signals
    targets = np.asarray(targets)
    zeros = np.zeros(targets.shape, dtype=np.float64)
    out = {"sequence": zeros, "target_time": zeros, "profile_sequence": zeros, "behaviour_segment": zeros}
    if hist_items.shape[1] == 0:
        return out
    if s.sequence or s.profile_sequence:  # relu(cos(target, click)) and the gaps, computed once
        valid, relevance = _relevance(catalogue.unit, targets, hist_items)
        gap_hours = _gap_hours(request_ts_ms, hist_ts_ms)
    if s.sequence:
        out["sequence"] = _sequence_term(relevance, valid, gap_hours, s.sequence, s.temporal)
    if s.target_time and s.sequence and s.temporal:
        tau = target_tau_hours(effects, catalogue.category[targets], s.target_time)
        aware = _sequence_term(relevance, valid, gap_hours, s.sequence, s.temporal, tau)
        out["target_time"] = aware - out["sequence"]
    if s.profile_sequence:
        weights = sequence_weights(gap_hours, valid, s.temporal)
        age = population.age_group[np.asarray(users)]
        affinity = effects.age_cat_affinity[age[:, None], catalogue.category[np.where(valid, hist_items, 0)]]
        out["profile_sequence"] = (
            s.profile_sequence * PROFILE_SEQ_AMP * np.einsum("msn,mn->ms", relevance, weights * affinity)
        )
    if s.behaviour_segment:
        gate = behaviour_gate(catalogue.zprice, hist_items)
        z, p = catalogue.zprice[targets], catalogue.popularity[targets]
        out["behaviour_segment"] = s.behaviour_segment * BSEG_AMP * gate[:, None] * (z - 0.5 * p)
    return out


# -- the rest of the click logit -----------------------------------------------------------------


@dataclass(frozen=True)
class Impressions:
    """Flat per-impression inputs of the click model (all int arrays of equal length)."""

    user: np.ndarray
    item: np.ndarray
    position: np.ndarray  # 1-based
    device: np.ndarray
    hour: np.ndarray
    treatment: np.ndarray

    def take(self, rows: np.ndarray) -> Impressions:
        return Impressions(
            *(getattr(self, f)[rows] for f in ("user", "item", "position", "device", "hour", "treatment"))
        )


def click_uplift(
    config: WorldConfig,
    population: Population,
    effects: Effects,
    user: np.ndarray,
    arm: int | np.ndarray = 1,
) -> np.ndarray:
    """Effect of coupon arm `arm` (one per user, or an array aligned with `user`) on the click logit.

    Depends on the user only (region and age group; see `COUPON_ARMS`); 0 for control and the
    placebo, and everywhere at `uplift` = 0.
    """
    if config.signals.uplift == 0:
        return np.zeros(len(user))
    arm = np.broadcast_to(np.asarray(arm), np.shape(user))
    region, age = population.region[user], population.age_group[user]
    scale = config.signals.uplift
    # arm 1 as its effect times its indicator: elsewhere a signed zero, bit for bit the click uplift
    # component of the one-coupon world (arm_shares (0.5, 0.5, 0, 0))
    out = (arm == 1) * (scale * (effects.uplift_region[region] + effects.uplift_age[age]))
    return np.where(arm == 2, scale * np.asarray(ARM2_CLICK_AGE)[age], out)


def conversion_uplift(
    config: WorldConfig,
    catalogue: Catalogue,
    population: Population,
    user: np.ndarray,
    item: np.ndarray,
    arm: int | np.ndarray = 1,
) -> np.ndarray:
    """Effect of coupon arm `arm` on the conversion logit given a click (`ARM_CONVERSION`).

    Depends on price and user activity, not on region/age like the click effect: heterogeneous by
    chain stage. 0 for control and the placebo, and everywhere at `uplift_conversion` = 0.
    """
    out = np.zeros(len(user))
    if config.signals.uplift_conversion == 0:
        return out
    arm = np.broadcast_to(np.asarray(arm), np.shape(user))
    z, activity = catalogue.zprice[item], population.activity_z[user]
    scale = config.signals.uplift_conversion
    for k, (a, b, c) in ARM_CONVERSION.items():
        if a or b or c:
            out = np.where(arm == k, scale * (a + b * z + c * activity), out)
    return out


def static_components(
    config: WorldConfig,
    catalogue: Catalogue,
    population: Population,
    effects: Effects,
    latent: np.ndarray,
    imp: Impressions,
) -> dict[str, np.ndarray]:
    """Every click-logit component except `base` and the `history_components` (those need calibration / history).

    `latent` is the users' interest matrix of the day (it drifts). `uplift_click` is the effect under
    the assigned arm (0 for control and placebo rows).
    """
    s = config.signals
    u, i = imp.user, imp.item
    zeros = np.zeros(len(u))
    c = catalogue.category[i]
    out = {
        "popularity": POP_AMP * catalogue.popularity[i],
        "affinity": AFF_AMP * np.einsum("nd,nd->n", latent[u], catalogue.latent[i], dtype=np.float64),
    }
    if s.multimodal:
        colour = catalogue.values["colour"][i] == population.fav_colour[u]
        material = catalogue.values["material"][i] == population.fav_material[u]
        out["multimodal"] = s.multimodal * MM_AMP * population.taste[u] * (colour + MM_MATERIAL * material)
    else:
        out["multimodal"] = zeros
    if s.interaction:
        e = effects
        term1 = e.age_f[population.age_group[u]] * e.cat_f[c] * e.daypart_f[imp.hour // 6]
        term2 = e.region_f[population.region[u]] * e.cat_g[c] * e.device_f[imp.device]
        out["interaction"] = s.interaction * INT_AMP * (term1 + term2)
    else:
        out["interaction"] = zeros
    if s.segment:
        z, p = catalogue.zprice[i], catalogue.popularity[i]
        out["segment"] = s.segment * SEG_AMP * np.where(population.heavy[u], z - 0.5 * p, -z + 0.5 * p)
    else:
        out["segment"] = zeros
    out["position"] = 0.0 - s.position_bias * POS_AMP * np.log(imp.position) if s.position_bias else zeros
    if s.scaling:
        dot = np.einsum("nr,nr->n", effects.user_factors[u], effects.item_factors[i], dtype=np.float64)
        out["scaling"] = s.scaling * SCALE_AMP * dot / np.sqrt(config.scaling_rank)
    else:
        out["scaling"] = zeros
    out["uplift_click"] = click_uplift(config, population, effects, u, imp.treatment)
    return out


def conversion_logits(
    config: WorldConfig,
    catalogue: Catalogue,
    population: Population,
    conv_base: float,
    user: np.ndarray,
    item: np.ndarray,
    arm: int | np.ndarray = 1,
) -> tuple[np.ndarray, np.ndarray]:
    """(control, under `arm`) conversion logits given a click (`conversion_uplift` apart)."""
    z = catalogue.zprice[item]
    control = conv_base - 0.5 * z + 0.2 * catalogue.popularity[item] + population.propensity[user]
    return control, control + conversion_uplift(config, catalogue, population, user, item, arm)


def solve_offset(logits: np.ndarray, target: float, weights: np.ndarray | None = None) -> float:
    """The constant b with weighted mean sigmoid(logits + b) == target (bisection; monotone in b)."""
    lo, hi = -30.0, 30.0
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if np.average(sigmoid(logits + mid), weights=weights) < target:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)
