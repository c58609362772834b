"""Plugin discovery: entry points -> validated plugin classes, with failure isolation.

A plugin is a class named by an entry point in one of the groups of `ctr_dagster.contracts.GROUPS`
(`ctr_dagster.models`, `ctr_dagster.encoders`, `ctr_dagster.extractors`). `discover()` reads those
groups, imports each entry point and validates it; it never raises because of a plugin:

* a good plugin becomes a `PluginInfo` (its class, distribution and version);
* a plugin whose import raises anything (ImportError, SyntaxError, an exception at module level,
  even `SystemExit`), whose entry-point name is not a valid plugin name (`[a-z][a-z0-9_]*`), whose
  class `name` differs from its entry-point name, that fails `contract_violations`, or whose name
  is claimed by more than one distribution becomes a `BrokenPlugin` with a readable `error` (and the
  traceback in `detail`), which the UI and `ctr plugins` show.

Nothing heavy is imported here: discovery costs the import of each plugin's own module and no more
(plugins import torch & co. inside their methods).

Asset keys are stable per (kind, name): `asset_key_for("model", "din") == ["models", "din"]`; the
asset factories use them, so renaming a distribution or bumping its version never changes a key.

Typical use::

    from ctr_dagster.registry import default_registry

    registry = default_registry()           # cached for the code location; refresh_registry() re-reads
    for info in registry.good("model"):
        model = info.instantiate({"epochs": 2})
    for broken in registry.broken:
        print(broken.kind, broken.name, broken.error)
"""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
import os
import re
import traceback
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ctr_dagster.contracts import GROUPS, config_from_dict, config_to_dict, contract_violations

__all__ = [
    "ASSET_PREFIXES",
    "KINDS",
    "NAME_PATTERN",
    "BrokenPlugin",
    "PluginInfo",
    "Registry",
    "asset_key_for",
    "default_registry",
    "discover",
    "is_valid_name",
    "refresh_registry",
    "validate_name",
]

#: Plugin kinds, in display order.
KINDS: tuple[str, ...] = tuple(GROUPS)

#: A plugin name: lower-case ASCII letter, then lower-case letters, digits or underscores.
NAME_PATTERN = re.compile(r"[a-z][a-z0-9_]*")

#: First component of every plugin's asset key, per kind.
ASSET_PREFIXES: dict[str, str] = {"model": "models", "encoder": "encoders", "extractor": "extractors"}
#: The Dagster asset a plugin's work shows up in: a model has its own (`models/<name>`); encoders
#: and extractors run inside their stage's asset, which is what the registry table names.
STAGE_ASSETS: dict[str, str] = {"encoder": "item_embeddings", "extractor": "item_attributes"}


def shown_in(kind: str, name: str) -> str | None:
    """The Dagster asset key (slash-joined) where this plugin's results appear, or None for an
    invalid name (a broken plugin's name may be anything)."""
    if kind in STAGE_ASSETS:
        return STAGE_ASSETS[kind]
    return "/".join(asset_key_for(kind, name)) if is_valid_name(name) else None


def is_valid_name(name: object) -> bool:
    return isinstance(name, str) and NAME_PATTERN.fullmatch(name) is not None


def validate_name(name: object, what: str = "plugin name") -> str:
    """Return `name` if it is a valid plugin name, else raise ValueError saying what is allowed."""
    if not is_valid_name(name):
        raise ValueError(
            f"invalid {what} {name!r}: use a lower-case letter followed by lower-case letters, "
            "digits or underscores (pattern [a-z][a-z0-9_]*), e.g. 'my_model'"
        )
    return name  # type: ignore[return-value]


def _check_kind(kind: str) -> str:
    if kind not in GROUPS:
        raise ValueError(f"unknown plugin kind {kind!r}; known: {list(GROUPS)}")
    return kind


def asset_key_for(kind: str, name: str) -> list[str]:
    """Stable asset key path of a plugin's asset: `[ASSET_PREFIXES[kind], name]`, e.g. ["models", "din"].

    Depends only on (kind, name), never on the distribution or its version.
    """
    return [ASSET_PREFIXES[_check_kind(kind)], validate_name(name)]


@dataclass(frozen=True)
class PluginInfo:
    """A discovered plugin that imported and passed validation."""

    kind: str
    name: str
    dist: str | None  # distribution name (None if the entry point has no distribution)
    version: str | None  # distribution version (not an encoder's `version` class attribute)
    entry_point_value: str  # "module:attr"
    cls: type = field(repr=False)

    @property
    def group(self) -> str:
        return GROUPS[self.kind]

    @property
    def asset_key(self) -> list[str]:
        return asset_key_for(self.kind, self.name)

    def default_config(self) -> dict[str, Any]:
        """The plugin's Config defaults as a plain dict (launchpad defaults)."""
        return config_to_dict(self.cls.Config())

    def instantiate(self, values: dict[str, Any] | None = None) -> Any:
        """A plugin instance configured from (launchpad) `values`; unknown keys raise ValueError."""
        return self.cls(config_from_dict(self.cls, values))

    def as_row(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "name": self.name,
            "status": "ok",
            "dist": self.dist,
            "version": self.version,
            "entry_point": self.entry_point_value,
            "asset_key": shown_in(self.kind, self.name),
            "error": None,
        }


