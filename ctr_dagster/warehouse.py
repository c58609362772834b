"""Parquet files as the record, DuckDB (in memory) as the query engine.

Layout: ``<root>/<table>/data.parquet`` for whole tables and
``<root>/<table>/dt=YYYY-MM-DD/data.parquet`` for daily partitions. Every write goes to a temporary
file in the same folder and is renamed over the target (atomic on POSIX), so a reader sees the old
or the new file, never half of one, and re-materializing a partition replaces it (idempotent).
No DuckDB database file exists: each query opens its own in-memory connection, so parallel Dagster
steps never fight over a lock.

The root may also be an object-store URI, ``s3://bucket/prefix`` (`ObjectStoreWarehouse`, returned by
``Warehouse("s3://...")``), where rename is not atomic: each write uploads a uniquely named object and
then replaces a small pointer object naming it (one PUT, atomic), so readers see the old table or the
new one; a write that fails leaves the pointer, hence the previous version, in place.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import re
import tempfile
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from ctr_dagster.settings import OBJECT_SCHEMES as OBJECT_SCHEMES  # re-exported: declared once, in settings
from ctr_dagster.settings import is_object_uri

_TABLE_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_PARTITION = re.compile(r"^\d{4}-\d{2}-\d{2}$")
FILE_NAME = "data.parquet"


@dataclass(frozen=True)
class Warehouse:
    """The tables under `root` (in a project: `Home.warehouse`, handed out by the warehouse resource).

    ``Warehouse("s3://bucket/prefix")`` gives an `ObjectStoreWarehouse` (same methods, see there).
    `lock_dir`: where the write locks of read-modify-write tables (the vocabularies) live; None: beside
    the tables (``<root>/<table>.lock``).
    """

    root: Path
    lock_dir: Path | None = None

    def __new__(cls, *args, **kwargs):
        root = args[0] if args else kwargs.get("root")
        if cls is Warehouse and is_object_uri(root):
            cls = ObjectStoreWarehouse
        return super().__new__(cls)

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

    def tables(self, prefix: str = "") -> list[str]:
        """Names of the tables whose name starts with `prefix` (e.g. every ``predictions_*``)."""
        if not self.root.is_dir():
            return []
        return sorted(
            p.name for p in self.root.glob(f"{prefix}*") if p.is_dir() and _TABLE_NAME.match(p.name)
        )

    def lock_path(self, table: str) -> Path:
        """The local file to `ctr_dagster.locks.exclusive` on while reading, changing and writing
        `table` (`lock_dir`, else beside the table's folder)."""
        if self.lock_dir is None:
            return self.table_dir(table).with_suffix(".lock")
        self.table_dir(table)  # validates the name
        return Path(self.lock_dir) / f"{table}.lock"

    # -- content -------------------------------------------------------------------------------
    def content_sha256(self, table: str, partition: str | None = None) -> str:
        """sha256 of the table's (partition's) current Parquet bytes: the dataset hash that records,
        statuses and the evaluation compare (FileNotFoundError when absent)."""
        digest = hashlib.sha256()
        with open(self.path(table, partition), "rb") as fh:
            while block := fh.read(1 << 20):
                digest.update(block)
        return digest.hexdigest()

    def table_sha256(self, table: str) -> str | None:
        """One hash over the contents of the whole table (each partition's `content_sha256`, or the
        unpartitioned file's): what a step computed from; None when a file is missing."""
        digest = hashlib.sha256()
        parts = [(table, partition) for partition in self.partitions(table) or [None]]
        return digest.hexdigest() if self.hash_contents(digest, parts) else None

    def hash_contents(self, digest: Any, parts: list[tuple[str, str | None]]) -> bool:
        """Feed each (table, partition)'s `content_sha256` into `digest`, in order; False (digest
        incomplete) when one is missing. The fingerprints of the steps' inputs are built from it."""
        for table, partition in parts:
            try:
                sha = self.content_sha256(table, partition)
            except FileNotFoundError:
                return False
            digest.update(FILE_NAME.encode())  # the local file's name, as these hashes always included it
            digest.update(sha.encode())
        return True

    def read_schema(self, table: str, partition: str | None = None) -> pa.Schema:
        """The table's (partition's) schema with its metadata, from the Parquet footer."""
        return pq.read_schema(self.path(table, partition))

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


# -- object storage -----------------------------------------------------------------------------
POINTER_NAME = "_current.json"  # leading underscore: dataset readers that list a folder skip it
_DATA_PREFIX = "data-"


class _HashingSink:
    """A write-only file object passing every byte on to `stream` and hashing it on the way, so an
    upload's sha256 is known when it ends without reading the object back. `close` closes `stream`
    (which completes the upload)."""

    def __init__(self, stream) -> None:
        self._stream = stream
        self._digest = hashlib.sha256()
        self._position = 0
        self.closed = False

    def write(self, data) -> int:
        view = memoryview(data).cast("B")
        self._digest.update(view)
        self._stream.write(data)
        self._position += view.nbytes
        return view.nbytes

    def tell(self) -> int:
        return self._position

    def flush(self) -> None:
        pass

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._stream.close()

    def hexdigest(self) -> str:
        return self._digest.hexdigest()


def s3_filesystem(query: str = "", environ: dict[str, str] | None = None):
    """A `pyarrow.fs.S3FileSystem` configured like the AWS tools: credentials from the usual chain
    (``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` / ``AWS_SESSION_TOKEN``, profile, instance role),
    region from ``AWS_REGION`` / ``AWS_DEFAULT_REGION``, and an S3-compatible server (MinIO, Ceph,
    a test server) from ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL``. Options in the root URI's
    query string (``?endpoint_override=host:port&scheme=http``) win over the environment."""
    from urllib.parse import parse_qsl, urlsplit

    from pyarrow import fs

    env = os.environ if environ is None else environ
    options: dict[str, object] = {}
    endpoint = env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL")
    if endpoint:
        parts = urlsplit(endpoint if "://" in endpoint else f"https://{endpoint}")
        options["endpoint_override"] = parts.netloc
        options["scheme"] = parts.scheme
    region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION")
    if region:
        options["region"] = region
    for key, value in parse_qsl(query):
        options[key] = value
    if "allow_bucket_creation" in options:
        options["allow_bucket_creation"] = str(options["allow_bucket_creation"]).lower() in ("1", "true")
    return fs.S3FileSystem(**options)


@dataclass(frozen=True)
class ObjectStoreWarehouse(Warehouse):
    """The warehouse on object storage: ``s3://bucket/prefix`` (pyarrow's own S3 filesystem).

    Layout per table (or ``dt=YYYY-MM-DD`` partition) folder: ``data-<uuid>.parquet`` objects and a
    pointer object ``_current.json`` ({"file", "rows", "written", "sha256"}) naming the current one
    and the sha256 of its bytes (hashed while uploading: `content_sha256` reads no data). A write
    uploads a new object under a unique name, then PUTs the pointer (S3 replaces an object whole:
    readers see the old pointer or the new one), then deletes data objects older than the previous
    one (kept so a reader that read the old pointer a moment ago can still open its file). A failed
    or interrupted write never touches the pointer; whatever it uploaded is removed, or left as an
    unreferenced object that the next successful write of that table deletes.

    Paths are URIs here (`path`, `files`, `table_dir` return ``s3://...`` strings); `query` scans
    the objects through pyarrow datasets registered in the in-memory DuckDB (no DuckDB extension).
    An object store has no file locks: `lock_path` is a local file under `lock_dir` (the project
    home's ``locks/``, `Home.open_warehouse`), else under the temporary folder, one per root.
    """

    root: str  # type: ignore[assignment]

    def __post_init__(self) -> None:
        root = str(self.root).rstrip("/")
        if not is_object_uri(root):
            raise ValueError(f"not an object-store URI: {self.root!r}")
        object.__setattr__(self, "root", root)

    # -- addressing ----------------------------------------------------------------------------
    @functools.cached_property
    def _location(self) -> tuple[str, str]:
        """(bucket/prefix without scheme or query, query string)."""
        from urllib.parse import urlsplit

        parts = urlsplit(self.root)
        return f"{parts.netloc}{parts.path}".rstrip("/"), parts.query

    @functools.cached_property
    def fs(self):
        """The pyarrow filesystem (built once per warehouse object)."""
        return s3_filesystem(self._location[1])

    def _uri(self, key: str) -> str:
        return f"{self.root.split('://', 1)[0]}://{key}"

    def _key(self, path_or_uri: str) -> str:
        return path_or_uri.split("://", 1)[1] if "://" in path_or_uri else path_or_uri

    def _folder(self, table: str, partition: str | None = None) -> str:
        if not _TABLE_NAME.match(table):
            raise ValueError(f"invalid table name {table!r}: use [a-z][a-z0-9_]*")
        base = f"{self._location[0]}/{table}"
        if partition is None:
            return base
        if not _PARTITION.match(partition):
            raise ValueError(f"invalid daily partition {partition!r}: expected YYYY-MM-DD")
        return f"{base}/dt={partition}"

    def _pointer(self, folder: str) -> dict | None:
        import json

        from pyarrow import fs

        if self.fs.get_file_info(f"{folder}/{POINTER_NAME}").type != fs.FileType.File:
            return None
        with self.fs.open_input_stream(f"{folder}/{POINTER_NAME}") as stream:
            return json.loads(stream.read())

    def _current(self, table: str, partition: str | None = None) -> str:
        """Key of the table's (partition's) current object; FileNotFoundError when there is none."""
        folder = self._folder(table, partition)
        pointer = self._pointer(folder)
        if pointer is None:
            where = f"partition {partition} of " if partition else ""
            raise FileNotFoundError(f"{where}table {table!r} has not been materialized ({self._uri(folder)})")
        return f"{folder}/{pointer['file']}"

    # -- paths ---------------------------------------------------------------------------------
    def table_dir(self, table: str) -> str:  # type: ignore[override]
        return self._uri(self._folder(table))

    def path(self, table: str, partition: str | None = None) -> str:  # type: ignore[override]
        """URI of the current object (FileNotFoundError when the table or partition is absent)."""
        return self._uri(self._current(table, partition))

    def partitions(self, table: str) -> list[str]:
        from pyarrow import fs

        base = self._folder(table)
        selector = fs.FileSelector(base, recursive=True, allow_not_found=True)
        found = []
        for info in self.fs.get_file_info(selector):
            parent, _, name = info.path.rpartition("/")
            folder = parent.rpartition("/")[2]
            if name == POINTER_NAME and folder.startswith("dt=") and parent.rpartition("/")[0] == base:
                found.append(folder[3:])
        return sorted(found)

    def exists(self, table: str, partition: str | None = None) -> bool:
        return self._pointer(self._folder(table, partition)) is not None

    def tables(self, prefix: str = "") -> list[str]:
        from pyarrow import fs

        selector = fs.FileSelector(self._location[0], recursive=False, allow_not_found=True)
        names = [
            info.path.rpartition("/")[2]
            for info in self.fs.get_file_info(selector)
            if info.type == fs.FileType.Directory
        ]
        return sorted(
            n
            for n in names
            if n.startswith(prefix) and _TABLE_NAME.match(n) and (self.exists(n) or self.partitions(n))
        )

    def lock_path(self, table: str) -> Path:
        self._folder(table)  # validates the name
        if self.lock_dir is not None:
            return Path(self.lock_dir) / f"{table}.lock"
        root = hashlib.sha256(self._location[0].encode()).hexdigest()[:16]
        return Path(tempfile.gettempdir()) / "ctr-warehouse-locks" / root / f"{table}.lock"

    def num_rows(self, table: str, partition: str | None = None) -> int:
        pointer = self._pointer(self._folder(table, partition))
        return int(pointer["rows"]) if pointer else 0

    # -- content -------------------------------------------------------------------------------
    def content_sha256(self, table: str, partition: str | None = None) -> str:
        """sha256 of the current object's bytes: recorded in the pointer when it was written (equal
        to the sha256 of the same Parquet bytes on disk), hashed from the object otherwise."""
        folder = self._folder(table, partition)
        pointer = self._pointer(folder)
        if pointer is None:
            where = f"partition {partition} of " if partition else ""
            raise FileNotFoundError(f"{where}table {table!r} has not been materialized ({self._uri(folder)})")
        if pointer.get("sha256"):
            return str(pointer["sha256"])
        digest = hashlib.sha256()
        with self.fs.open_input_stream(f"{folder}/{pointer['file']}") as stream:
            while block := stream.read(1 << 20):
                digest.update(block)
        return digest.hexdigest()

    def read_schema(self, table: str, partition: str | None = None) -> pa.Schema:
        return pq.read_schema(self._current(table, partition), filesystem=self.fs)

    # -- write ---------------------------------------------------------------------------------
    def write(self, table: str, data: pa.Table, partition: str | None = None) -> str:  # type: ignore[override]
        folder = self._folder(table, partition)
        key = f"{folder}/{_DATA_PREFIX}{uuid.uuid4().hex}.parquet"
        try:
            with self._upload(key) as sink:
                pq.write_table(data, sink, compression="zstd", row_group_size=256_000)
        except BaseException:
            self._delete_quietly(key)
            raise
        self._publish(folder, key, data.num_rows, sha256=sink.hexdigest())
        return self._uri(key)

    def write_batches(  # type: ignore[override]
        self, table: str, schema: pa.Schema, batches: Iterable[pa.RecordBatch], partition: str | None = None
    ) -> tuple[str, int]:
        folder = self._folder(table, partition)
        key = f"{folder}/{_DATA_PREFIX}{uuid.uuid4().hex}.parquet"
        rows = 0
        try:
            with self._upload(key) as sink, pq.ParquetWriter(sink, schema, compression="zstd") as writer:
                for batch in batches:
                    writer.write_batch(batch)
                    rows += batch.num_rows
        except BaseException:
            self._delete_quietly(key)  # closing the writer may have completed the upload
            raise
        self._publish(folder, key, rows, sha256=sink.hexdigest())
        return self._uri(key), rows

    @contextlib.contextmanager
    def _upload(self, key: str):
        """A `_HashingSink` over a new object `key`; the upload completes when the block ends."""
        sink = _HashingSink(self.fs.open_output_stream(key))
        try:
            yield sink
        finally:
            sink.close()

    def _publish(self, folder: str, key: str, rows: int, sha256: str | None = None) -> None:
        """Point the folder at `key` (the commit), then drop objects older than the previous one."""
        import datetime as dt
        import json

        previous = self._pointer(folder)
        doc = {
            "file": key.rpartition("/")[2],
            "rows": rows,
            "written": dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"),
            "sha256": sha256,
        }
        try:
            with self.fs.open_output_stream(
                f"{folder}/{POINTER_NAME}", metadata={"Content-Type": "application/json"}
            ) as out:
                out.write(json.dumps(doc).encode())
        except BaseException:
            self._delete_quietly(key)  # never published: the previous version stays current
            raise
        keep = {doc["file"], previous["file"] if previous else None}
        self._collect(folder, keep)

    def _collect(self, folder: str, keep: set) -> None:
        from pyarrow import fs

        for info in self.fs.get_file_info(fs.FileSelector(folder, allow_not_found=True)):
            name = info.path.rpartition("/")[2]
            if info.type == fs.FileType.File and name.startswith(_DATA_PREFIX) and name not in keep:
                self._delete_quietly(info.path)

    def _delete_quietly(self, key: str) -> None:
        with contextlib.suppress(OSError, FileNotFoundError):
            self.fs.delete_file(key)

    # -- read ----------------------------------------------------------------------------------
    def read(
        self, table: str, partitions: Sequence[str] | None = None, columns: Sequence[str] | None = None
    ) -> pa.Table:
        if partitions is None and not self.partitions(table):
            return pq.read_table(self._current(table), columns=columns, filesystem=self.fs)
        parts = list(partitions) if partitions is not None else self.partitions(table)
        missing = [p for p in parts if not self.exists(table, p)]
        if missing:
            raise FileNotFoundError(f"table {table!r} is missing partition(s) {missing}")
        tables = [pq.read_table(self._current(table, p), columns=columns, filesystem=self.fs) for p in parts]
        if not tables:
            raise FileNotFoundError(f"table {table!r} has no partitions")
        return pa.concat_tables(tables)

    def files(self, table: str, partitions: Sequence[str] | None = None) -> list[str]:
        if partitions is None and not self.partitions(table):
            return [self._uri(self._current(table))]
        parts = partitions if partitions is not None else self.partitions(table)
        return [self._uri(self._current(table, p)) for p in parts]

    def query(self, sql: str, params: Sequence[object] | None = None, **tables: Sequence[str]) -> pa.Table:
        """As `Warehouse.query`, over the objects of `files(...)`: each view is a pyarrow dataset of
        those objects scanned by DuckDB (projection and filters pushed into the scan)."""
        import duckdb
        import pyarrow.dataset as ds

        con = duckdb.connect(":memory:")
        try:
            for view, files in tables.items():
                if not _TABLE_NAME.match(view):
                    raise ValueError(f"invalid view name {view!r}")
                dataset = ds.dataset([self._key(f) for f in files], filesystem=self.fs, format="parquet")
                con.register(view, dataset)
            return con.sql(sql, params=list(params or [])).to_arrow_table()
        finally:
            con.close()
