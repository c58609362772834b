"""Nightly: keep the attribute table while the catalogue has not changed (issue 22).

Why: attribute extraction is a catalogue concern. Between two refreshes a new day of logs only adds
co-views to HyperPAVE's hypergraph, yet refitting every extractor cost the nightly run as much as a
model. So, like the models' warm start, the nightly keeps the table for `refresh_every_days` days of
data after the last fit, provided the fit would compute from the same catalogue tables, launchpad
config, extractor and engine code and library versions (`catalogue_key`); a changed catalogue, a
changed config or code, or the cadence coming due refits. ``refresh_every_days < 1`` refits every time
(the default outside the nightly job: *Materialize all* and ``ctr demo`` always refit).

The record (``fit.json`` in the stage's report folder) holds the key, the data day and what the UI
showed after that fit, so a kept table keeps its scores and tables in the asset's metadata.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ctr_dagster import atomic, reproducibility
from ctr_dagster.warehouse import Warehouse

FIT_RECORD = "fit.json"
#: The tables an extraction reads besides the interaction log (whose new days the cadence covers).
CATALOGUE_TABLES: tuple[str, ...] = (
    "raw_items",
    "raw_item_attributes",
    "raw_attribute_taxonomy",
    "raw_attribute_negatives",
    "oracle_item_attributes",
)
INTERACTIONS_TABLE = "training_dataset"


def _table_sha256(warehouse: Warehouse, table: str) -> str | None:
    """The table's content hash (`Warehouse.table_sha256`; "absent" when it was never
    materialized); None if unreadable."""
    if not warehouse.exists(table):
        return "absent"
    try:
        return warehouse.table_sha256(table)
    except OSError:
        return None


def catalogue_key(warehouse: Warehouse, config: dict[str, Any], extractor_classes: list[type]) -> str | None:
    """What a fit computes from, except the interaction log's new days: the catalogue tables, the
    stage's config (without its cadence), each extractor's package code, the engine's code and the
    library versions. None when a table cannot be fingerprinted (then: refit)."""
    tables = {table: _table_sha256(warehouse, table) for table in CATALOGUE_TABLES}
    if any(sha is None for sha in tables.values()):
        return None
    document = {
        "tables": tables,
        "config": {k: v for k, v in config.items() if k != "refresh_every_days"},
        "extractors": {
            f"{cls.__module__}.{cls.__qualname__}": reproducibility.code_sha256(cls)[0]
            for cls in extractor_classes
        },
        "engine": reproducibility.code_sha256(Warehouse)[0],  # the whole ctr_dagster package
        "libraries": reproducibility.library_versions(),
    }
    return hashlib.sha256(json.dumps(document, sort_keys=True, default=str).encode()).hexdigest()


def data_day(warehouse: Warehouse) -> str | None:
    """The interaction log's last day (UTC, ISO) as the training dataset holds it; None without one."""
    if not warehouse.exists(INTERACTIONS_TABLE):
        return None
    import pyarrow.compute as pc

    last = pc.max(warehouse.read(INTERACTIONS_TABLE, columns=["ts"]).column("ts")).as_py()
    return last.date().isoformat() if last is not None else None


@dataclass(frozen=True)
class Refresh:
    """Whether to keep the last table (`keep`), why, and the record of the fit it came from."""

    keep: bool
    reason: str
    previous: dict[str, Any] | None = None


def read_record(folder: Path) -> dict[str, Any] | None:
    path = folder / FIT_RECORD
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def plan_refresh(folder: Path, key: str | None, day: str | None, every_days: int, keepable: bool) -> Refresh:
    """Keep the table of the last fit when nothing but `< every_days` days of logs changed since.
    `keepable`: the caller has a table to keep and nothing it must refit for (a broken extractor to
    report)."""
    if every_days < 1:
        return Refresh(False, f"refit: refresh_every_days={every_days} (refit every run)")
    previous = read_record(folder)
    if previous is None or not keepable:
        return Refresh(False, "refit: no previous table to keep (or a broken extractor to report)")
    if key is None or previous.get("key") != key:
        return Refresh(False, "refit: the catalogue, the config or the code changed since the last fit")
    if not day or not previous.get("data_day"):
        return Refresh(False, "refit: the data day is unknown")
    age = (dt.date.fromisoformat(day) - dt.date.fromisoformat(previous["data_day"])).days
    if age < 0 or age >= every_days:
        return Refresh(
            False,
            f"refit: {age} day(s) of logs since the last fit ({previous['data_day']}), cadence {every_days}",
        )
    return Refresh(
        True,
        f"kept the fit of {previous['data_day']}: same catalogue, config and code; {age} day(s) of new "
        f"logs (< refresh_every_days={every_days}), the co-view graph is refreshed at the cadence",
        previous,
    )


def record_fit(folder: Path, key: str | None, day: str | None, shown: dict[str, Any]) -> None:
    """Record a fit: its key, data day and what the asset showed (markdown texts, numbers)."""
    folder.mkdir(parents=True, exist_ok=True)
    atomic.write_json(
        folder / FIT_RECORD, {"key": key, "data_day": day, "shown": shown}, indent=2, default=str
    )
