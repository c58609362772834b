"""Registry: discovery over the entry-point groups, name rules and failure isolation."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from plugin_fixtures import MODELS, on_sys_path, write_dist, write_standard_set

from ctr_dagster import registry as reg

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def fixture_registry(tmp_path):
    """Discovery restricted to the fixture folder (whatever else is installed does not interfere)."""
    with on_sys_path(write_standard_set(tmp_path / "site")) as root:
        yield reg.discover(path=[root])


def test_global_discovery_sees_the_fixture_distributions(tmp_path):
    with on_sys_path(write_standard_set(tmp_path / "site")):
        registry = reg.discover()
    assert "ctrfix_good" in registry.names("model")
    assert {"ctrfix_raises", "ctrfix_syntax", "Bad-Name"} <= {b.name for b in registry.broken}


def test_path_restricts_discovery(tmp_path):
    write_standard_set(tmp_path / "a")
    write_dist(
        tmp_path / "b", "ctrfix-other", {MODELS: {"ctrfix_good": "ctrfix_good:GoodModel"}}, ("ctrfix_good",)
    )
    with on_sys_path(tmp_path / "a"), on_sys_path(tmp_path / "b"):
        only_b = reg.discover(path=[tmp_path / "b"])
    assert [(p.name, p.dist) for p in only_b.plugins] == [("ctrfix_good", "ctrfix-other")]
    assert only_b.broken == ()


def _broken(registry: reg.Registry, name: str) -> list[reg.BrokenPlugin]:
    return [b for b in registry.broken if b.name == name]


def test_good_plugins_of_every_kind_are_listed(fixture_registry):
    info = fixture_registry.get("model", "ctrfix_good")
    assert info.dist == "ctrfix-good" and info.version == "0.1"
    assert info.entry_point_value == "ctrfix_good:GoodModel"
    assert info.cls.__name__ == "GoodModel"
    assert info.asset_key == ["models", "ctrfix_good"]
    assert fixture_registry.get("encoder", "ctrfix_hash").asset_key == ["encoders", "ctrfix_hash"]
    assert fixture_registry.get("extractor", "ctrfix_title").cls.__name__ == "TitleExtractor"
    assert ("model", "ctrfix_good") in fixture_registry
    assert "ctrfix_good" in fixture_registry.names("model")


@pytest.mark.parametrize(
    "name, fragments",
    [
        (
            "ctrfix_importerror",
            ["import of", "ModuleNotFoundError", "ctrfix_dependency_that_is_not_installed"],
        ),
        ("ctrfix_raises", ["RuntimeError", "exploded at import time"]),
        ("ctrfix_syntax", ["SyntaxError"]),
        ("ctrfix_nopredict", ["missing required member 'predict'"]),
        ("Bad-Name", ["invalid plugin name 'Bad-Name'", "[a-z][a-z0-9_]*"]),
        ("ctrfix_mismatch", ["name='ctrfix_good'", "differs from its entry-point name 'ctrfix_mismatch'"]),
    ],
)
def test_broken_plugins_carry_their_error(fixture_registry, name, fragments):
    (broken,) = _broken(fixture_registry, name)
    assert broken.kind == "model"
    assert broken.dist and broken.dist.startswith("ctrfix-")
    for fragment in fragments:
        assert fragment in broken.error
    assert name not in fixture_registry.names("model")
    with pytest.raises(KeyError, match="broken"):
        fixture_registry.get("model", name)


def test_import_failures_keep_the_traceback(fixture_registry):
    (broken,) = _broken(fixture_registry, "ctrfix_raises")
    assert "Traceback" in broken.detail and "ctrfix_raises.py" in broken.detail


def test_duplicate_names_are_reported_for_every_distribution(fixture_registry):
    dups = _broken(fixture_registry, "ctrfix_dup")
    assert sorted(b.dist for b in dups) == ["ctrfix-dup-a", "ctrfix-dup-b"]
    for b in dups:
        assert "duplicate model plugin name 'ctrfix_dup'" in b.error
        assert "ctrfix-dup-a" in b.error and "ctrfix-dup-b" in b.error


def test_rows_are_json_ready_and_cover_good_and_broken(fixture_registry):
    rows = json.loads(json.dumps(fixture_registry.as_rows()))
    by_name = {(r["name"], r["dist"]): r for r in rows}
    good = by_name[("ctrfix_good", "ctrfix-good")]
    assert good["status"] == "ok" and good["error"] is None and good["asset_key"] == "models/ctrfix_good"
    bad = by_name[("Bad-Name", "ctrfix-names")]
    assert bad["status"] == "broken" and bad["asset_key"] is None and "invalid plugin name" in bad["error"]
    assert set(good) == {"kind", "name", "status", "dist", "version", "entry_point", "asset_key", "error"}


def test_discover_by_kind(fixture_registry, tmp_path):
    with on_sys_path(write_standard_set(tmp_path / "again")) as root:
        only = reg.discover(["encoder"], path=[root])
    assert only.kinds == ("encoder",)
    assert {p.kind for p in only.plugins} <= {"encoder"} and not only.broken_of("encoder")
    assert "ctrfix_hash" in only.names("encoder")
    with pytest.raises(ValueError, match="unknown plugin kind"):
        reg.discover(["widget"])


def test_instantiate_and_default_config(fixture_registry):
    info = fixture_registry.get("model", "ctrfix_good")
    assert info.default_config() == {"smoothing": 10.0}
    assert info.instantiate({"smoothing": 3.0}).config.smoothing == 3.0
    with pytest.raises(ValueError, match="unknown config key"):
        info.instantiate({"smoothin": 3.0})


def test_get_unknown_name_lists_alternatives(fixture_registry):
    with pytest.raises(KeyError, match="available"):
        fixture_registry.get("model", "nope")


@pytest.mark.parametrize("name", ["din", "a", "my_model2", "x_1_y"])
def test_valid_names(name):
    assert reg.is_valid_name(name) and reg.validate_name(name) == name


@pytest.mark.parametrize("name", ["", "Din", "2fast", "my-model", "_x", "a b", "café", None, 3])
def test_invalid_names(name):
    assert not reg.is_valid_name(name)
    with pytest.raises(ValueError, match=r"\[a-z\]\[a-z0-9_\]\*"):
        reg.validate_name(name)


def test_asset_keys_are_stable_and_validated():
    assert reg.asset_key_for("model", "din") == ["models", "din"]
    assert reg.asset_key_for("encoder", "minilm") == ["encoders", "minilm"]
    assert reg.asset_key_for("extractor", "hyperpave") == ["extractors", "hyperpave"]
    with pytest.raises(ValueError):
        reg.asset_key_for("model", "Bad")
    with pytest.raises(ValueError):
        reg.asset_key_for("widget", "din")


def test_default_registry_is_cached_and_refreshable(tmp_path):
    reg.default_registry.cache_clear()
    try:
        before = reg.default_registry()
        assert reg.default_registry() is before
        root = tmp_path / "late"
        write_dist(root, "ctrfix-late", {MODELS: {"ctrfix_good": "ctrfix_good:GoodModel"}}, ("ctrfix_good",))
        with on_sys_path(root):
            assert "ctrfix_good" not in reg.default_registry().names("model")  # still the cached view
            refreshed = reg.refresh_registry()
            assert refreshed is not before and "ctrfix_good" in refreshed.names("model")
    finally:
        reg.default_registry.cache_clear()


def test_discovery_imports_nothing_heavy(tmp_path):
    """In a fresh interpreter: discovering a light plugin loads it without torch or Dagster."""
    root = tmp_path / "site"
    write_dist(root, "ctrfix-good", {MODELS: {"ctrfix_good": "ctrfix_good:GoodModel"}}, ("ctrfix_good",))
    code = textwrap.dedent(
        """
        import json, sys
        from ctr_dagster.registry import discover
        r = discover(path=[sys.argv[1]])
        print(json.dumps({
            "good": r.names("model"),
            "heavy": sorted(m for m in ("torch", "dagster", "lightgbm", "sentence_transformers",
                                        "great_expectations") if m in sys.modules),
        }))
        """
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), str(REPO)])}
    out = subprocess.run(
        [sys.executable, "-c", code, str(root)], env=env, capture_output=True, text=True, check=True
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert "ctrfix_good" in result["good"]
    assert result["heavy"] == []


def test_discovery_survives_system_exit_at_import(tmp_path):
    root = tmp_path / "site"
    write_dist(
        root,
        "ctrfix-exit",
        {MODELS: {"ctrfix_exit": "ctrfix_exit:Model"}},
        sources={"ctrfix_exit.py": "import sys\nsys.exit(3)\n"},
    )
    with on_sys_path(root):
        registry = reg.discover(["model"], path=[root])
    (broken,) = _broken(registry, "ctrfix_exit")
    assert "SystemExit" in broken.error
