"""The outcome of a quality run, shaped for Dagster metadata and asset checks."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class QualityReport:
    """Counts of one validation; `rule_counts` maps every evaluated rule to its failing rows."""

    table: str
    partition: str | None
    rows_in: int
    rows_clean: int
    rows_quarantined: int
    rule_counts: dict[str, int] = field(default_factory=dict)
    success: bool = True

    def __post_init__(self) -> None:
        # The non-negotiable: counts in = clean + quarantined, always (checked even under -O).
        if self.rows_in != self.rows_clean + self.rows_quarantined:
            raise RuntimeError(
                f"quality invariant broken for {self.table}[{self.partition}]: rows_in={self.rows_in} "
                f"!= clean {self.rows_clean} + quarantined {self.rows_quarantined}"
            )

    @property
    def failed_rules(self) -> list[str]:
        return [name for name, count in self.rule_counts.items() if count]

    def as_metadata(self) -> dict[str, Any]:
        """Flat, JSON-able: totals first, then one `rule.<name>` count per rule (plotted by Dagster)."""
        meta: dict[str, Any] = {
            "table": self.table,
            "rows_in": self.rows_in,
            "rows_clean": self.rows_clean,
            "rows_quarantined": self.rows_quarantined,
            "quarantined_fraction": round(self.rows_quarantined / self.rows_in, 6) if self.rows_in else 0.0,
            "success": self.success,
            "failed_rules": ", ".join(self.failed_rules),
        }
        if self.partition is not None:
            meta["partition"] = self.partition
        meta.update({f"rule.{name}": count for name, count in self.rule_counts.items()})
        return meta

    def as_check_metadata(self) -> dict[str, Any]:
        """For a check that *validates* a table (nothing is quarantined by it): what was validated and
        which rules failed, named so they cannot be read as the quarantine's counts."""
        meta: dict[str, Any] = {
            "validated_table": self.table,
            "validated_rows": self.rows_in,
            "rows_failing_a_rule": self.rows_quarantined,
            "success": self.success,
            "failed_rules": ", ".join(self.failed_rules) or "none",
        }
        meta.update({f"failing_rows.{name}": count for name, count in self.rule_counts.items()})
        return meta
