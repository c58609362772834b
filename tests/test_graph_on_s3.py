"""The whole graph with its warehouse on object storage: ``CTR_WAREHOUSE=s3://bucket/prefix`` against a
local S3-compatible server process (moto's, started by `tests.test_warehouse_s3.s3_server`). Tables go
to the bucket; artifacts, records, statuses, the evaluation and the champion stay in the local home."""

import hashlib
import uuid
from pathlib import Path

import dagster as dg
import pytest

from ctr_dagster.settings import Home, Settings
from ctr_dagster.warehouse import POINTER_NAME, ObjectStoreWarehouse, Warehouse
from tests.test_warehouse_s3 import s3_server, set_aws_env  # noqa: F401 - s3_server: the moto server fixture

MODELS = ("baseline_lr", "lightgbm")
BUCKET = "ctr-graph"


def test_the_warehouse_setting_and_what_stays_as_it_was(tmp_path):
    """`CTR_WAREHOUSE` is read, normalized and handed to child processes; an import keeps its own
    prefix; unset, every location and value is the local one of before."""
    env = {"CTR_PROFILE": "tiny", "CTR_HOME": str(tmp_path), "CTR_WAREHOUSE": "s3://b/p/?scheme=http"}
    settings = Settings.from_env(env)
    assert settings.warehouse == "s3://b/p?scheme=http" and settings.ctr_home.warehouse == settings.warehouse
    assert Settings.from_env(settings.as_env()) == settings
    assert (
        settings.ctr_home.open_warehouse().lock_path("vocab_item") == tmp_path / "locks" / "vocab_item.lock"
    )
    mapping = tmp_path / "logs.yaml"
    mapping.write_text("tables: {}\n")
    imported = settings.replace(source="import", mapping=mapping)
    relative = imported.data_home.relative_to(tmp_path).as_posix()
    assert relative.startswith("import/logs-")
    assert imported.ctr_home.warehouse == f"s3://b/p/{relative}?scheme=http"
    local = Settings(home=tmp_path, warehouse="elsewhere")
    assert local.ctr_home.warehouse == Path("elsewhere").resolve()
    with pytest.raises(ValueError, match="CTR_WAREHOUSE"):
        Settings(warehouse="gs://bucket/prefix")

    # unset: <data_home>/warehouse, locks beside the tables, the file's own sha256 (recorded hashes hold)
    home = Settings(home=tmp_path).ctr_home
    assert home.warehouse == tmp_path / "warehouse" and home.warehouse_uri is None
    wh = home.open_warehouse()
    assert type(wh) is Warehouse and wh.lock_path("vocab_item") == tmp_path / "warehouse" / "vocab_item.lock"
    import pyarrow as pa

    path = wh.write("events", pa.table({"id": [1, 2, 3]}), "2026-11-01")
    assert wh.content_sha256("events", "2026-11-01") == hashlib.sha256(path.read_bytes()).hexdigest()
    assert wh.read_schema("events", "2026-11-01").names == ["id"] and wh.tables("ev") == ["events"]
    assert Home(tmp_path) == Home(tmp_path, None)


@pytest.fixture(scope="module")
def graph_on_s3(s3_server, tmp_path_factory):  # noqa: F811 - the imported fixture
    """The tiny graph (two models) materialized once with its warehouse in the moto bucket; yields
    (settings, boto3 client, key prefix, Dagster instance)."""
    from assets.run import materialize_all
    from ctr_dagster.registry import select_models

    pytest.importorskip("boto3")
    import boto3

    prefix = f"{uuid.uuid4().hex[:8]}/warehouse"
    home = tmp_path_factory.mktemp("ctr_home")
    settings = Settings(
        profile="tiny", home=home, warehouse=f"s3://{BUCKET}/{prefix}", models=",".join(MODELS)
    )
    with pytest.MonkeyPatch.context() as patch:
        set_aws_env(patch, s3_server)
        s3 = boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1")
        s3.create_bucket(Bucket=BUCKET)
        try:
            with dg.instance_for_test() as instance:
                materialize_all(settings, instance=instance, log=lambda s: None)
                yield settings, s3, prefix, instance
        finally:
            select_models(None)  # the next module sees every installed model again


