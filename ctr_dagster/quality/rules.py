"""The quality rules of every table, as data.

A rule is declared once here and evaluated by `ctr_dagster.quality.engine`: most rules are Great
Expectations expectations (class name + arguments over the *validation view* of the table, see the
engine), a few are Arrow checks where GE is unfit (membership in a large reference set: GE copies the
whole value set into its result objects, ~60 s for 100k users). Rule names are stable: they are the
keys of the report metadata and the `rule` column of the quarantine.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from ctr_dagster import schemas

#: Tables that have a suite, and the strict schema their clean rows must conform to.
STRICT_SCHEMAS: dict[str, Any] = {
    "raw_items": schemas.ITEMS,
    "raw_users": schemas.USERS,
    "raw_item_attributes": schemas.ITEM_ATTRIBUTES,
    "raw_impressions": schemas.IMPRESSIONS,
    "clean_impressions": schemas.IMPRESSIONS,
}

_NOT_NULL = "ExpectColumnValuesToNotBeNull"
_UNIQUE = "ExpectColumnValuesToBeUnique"
_BETWEEN = "ExpectColumnValuesToBeBetween"
_IN_SET = "ExpectColumnValuesToBeInSet"
_A_GE_B = "ExpectColumnPairValuesAToBeGreaterThanB"


@dataclass(frozen=True)
class Rule:
    """One named check. `message` is a `str.format` template over the failing row's values."""

    name: str
    column: str
    message: str
    expectation: str | None = None  # Great Expectations class name (in great_expectations.expectations)
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    custom: str | None = None  # an Arrow check of the engine, when GE is unfit
    keep_first: bool = False  # uniqueness: the first occurrence is not a failure

    def view_columns(self) -> list[str]:
        """Columns of the validation view this rule reads."""
        return [self.kwargs[k] for k in ("column", "column_A", "column_B") if k in self.kwargs]


def not_null(column: str) -> Rule:
    return Rule(f"{column}_not_null", column, f"{column} is null", _NOT_NULL, {"column": column})


def unique(column: str) -> Rule:
    return Rule(
        f"{column}_unique",
        column,
        f"{column} {{{column}!r}} repeats {{_first_row}}",  # "row 3" or "<file> row 3" (see quarantine)
        _UNIQUE,
        {"column": column},
        keep_first=True,
    )


def binary(column: str) -> Rule:
    return Rule(
        f"{column}_binary",
        column,
        f"{column} {{{column}}} is not 0 or 1",
        _IN_SET,
        {"column": column, "value_set": [0, 1]},
    )


def known(column: str, reference: str) -> Rule:
    return Rule(
        f"{column}_known",
        column,
        f"{column} {{{column}!r}} is not in {reference}",
        custom="known",
        kwargs={"reference": reference, "reference_column": column},
    )


def required(schema) -> list[Rule]:
    return [not_null(f.name) for f in schema if not f.nullable]


def day_bounds_ms(partition: str) -> tuple[int, int]:
    """[00:00, next day 00:00) of a YYYY-MM-DD partition, in UTC epoch milliseconds."""
    start = datetime.combine(date.fromisoformat(partition), datetime.min.time(), tzinfo=UTC)
    end = start + timedelta(days=1)
    return int(start.timestamp() * 1000), int(end.timestamp() * 1000)


def impressions_rules(partition: str | None, *, users: bool, items: bool) -> list[Rule]:
    """Impressions: required columns, unique ids, value domains, chain order, day, references."""
    rules = required(schemas.IMPRESSIONS)
    rules += [
        unique("impression_id"),
        Rule(
            "position_positive",
            "position",
            "position {position} is below 1",
            _BETWEEN,
            {"column": "position", "min_value": 1},
        ),
        Rule(  # the coupon arm: 0 = control, 1.. = coupon arms (the synthetic world has 1..3)
            "treatment_arm",
            "treatment",
            "treatment {treatment} is below 0 (0 = control, > 0 = a coupon arm)",
            _BETWEEN,
            {"column": "treatment", "min_value": 0},
        ),
        binary("click"),
        binary("conversion"),
        Rule(
            "conversion_implies_click",
            "conversion",
            "conversion {conversion} without a click (click {click})",
            _A_GE_B,
            {
                "column_A": "click",
                "column_B": "conversion",
                "or_equal": True,
                "ignore_row_if": "either_value_is_missing",
            },
        ),
    ]
    if partition is not None:
        lo, hi = day_bounds_ms(partition)
        rules.append(
            Rule(
                "ts_in_partition",
                "ts",
                f"ts {{ts}} is outside the UTC day {partition}",
                _BETWEEN,
                {"column": "ts", "min_value": lo, "max_value": hi, "strict_max": True},
            )
        )
    if users:
        rules.append(known("user_id", "users"))
    if items:
        rules.append(known("item_id", "items"))
        rules.append(
            Rule(
                "item_not_yet_listed",
                "item_id",
                "item {item_id!r} shown at {ts} before its first_seen {_first_seen}",
                _A_GE_B,
                {
                    "column_A": "ts",
                    "column_B": "_item_first_seen",
                    "or_equal": True,
                    "ignore_row_if": "either_value_is_missing",
                },
            )
        )
    return rules


def items_rules() -> list[Rule]:
    return required(schemas.ITEMS) + [
        unique("item_id"),
        Rule(
            "price_non_negative",
            "price",
            "price {price} is negative",
            _BETWEEN,
            {"column": "price", "min_value": 0},
        ),
    ]


def users_rules() -> list[Rule]:
    return required(schemas.USERS) + [
        unique("user_id"),
        Rule(
            "age_group_in_range",
            "age_group",
            "age_group {age_group} is not in 0..5",
            _BETWEEN,
            {"column": "age_group", "min_value": 0, "max_value": 5},
        ),
    ]


def item_attributes_rules(*, items: bool) -> list[Rule]:
    rules = required(schemas.ITEM_ATTRIBUTES)
    if items:
        rules.append(known("item_id", "items"))
    return rules


def rules_for(table_name: str, partition: str | None, context: Mapping[str, Any]) -> list[Rule]:
    """The suite of `table_name`; reference rules only where the reference table is given."""
    if table_name in ("raw_impressions", "clean_impressions"):
        return impressions_rules(partition, users="users" in context, items="items" in context)
    if table_name == "raw_items":
        return items_rules()
    if table_name == "raw_users":
        return users_rules()
    if table_name == "raw_item_attributes":
        return item_attributes_rules(items="items" in context)
    raise ValueError(f"no quality suite for table {table_name!r}; known: {sorted(STRICT_SCHEMAS)}")
