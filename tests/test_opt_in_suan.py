"""The opt-in ctr-suan plugin stays out of the venv but not out of reach (Makefile, plugins/ctr-suan/conftest.py).

* `make demo WITH_SUAN=1` / `make ui WITH_SUAN=1` install it into `.suan_plugin/` and run the command
  with that folder on PYTHONPATH; without the switch the commands are the plain ones.
* `make test` collects its own tests whether or not it is installed (they once were left out of
  collection wherever it was not installed, so CI never ran them).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SUAN_DIR = ROOT / ".suan_plugin"


def make_dry_run(*args: str) -> str:
    if shutil.which("make") is None:
        pytest.fail("make is not on PATH (the README's set-up commands need it)")
    env = {k: v for k, v in os.environ.items() if k not in ("WITH_SUAN", "PYTHONPATH", "MAKEFLAGS")}
    out = subprocess.run(
        ["make", "-n", "-C", str(ROOT), *args], capture_output=True, text=True, env=env, check=True
    )
    return out.stdout


@pytest.mark.parametrize("target", ["demo", "ui"])
def test_with_suan_runs_the_command_with_the_plugin_folder_on_the_path(target):
    plain = [line for line in make_dry_run(target).splitlines() if ".venv/bin/" in line]
    switched = [line for line in make_dry_run(target, "WITH_SUAN=1").splitlines() if ".venv/bin/" in line]
    command = "ctr demo" if target == "demo" else "dagster dev"
    assert any(command in line and "PYTHONPATH" not in line for line in plain), plain
    assert any(command in line and line.startswith(f"PYTHONPATH={SUAN_DIR}") for line in switched), switched


def test_the_plugin_folder_is_built_with_pip_target_not_into_the_venv():
    # -B: print the recipe even where the folder is already up to date
    lines = make_dry_run("-B", ".suan_plugin/.installed", "WITH_SUAN=1").splitlines()
    install = [line for line in lines if "--target" in line]
    assert len(install) == 1 and "--target .suan_plugin ./plugins/ctr-suan" in install[0], lines
    assert "--no-deps" in install[0]  # its dependencies come from the venv's lock, never a second copy


def test_make_test_collects_the_plugins_own_tests_without_installing_it():
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "--collect-only",
            "-q",
            "-p",
            "no:cacheprovider",
            "plugins/ctr-suan",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    collected = [line for line in out.stdout.splitlines() if "::" in line]
    assert out.returncode == 0, out.stdout + out.stderr
    files = {Path(line.split("::")[0]).name for line in collected}
    # the mechanism tests of issue 18: causal mask, biases, block order, sparse mask, encode-once
    assert {"test_suan_modules.py", "test_lightsuan_serving.py"} <= files, files
    assert len(collected) > 50, collected


def test_a_leftover_egg_info_in_the_plugin_folder_does_not_pass_for_an_installation(tmp_path):
    """`pip install` of the folder (`make demo WITH_SUAN=1`, or an editable install since uninstalled)
    leaves `ctr_suan.egg-info` in it, and pytest puts the folder on sys.path: the entry-point test
    must still be skipped, not run against entry points a fresh interpreter cannot see."""
    really = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "plugins" / "ctr-suan"]
    if any(True for _ in metadata.distributions(name="ctr-suan", path=really)):
        pytest.skip("ctr-suan is installed here (a developer's install): the case needs it absent, as in CI")
    plugin = tmp_path / "ctr-suan"
    shutil.copytree(
        ROOT / "plugins" / "ctr-suan",
        plugin,
        ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__", ".ruff_cache"),
    )
    leftover = plugin / "ctr_suan.egg-info"
    leftover.mkdir()
    (leftover / "PKG-INFO").write_text("Metadata-Version: 2.1\nName: ctr-suan\nVersion: 0.1.0\n")
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", "discovery", "tests"],
        cwd=plugin,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0 and "1 skipped" in out.stdout, out.stdout + out.stderr
