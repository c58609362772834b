"""Where raw data comes from: the synthetic marketplace (default) or the user's own files.

One small interface so the assets never care which: `catalogue()` returns the item/user tables and
`day(partition)` streams one day of raw impressions. Selected by environment (read when the code
location loads, because the daily partitions depend on it):

- ``CTR_SOURCE``: ``synthetic`` (default) or ``import``;
- ``CTR_PROFILE``: synthetic profile ``tiny`` | ``small`` (default) | ``large``; ``CTR_SEED`` (default 7);
- ``CTR_SIGNALS``: planted-signal strengths, e.g. ``sequence=0,temporal=0.5`` (ablations; default all 1);
- ``CTR_MAPPING``: path of the import mapping YAML (see ``examples/mapping.example.yaml``).
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pyarrow is imported where tables are made, not when the code location loads
    import pyarrow as pa

SOURCES = ("synthetic", "import")


@dataclass(frozen=True)
class Catalogue:
    items: pa.Table
    item_attributes: pa.Table
    users: pa.Table
    oracle_item_attributes: pa.Table
    quarantine: pa.Table
    origin: str


@dataclass(frozen=True)
class DayBatch:
    """A slice of one day's raw impressions (RAW_IMPRESSIONS) and the rows that failed to parse."""

    impressions: pa.Table
    oracle: pa.Table
    quarantine: pa.Table
    origin: str
    #: source_file / source_row of each impression (imported data only): lets the quality gate name
    #: the user's own file and row for rows it quarantines.
    provenance: pa.Table | None = None


@dataclass(frozen=True)
class SourceSettings:
    kind: str = "synthetic"
    profile: str = "small"
    seed: int = 7
    mapping_path: Path | None = None
    signals: str = ""  # "name=value,..." overrides of datagen.Signals

    @classmethod
    def from_env(cls) -> SourceSettings:
        kind = os.environ.get("CTR_SOURCE", "synthetic")
        mapping = os.environ.get("CTR_MAPPING")
        settings = cls(
            kind=kind,
            profile=os.environ.get("CTR_PROFILE", "small"),
            seed=int(os.environ.get("CTR_SEED", "7")),
            signals=os.environ.get("CTR_SIGNALS", ""),
            mapping_path=Path(mapping).resolve() if mapping else None,
        )
        settings.validate()
        return settings

    def validate(self) -> None:
        if self.kind not in SOURCES:
            raise ValueError(f"CTR_SOURCE must be one of {SOURCES}, got {self.kind!r}")
        if self.kind == "import" and self.mapping_path is None:
            raise ValueError("CTR_SOURCE=import needs CTR_MAPPING=<path to mapping YAML>")
        if self.kind == "synthetic":
            from ctr_dagster.datagen import PROFILES

            if self.profile not in PROFILES:
                raise ValueError(f"CTR_PROFILE must be one of {sorted(PROFILES)}, got {self.profile!r}")
            self.world_config()  # parses CTR_SIGNALS: a typo fails at load, naming the knob

    # -- partitions --------------------------------------------------------------------------
    def partition_window(self) -> tuple[str, str | None]:
        """(first day, end day exclusive or None = open-ended up to today) of the daily partitions."""
        if self.kind == "synthetic":
            config = self.world_config()
            start = dt.date.fromisoformat(str(config.start_date))
            return start.isoformat(), (start + dt.timedelta(days=config.n_days)).isoformat()
        return str(self.mapping().start_date), None

    # -- synthetic ---------------------------------------------------------------------------
    def world_config(self):
        from ctr_dagster.datagen import profile

        if not self.signals:
            return profile(self.profile, seed=self.seed)
        return profile(self.profile, seed=self.seed, signals=parse_signals(self.signals))

    def world(self):
        from ctr_dagster.datagen import build_world

        return build_world(self.world_config())

    # -- import ------------------------------------------------------------------------------
    def mapping(self):
        from ctr_dagster.importers import load_mapping

        assert self.mapping_path is not None
        return load_mapping(self.mapping_path)

    def import_index_path(self) -> Path:
        """Where the file -> days index of the import source lives (see importers.day_index)."""
        from ctr_dagster.settings import ctr_home

        return ctr_home() / "import_index.json"

    def import_staging_path(self) -> Path:
        """Per-day shards of each imported file, parsed once (see importers.staging)."""
        from ctr_dagster.settings import ctr_home

        return ctr_home() / "import_staging"

    # -- the interface the assets use ----------------------------------------------------------
    def catalogue(self) -> Catalogue:
        import pyarrow as pa

        from ctr_dagster import schemas

        if self.kind == "synthetic":
            world = self.world()
            return Catalogue(
                items=world.items(),
                item_attributes=world.item_attributes(),
                users=world.users(),
                oracle_item_attributes=world.oracle_item_attributes(),
                quarantine=schemas.empty(schemas.QUARANTINE),
                origin=f"synthetic profile={self.profile} seed={self.seed}",
            )
        from ctr_dagster.importers import read_catalogue

        mapping = self.mapping()
        tables, rejected = {}, []
        for name in ("items", "item_attributes", "users"):
            tables[name], quarantine = read_catalogue(mapping, name)
            rejected.append(quarantine)
        return Catalogue(
            items=tables["items"],
            item_attributes=tables["item_attributes"],
            users=tables["users"],
            oracle_item_attributes=schemas.empty(schemas.ORACLE_ITEM_ATTRIBUTES),
            quarantine=pa.concat_tables(rejected),
            origin=f"import mapping={self.mapping_path}",
        )

    def attribute_taxonomy(self):
        """(attribute, value) pairs the marketplace's taxonomy allows, or None when the source has none.

        The synthetic world publishes its value vocabulary (every value any category may use, incl.
        values no listed item has in the structured catalogue yet): the candidate set a zero-shot
        extractor ranks, as MAVE's attribute-value schema is. It says nothing about which item has
        which value. Imported data has no taxonomy file yet: extractors see the catalogue's values.
        """
        if self.kind != "synthetic":
            return None
        import pyarrow as pa

        from ctr_dagster.datagen.vocab import ATTRIBUTES, all_values

        pairs = [(a, v) for a in ATTRIBUTES for v in all_values(a)]
        return pa.table(
            {"attribute": pa.array([a for a, _ in pairs]), "value": pa.array([v for _, v in pairs])}
        )

    def day(self, partition: str) -> Iterator[DayBatch]:
        from ctr_dagster import schemas

        if self.kind == "synthetic":
            data = self.world().day(partition)
            yield DayBatch(data.impressions, data.oracle, schemas.empty(schemas.QUARANTINE), "synthetic")
            return
        from ctr_dagster.importers.staging import files_for_day, read_day

        for file, staged in files_for_day(self.mapping(), partition, self.import_staging_path()):
            data, quarantine, provenance = read_day(staged, partition)
            oracle = schemas.empty(schemas.ORACLE_IMPRESSIONS)
            yield DayBatch(data, oracle, quarantine, f"import {file}", provenance)


def parse_signals(text: str):
    """``"sequence=0,temporal=0.5"`` -> `Signals` with those knobs changed (others at 1.0)."""
    import dataclasses

    from ctr_dagster.datagen import Signals

    known = {f.name for f in dataclasses.fields(Signals)}
    values: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        name = name.strip()
        if not sep or name not in known:
            raise ValueError(
                f"CTR_SIGNALS: bad item {part!r}; expected name=value with name in {sorted(known)}"
            )
        try:
            values[name] = float(value)
        except ValueError as exc:
            raise ValueError(f"CTR_SIGNALS: {name}={value!r} is not a number") from exc
    return Signals(**values)
