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
from ctr_dagster.schemas import CLICK_COMPONENTS

#: Columns of `DayData.components`, in order; their sum is the click logit of the assigned arm
#: (declared with the oracle schema, which keeps each as `logit_<name>`).
COMPONENTS: tuple[str, ...] = CLICK_COMPONENTS

POP_AMP = 0.4
AFF_AMP = 1.5
SEQ_AMP = 3.0
MM_AMP = 1.2
MM_MATERIAL = 0.8  # material match counts a bit less than colour match
INT_AMP = 0.6
SEG_AMP = 0.7
POS_AMP = 0.6
SCALE_AMP = 0.6
TAU_HOURS = 24.0  # time-gap decay of the sequence weights at temporal=1
TAU_RANK = 5.0  # recency-rank decay of the sequence weights at temporal=1


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
    )


# -- sequence ------------------------------------------------------------------------------------


def sequence_weights(gap_hours: np.ndarray, valid: np.ndarray, temporal: float) -> np.ndarray:
    """Weight of each remembered click; column j is the (j+1)-th most recent click.

    ``w_j = exp(-temporal * (gap_j / TAU_HOURS + j / TAU_RANK)) / Z`` with Z the rank-decay mass of a
    full window, so temporal=0 gives uniform weights 1/N over the window and a full window of very
    recent clicks has total weight ~1 at any `temporal`.
    """
    n = gap_hours.shape[-1]
    rank = np.arange(n, dtype=np.float64)
    decay = np.exp(-temporal * (np.maximum(gap_hours, 0.0) / TAU_HOURS + rank / TAU_RANK))
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
) -> np.ndarray:
    """Sequence logit term of each target: ``strength * SEQ_AMP * sum_j w_j * relu(cos(target, click_j))``.

    unit: [n_items, d] unit item vectors; targets: [m, S] item indices; request_ts_ms: [m];
    hist_items / hist_ts_ms: [m, N] the user's clicks strictly before the request, most recent first,
    item -1 = empty slot. Returns float64 [m, S].
    """
    targets = np.asarray(targets)
    if strength == 0 or hist_items.shape[1] == 0:
        return np.zeros(targets.shape, dtype=np.float64)
    valid = hist_items >= 0
    gap_hours = (np.asarray(request_ts_ms)[:, None] - hist_ts_ms) / 3.6e6
    weights = sequence_weights(gap_hours, valid, temporal)
    sims = np.einsum("msd,mnd->msn", unit[targets], unit[np.where(valid, hist_items, 0)])
    return strength * SEQ_AMP * np.einsum("msn,mn->ms", np.maximum(sims, 0.0), weights)


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
    config: WorldConfig, population: Population, effects: Effects, user: np.ndarray
) -> np.ndarray:
    """Coupon effect on the click logit: depends on region and age group only."""
    if config.signals.uplift == 0:
        return np.zeros(len(user))
    region, age = population.region[user], population.age_group[user]
    return config.signals.uplift * (effects.uplift_region[region] + effects.uplift_age[age])


def static_components(
    config: WorldConfig,
    catalogue: Catalogue,
    population: Population,
    effects: Effects,
    latent: np.ndarray,
    imp: Impressions,
) -> dict[str, np.ndarray]:
    """Every click-logit component except `base` and `sequence` (those need calibration / history).

    `latent` is the users' interest matrix of the day (it drifts). `uplift_click` is the effect under
    the assigned arm (0 for control rows).
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
    out["uplift_click"] = imp.treatment * click_uplift(config, population, effects, u)
    return out


def conversion_logits(
    config: WorldConfig,
    catalogue: Catalogue,
    population: Population,
    conv_base: float,
    user: np.ndarray,
    item: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """(control, treated) conversion logits given a click.

    The coupon's conversion effect depends on price and user activity (expensive items and light
    users respond), unlike its click effect (region, age group): heterogeneous by chain stage.
    """
    z = catalogue.zprice[item]
    control = conv_base - 0.5 * z + 0.2 * catalogue.popularity[item] + population.propensity[user]
    uplift = config.signals.uplift * (0.45 + 0.5 * z - 0.3 * population.activity_z[user])
    return control, control + uplift


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