def _keys(s3, prefix: str) -> list[str]:
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=f"{prefix}/")
    return sorted(o["Key"].removeprefix(f"{prefix}/") for page in pages for o in page.get("Contents", []))


@pytest.mark.integration
def test_the_graph_runs_with_its_warehouse_in_the_bucket(graph_on_s3):
    from ctr_dagster.evaluation import report

    settings, s3, prefix, instance = graph_on_s3
    home = settings.ctr_home
    failed = [r.run_id for r in instance.get_runs() if r.status != dg.DagsterRunStatus.SUCCESS]
    assert not failed, f"runs failed on s3: {failed}"  # the enrichment stages may fail quietly otherwise

    # the leaderboard ranks both models, judged on the dataset read from the bucket
    doc = report(home)
    assert doc is not None, "the evaluation did not run"
    ranked = {r["name"]: r for r in doc["models"]}
    assert set(ranked) == set(MODELS) and not doc["unranked"]
    assert all(0.5 < r["auc"] < doc["oracle"]["auc"] for r in ranked.values())
    assert doc["candidate"]["name"] in MODELS
    from assets.run import summary  # what `ctr demo` prints, read from the bucket

    out = summary(settings)
    assert (
        set(out["model_auc_test"]) == set(MODELS) and out["days"] == 6 and out["vocabulary_sizes"]["item"] > 2
    )

    # the tables are objects in the bucket: a data object and its pointer per table / partition
    keys = _keys(s3, prefix)
    tables = ("training_dataset", "item_embeddings", "item_attributes", *(f"predictions_{m}" for m in MODELS))
    for table in tables:
        assert f"{table}/{POINTER_NAME}" in keys
        assert any(k.startswith(f"{table}/data-") and k.endswith(".parquet") for k in keys), table
    assert sum(k.startswith("clean_impressions/dt=") and k.endswith(POINTER_NAME) for k in keys) == 6
    assert any(k.startswith("vocab_item/") for k in keys)

    # ... and nothing went to the local warehouse; the rest of the home is local
    assert not (settings.home / "warehouse").exists()
    assert not [p for p in settings.home.rglob("*.parquet") if "warehouse" in p.parts]
    assert (home.locks / "vocab_item.lock").is_file()  # the vocabulary's lock: local, not in the bucket
    for model in MODELS:
        assert (home.models / model / "status.json").is_file() and any((home.artifacts / model).iterdir())

    # the recorded data hash is the sha256 of the object's bytes (the same as on disk), from the pointer
    wh = home.open_warehouse()
    assert isinstance(wh, ObjectStoreWarehouse)
    key = wh.path("training_dataset").removeprefix(f"s3://{BUCKET}/")
    body = s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()
    assert (
        doc["dataset"]["sha256"] == wh.content_sha256("training_dataset") == hashlib.sha256(body).hexdigest()
    )
    assert doc["dataset"]["path"] == wh.path("training_dataset")

    # content hashes make the unchanged-input skips work on the bucket too
    from assets.definitions import build_definitions

    defs = build_definitions(settings)
    result = dg.materialize(
        list(defs.assets),
        selection=["training_dataset", "models/lightgbm"],
        instance=instance,
        resources=dict(defs.resources),
    )
    assert result.success
    meta = {
        node: result.asset_materializations_for_node(node)[0].metadata
        for node in ("training_dataset", "models__lightgbm")
    }
    assert str(meta["training_dataset"]["skipped"].value).startswith("unchanged")
    assert str(meta["models__lightgbm"]["skipped"].value).startswith("unchanged")
    assert wh.path("training_dataset").removeprefix(f"s3://{BUCKET}/") == key  # not rewritten
