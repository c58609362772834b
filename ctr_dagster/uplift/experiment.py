"""`ctr uplift`: fit every installed uplift plugin on a tabular experiment and score it per arm and stage.

`run_experiment(csv, treatment=..., outcomes=[...])` reads and splits the file (`tabular`), fits each
uplift model plugin (entry points of `ctr_dagster.models` whose `task` is "uplift"; default config,
`FitContext(seed)`) on train / valid, and scores it on the test rows (`evaluate.evaluate_uplift`, no
oracle: real data). A plugin that fails to fit or predict is listed with its error; the others are
still scored. `result_text` is the plain-text report the CLI prints; `ExperimentResult.as_json` the
machine-readable one.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ctr_dagster.uplift.evaluate import ORACLE, UpliftReport, evaluate_uplift
from ctr_dagster.uplift.metrics import DEFAULT_RESAMPLES
from ctr_dagster.uplift.tabular import Experiment, read_experiment


class NoUpliftModelError(ValueError):
    """No uplift plugin is installed, or `--models` names one that is not."""


@dataclass
class ExperimentResult:
    experiment: Experiment
    report: UpliftReport
    models: list[str]
    fit_seconds: dict[str, float] = field(default_factory=dict)
    quarantine_file: Path | None = None
    plots: dict[str, Path] = field(default_factory=dict)
    broken: list[str] = field(default_factory=list)

    @property
    def scored(self) -> list[str]:
        return sorted({r["model"] for r in self.report.rows if r["model"] != ORACLE})

    def as_json(self) -> dict[str, Any]:
        return {
            "experiment": self.experiment.summary(),
            "models": self.models,
            "scored": self.scored,
            "fit_seconds": {k: round(v, 3) for k, v in self.fit_seconds.items()},
            "failed": dict(self.report.failed),
            "broken_plugins": list(self.broken),
            "uplift": self.report.as_json(),
            "quarantine_file": None if self.quarantine_file is None else str(self.quarantine_file),
            "plots": {k: str(v) for k, v in self.plots.items()},
        }


def uplift_plugins(names: Sequence[str] | None = None) -> tuple[list[Any], list[str]]:
    """(the installed uplift model plugins, by name; broken model plugins as "name (dist): error").

    `names`: only these (in this order); an unknown one raises `NoUpliftModelError` listing the known.
    """
    from ctr_dagster.registry import discover

    registry = discover(["model"])
    found = {p.name: p for p in registry.good("model") if getattr(p.cls, "task", None) == "uplift"}
    broken = [f"{b.name} ({b.dist or '?'}): {b.error}" for b in registry.broken_of("model")]
    if not found:
        raise NoUpliftModelError(
            "no uplift model plugin is installed (a model plugin whose task is 'uplift', e.g. "
            "pip install -e plugins/ctr-metalearners)"
        )
    if not names:
        return [found[n] for n in sorted(found)], broken
    unknown = [n for n in names if n not in found]
    if unknown:
        raise NoUpliftModelError(f"unknown uplift model(s) {unknown}; installed: {sorted(found)}")
    return [found[n] for n in names], broken


def run_experiment(
    csv: Path,
    *,
    treatment: str,
    outcomes: Sequence[str],
    control: str | None = None,
    ignore: Sequence[str] = (),
    seed: int = 0,
    models: Sequence[str] | None = None,
    quarantine_file: Path | None = None,
    plots_dir: Path | None = None,
    n_resamples: int = DEFAULT_RESAMPLES,
    log: Callable[[str], None] = print,
) -> ExperimentResult:
    """Read, split, fit, score (see the module docstring). Raises `MalformedInputError` for an unusable
    file, `NoUpliftModelError` when there is nothing to fit."""
    import pyarrow as pa

    from ctr_dagster.contracts import FitContext

    plugins, broken = uplift_plugins(models)
    experiment = read_experiment(
        Path(csv), treatment=treatment, outcomes=outcomes, control=control, ignore=ignore, seed=seed
    )
    written = None
    if experiment.quarantine and quarantine_file is not None:
        written = experiment.write_quarantine(quarantine_file)
    log(
        f"{experiment.file.name}: {experiment.rows_kept} rows kept, {len(experiment.quarantine)} quarantined; "
        f"fitting {', '.join(p.name for p in plugins)}"
    )
    fitted: dict[str, Any] = {}
    failed: dict[str, str] = {}
    seconds: dict[str, float] = {}
    for plugin in plugins:
        started = time.perf_counter()
        try:
            model = plugin.instantiate()
            with tempfile.TemporaryDirectory(prefix=f"ctr-uplift-{plugin.name}-") as workdir:
                ctx = FitContext(seed=seed, device="cpu", workdir=Path(workdir), log=log)
                result = model.fit(experiment.train, experiment.valid, ctx)
            fitted[plugin.name] = result if isinstance(result, plugin.cls) else model
        except Exception as exc:  # one failing plugin must not hide the others
            failed[plugin.name] = f"fit failed: {type(exc).__name__}: {exc}"
        seconds[plugin.name] = time.perf_counter() - started
    # the arms' observed average effects are measured on every kept row (more power than the test alone)
    every_row = pa.concat_tables([experiment.train, experiment.valid, experiment.test])
    report = evaluate_uplift(
        fitted, experiment.test, None, n_resamples=n_resamples, seed=seed, effect_rows=every_row
    )
    report.failed = {**failed, **{k: f"predict failed: {v}" for k, v in report.failed.items()}}
    plots = {}
    if plots_dir is not None and report.rows:
        from ctr_dagster.uplift.plots import uplift_curves_png

        plots = uplift_curves_png(report, Path(plots_dir), prefix=f"uplift_{experiment.file.stem}")
    return ExperimentResult(
        experiment=experiment,
        report=report,
        models=[p.name for p in plugins],
        fit_seconds=seconds,
        quarantine_file=written,
        plots=plots,
        broken=broken,
    )


# -- text ----------------------------------------------------------------------------------------------
def _ci(value: float | None, low: float | None, high: float | None) -> str:
    if value is None:
        return "n/a"
    if low is None or high is None:
        return f"{value:+.3f}"
    return f"{value:+.3f} [{low:+.3f}, {high:+.3f}]"


def _table(rows: list[dict[str, object]], columns: list[str]) -> str:
    cells = [list(columns)] + [[str(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def result_text(result: ExperimentResult, max_quarantine: int = 20) -> str:
    """The report `ctr uplift` prints: data, arms, the AUUC / Qini table, observed effects, quarantine."""
    e, report = result.experiment, result.report
    out = [
        f"file {e.file}: {e.rows_read} rows read, {e.rows_kept} kept, {len(e.quarantine)} quarantined "
        f"(train {e.train.num_rows} / valid {e.valid.num_rows} / test {e.test.num_rows}, "
        "random split stratified by arm)",
        f"control = {e.arms[0]!r}: {e.control_rule}; "
        + ", ".join(f"arm {k} = {v!r}" for k, v in e.arms.items() if k),
        f"outcomes: stage 1 (click) = {e.outcomes[0]!r}"
        + (f", stage 2 (conversion) = {e.outcomes[1]!r}" if len(e.outcomes) > 1 else ""),
        f"features: {len(e.features)} ({sum(k == 'numeric' for k in e.features.values())} numeric, "
        f"{sum(k == 'text' for k in e.features.values())} text)",
        "",
    ]
    if report.rows:
        rows = [
            {
                "model": r["model"],
                "arm": f"{r['arm']} ({e.arms.get(r['arm'], '?')})",
                "stage": r["stage"],
                "AUUC [95% CI]": _ci(r["auuc"], r["auuc_low"], r["auuc_high"]),
                "Qini [95% CI]": _ci(r["qini"], r["qini_low"], r["qini_high"]),
                "n_treated": r["n_treated"],
                "n_control": r["n_control"],
                "verdict": r["verdict"],
            }
            for r in report.rows
        ]
        out.append(
            f"uplift on the test rows (normalised: 0 = random, 1 = perfect; {report.resamples} bootstrap "
            "resamples stratified by arm):"
        )
        out.append(_table(rows, list(rows[0])))
        effects = [
            {
                "arm": a["arm"],
                "stage": a["stage"],
                "observed effect [95% CI]": _ci(a["observed_ate"], a["observed_low"], a["observed_high"]),
                "zero-effect arm": "yes" if a["zero_effect"] else "no",
            }
            for a in report.arms
        ]
        out += [
            "",
            "observed average effect (arm rate - control rate, every kept row):",
            _table(effects, list(effects[0])),
        ]
    else:
        out.append("no model could be scored")
    for name, error in sorted(report.failed.items()):
        out.append(f"failed: {name}: {error}")
    if e.quarantine:
        where = f" -> {result.quarantine_file}" if result.quarantine_file else ""
        counts = ", ".join(f"{k} ({v})" for k, v in sorted(e.quarantine_counts().items()))
        out += ["", f"quarantined {len(e.quarantine)} row(s){where}: {counts}"]
        out += [f"  {q}" for q in e.quarantine[:max_quarantine]]
        if len(e.quarantine) > max_quarantine:
            out.append(f"  ... and {len(e.quarantine) - max_quarantine} more")
    else:
        out += ["", "quarantined 0 rows"]
    for path in result.plots.values():
        out.append(f"plot: {path}")
    for note in [*e.notes, *report.notes]:
        out.append(f"note: {note}")
    if result.broken:
        out.append(f"note: broken model plugin(s) skipped: {'; '.join(result.broken)}")
    return "\n".join(out)
