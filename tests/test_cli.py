"""The `ctr` CLI: `plugins` (good + broken, text and JSON) and `new-plugin`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from plugin_fixtures import on_sys_path, write_standard_set
from typer.testing import CliRunner

from ctr_dagster.cli import app

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()


@pytest.fixture
def fixture_plugins(tmp_path):
    with on_sys_path(write_standard_set(tmp_path / "site")) as root:
        yield root


def test_plugins_lists_good_and_broken(fixture_plugins):
    result = runner.invoke(app, ["plugins"])
    assert result.exit_code == 0, result.output
    out = result.output
    for good in ("ctrfix_good", "ctrfix_hash", "ctrfix_title", "models/ctrfix_good"):
        assert good in out
    assert "broken plugin(s)" in out
    assert "'ctrfix_importerror' from ctrfix-importerror" in out and "ModuleNotFoundError" in out
    assert "'ctrfix_syntax'" in out and "SyntaxError" in out
    assert "missing required member 'predict'" in out
    assert "invalid plugin name 'Bad-Name'" in out


def test_plugins_json(fixture_plugins):
    result = runner.invoke(app, ["plugins", "--json"])
    assert result.exit_code == 0
    rows = json.loads(result.output)
    status = {(r["kind"], r["name"], r["dist"]): r["status"] for r in rows}
    assert status[("model", "ctrfix_good", "ctrfix-good")] == "ok"
    assert status[("encoder", "ctrfix_hash", "ctrfix-good")] == "ok"
    assert status[("model", "ctrfix_raises", "ctrfix-raises")] == "broken"
    broken = next(r for r in rows if r["name"] == "ctrfix_raises")
    assert "exploded at import time" in broken["error"]


def test_plugins_kind_filter(fixture_plugins):
    rows = json.loads(runner.invoke(app, ["plugins", "--json", "--kind", "encoder"]).output)
    assert rows and {r["kind"] for r in rows} == {"encoder"}
    bad = runner.invoke(app, ["plugins", "--kind", "widget"])
    assert bad.exit_code == 2 and "unknown kind" in bad.output


def test_new_plugin_creates_files(tmp_path):
    result = runner.invoke(app, ["new-plugin", "my_model", "--dest", str(tmp_path)])
    assert result.exit_code == 0, result.output
    target = tmp_path / "ctr-my_model"
    assert (target / "pyproject.toml").is_file()
    assert (target / "ctr_my_model" / "model.py").is_file()
    assert (target / "tests" / "test_my_model_conformance.py").is_file()
    assert f"created {target}" in result.output and "pip install -e" in result.output


def test_new_plugin_default_dest_is_plugins(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert runner.invoke(app, ["new-plugin", "here"]).exit_code == 0
    assert (tmp_path / "plugins" / "ctr-here" / "ctr_here" / "model.py").is_file()


@pytest.mark.parametrize("name", ["MyModel", "my-model", "9lives"])
def test_new_plugin_rejects_bad_names(tmp_path, name):
    result = runner.invoke(app, ["new-plugin", name, "--dest", str(tmp_path)])
    assert result.exit_code == 2
    assert "invalid plugin name" in result.output and "[a-z][a-z0-9_]*" in result.output
    assert not any(tmp_path.iterdir())


def test_new_plugin_refuses_existing_folder(tmp_path):
    assert runner.invoke(app, ["new-plugin", "dup", "--dest", str(tmp_path)]).exit_code == 0
    again = runner.invoke(app, ["new-plugin", "dup", "--dest", str(tmp_path)])
    assert again.exit_code == 2 and "already exists" in again.output


def test_help_lists_commands():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    assert "plugins" in result.output and "new-plugin" in result.output


def test_importing_the_cli_is_light():
    code = (
        "import sys, ctr_dagster.cli; "
        "print(sorted(m for m in ('torch', 'dagster', 'pyarrow', 'numpy') if m in sys.modules))"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_python_dash_m_knows_every_command():
    """`python -m ctr_dagster.cli` (what the tests and docs run) registers every command before it runs:
    a `__main__` guard above a command's definition once hid `export`, `score`, `attributes`, `uplift`."""
    names = {c.name for c in app.registered_commands} | {g.name for g in app.registered_groups}
    for name in sorted(names):
        out = subprocess.run(
            [sys.executable, "-m", "ctr_dagster.cli", name, "--help"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 0, (
            f"python -m ctr_dagster.cli {name}: {out.stdout[-500:]}{out.stderr[-500:]}"
        )
