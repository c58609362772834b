"""A non-editable install must contain every engine subpackage and the scaffold templates."""

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_contains_all_subpackages(tmp_path):
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("ctr_dagster-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    packages = {
        p.parent.relative_to(ROOT).as_posix()
        for p in (ROOT / "ctr_dagster").rglob("__init__.py")
        if "template" not in p.parts
    }
    assert {"ctr_dagster", "ctr_dagster/datagen", "ctr_dagster/importers", "ctr_dagster/quality"} <= packages
    for package in packages:
        assert f"{package}/__init__.py" in names, f"{package} missing from the wheel"
    assert any(n.startswith("ctr_dagster/scaffold/template/") for n in names), "scaffold templates missing"
    # only the engine is installed: the code location, plugins and tests stay out of the wheel
    assert not any(n.startswith(("assets/", "tests/", "plugins/")) for n in names)
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "ctr = ctr_dagster.cli:app" in zipfile.ZipFile(wheel).read(entry_points).decode()
