"""The code location loads fast and completely: no heavy imports, every asset versioned and checked."""

import json
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("numpy", "pyarrow", "pandas", "great_expectations", "torch", "sklearn", "duckdb", "PIL", "lightgbm")


def test_loading_the_code_location_imports_no_heavy_library(tiny_settings):
    # what Dagster does when it loads the workspace: import the module, call the lazy `defs`
    probe = (
        "import sys, json, assets.definitions as d; d.defs(); "
        f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    )
    out = subprocess.run(
        [sys.executable, "-W", "error::UserWarning", "-c", probe],
        cwd=ROOT,
        env={**os.environ, **tiny_settings.as_env(), "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_definitions_resolve_with_versions_and_checks(tiny_settings):
    from assets.definitions import build_definitions

    defs = build_definitions(tiny_settings)
    graph = defs.resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    expected = {
        "raw_items",
        "raw_item_attributes",
        "raw_attribute_taxonomy",
        "raw_attribute_negatives",
        "raw_users",
        "oracle_item_attributes",
        "raw_impressions",
        "oracle_impressions",
        "clean_impressions",
        "quarantine_impressions",
        "training_dataset",
        "plugin_registry",
    }
    assert expected <= keys
    # the registry table names only real assets (a model's own; an encoder's / extractor's stage),
    # and an ok plugin's error cell is empty, not the text "None"
    from ctr_dagster.registry import default_registry

    rows = default_registry().as_rows()
    assert {r["asset_key"] for r in rows if r["status"] == "ok"} <= keys
    table = graph.get(dg.AssetKey("plugin_registry")).metadata["plugins"]  # table metadata: drawn inline
    cells = [r.data for r in table.records]
    assert all(c["error"] == "" for c in cells if c["status"] == "ok") and "None" not in str(cells)
    assert "item_attributes" in {c["asset_key"] for c in cells}
    for key in graph.get_all_asset_keys():
        assert graph.get(key).code_version, f"{key.to_user_string()} has no code_version"
    checks = {(c.asset_key.to_user_string(), c.name) for c in graph.asset_check_keys}
    assert ("clean_impressions", "rows_reconcile") in checks and (
        "plugin_registry",
        "no_broken_plugins",
    ) in checks
    # the daily partitions cover the synthetic world's days (tiny: 6)
    assert len(graph.get(dg.AssetKey("raw_impressions")).partitions_def.get_partition_keys()) == 6


def test_dagster_cli_validates_the_workspace(tmp_path, tiny_settings):
    env = {**os.environ, **tiny_settings.as_env(), "DAGSTER_HOME": str(tmp_path)}
    out = subprocess.run(
        [str(Path(sys.executable).parent / "dagster"), "definitions", "validate", "-w", "workspace.yaml"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=env,
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
