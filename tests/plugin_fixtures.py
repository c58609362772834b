"""Fixture plugin distributions without pip: a `<dist>-<version>.dist-info/` folder + module files.

`importlib.metadata` discovers any `*.dist-info` folder on `sys.path` (METADATA gives the name and
version, entry_points.txt the entry points), so writing one next to the plugin's modules and putting
the folder on `sys.path` is an installed distribution as far as the registry is concerned.
"""

from __future__ import annotations

import importlib
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

FIXTURES = Path(__file__).parent / "fixtures" / "plugins"
MODELS, ENCODERS, EXTRACTORS = "ctr_dagster.models", "ctr_dagster.encoders", "ctr_dagster.extractors"
PREFIX = "ctrfix_"


def write_dist(
    root: Path,
    dist: str,
    entry_points: dict[str, dict[str, str]],
    modules: tuple[str, ...] = (),
    sources: dict[str, str] | None = None,
    version: str = "0.1",
) -> Path:
    """Write `root/<dist>-<version>.dist-info` and copy fixture `modules` (names in FIXTURES) into `root`.

    `entry_points` maps group -> {entry-point name: "module:attr"}; `sources` maps extra file names
    to their text (e.g. a module with a syntax error). Returns the dist-info folder.
    """
    root.mkdir(parents=True, exist_ok=True)
    info = root / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    lines = []
    for group, eps in entry_points.items():
        lines.append(f"[{group}]")
        lines += [f"{name} = {value}" for name, value in eps.items()]
        lines.append("")
    (info / "entry_points.txt").write_text("\n".join(lines))
    for module in modules:
        shutil.copy(FIXTURES / f"{module}.py", root / f"{module}.py")
    for filename, text in (sources or {}).items():
        (root / filename).write_text(text)
    return info


def write_standard_set(root: Path) -> Path:
    """The set the registry and CLI tests use: good plugins of each kind plus every kind of breakage.

    good:    model ctrfix_good, encoder ctrfix_hash, extractor ctrfix_title
    broken:  ctrfix_importerror (ModuleNotFoundError), ctrfix_raises (RuntimeError at import),
             ctrfix_syntax (SyntaxError), ctrfix_nopredict (missing predict), Bad-Name (invalid name),
             ctrfix_mismatch (class name differs), ctrfix_dup (declared by two distributions)
    """
    write_dist(
        root,
        "ctrfix-good",
        {
            MODELS: {"ctrfix_good": "ctrfix_good:GoodModel"},
            ENCODERS: {"ctrfix_hash": "ctrfix_encoder:HashEncoder"},
            EXTRACTORS: {"ctrfix_title": "ctrfix_extractor:TitleExtractor"},
        },
        ("ctrfix_good", "ctrfix_encoder", "ctrfix_extractor"),
    )
    write_dist(
        root,
        "ctrfix-importerror",
        {MODELS: {"ctrfix_importerror": "ctrfix_importerror:ImportErrorModel"}},
        ("ctrfix_importerror",),
    )
    write_dist(root, "ctrfix-raises", {MODELS: {"ctrfix_raises": "ctrfix_raises:Model"}}, ("ctrfix_raises",))
    write_dist(
        root,
        "ctrfix-syntax",
        {MODELS: {"ctrfix_syntax": "ctrfix_syntax:Model"}},
        sources={"ctrfix_syntax.py": "class Model(:\n    pass\n"},
    )
    write_dist(
        root,
        "ctrfix-nopredict",
        {MODELS: {"ctrfix_nopredict": "ctrfix_nopredict:NoPredictModel"}},
        ("ctrfix_nopredict",),
    )
    write_dist(
        root,
        "ctrfix-names",
        {MODELS: {"Bad-Name": "ctrfix_good:GoodModel", "ctrfix_mismatch": "ctrfix_good:GoodModel"}},
    )
    write_dist(root, "ctrfix-dup-a", {MODELS: {"ctrfix_dup": "ctrfix_good:GoodModel"}})
    write_dist(root, "ctrfix-dup-b", {MODELS: {"ctrfix_dup": "ctrfix_good:GoodModel"}})
    return root


def purge_fixture_modules() -> None:
    for name in [m for m in sys.modules if m.startswith(PREFIX)]:
        del sys.modules[name]


@contextmanager
def on_sys_path(root: Path) -> Iterator[Path]:
    """Put `root` first on sys.path (so its dist-info folders are discovered) and clean up after."""
    sys.path.insert(0, str(root))
    importlib.invalidate_caches()
    try:
        yield root
    finally:
        sys.path.remove(str(root))
        importlib.invalidate_caches()
        purge_fixture_modules()


@contextmanager
def distillation_pair_registry(root: Path) -> Iterator[object]:
    """The fixture teacher (``ctrfix_good``) and its numpy student (``ctrfix_student``) installed under
    `root` as one dist, and the registry that discovers them (while on sys.path): the distillation
    tests and the gate protocol's models."""
    from ctr_dagster.registry import discover

    write_dist(
        root,
        "ctrfix-kd",
        {MODELS: {"ctrfix_good": "ctrfix_good:GoodModel", "ctrfix_student": "ctrfix_student:StudentModel"}},
        ("ctrfix_good", "ctrfix_student"),
    )
    with on_sys_path(root):
        yield discover(["model"], path=[root])