@dataclass(frozen=True)
class BrokenPlugin:
    """A plugin that could not be used; `error` says why in one line, `detail` has the traceback."""

    kind: str
    name: str
    dist: str | None
    entry_point_value: str
    error: str
    version: str | None = None
    detail: str = field(default="", repr=False)

    @property
    def group(self) -> str:
        return GROUPS[self.kind]

    def as_row(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "name": self.name,
            "status": "broken",
            "dist": self.dist,
            "version": self.version,
            "entry_point": self.entry_point_value,
            "asset_key": shown_in(self.kind, self.name),
            "error": self.error,
        }


@dataclass(frozen=True)
class Registry:
    """The result of one discovery: good plugins and broken ones, per kind, sorted by name."""

    plugins: tuple[PluginInfo, ...] = ()
    broken: tuple[BrokenPlugin, ...] = ()
    kinds: tuple[str, ...] = KINDS

    def good(self, kind: str) -> list[PluginInfo]:
        _check_kind(kind)
        return [p for p in self.plugins if p.kind == kind]

    def broken_of(self, kind: str) -> list[BrokenPlugin]:
        _check_kind(kind)
        return [b for b in self.broken if b.kind == kind]

    def names(self, kind: str) -> list[str]:
        return [p.name for p in self.good(kind)]

    def get(self, kind: str, name: str) -> PluginInfo:
        """The good plugin `name` of `kind`; KeyError naming the alternatives (or why it is broken)."""
        for p in self.good(kind):
            if p.name == name:
                return p
        broken = [b for b in self.broken_of(kind) if b.name == name]
        if broken:
            raise KeyError(f"{kind} plugin {name!r} is broken: " + "; ".join(b.error for b in broken))
        raise KeyError(f"no {kind} plugin named {name!r}; available: {self.names(kind)}")

    def only_models(self, names: Iterable[str]) -> Registry:
        """This registry with only the model plugins `names` (the other kinds unchanged): the
        `Settings.models` selection. A name that is neither a good nor a broken model plugin is an
        error naming what is installed; a selected broken plugin stays reported."""
        wanted = {n.strip() for n in names if n.strip()}
        known = {p.name for p in self.good("model")} | {b.name for b in self.broken_of("model")}
        unknown = sorted(wanted - known)
        if unknown:
            raise ValueError(
                f"CTR_MODELS names {unknown}, which are not installed model plugins; "
                f"installed: {sorted(known)}"
            )
        return Registry(
            plugins=tuple(p for p in self.plugins if p.kind != "model" or p.name in wanted),
            broken=tuple(b for b in self.broken if b.kind != "model" or b.name in wanted),
            kinds=self.kinds,
        )

    def __contains__(self, key: object) -> bool:
        """`("model", "din") in registry`: is there a good plugin of that kind and name?"""
        return isinstance(key, tuple) and any((p.kind, p.name) == key for p in self.plugins)

    def as_rows(self) -> list[dict[str, Any]]:
        """One plain dict per plugin (good and broken), for tables, JSON and Dagster metadata.

        Keys: kind, name, status ("ok" | "broken"), dist, version, entry_point, asset_key (the Dagster
        asset its results appear in: `models/<name>`, or the stage asset of an encoder / extractor),
        error (None when ok).
        """
        rows = [p.as_row() for p in self.plugins] + [b.as_row() for b in self.broken]
        order = {k: i for i, k in enumerate(KINDS)}
        return sorted(rows, key=lambda r: (order.get(r["kind"], 99), r["name"], r["status"], r["dist"] or ""))


def _dist_of(ep: importlib.metadata.EntryPoint) -> tuple[str | None, str | None]:
    dist = getattr(ep, "dist", None)
    if dist is None:
        return None, None
    try:
        return dist.metadata["Name"], dist.version
    except Exception:  # malformed metadata must not break discovery
        return getattr(dist, "name", None), None


