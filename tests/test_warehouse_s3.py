"""The warehouse on object storage (``s3://bucket/prefix``) against a local S3-compatible server
process (moto's server, started here): tables and daily partitions written and read back, SQL
over the objects, and atomic replacement without rename (unique objects + a pointer written last)."""

import socket
import subprocess
import sys
import time
import urllib.request
import uuid

import pyarrow as pa
import pytest

from ctr_dagster.warehouse import POINTER_NAME, ObjectStoreWarehouse, Warehouse

pytest.importorskip("moto")  # the [dev] extra: moto's S3 server and boto3
BUCKET = "ctr-warehouse"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def s3_server():
    """`python -m moto.server` on a free local port; yields its endpoint URL."""
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1)
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("moto server did not start") from None
                time.sleep(0.2)
        yield endpoint
    finally:
        process.terminate()
        process.wait(timeout=10)


def set_aws_env(patch: pytest.MonkeyPatch, endpoint: str) -> None:
    """Credentials and endpoint as a real deployment would set them, pointing at `endpoint`."""
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": endpoint,
    }.items():
        patch.setenv(name, value)
    patch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    patch.delenv("AWS_PROFILE", raising=False)


@pytest.fixture
def s3_env(s3_server, monkeypatch):
    """Credentials and endpoint as a real deployment would set them; a fresh prefix per test."""
    set_aws_env(monkeypatch, s3_server)
    import boto3

    s3 = boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1")
    if BUCKET not in {b["Name"] for b in s3.list_buckets().get("Buckets", [])}:
        s3.create_bucket(Bucket=BUCKET)
    return s3, f"s3://{BUCKET}/{uuid.uuid4().hex[:8]}/warehouse"


def _table(n: int, offset: int = 0) -> pa.Table:
    return pa.table({"id": list(range(offset, offset + n)), "click": [i % 2 for i in range(n)]})


def _keys(s3, root: str) -> list[str]:
    prefix = root.removeprefix(f"s3://{BUCKET}/") + "/"
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    return sorted(o["Key"].removeprefix(prefix) for page in pages for o in page.get("Contents", []))


def test_tables_and_partitions_round_trip_through_s3(s3_env):
    s3, root = s3_env
    wh = Warehouse(root)
    assert isinstance(wh, ObjectStoreWarehouse) and wh.root == root
    assert not wh.exists("events") and wh.partitions("events") == [] and wh.num_rows("events") == 0
    wh.write("events", _table(10), "2026-11-01")
    wh.write("events", _table(5, offset=10), "2026-11-02")
    path, rows = wh.write_batches("items", _table(1).schema, iter(_table(7).to_batches(max_chunksize=3)))
    assert rows == 7 and path.startswith(f"{root}/items/data-") and path.endswith(".parquet")

    assert wh.partitions("events") == ["2026-11-01", "2026-11-02"]
    assert wh.exists("events", "2026-11-02") and not wh.exists("events", "2026-11-03")
    assert wh.num_rows("events", "2026-11-01") == 10 and wh.num_rows("items") == 7
    assert wh.read("events").column("id").to_pylist() == list(range(15))
    assert wh.read("events", ["2026-11-02"], columns=["id"]).column_names == ["id"]
    assert wh.read("items").num_rows == 7
    assert wh.path("items") == path and wh.files("items") == [path]
    assert all(f.startswith(f"{root}/events/dt=") for f in wh.files("events"))
    with pytest.raises(FileNotFoundError, match="missing partition"):
        wh.read("events", ["2026-11-03"])
    with pytest.raises(FileNotFoundError, match="has not been materialized"):
        wh.read("nothing")

    # SQL over the objects, parameterized, joins across tables
    out = wh.query(
        "select count(*) as n, sum(e.click) as clicks from e join i using (id) where e.id >= ?",
        [2],
        e=wh.files("events"),
        i=wh.files("items"),
    )
    assert out.to_pylist() == [{"n": 5, "clicks": 2}]

    # what is in the bucket: one object per version plus a small pointer per table / partition
    keys = _keys(s3, root)
    assert sum(k.endswith(POINTER_NAME) for k in keys) == 3
    assert all(k.endswith((POINTER_NAME, ".parquet")) for k in keys)

    # content hash (recorded in the pointer while uploading, = sha256 of the object's bytes), schema, listing
    import hashlib
    import json

    body = s3.get_object(Bucket=BUCKET, Key=path.removeprefix(f"s3://{BUCKET}/"))["Body"].read()
    assert wh.content_sha256("items") == hashlib.sha256(body).hexdigest()
    assert wh.read_schema("events", "2026-11-01").names == ["id", "click"]
    assert wh.tables() == ["events", "items"] and wh.tables("it") == ["items"]
    with pytest.raises(FileNotFoundError, match="has not been materialized"):
        wh.content_sha256("nothing")
    pointer_key = f"{path.removeprefix(f's3://{BUCKET}/').rpartition('/')[0]}/{POINTER_NAME}"
    pointer = json.loads(s3.get_object(Bucket=BUCKET, Key=pointer_key)["Body"].read())
    s3.put_object(Bucket=BUCKET, Key=pointer_key, Body=json.dumps({**pointer, "sha256": None}).encode())
    assert wh.content_sha256("items") == hashlib.sha256(body).hexdigest()  # a pointer without: hashed


