"""Which days a training dataset is built from: the trailing window, its time split and look-back.

Pure Python (no numpy/pyarrow) so the code location can import the config at load time.

Why split by time: a CTR model is always used on tomorrow's traffic, so a random split leaks the
future (drifting interests, new items) into training and overstates every metric.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

#: How many of a user's most recent behaviours a sequence keeps: the one name (`max_seq_len`) and the
#: one default of the project. The training dataset stores this many per row; the synthetic world's
#: users remember this many clicks (so the default dataset holds the whole planted sequence signal);
#: a torch model uses every behaviour the dataset holds unless its own `max_seq_len` is smaller.
DEFAULT_MAX_SEQ_LEN = 20


@dataclass(frozen=True)
class DatasetConfig:
    window_days: int = 14
    valid_days: int = 1
    test_days: int = 1
    history_days: int = 7
    max_seq_len: int = DEFAULT_MAX_SEQ_LEN
    end_date: str | None = None  # last (test) day of the window; default: the latest available

    def validate(self) -> None:
        if self.valid_days < 1 or self.test_days < 1:
            raise ValueError("valid_days and test_days must be >= 1")
        if self.window_days < self.valid_days + self.test_days + 1:
            raise ValueError(
                f"window_days={self.window_days} leaves no training day "
                f"(valid_days={self.valid_days}, test_days={self.test_days})"
            )
        if self.max_seq_len < 1:
            raise ValueError("max_seq_len must be >= 1")


@dataclass(frozen=True)
class DayPlan:
    """Which partitions play which role; all lists sorted ascending."""

    history: list[str]
    train: list[str]
    valid: list[str]
    test: list[str]

    @property
    def rows(self) -> list[str]:
        return self.train + self.valid + self.test

    @property
    def all(self) -> list[str]:
        return self.history + self.rows

    def split_of(self, day: str) -> str:
        if day in self.test:
            return "test"
        if day in self.valid:
            return "valid"
        return "train"


def plan_days(available: Sequence[str], config: DatasetConfig) -> DayPlan:
    """Pick the trailing window (and look-back) from the available daily partitions."""
    config.validate()
    days = sorted(available)
    if config.end_date is not None:
        if config.end_date not in days:
            raise ValueError(
                f"end_date {config.end_date} is not an available partition; have {days[:1]}..{days[-1:]}"
            )
        days = [d for d in days if d <= config.end_date]
    needed = config.valid_days + config.test_days + 1
    if len(days) < needed:
        raise ValueError(
            f"need at least {needed} daily partitions of clean_impressions, found {len(days)}: {days}"
        )
    window = days[-config.window_days :]
    history = days[max(0, len(days) - len(window) - config.history_days) : len(days) - len(window)]
    n_test, n_valid = config.test_days, config.valid_days
    return DayPlan(
        history=history,
        train=window[: -(n_valid + n_test)],
        valid=window[-(n_valid + n_test) : -n_test],
        test=window[-n_test:],
    )