def _error_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _load_one(kind: str, ep: importlib.metadata.EntryPoint) -> PluginInfo | BrokenPlugin:
    dist, version = _dist_of(ep)

    def broken(error: str, detail: str = "") -> BrokenPlugin:
        return BrokenPlugin(kind, ep.name, dist, ep.value, error, version, detail)

    if not is_valid_name(ep.name):
        return broken(
            f"invalid plugin name {ep.name!r} (entry point in {GROUPS[kind]}): must match [a-z][a-z0-9_]*"
        )
    try:
        obj = ep.load()
    except (Exception, SystemExit) as exc:  # isolation: any failure of plugin code is reported
        return broken(f"import of {ep.value!r} failed: {_error_line(exc)}", traceback.format_exc())
    try:
        problems = contract_violations(kind, obj)
        if not problems:
            declared = obj.name
            if declared != ep.name:
                problems.append(
                    f"class attribute name={declared!r} differs from its entry-point name {ep.name!r}"
                )
    except (Exception, SystemExit) as exc:
        return broken(f"validation of {ep.value!r} raised {_error_line(exc)}", traceback.format_exc())
    if problems:
        return broken(f"{ep.value} violates the {kind} contract: " + "; ".join(problems))
    return PluginInfo(kind, ep.name, dist, version, ep.value, obj)


def _entry_points(
    groups: Iterable[str], path: list[str] | None
) -> dict[str, list[importlib.metadata.EntryPoint]]:
    """Entry points of `groups`, from one scan of the installed distributions (each scan reads every
    dist-info folder on the path, so scanning once per group would triple the code-location load cost)."""
    groups = list(groups)
    try:
        if path is None:
            everything = importlib.metadata.entry_points()
            return {g: list(everything.select(group=g)) for g in groups}
        seen: set[str] = set()
        found: dict[str, list[importlib.metadata.EntryPoint]] = {g: [] for g in groups}
        for dist in importlib.metadata.distributions(path=path):
            key = re.sub(r"[-_.]+", "-", (dist.metadata["Name"] or "")).lower()
            if key in seen:  # first one on the path wins, as for the global view
                continue
            seen.add(key)
            for g in groups:
                found[g] += list(dist.entry_points.select(group=g))
        return found
    except Exception:  # pragma: no cover - a corrupt dist-info elsewhere on sys.path
        return {g: [] for g in groups}


def discover(
    kinds: Iterable[str] | None = None, *, path: Iterable[str | os.PathLike[str]] | None = None
) -> Registry:
    """Read, import and validate every plugin of `kinds` (default: all kinds). Never raises for a plugin.

    `path` restricts discovery to the distributions found in those folders (default: all of
    `sys.path`); their modules are still imported the normal way, so they must be importable.

    A name declared by several distributions in one group is ambiguous: every claimant is reported
    broken (none is imported) until all but one are uninstalled.
    """
    selected = tuple(_check_kind(k) for k in (kinds if kinds is not None else KINDS))
    folders = None if path is None else [os.fspath(p) for p in path]
    importlib.invalidate_caches()
    good: list[PluginInfo] = []
    bad: list[BrokenPlugin] = []
    entry_points = _entry_points([GROUPS[k] for k in selected], folders)
    for kind in selected:
        by_name: dict[str, list[importlib.metadata.EntryPoint]] = {}
        for ep in entry_points[GROUPS[kind]]:
            by_name.setdefault(ep.name, []).append(ep)
        for name in sorted(by_name):
            eps = by_name[name]
            if len(eps) > 1:
                claimants = ", ".join(sorted(f"{_dist_of(ep)[0]} ({ep.value})" for ep in eps))
                for ep in eps:
                    dist, version = _dist_of(ep)
                    bad.append(
                        BrokenPlugin(
                            kind,
                            name,
                            dist,
                            ep.value,
                            f"duplicate {kind} plugin name {name!r} in {GROUPS[kind]}, declared by: "
                            f"{claimants}; uninstall all but one",
                            version,
                        )
                    )
                continue
            result = _load_one(kind, eps[0])
            (good if isinstance(result, PluginInfo) else bad).append(result)
    return Registry(plugins=tuple(good), broken=tuple(bad), kinds=selected)


_model_selection: tuple[str, ...] | None = None


def select_models(names: Iterable[str] | None) -> None:
    """Restrict the model plugins `default_registry()` offers to `names` (None or empty: every
    installed one). The code location calls it with `Settings.models` (``CTR_MODELS``) before any
    asset is built, so every stage (assets, evaluation, schedules) sees the same models."""
    global _model_selection
    selection = tuple(sorted({n.strip() for n in names or () if n.strip()})) or None
    if selection != _model_selection:
        _model_selection = selection
        default_registry.cache_clear()


@functools.cache
def default_registry() -> Registry:
    """The registry of all kinds, discovered once per process (the code location's view), with
    only the selected model plugins when `select_models` was given some."""
    registry = discover()
    return registry.only_models(_model_selection) if _model_selection else registry


def refresh_registry() -> Registry:
    """Forget the cached registry and discover again (e.g. after `pip install` of a plugin)."""
    default_registry.cache_clear()
    return default_registry()
