"""Where raw data comes from: the synthetic marketplace (default) or the user's own files.

One small interface so the assets never care which: `catalogue()` returns the item/user tables and
`day(partition)` streams one day of raw impressions. Which source, profile, seed, signals and mapping
come from a `ctr_dagster.settings.Settings` (`Source(settings)`); the daily partitions follow from
it (`partition_window`), which is why the code location is built for one `Settings`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ctr_dagster.settings import Settings, parse_signals

if TYPE_CHECKING:  # pyarrow is imported where tables are made, not when the code location loads
    import pyarrow as pa


@dataclass(frozen=True)
class Catalogue:
    items: pa.Table
    item_attributes: pa.Table
    users: pa.Table
    oracle_item_attributes: pa.Table
    #: the published attribute-value vocabulary (ATTRIBUTE_TAXONOMY; empty when the source has none)
    attribute_taxonomy: pa.Table
    quarantine: pa.Table
    origin: str
    #: (table, file, problem) of every bad catalogue file left out (the table's other files import)
    skipped_files: tuple[tuple[str, str, str], ...] = ()
    #: (item, attribute) pairs known absent (ATTRIBUTE_NEGATIVES: MAVE's attributes with no evidence);
    #: None is read as empty (the synthetic world and imports without MAVE negatives have none)
    attribute_negatives: pa.Table | None = None
    #: precomputed item vectors that came with the data (`raw_item_vectors`, `schemas.vector_table`:
    #: e.g. MMCTR's item_emb_d128, from a `format: microlens` table); None: the source has none
    item_vectors: pa.Table | None = None

    def __post_init__(self) -> None:
        if self.attribute_negatives is None:
            from ctr_dagster import schemas

            object.__setattr__(self, "attribute_negatives", schemas.empty(schemas.ATTRIBUTE_NEGATIVES))


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
class Source:
    """The raw data of one `Settings`: the synthetic world or the user's files."""

    settings: Settings

    @property
    def kind(self) -> str:
        return self.settings.source

    # -- partitions --------------------------------------------------------------------------
    def partition_window(self) -> tuple[str, str | None]:
        """(first day, end day exclusive or None = open-ended up to today) of the daily partitions."""
        if self.kind == "synthetic":
            config = self.world_config()
            start = dt.date.fromisoformat(str(config.start_date))
            return start.isoformat(), (start + dt.timedelta(days=config.n_days)).isoformat()
        from ctr_dagster.errors import MalformedInputError
        from ctr_dagster.importers import MappingError

        try:
            plan = self.import_plan()
        except (MappingError, MalformedInputError):
            plan = None  # an empty inbox (or no usable file yet) must not stop the code location loading;
            # the import itself (`ctr run`, a raw_day run) reports the error
        if plan is None or plan.first is None:  # no data yet: one placeholder day so the definitions load
            yesterday = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)  # today is not complete yet
            first = str(self.mapping().start_date or yesterday)
            return first, (dt.date.fromisoformat(first) + dt.timedelta(days=1)).isoformat()
        return plan.first, (dt.date.fromisoformat(plan.last) + dt.timedelta(days=1)).isoformat()

    def import_plan(self):
        """The imported files' days, out-of-range rows and skipped files (`importers.staging.ImportPlan`).

        The daily partitions of imported data run from the first to the last day the data holds,
        not a calendar from a start date to today. Staging parses each file once; later calls
        only read the staging markers.
        """
        from ctr_dagster.importers.staging import plan_import

        return plan_import(self.mapping(), self.settings.ctr_home.import_staging)

    # -- synthetic ---------------------------------------------------------------------------
    def world_config(self):
        from ctr_dagster.datagen import profile

        s = self.settings
        if not s.signals:
            return profile(s.profile, seed=s.seed)
        return profile(s.profile, seed=s.seed, signals=parse_signals(s.signals))

    def world(self):
        from ctr_dagster.datagen import build_world

        return build_world(self.world_config())

    # -- import ------------------------------------------------------------------------------
    def mapping(self):
        from ctr_dagster.importers import load_mapping

        if self.settings.mapping is None:
            raise ValueError("the import source needs a mapping YAML (CTR_MAPPING)")
        return load_mapping(self.settings.mapping)

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
                origin=self.settings.label,
                attribute_taxonomy=self.attribute_taxonomy(),
                attribute_negatives=schemas.empty(schemas.ATTRIBUTE_NEGATIVES),
            )
        from ctr_dagster.importers import read_attribute_taxonomy, read_catalogue

        mapping = self.mapping()
        tables, rejected, skipped = {}, [], []
        negatives = schemas.empty(schemas.ATTRIBUTE_NEGATIVES)
        vectors = None  # precomputed item vectors: the items' (format microlens), else item_attributes'
        cache: dict = {}  # items and item_attributes from the same MAVE / MicroLens files: read once
        for name in ("items", "item_attributes", "users"):
            if name == "item_attributes" and name not in mapping.tables:  # optional: none known
                tables[name] = schemas.empty(schemas.ITEM_ATTRIBUTES)
                continue
            result = read_catalogue(mapping, name, cache=cache)
            tables[name], quarantine = result
            rejected.append(quarantine)
            skipped += [(name, file, problem) for file, problem in result.skipped]
            if name == "item_attributes":
                negatives = result.negatives
            if vectors is None and result.vectors is not None:
                vectors = result.vectors
        del cache
        taxonomy = read_attribute_taxonomy(mapping)
        rejected.append(taxonomy[1])
        skipped += [("attribute_taxonomy", file, problem) for file, problem in taxonomy.skipped]
        return Catalogue(
            items=tables["items"],
            item_attributes=tables["item_attributes"],
            users=tables["users"],
            oracle_item_attributes=schemas.empty(schemas.ORACLE_ITEM_ATTRIBUTES),
            quarantine=pa.concat_tables(rejected),
            origin=self.settings.label,
            attribute_taxonomy=taxonomy[0],
            skipped_files=tuple(skipped),
            attribute_negatives=negatives,
            item_vectors=vectors,
        )

    def attribute_taxonomy(self) -> pa.Table:
        """(attribute, value) pairs the marketplace's taxonomy allows (empty when the source has none).

        The synthetic world publishes its value vocabulary (every value any category may use, incl.
        values no listed item has in the structured catalogue yet): the candidate set a zero-shot
        extractor ranks, as MAVE's attribute-value schema is. It says nothing about which item has
        which value. Imported data has one when the mapping names it (`attribute_taxonomy`: CSV / TSV /
        JSONL value lists or a MAVE file, `importers.taxonomy`); without it, an empty table, and
        extractors see the catalogue's values.
        """
        import pyarrow as pa

        from ctr_dagster import schemas

        if self.kind != "synthetic":
            from ctr_dagster.importers import read_attribute_taxonomy

            return read_attribute_taxonomy(self.mapping())[0]
        from ctr_dagster.datagen.vocab import ATTRIBUTES, all_values

        pairs = [(a, v) for a in ATTRIBUTES for v in all_values(a)]
        return pa.table(
            {"attribute": pa.array([a for a, _ in pairs]), "value": pa.array([v for _, v in pairs])},
            schema=schemas.ATTRIBUTE_TAXONOMY,
        )

    def day(self, partition: str) -> Iterator[DayBatch]:
        from ctr_dagster import schemas

        if self.kind == "synthetic":
            data = self.world().day(partition)
            yield DayBatch(data.impressions, data.oracle, schemas.empty(schemas.QUARANTINE), "synthetic")
            return
        from ctr_dagster.importers.staging import files_for_day, read_day

        for file, staged in files_for_day(self.mapping(), partition, self.settings.ctr_home.import_staging):
            data, quarantine, provenance = read_day(staged, partition)
            oracle = schemas.empty(schemas.ORACLE_IMPRESSIONS)
            yield DayBatch(data, oracle, quarantine, f"import {file}", provenance)
