"""Real data -> canonical tables: the user's CSV / Parquet files described by a YAML mapping.

    mapping = load_mapping("mapping.yaml")            # validated; errors name the bad key
    for part in iter_impressions(mapping, "2024-01-01"):
        part.batch, part.quarantine                   # RAW_IMPRESSIONS rows, QUARANTINE rows
    items, rejected = read_catalogue(mapping, "items")
    scan_days(mapping, path)                          # {"2024-01-01", ...}
    read_mave("products.jsonl")                       # MAVE-style attribute JSONL -> items + attributes (+ negatives)
    read_taxonomy("values.csv")                       # a published attribute-value list (CSV/TSV/JSONL/MAVE)

See `examples/mapping.example.yaml` for every key. Streaming and vectorized (pyarrow); files that are
unusable as a whole raise `ctr_dagster.errors.MalformedInputError` naming file, row and column.
"""

from __future__ import annotations

from ctr_dagster.errors import MalformedInputError
from ctr_dagster.importers.generic import (
    ImportBatch,
    iter_impressions,
    read_attribute_taxonomy,
    read_catalogue,
    scan_days,
)
from ctr_dagster.importers.mapping import (
    CANONICAL,
    CsvOptions,
    ImportMapping,
    MappingError,
    TableMapping,
    TimeSpec,
    load_mapping,
    parse_mapping,
)
from ctr_dagster.importers.mave import MaveImport, read_mave
from ctr_dagster.importers.taxonomy import TaxonomyImport, read_taxonomy

__all__ = [
    "CANONICAL",
    "CsvOptions",
    "ImportBatch",
    "ImportMapping",
    "MalformedInputError",
    "MappingError",
    "MaveImport",
    "TableMapping",
    "TaxonomyImport",
    "TimeSpec",
    "iter_impressions",
    "load_mapping",
    "parse_mapping",
    "read_attribute_taxonomy",
    "read_mave",
    "read_catalogue",
    "read_taxonomy",
    "scan_days",
]
