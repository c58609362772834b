"""The versioned artifact description (model.json) every saving plugin writes through one helper."""

import json
from pathlib import Path

import pytest

from ctr_dagster.artifact_meta import ArtifactMetaError, read_meta, write_meta


def test_round_trip(tmp_path: Path):
    path = write_meta(tmp_path / "artifact", "din", 3, config={"lr": 0.001}, spec={"max_len": 8})
    assert path == tmp_path / "artifact" / "model.json"
    document = json.loads(path.read_text(encoding="utf-8"))
    assert document == {"kind": "din", "format_version": 3, "config": {"lr": 0.001}, "spec": {"max_len": 8}}
    assert read_meta(tmp_path / "artifact", "din", 3) == {"config": {"lr": 0.001}, "spec": {"max_len": 8}}
    assert read_meta(tmp_path / "artifact", "din", (2, 3))["spec"] == {"max_len": 8}
    write_meta(tmp_path, "image_cnn", 1, filename="encoder.json", dim=64)
    assert read_meta(tmp_path, "image_cnn", 1, filename="encoder.json") == {"dim": 64}
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp file left


def test_wrong_version_or_kind_names_the_file(tmp_path: Path):
    path = write_meta(tmp_path, "lightgbm", 1, config={})
    with pytest.raises(ArtifactMetaError, match="unsupported model format 1") as caught:
        read_meta(tmp_path, "lightgbm", 2)
    assert str(path) in str(caught.value) and "reads format version 2" in str(caught.value)
    with pytest.raises(ArtifactMetaError, match="describes a 'lightgbm' artifact, not a 'din' one") as caught:
        read_meta(tmp_path, "din", 1)
    assert str(path) in str(caught.value)
    assert isinstance(caught.value, ValueError)


def test_missing_or_broken_files_name_the_file(tmp_path: Path):
    with pytest.raises(ArtifactMetaError, match=r"model\.json: no such file"):
        read_meta(tmp_path, "din", 1)
    (tmp_path / "model.json").write_text("{half", encoding="utf-8")
    with pytest.raises(ArtifactMetaError, match=r"model\.json: unreadable"):
        read_meta(tmp_path, "din", 1)
    (tmp_path / "model.json").write_text("[1]", encoding="utf-8")
    with pytest.raises(ArtifactMetaError, match="expected a JSON object"):
        read_meta(tmp_path, "din", 1)


def test_documents_written_before_the_kind_field_still_load(tmp_path: Path):
    """Artifacts saved by the previous code: the torch base's "plugin" field is their kind; the
    others had none and are accepted on their version."""
    (tmp_path / "model.json").write_text(json.dumps({"format_version": 1, "plugin": "din", "x": 1}))
    assert read_meta(tmp_path, "din", 1) == {"plugin": "din", "x": 1}
    with pytest.raises(ArtifactMetaError, match="describes a 'din' artifact"):
        read_meta(tmp_path, "din_student", 1)
    (tmp_path / "model.json").write_text(json.dumps({"format_version": 1, "features": {}}))
    assert read_meta(tmp_path, "lightgbm", 1) == {"features": {}}
