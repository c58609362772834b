"""Small helpers that turn engine results into Dagster metadata (the only Dagster-aware formatting)."""

from collections.abc import Mapping, Sequence

import dagster as dg

from ctr_dagster.column_docs import COLUMN_DOCS


def markdown_table(rows: Sequence[Mapping[str, object]], columns: Sequence[str] | None = None) -> str:
    if not rows:
        return "_(none)_"
    columns = list(columns or rows[0].keys())
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        cells = [str(row.get(c, "")).replace("|", "\\|").replace("\n", " ") for c in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def table_summary(table, path: str | None = None) -> dict[str, dg.MetadataValue]:
    """Row count, schema and (where known) the Parquet file: on every asset."""
    meta: dict[str, dg.MetadataValue] = {
        "dagster/row_count": dg.MetadataValue.int(table.num_rows),
        "dagster/column_schema": dg.TableSchema(
            columns=[
                dg.TableColumn(f.name, str(f.type), description=COLUMN_DOCS.get(f.name)) for f in table.schema
            ]
        ),
    }
    if path:
        meta["path"] = dg.MetadataValue.path(path)
    return meta


def numbers(values: Mapping[str, float | int]) -> dict[str, dg.MetadataValue]:
    return {
        k: dg.MetadataValue.int(v) if isinstance(v, int) else dg.MetadataValue.float(float(v))
        for k, v in values.items()
    }
