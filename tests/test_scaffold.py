"""`ctr new-plugin`: the scaffolded plugin passes the conformance kit and becomes discoverable."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest

from ctr_dagster import scaffold

REPO = Path(__file__).resolve().parents[1]


def _env(*paths: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(str(p) for p in [*paths, REPO])}


@pytest.fixture(scope="module")
def plugin_dir(tmp_path_factory) -> Path:
    return scaffold.new_plugin("click_rate", tmp_path_factory.mktemp("plugins"))


def test_scaffolded_model_module_imports_nothing_heavy(plugin_dir):
    import os
    import subprocess
    import sys

    probe = (
        "import sys, ctr_click_rate.model; print(sorted(m for m in ('numpy', 'pyarrow') if m in sys.modules))"
    )
    env = {**os.environ, "PYTHONPATH": f"{plugin_dir}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_layout_and_metadata(plugin_dir):
    assert plugin_dir.name == "ctr-click_rate"
    files = sorted(p.relative_to(plugin_dir).as_posix() for p in plugin_dir.rglob("*") if p.is_file())
    assert files == [
        "README.md",
        "ctr_click_rate/__init__.py",
        "ctr_click_rate/features.py",
        "ctr_click_rate/model.py",
        "pyproject.toml",
        "tests/test_click_rate_conformance.py",
    ]
    meta = tomllib.loads((plugin_dir / "pyproject.toml").read_text())
    assert meta["project"]["name"] == "ctr-click_rate"
    assert any(dep.startswith("ctr-dagster") for dep in meta["project"]["dependencies"])
    assert meta["project"]["entry-points"]["ctr_dagster.models"] == {
        "click_rate": "ctr_click_rate.model:ClickRateModel"
    }
    model_src = (plugin_dir / "ctr_click_rate" / "model.py").read_text()
    assert 'name = "click_rate"' in model_src and "class ClickRateModel" in model_src
    assert "pickle" not in model_src and "{{" not in model_src
    assert "ClickRateModel" in (plugin_dir / "tests" / "test_click_rate_conformance.py").read_text()


def test_class_names():
    assert scaffold.class_name("popularity") == "PopularityModel"
    assert scaffold.class_name("my_model") == "MyModel"
    assert scaffold.class_name("din2") == "Din2Model"


@pytest.mark.parametrize("name", ["Bad", "2x", "my-model", "", "a b", "_x"])
def test_rejects_bad_names(tmp_path, name):
    with pytest.raises(scaffold.ScaffoldError, match=r"\[a-z\]\[a-z0-9_\]\*"):
        scaffold.new_plugin(name, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_refuses_to_overwrite(tmp_path):
    target = scaffold.new_plugin("twice", tmp_path)
    (target / "README.md").write_text("mine")
    with pytest.raises(scaffold.ScaffoldError, match="already exists"):
        scaffold.new_plugin("twice", tmp_path)
    assert (target / "README.md").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ctr-twice"]  # no staging leftovers


def test_rejects_unknown_kind(tmp_path):
    with pytest.raises(scaffold.ScaffoldError, match="no template for plugin kind 'widget'"):
        scaffold.new_plugin("thing", tmp_path, kind="widget")


def test_scaffolded_plugin_passes_the_conformance_kit(plugin_dir):
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"],
        cwd=plugin_dir,
        env=_env(plugin_dir),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "11 passed" in result.stdout  # the conformance kit, incl. the label-blind check


def test_scaffolded_plugin_is_discovered_after_pip_install(plugin_dir, tmp_path):
    site = tmp_path / "site"
    install = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--disable-pip-version-check",
            "--target",
            str(site),
            str(plugin_dir),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert install.returncode == 0, install.stdout + install.stderr
    assert any(p.name.startswith("ctr_click_rate-0.1.0") for p in site.glob("*.dist-info"))
    code = textwrap.dedent(
        """
        import json
        from ctr_dagster.registry import discover
        r = discover(["model"])
        info = r.get("model", "click_rate")
        print(json.dumps({"dist": info.dist, "version": info.version, "key": info.asset_key,
                          "file": __import__(info.cls.__module__).__file__}))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=_env(site), capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stdout + out.stderr
    found = json.loads(out.stdout.strip().splitlines()[-1])
    assert found["dist"] == "ctr-click_rate" and found["version"] == "0.1.0"
    assert found["key"] == ["models", "click_rate"]
    assert found["file"].startswith(str(site))  # the installed copy, not the source folder

    listed = subprocess.run(
        [sys.executable, "-m", "ctr_dagster.cli", "plugins", "--json", "--kind", "model"],
        env=_env(site),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    assert {"name": "click_rate", "status": "ok"}.items() <= next(
        r for r in rows if r["name"] == "click_rate"
    ).items()


def test_template_ships_as_package_data():
    templates = sorted(
        p.relative_to(scaffold.TEMPLATE_ROOT).as_posix() for p in scaffold.TEMPLATE_ROOT.rglob("*.tmpl")
    )
    assert "model/__package__/model.py.tmpl" in templates
    meta = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert "scaffold/**/*" in meta["tool"]["setuptools"]["package-data"]["ctr_dagster"]


def test_shipped_baseline_lr_is_exactly_the_scaffold_output(tmp_path):
    """plugins/ctr-baseline_lr is documented as `ctr new-plugin baseline_lr`'s output: keep them one."""
    generated = scaffold.new_plugin("baseline_lr", tmp_path)
    shipped = REPO / "plugins" / "ctr-baseline_lr"
    skip = ("__pycache__", ".egg-info", ".ruff_cache", ".pytest_cache")

    def files(root: Path) -> dict[str, bytes]:
        return {
            str(p.relative_to(root)): p.read_bytes()
            for p in sorted(root.rglob("*"))
            if p.is_file() and not any(part.endswith(skip) for part in p.relative_to(root).parts)
        }

    ours, theirs = files(generated), files(shipped)
    assert sorted(ours) == sorted(theirs)
    differing = [name for name in ours if ours[name] != theirs[name]]
    assert not differing, f"scaffold template and plugins/ctr-baseline_lr differ in {differing}"
