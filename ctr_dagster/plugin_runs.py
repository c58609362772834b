"""Run every plugin of a kind for a stage: the one place that isolates, times and reports each plugin.

The embedding stage (encoders) and the attribute stage (extractors) both run a list of plugins where
one bad plugin must not sink the others. Each hands `run_plugins` one *step* per selected plugin (a
callable doing that plugin's work). A step that raises becomes a "failed" run carrying the
exception's type, message and traceback (logged through `warn`); the other steps' results are kept.
Plugins the registry could not load come in as "broken" runs. Every run gives the same row (plugin,
status, seconds, error) for the stage's metadata table and warning check, and `require_any_ok`
fails the stage, listing every error, when none worked.

Inside a step, `step.phase("fit")` times a part of the work and `step.collect_report(plugin, dir)`
reads the plugin's optional `summary` / `report(directory)` (`contracts.PluginReporting`) into a
`PluginReport` the stage renders without knowing the plugin. No Dagster, nothing heavy imported.
"""

from __future__ import annotations

import math
import numbers
import time
import traceback
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, Literal, TypeVar

from ctr_dagster.contracts import REPORT_IMAGE_SUFFIXES

Status = Literal["ok", "failed", "broken"]
T = TypeVar("T")
ROW_COLUMNS: tuple[str, ...] = ("status", "seconds", "error")  # after the kind's name column


# -- reports ---------------------------------------------------------------------------------------
@dataclass
class PluginReport:
    """A plugin's `summary` + `report(directory)` entries, split by how a stage shows them."""

    numbers: dict[str, float | int] = field(default_factory=dict)  # numeric metadata <plugin>/<key>
    images: dict[str, Path] = field(default_factory=dict)  # pictures shown inline
    other: dict[str, Any] = field(default_factory=dict)  # the rest, JSON-able, shown as is
    error: str | None = None  # the report hook itself failed (the plugin's results still count)

    @property
    def empty(self) -> bool:
        return not (self.numbers or self.images or self.other or self.error)

    def as_json(self) -> dict[str, Any]:
        """Every entry in one JSON-able dict (pictures as their path), e.g. for a JSON metadata block."""
        out: dict[str, Any] = {**self.numbers, **self.other, **{k: str(p) for k, p in self.images.items()}}
        if self.error:
            out["report_error"] = self.error
        return out


def split_report(entries: Mapping[str, Any], error: str | None = None) -> PluginReport:
    """Sort report entries: finite numbers (not bools), existing PNG paths, the rest made JSON-able."""
    import json

    report = PluginReport(error=error)
    for key, value in entries.items():
        key = str(key)
        if isinstance(value, numbers.Real) and not isinstance(value, bool):
            if math.isfinite(float(value)):
                report.numbers[key] = int(value) if isinstance(value, numbers.Integral) else float(value)
            else:
                report.other[key] = None
        elif isinstance(value, Path) and value.suffix.lower() in REPORT_IMAGE_SUFFIXES and value.is_file():
            report.images[key] = value
        else:
            try:
                json.dumps(value, allow_nan=False)
            except (TypeError, ValueError):
                value = str(value)
            report.other[key] = value
    return report


def plugin_report(plugin: Any, directory: Path | None) -> PluginReport:
    """`plugin.summary` plus what `plugin.report(directory)` returns (when both exist); never raises.

    `directory` is created first; None skips `report` (only the summary is read).
    """
    entries: dict[str, Any] = {}
    summary = getattr(plugin, "summary", None)
    if isinstance(summary, Mapping):
        entries.update(summary)
    error = None
    report = getattr(plugin, "report", None)
    if callable(report) and directory is not None:
        try:
            Path(directory).mkdir(parents=True, exist_ok=True)
            extra = report(Path(directory))
            if not isinstance(extra, Mapping):
                raise TypeError(f"report must return a dict, got {type(extra).__name__}")
            entries.update(extra)
        except Exception as exc:  # a broken report must not discard the plugin's results
            error = f"{type(exc).__name__}: {exc}"
    return split_report(entries, error)


# -- one plugin ------------------------------------------------------------------------------------
@dataclass
class PluginRun(Generic[T]):
    """One plugin's outcome in a stage: what its step returned, or why there is nothing."""

    name: str
    value: T | None = None  # what the step returned (None unless ok)
    status: Status = "ok"
    seconds: float = 0.0  # the whole step
    phases: dict[str, float] = field(default_factory=dict)  # timed parts, e.g. {"fit": 1.2, "extract": 0.3}
    error: str | None = None  # "ExceptionType: message" (broken: the registry's one-line reason)
    error_type: str | None = None
    detail: str = ""  # traceback
    report: PluginReport = field(default_factory=PluginReport)

    def __post_init__(self) -> None:
        if self.error is not None and self.status == "ok":
            self.status = "failed"

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def row(self, kind: str = "plugin") -> dict[str, Any]:
        """The uniform row: name (under the kind's column name), status, seconds, error."""
        return {
            kind: self.name,
            "status": self.status,
            "seconds": round(self.seconds, 2),
            "error": self.error,
        }