def test_a_failed_write_leaves_the_previous_version_readable(s3_env, monkeypatch):
    s3, root = s3_env
    wh = Warehouse(root)
    wh.write("events", _table(4), "2026-11-01")
    before = wh.path("events", "2026-11-01")

    def broken_batches():
        yield pa.RecordBatch.from_pylist([{"id": 1, "click": 0}])
        raise RuntimeError("process died mid-write")

    # the upload dies half-way: nothing of it is published, and the partial object is removed
    with pytest.raises(RuntimeError):
        wh.write_batches("events", _table(1).schema, broken_batches(), "2026-11-01")
    assert wh.read("events", ["2026-11-01"]).num_rows == 4 and wh.path("events", "2026-11-01") == before
    assert [k for k in _keys(s3, root) if k.endswith(".parquet")] == [before.removeprefix(f"{root}/")]

    # the data object is uploaded but the process dies before the pointer is written (the commit)
    import ctr_dagster.warehouse as warehouse_module

    def dies_before_commit(self, folder, key, rows, **kwargs):
        raise KeyboardInterrupt("killed between upload and commit")

    with monkeypatch.context() as patch:
        patch.setattr(warehouse_module.ObjectStoreWarehouse, "_publish", dies_before_commit)
        with pytest.raises(KeyboardInterrupt):
            wh.write("events", _table(9, offset=50), "2026-11-01")
    assert wh.read("events", ["2026-11-01"]).column("id").to_pylist() == [0, 1, 2, 3]
    assert wh.num_rows("events", "2026-11-01") == 4
    orphans = [k for k in _keys(s3, root) if k.endswith(".parquet") and f"{root}/{k}" != before]
    assert len(orphans) == 1  # uploaded, never published: invisible to readers

    # a fresh warehouse object (another process) sees the same; the next write commits and cleans
    other = Warehouse(root)
    assert other.read("events", ["2026-11-01"]).num_rows == 4
    other.write("events", _table(2, offset=100), "2026-11-01")
    assert wh.read("events", ["2026-11-01"]).column("id").to_pylist() == [100, 101]
    assert orphans[0] not in _keys(s3, root)  # the next commit deleted the unpublished object


def test_rewrites_replace_the_partition_and_keep_one_previous_object(s3_env):
    """Re-materializing is idempotent; a reader holding the previous object's name can still open it
    (one version of grace), older versions are deleted, so the bucket does not grow per rewrite."""
    s3, root = s3_env
    wh = Warehouse(root)
    paths = []
    for version in range(4):
        wh.write("events", _table(3, offset=10 * version), "2026-11-01")
        paths.append(wh.path("events", "2026-11-01"))
    assert len(set(paths)) == 4
    assert wh.read("events").column("id").to_pylist() == [30, 31, 32]
    parquet = [f"{root}/{k}" for k in _keys(s3, root) if k.endswith(".parquet")]
    assert sorted(parquet) == sorted(paths[-2:])  # the current one and the one before it


def test_the_endpoint_may_be_given_in_the_uri(s3_env, s3_server, monkeypatch):
    """On a real bucket only the configuration changes: the endpoint may come from the environment
    (above) or from the root URI itself."""
    _, root = s3_env
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    host = s3_server.removeprefix("http://")
    wh = Warehouse(f"{root}?endpoint_override={host}&scheme=http")
    wh.write("events", _table(3))
    assert wh.read("events").num_rows == 3 and wh.files("events")[0].startswith(f"{root}/events/")
