"""Configuration of the synthetic world: sizes, rates and one strength knob per planted signal.

Both dataclasses are frozen (hashable) so `build_world` can cache one world per configuration and
two equal configurations always describe the same world.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
from dataclasses import dataclass, field

from ctr_dagster.window import DEFAULT_MAX_SEQ_LEN

#: Treatment values: 0 = control, 1..3 = coupon arms (`schemas.ORACLE_ARMS`, `behaviour.COUPON_ARMS`).
N_ARMS = 4


@dataclass(frozen=True)
class Signals:
    """Strength of each planted signal: 0.0 removes it, 1.0 is the default strength.

    See the module docstring of `ctr_dagster.datagen` for what each one plants and which model
    mechanism should exploit it.
    """

    sequence: float = 1.0
    temporal: float = 1.0
    multimodal: float = 1.0
    interaction: float = 1.0
    segment: float = 1.0
    uplift: float = 1.0  # the coupon arms' click effect
    uplift_conversion: float = 1.0  # the coupon arms' conversion effect (given a click)
    zero_shot: float = 1.0
    drift: float = 1.0
    position_bias: float = 1.0
    scaling: float = 1.0
    neighbourhood: float = 1.0
    target_time: float = 1.0
    profile_sequence: float = 1.0
    behaviour_segment: float = 1.0
    long_tail: float = 1.0

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"Signals.{f.name} must be a finite number >= 0, got {value!r}")


@dataclass(frozen=True)
class WorldConfig:
    """Everything that determines a synthetic world; equal configs give identical tables."""

    n_users: int = 5_000
    n_items: int = 2_000
    n_days: int = 14
    start_date: str = "2026-11-01"
    seed: int = 7
    n_categories: int = 10  # including the held-out ones
    n_heldout_categories: int = 2
    latent_dim: int = 16
    requests_per_user_day: float = 0.6  # mean over users; individual activity is heavy-tailed
    activity_sigma: float = 1.3  # lognormal spread of user activity (power-law-like long tail)
    slate_size: int = 10
    max_seq_len: int = DEFAULT_MAX_SEQ_LEN  # clicks remembered per user for the sequence signal
    #: probability of each coupon arm per request: control (treatment 0), then the coupon arms 1..3
    #: (`datagen.behaviour.COUPON_ARMS` says what each does); (0.5, 0.5, 0, 0) is the one-coupon world.
    arm_shares: tuple[float, ...] = (0.4, 0.2, 0.2, 0.2)
    corruption_rate: float = 0.003
    new_item_rate: float = 0.15  # share of items whose first_seen is after day 0
    new_user_rate: float = 0.15  # share of users who sign up during the world
    missing_rate: float = 0.3  # share of attribute values absent from the structured catalogue
    #: share of slates with a "more from this line" widget at `neighbourhood` strength 1 (times the
    #: strength, capped at 1): how often line mates are co-viewed, i.e. how much of an item's co-view
    #: neighbourhood is its product line. Changes only the interactions, never the catalogue.
    line_widget_share: float = 0.3
    heavy_share: float = 0.2  # share of users in the "heavy" segment (by activity)
    target_ctr: float = 0.07  # base click logit is calibrated to roughly this CTR
    target_cvr: float = 0.12  # conversion base calibrated to roughly this conversion-given-click rate
    scaling_rank: int = 48  # factors of the fine-grained user x item term
    image_size: int = 32
    signals: Signals = field(default_factory=Signals)

    def __post_init__(self) -> None:
        for name in (
            "n_users",
            "n_items",
            "n_days",
            "latent_dim",
            "slate_size",
            "max_seq_len",
            "scaling_rank",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"WorldConfig.{name} must be >= 1, got {getattr(self, name)!r}")
        if self.seed < 0:
            raise ValueError(f"WorldConfig.seed must be >= 0, got {self.seed}")
        if not 4 <= self.n_categories <= 12 or self.n_categories - self.n_heldout_categories > 10:
            raise ValueError(
                f"WorldConfig.n_categories must be in 4..12 with at most 10 regular categories, got {self.n_categories}"
            )
        if not 0 <= self.n_heldout_categories <= min(2, self.n_categories - 2):
            raise ValueError(
                f"WorldConfig.n_heldout_categories must be in 0..2, got {self.n_heldout_categories}"
            )
        if self.slate_size > self.max_seq_len:
            raise ValueError(
                "WorldConfig.slate_size must be <= max_seq_len (one request's clicks fit the buffer)"
            )
        if self.n_items < 5 * self.n_categories or self.n_items < 2 * self.slate_size:
            raise ValueError(f"WorldConfig.n_items={self.n_items} is too small for the categories/slate")
        shares = tuple(float(x) for x in self.arm_shares)
        object.__setattr__(self, "arm_shares", shares)  # hashable, even when given as a list
        if (
            len(shares) != N_ARMS
            or not all(math.isfinite(x) and x >= 0 for x in shares)
            or abs(sum(shares) - 1.0) > 1e-9
        ):
            raise ValueError(
                f"WorldConfig.arm_shares must be {N_ARMS} shares >= 0 summing to 1 (control, arms 1..3), "
                f"got {self.arm_shares!r}"
            )
        for name in (
            "corruption_rate",
            "new_item_rate",
            "new_user_rate",
            "missing_rate",
            "line_widget_share",
        ):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"WorldConfig.{name} must be in [0, 1], got {getattr(self, name)!r}")
        if (
            not 0.0 < self.heavy_share < 1.0
            or not 0.0 < self.target_ctr < 1.0
            or not 0.0 < self.target_cvr < 1.0
        ):
            raise ValueError("WorldConfig.heavy_share, target_ctr and target_cvr must be in (0, 1)")
        if self.requests_per_user_day <= 0 or self.activity_sigma < 0:
            raise ValueError("WorldConfig.requests_per_user_day must be > 0 and activity_sigma >= 0")
        self.start()  # validates the date format

    def start(self) -> dt.date:
        try:
            return dt.date.fromisoformat(str(self.start_date))
        except ValueError as exc:
            raise ValueError(f"WorldConfig.start_date must be 'YYYY-MM-DD', got {self.start_date!r}") from exc


PROFILES: dict[str, WorldConfig] = {
    # tests: seconds
    "tiny": WorldConfig(
        n_users=300, n_items=240, n_days=6, n_categories=6, requests_per_user_day=1.6, slate_size=8
    ),
    # the demo: under a minute of generation on 2 CPU cores
    "small": WorldConfig(n_users=5_000, n_items=2_000, n_days=14, n_categories=10, requests_per_user_day=0.6),
    # long behaviour sequences: about half the users remember 100-200 clicks (the rest: the long tail
    # and late sign-ups) on a tiny-sized world of few, very active users (~180k impressions, seconds).
    # target_ctr is low because the base is calibrated without the history terms, which many recent
    # clicks make large: the realized CTR is ~0.11.
    "long": WorldConfig(
        n_users=80,
        n_items=240,
        n_days=6,
        n_categories=6,
        requests_per_user_day=50.0,
        activity_sigma=0.3,
        slate_size=8,
        max_seq_len=200,
        target_ctr=0.012,
    ),
    # benchmarks: ~9M impressions
    "large": WorldConfig(
        n_users=100_000, n_items=40_000, n_days=21, n_categories=12, requests_per_user_day=0.45
    ),
}


def profile(name: str, **overrides: object) -> WorldConfig:
    """The named profile with `overrides` applied, e.g. ``profile("tiny", seed=3, signals=Signals(sequence=0))``."""
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}; choose one of {sorted(PROFILES)}")
    try:
        return dataclasses.replace(PROFILES[name], **overrides)
    except TypeError as exc:
        fields = sorted(f.name for f in dataclasses.fields(WorldConfig))
        raise ValueError(f"bad override for profile {name!r}: {exc}; WorldConfig fields: {fields}") from exc
