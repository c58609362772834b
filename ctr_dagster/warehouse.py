"""Parquet files as the record, DuckDB (in memory) as the query engine.

Layout: ``<root>/<table>/data.parquet`` for whole tables and
``<root>/<table>/dt=YYYY-MM-DD/data.parquet`` for daily partitions. Every write goes to a temporary
file in the same folder and is renamed over the target (atomic on POSIX), so a reader sees the old
or the new file, never half of one, and re-materializing a partition replaces it (idempotent).
No DuckDB database file exists: each query opens its own in-memory connection, so parallel Dagster
steps never fight over a lock.
"""

from __future__ import annotations

import os
import re
import tempfile
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

_TABLE_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_PARTITION = re.compile(r"^\d{4}-\d{2}-\d{2}$")
FILE_NAME = "data.parquet"


@dataclass(frozen=True)
class Warehouse:
    """The tables under `root` (in a project: `Home.warehouse`, handed out by the warehouse resource)."""

    root: Path

    # -- paths ---------------------------------------------------------------------------------
    def table_dir(self, table: str) -> Path:
        if not _TABLE_NAME.match(table):
            raise ValueError(f"invalid table name {table!r}: use [a-z][a-z0-9_]*")
        return self.root / table

    def path(self, table: str, partition: str | None = None) -> Path:
        base = self.table_dir(table)
        if partition is None:
            return base / FILE_NAME
        if not _PARTITION.match(partition):
            raise ValueError(f"invalid daily partition {partition!r}: expected YYYY-MM-DD")
        return base / f"dt={partition}" / FILE_NAME

    def partitions(self, table: str) -> list[str]:
        base = self.table_dir(table)
        if not base.exists():
            return []
        found = [p.name[3:] for p in base.glob("dt=*") if (p / FILE_NAME).exists()]
        return sorted(found)

    def exists(self, table: str, partition: str | None = None) -> bool:
        return self.path(table, partition).exists()

    # -- write ---------------------------------------------------------------------------------
    def num_rows(self, table: str, partition: str | None = None) -> int:
        """Rows of a table (partition) from the Parquet footer, no data read; 0 when absent."""
        path = self.path(table, partition)
        return pq.ParquetFile(path).metadata.num_rows if path.exists() else 0

    def write(self, table: str, data: pa.Table, partition: str | None = None) -> Path:
        """Atomically write (or replace) one table or partition; returns the file path."""
        target = self.path(table, partition)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".parquet", dir=target.parent)
        os.close(fd)
        try:
            pq.write_table(data, tmp, compression="zstd", row_group_size=256_000)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return target

    def write_batches(
        self, table: str, schema: pa.Schema, batches: Iterable[pa.RecordBatch], partition: str | None = None
    ) -> tuple[Path, int]:
        """Stream record batches into one file atomically (bounded memory); returns (path, rows)."""
        target = self.path(table, partition)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.parent / f".tmp-{uuid.uuid4().hex}.parquet"
        rows = 0
        try:
            with pq.ParquetWriter(tmp, schema, compression="zstd") as writer:
                for batch in batches:
                    writer.write_batch(batch)
                    rows += batch.num_rows
            os.replace(tmp, target)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return target, rows

    # -- read ----------------------------------------------------------------------------------
    def read(
        self, table: str, partitions: Sequence[str] | None = None, columns: Sequence[str] | None = None
    ) -> pa.Table:
        """Read a whole table, or the given daily partitions (concatenated, in the given order)."""
        if partitions is None and not self.partitions(table):
            path = self.path(table)
            if not path.exists():
                raise FileNotFoundError(f"table {table!r} has not been materialized ({path})")
            return pq.read_table(path, columns=columns)
        parts = list(partitions) if partitions is not None else self.partitions(table)
        missing = [p for p in parts if not self.exists(table, p)]
        if missing:
            raise FileNotFoundError(f"table {table!r} is missing partition(s) {missing}")
        tables = [pq.read_table(self.path(table, p), columns=columns) for p in parts]
        if not tables:
            raise FileNotFoundError(f"table {table!r} has no partitions")
        return pa.concat_tables(tables)

    def files(self, table: str, partitions: Sequence[str] | None = None) -> list[str]:
        if partitions is None and not self.partitions(table):
            return [str(self.path(table))]
        parts = partitions if partitions is not None else self.partitions(table)
        return [str(self.path(table, p)) for p in parts]

    def query(self, sql: str, params: Sequence[object] | None = None, **tables: Sequence[str]) -> pa.Table:
        """Run parameterized SQL over Parquet files in a private in-memory DuckDB connection.

        Each keyword names a view and gives its files, e.g.
        ``wh.query("select count(*) from imp where click = ?", [1], imp=wh.files("clean_impressions"))``.
        """
        import duckdb

        con = duckdb.connect(":memory:")
        try:
            for view, files in tables.items():
                if not _TABLE_NAME.match(view):
                    raise ValueError(f"invalid view name {view!r}")
                rel = con.read_parquet(list(files))
                rel.create_view(view)
            return con.sql(sql, params=list(params or [])).to_arrow_table()
        finally:
            con.close()