class Step:
    """What a plugin's step receives: a timer for its parts and a place for the plugin's report."""

    def __init__(self, name: str):
        self.name = name
        self.phases: dict[str, float] = {}
        self.report = PluginReport()

    @contextmanager
    def phase(self, part: str) -> Iterator[None]:
        """Time a part of the step (recorded even when it raises); repeated parts add up."""
        started = time.perf_counter()
        try:
            yield
        finally:
            self.phases[part] = self.phases.get(part, 0.0) + time.perf_counter() - started

    def collect_report(self, plugin: Any, directory: Path | None) -> PluginReport:
        self.report = plugin_report(plugin, directory)
        return self.report


R = TypeVar("R", bound=PluginRun)


def run_plugin(
    name: str,
    step: Callable[[Step], Any],
    *,
    kind: str = "plugin",
    warn: Callable[[str], None] | None = None,
    run_type: type[R] = PluginRun,  # type: ignore[assignment]
) -> R:
    """Run one plugin's step, isolated: an exception becomes a failed run (logged through `warn`)."""
    ctx = Step(name)
    started = time.perf_counter()
    try:
        value = step(ctx)
    except Exception as exc:  # isolation: one failing plugin must not sink the others
        run = run_type(
            name,
            None,
            "failed",
            error=f"{type(exc).__name__}: {exc}",
            error_type=type(exc).__name__,
            detail=traceback.format_exc(),
        )
        if warn is not None:
            warn(f"{kind} {name} failed: {run.error}\n{run.detail}")
    else:
        run = run_type(name, value)
    run.seconds = time.perf_counter() - started
    run.phases = dict(ctx.phases)
    run.report = ctx.report
    if run.report.error and warn is not None:
        warn(f"{kind} {name}: its report failed ({run.report.error}); its results still count")
    return run


def broken_run(plugin: Any, run_type: type[R] = PluginRun) -> R:  # type: ignore[assignment]
    """A plugin the registry could not load (`registry.BrokenPlugin`), as a run of status "broken"."""
    return run_type(
        plugin.name,
        None,
        "broken",
        error=plugin.error,
        error_type="BrokenPlugin",
        detail=getattr(plugin, "detail", "") or "",
    )


# -- every plugin of a kind ------------------------------------------------------------------------
@dataclass
class PluginRuns(Generic[R]):
    """Every selected plugin of one kind in one stage run, in order (broken ones last)."""

    kind: str
    runs: list[R] = field(default_factory=list)

    def __iter__(self) -> Iterator[R]:
        return iter(self.runs)

    def __len__(self) -> int:
        return len(self.runs)

    @property
    def ok(self) -> list[R]:
        return [r for r in self.runs if r.ok]

    @property
    def problems(self) -> list[R]:
        """Failed and broken runs: what the stage's warning check lists."""
        return [r for r in self.runs if not r.ok]

    def rows(self) -> list[dict[str, Any]]:
        return [r.row(self.kind) for r in self.runs]

    def problem_rows(self) -> list[dict[str, Any]]:
        return [r.row(self.kind) for r in self.problems]

    def errors(self) -> str:
        """Every problem on one line: "name (status): error; ..."."""
        return "; ".join(f"{r.name} ({r.status}): {r.error}" for r in self.problems)

    def reports(self) -> dict[str, PluginReport]:
        """Non-empty reports by plugin name (successful runs only)."""
        return {r.name: r.report for r in self.ok if not r.report.empty}

    def require_any_ok(self, stage: str) -> None:
        """Fail the stage, naming every error, when plugins were selected (or broken) and none worked."""
        if self.runs and not self.ok:
            raise RuntimeError(f"{stage}: every {self.kind} failed or is broken: {self.errors()}")


def run_plugins(
    kind: str,
    steps: Mapping[str, Callable[[Step], Any]] | Iterable[tuple[str, Callable[[Step], Any]]],
    *,
    broken: Iterable[Any] = (),
    warn: Callable[[str], None] | None = None,
    run_type: type[R] = PluginRun,  # type: ignore[assignment]
) -> PluginRuns[R]:
    """Run each (name, step) in order, isolated (`run_plugin`), then add the `broken` plugins."""
    pairs = steps.items() if isinstance(steps, Mapping) else steps
    runs: list[R] = [run_plugin(name, fn, kind=kind, warn=warn, run_type=run_type) for name, fn in pairs]
    runs += [broken_run(b, run_type) for b in broken]
    return PluginRuns(kind, runs)
