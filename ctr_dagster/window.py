"""Which days a training dataset is built from: the trailing window, its time split and look-back.

Pure Python (no numpy/pyarrow) so the code location can import the config at load time.

Why split by time: a CTR model is always used on tomorrow's traffic, so a random split leaks the
future (drifting interests, new items) into training and overstates every metric.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

#: How many of a user's most recent behaviours a sequence keeps: the one name (`max_seq_len`) and the
#: one default of the project. The training dataset stores this many per row; the synthetic world's
#: users remember this many clicks (so the default dataset holds the whole planted sequence signal);
#: a torch model uses every behaviour the dataset holds unless its own `max_seq_len` is smaller.
DEFAULT_MAX_SEQ_LEN = 20


#: Share of the impressions the automatic split gives the test split, and the validation split.
AUTO_SHARE = 0.1
#: Day-aligned automatic splits are used when whole days give each split a share in this range;
#: otherwise (few, or very uneven, days) the split cuts by time inside days.
_DAY_ALIGNED_SHARES = (0.05, 0.2)


@dataclass(frozen=True)
class DatasetConfig:
    """Which days feed the dataset and how they split. None = sized from the data (see `plan_days`):
    the window is every available day, test the last ~10 % of impressions, valid the ~10 % before."""

    window_days: int | None = None
    valid_days: int | None = None
    test_days: int | None = None
    history_days: int = 7
    max_seq_len: int = DEFAULT_MAX_SEQ_LEN
    end_date: str | None = None  # last (test) day of the window; default: the latest available

    @property
    def automatic(self) -> bool:
        return None in (self.window_days, self.valid_days, self.test_days)

    def validate(self) -> None:
        for name in ("window_days", "valid_days", "test_days"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1 (or unset: sized from the data), got {value}")
        if None not in (self.window_days, self.valid_days, self.test_days) and self.window_days < (
            self.valid_days + self.test_days + 1
        ):
            raise ValueError(
                f"window_days={self.window_days} leaves no training day "
                f"(valid_days={self.valid_days}, test_days={self.test_days})"
            )
        if self.max_seq_len < 1:
            raise ValueError("max_seq_len must be >= 1")
        if self.history_days < 0:
            raise ValueError("history_days must be >= 0")


@dataclass(frozen=True)
class DayPlan:
    """Which partitions play which role; all lists sorted ascending.

    With `cut_shares` set (few or uneven days), the split is by time inside the days instead: the
    last `cut_shares[1]` of the rows by timestamp are test, the `cut_shares[0]` before them valid,
    and `train` lists every day of the window (`valid`/`test` are then empty).
    """

    history: list[str]
    train: list[str]
    valid: list[str]
    test: list[str]
    rule: str = "configured"
    cut_shares: tuple[float, float] | None = None

    @property
    def rows(self) -> list[str]:
        return sorted(set(self.train + self.valid + self.test))

    @property
    def all(self) -> list[str]:
        return self.history + self.rows

    def split_of(self, day: str) -> str:
        if day in self.test:
            return "test"
        if day in self.valid:
            return "valid"
        return "train"


def _trailing_days(counts: Sequence[int], share: float) -> int:
    """How many trailing days hold the share of rows nearest to `share` (at least one)."""
    total = float(sum(counts)) or 1.0
    best, best_gap, running = 1, float("inf"), 0
    for k, count in enumerate(reversed(counts), 1):
        running += count
        gap = abs(running / total - share)
        if gap < best_gap:
            best, best_gap = k, gap
        if running / total > share:
            break
    return best


def plan_days(
    available: Sequence[str], config: DatasetConfig, rows_per_day: Mapping[str, int] | None = None
) -> DayPlan:
    """Pick the window (and look-back) from the available daily partitions, and split it by time.

    Unset sizes are taken from the data (`rows_per_day`; equal days when not given): the window is
    every day, test the trailing days whose share of impressions is nearest `AUTO_SHARE`, valid the
    same share before them. When whole days cannot give each split 5-20 % (a log of one or two
    days, or a heavy last day), the plan cuts by time inside days instead (`DayPlan.cut_shares`).
    Explicit sizes always win.
    """
    config.validate()
    days = sorted(available)
    if config.end_date is not None:
        if config.end_date not in days:
            raise ValueError(
                f"end_date {config.end_date} is not an available partition; have {days[:1]}..{days[-1:]}"
            )
        days = [d for d in days if d <= config.end_date]
    if not days:
        raise ValueError("no daily partitions of clean_impressions: materialize the days first")
    if config.automatic:
        return _automatic_plan(days, config, rows_per_day)
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


def _automatic_plan(
    days: list[str], config: DatasetConfig, rows_per_day: Mapping[str, int] | None
) -> DayPlan:
    window = days[-config.window_days :] if config.window_days else days
    history = days[max(0, len(days) - len(window) - config.history_days) : len(days) - len(window)]
    counts = [int((rows_per_day or {}).get(d, 1)) if rows_per_day is not None else 1 for d in window]
    total = sum(counts) or 1
    n_test = config.test_days or _trailing_days(counts, AUTO_SHARE)
    before = counts[: len(counts) - n_test]
    n_valid = config.valid_days or (
        _trailing_days(before, AUTO_SHARE * total / (sum(before) or 1)) if before else 1
    )
    test_share = sum(counts[len(counts) - n_test :]) / total
    valid_share = sum(counts[len(counts) - n_test - n_valid : len(counts) - n_test]) / total
    low, high = _DAY_ALIGNED_SHARES
    explicit = config.test_days is not None or config.valid_days is not None
    aligned = len(window) >= n_test + n_valid + 1 and (
        explicit or (low <= test_share <= high and low <= valid_share <= high)
    )
    if aligned:
        return DayPlan(
            history=history,
            train=window[: -(n_valid + n_test)],
            valid=window[-(n_valid + n_test) : -n_test],
            test=window[-n_test:],
            rule=(
                f"sized from the data: test = last {n_test} day(s) ({test_share:.1%} of impressions), "
                f"valid = {n_valid} day(s) before ({valid_share:.1%}), train = the {len(window) - n_test - n_valid} "
                "day(s) before; set window_days / valid_days / test_days to override"
            ),
        )
    return DayPlan(
        history=history,
        train=window,
        valid=[],
        test=[],
        rule=(
            f"sized from the data: {len(window)} day(s) cannot be split by whole days near "
            f"{AUTO_SHARE:.0%} each, so the split cuts by time: test = the last {AUTO_SHARE:.0%} of "
            f"impressions by timestamp, valid the {AUTO_SHARE:.0%} before; set valid_days / test_days "
            "to split by whole days"
        ),
        cut_shares=(AUTO_SHARE, AUTO_SHARE),
    )
