"""`ctr new-plugin NAME`: scaffold a plugin distribution from the template shipped with the engine.

The template lives in `template/<kind>/` as `*.tmpl` files (package data, never imported or linted);
`{{name}}`, `{{Camel}}`, `{{package}}`, `{{dist}}` and `{{engine_version}}` are substituted, the
folder `__package__` becomes the plugin's import package, `__name__` in a file name becomes the
plugin name (test modules get unique names, so one pytest run can collect every plugin's tests),
and the `.tmpl` suffix is dropped.

The generated plugin is complete: a working numpy-only model (smoothed item CTR + logistic
regression, seeded, saved as JSON), its pyproject with the entry point, a README and a test module
that runs the conformance kit (`ctr_dagster.testing.ModelConformance`).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from ctr_dagster import __version__
from ctr_dagster.registry import NAME_PATTERN

TEMPLATE_ROOT = Path(__file__).parent / "template"
#: Kinds that have a template (encoders and extractors: write them by hand from contracts.py for now).
KINDS: tuple[str, ...] = ("model",)


class ScaffoldError(ValueError):
    """The plugin cannot be scaffolded (bad name, unknown kind, folder already there)."""


def camel(name: str) -> str:
    """`my_model` -> `MyModel` (the class prefix: `MyModel` + `Model`, unless it already ends so)."""
    return "".join(part[:1].upper() + part[1:] for part in name.split("_") if part)


def class_name(name: str) -> str:
    prefix = camel(name)
    return prefix if prefix.endswith("Model") else f"{prefix}Model"


def check_plugin_name(name: str) -> str:
    if not isinstance(name, str) or NAME_PATTERN.fullmatch(name) is None:
        raise ScaffoldError(
            f"invalid plugin name {name!r}: start with a lower-case letter and use only lower-case "
            "letters, digits and underscores (pattern [a-z][a-z0-9_]*), e.g. 'my_model'"
        )
    return name


def substitutions(name: str) -> dict[str, str]:
    cls = class_name(name)
    return {
        "{{name}}": name,
        "{{Camel}}": cls[: -len("Model")],
        "{{Class}}": cls,
        "{{package}}": f"ctr_{name}",
        "{{dist}}": f"ctr-{name}",
        "{{engine_version}}": __version__,
    }


def render(text: str, values: dict[str, str]) -> str:
    for key, value in values.items():
        text = text.replace(key, value)
    return text


def new_plugin(name: str, dest: Path | str = "plugins", kind: str = "model") -> Path:
    """Create `dest/ctr-NAME/` from the template and return its path.

    Refuses (ScaffoldError) an invalid name, a kind without a template, or an existing target folder.
    The folder appears atomically: it is rendered next to its target and renamed into place.
    """
    check_plugin_name(name)
    if kind not in KINDS:
        raise ScaffoldError(f"no template for plugin kind {kind!r}; available: {list(KINDS)}")
    dest = Path(dest)
    target = dest / f"ctr-{name}"
    if target.exists():
        raise ScaffoldError(
            f"{target} already exists; refusing to overwrite it (pick another name or folder)"
        )
    values = substitutions(name)
    source = TEMPLATE_ROOT / kind
    dest.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".ctr-{name}-", dir=dest))
    try:
        for path in sorted(source.rglob("*")):
            if path.is_dir() or path.name == "__pycache__" or "__pycache__" in path.parts:
                continue
            rel = path.relative_to(source)
            parts = [
                values["{{package}}"] if p == "__package__" else p.replace("__name__", name)
                for p in rel.parts
            ]
            if parts[-1].endswith(".tmpl"):
                parts[-1] = parts[-1][: -len(".tmpl")]
            out = staging.joinpath(*parts)
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(render(path.read_text(encoding="utf-8"), values), encoding="utf-8")
        os.chmod(staging, 0o755)
        if target.exists():  # created meanwhile
            raise ScaffoldError(f"{target} already exists; refusing to overwrite it")
        staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target
