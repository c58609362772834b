"""Studies: experiments outside the nightly lineage, e.g. the scaling curves of a graded model (issue 18).

A *scaling study* trains one model plugin whose `Config` has a `grade` field (SUAN: `ctr-suan`) at
several grades x several training-set sizes on the synthetic world, and records per cell the
trainable parameters, the training samples, validation / test AUC (test with its DeLong 95 %
interval) and logloss. The training sets are nested random subsets of the world's train split (kept
in time order); validation and test rows are the same for every cell. Then metric ~ a + b log10(x)
is fitted by least squares against parameters (at the largest size) and against samples (at the
largest grade), plus a joint fit on both over every cell; slopes come with their standard error, a
t-interval and R². Nothing here claims an exponent: a slope whose interval holds 0 is "no trend
shown".

The engine knows no model: the plugin class is handed in (`run_scaling(model_cls, settings)`).
No Dagster here (`assets/studies.py` turns a study into metadata); numpy, scipy, torch, pyarrow and
matplotlib are imported inside the functions, so importing this module is cheap.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

#: The metrics of a cell that the fits and the plot use (higher AUC is better, lower logloss).
METRICS = ("test_auc", "test_logloss")


@dataclass(frozen=True)
class ScalingSettings:
    """What one scaling study runs: the world, the grades, the training-set sizes, the loop."""

    profile: str = "tiny"  # synthetic world profile (`ctr_dagster.datagen.PROFILES`)
    seeds: tuple[int, ...] = (0,)  # one world + subsample + init seed per entry
    grades: tuple[int, ...] = (1, 2, 3)
    train_rows: tuple[int, ...] = (1_500, 4_500, 13_500)  # nested subsets of the train split
    epochs: int = 4  # most passes of a fit (early stopping on validation AUC may end it sooner) ...
    # ... raised for a smaller training set, up to `max_epochs`, so that every fit may take at
    # least `min_steps` optimizer steps (0: `epochs` for every size): `epochs_for`
    min_steps: int = 200
    max_epochs: int = 20
    num_threads: int = 1  # torch intra-op threads (1: SUAN's small ops collapse under contention)
    config: Mapping[str, Any] = field(default_factory=dict)  # extra fields of the plugin's Config

    def __post_init__(self) -> None:
        if len(self.grades) < 1 or len(self.train_rows) < 1 or len(self.seeds) < 1:
            raise ValueError("a scaling study needs at least one grade, one size and one seed")
        if any(n < 1 for n in self.train_rows):
            raise ValueError(f"train_rows must be positive, got {self.train_rows}")
        if self.epochs < 1 or self.num_threads < 1 or self.max_epochs < self.epochs or self.min_steps < 0:
            raise ValueError("need epochs >= 1, num_threads >= 1, max_epochs >= epochs, min_steps >= 0")

    def epochs_for(self, rows: int, batch_size: int) -> int:
        """Most epochs of a fit on `rows` training rows: `epochs`, raised so that the fit may take
        `min_steps` steps of `batch_size` rows, capped at `max_epochs`."""
        wanted = math.ceil(self.min_steps * batch_size / max(rows, 1)) if self.min_steps else 0
        return min(self.max_epochs, max(self.epochs, wanted))

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["config"] = dict(self.config)
        return out


#: The smallest settings: the `tiny` world, grades 1-3 x 1.5k / 4.5k / 13.5k training rows, up to 4
#: epochs or enough for 200 steps (at most 20 epochs; 48 s of one CPU thread on a shared machine): what the
#: `suan_scaling` asset runs by default.
SMALLEST = ScalingSettings()


# -- least squares ---------------------------------------------------------------------------------
def least_squares(
    columns: Mapping[str, Sequence[float]], y: Sequence[float], confidence: float = 0.95
) -> dict:
    """Ordinary least squares y = a + sum_k b_k x_k: per coefficient (``intercept`` and each column) the
    estimate, its standard error and a two-sided t-interval (df = n - p), plus R² and n.

    With no residual degree of freedom (n = p) the standard errors and intervals are None; R² is None
    when y does not vary.
    """
    import numpy as np
    from scipy import stats

    names = list(columns)
    yv = np.asarray(y, dtype=np.float64)
    n = yv.size
    design = np.column_stack([np.ones(n), *[np.asarray(columns[k], dtype=np.float64) for k in names]])
    p = design.shape[1]
    if n < p:
        raise ValueError(f"least squares with {p} coefficients needs at least {p} points, got {n}")
    if np.linalg.matrix_rank(design) < p:
        raise ValueError(f"the regressors {names} do not vary independently over these {n} points")
    beta, *_ = np.linalg.lstsq(design, yv, rcond=None)
    residuals = yv - design @ beta
    sse = float(residuals @ residuals)
    sst = float(((yv - yv.mean()) ** 2).sum())
    df = n - p
    if df > 0:
        sigma2 = sse / df
        se = np.sqrt(np.diag(sigma2 * np.linalg.inv(design.T @ design)))
        t = float(stats.t.ppf(0.5 + confidence / 2, df))
    else:
        se, t = None, None
    coefficients = {}
    for i, name in enumerate(["intercept", *names]):
        estimate = float(beta[i])
        if se is None:
            coefficients[name] = {"estimate": estimate, "se": None, "ci": None}
        else:
            s = float(se[i])
            coefficients[name] = {"estimate": estimate, "se": s, "ci": [estimate - t * s, estimate + t * s]}
    return {
        "coefficients": coefficients,
        "r2": None if sst <= 0 else 1.0 - sse / sst,
        "n": int(n),
        "df": int(df),
        "confidence": confidence,
    }


def log_linear_fit(x: Sequence[float], y: Sequence[float], confidence: float = 0.95) -> dict:
    """y = a + b log10(x) by least squares: ``slope`` (b: change per tenfold x), its ``se`` and t-interval
    ``ci`` (df = n - 2; None with 2 points), ``intercept``, ``r2``, ``n``, ``df``."""
    import numpy as np

    xv = np.asarray(x, dtype=np.float64)
    if np.any(xv <= 0):
        raise ValueError("log10 needs positive x")
    fit = least_squares({"log10_x": np.log10(xv)}, y, confidence)
    slope = fit["coefficients"]["log10_x"]
    return {
        "slope": slope["estimate"],
        "se": slope["se"],
        "ci": slope["ci"],
        "intercept": fit["coefficients"]["intercept"]["estimate"],
        "r2": fit["r2"],
        "n": fit["n"],
        "df": fit["df"],
        "confidence": confidence,
    }


def _fit_row(
    metric: str, against: str, slope: float, se: float | None, ci: Any, r2: float | None, n: int, fmt: Any
) -> dict[str, Any]:
    """One display row of a least-squares slope: value, SE, interval, R², points and its reading."""
    return {
        "metric": metric,
        "against": against,
        "slope": fmt(slope),
        "se": None if se is None else f"{se:.4f}",
        "95 % interval": None if ci is None else f"[{fmt(ci[0])}, {fmt(ci[1])}]",
        "R²": None if r2 is None else f"{r2:.2f}",
        "n": n,
        "reading": describe_slope(slope, ci).split(": ", 1)[-1] if ci is not None else "no interval",
    }


def describe_slope(slope: float, ci: Sequence[float] | None, unit: str = "per tenfold") -> str:
    """One honest sentence about a fitted slope: its interval and whether it excludes 0."""
    if ci is None:
        return f"{slope:+.4f} {unit} (no interval: no residual degree of freedom)"
    low, high = ci
    text = f"{slope:+.4f} {unit} [{low:+.4f}, {high:+.4f}]"
    if low > 0:
        return text + ": rises (interval above 0)"
    if high < 0:
        return text + ": falls (interval below 0)"
    return text + ": no trend shown (interval holds 0)"


def mean_t_interval(values: Sequence[float], confidence: float = 0.95) -> dict:
    """Mean of per-seed values with a two-sided t-interval (None with one value), sd and n."""
    import numpy as np
    from scipy import stats

    v = np.asarray(values, dtype=np.float64)
    mean = float(v.mean())
    if v.size < 2:
        return {"mean": mean, "ci": None, "sd": None, "n": int(v.size)}
    sd = float(v.std(ddof=1))
    half = float(stats.t.ppf(0.5 + confidence / 2, v.size - 1)) * sd / math.sqrt(v.size)
    return {"mean": mean, "ci": [mean - half, mean + half], "sd": sd, "n": int(v.size)}


def lift_kept(
    student_lift: float, teacher_lift: float, teacher_lift_ci: Sequence[float], goal: float = 0.9
) -> dict[str, Any]:
    """The share of a teacher's AUC lift over a baseline that a student keeps (issue 18: LightSUAN
    keeps >= 90 % of the SUAN teacher's lift over LightGBM), from paired differences on the same rows.

    A share of a lift that is not shown (its interval reaches 0 or below) means nothing, whatever
    its sign: then `share` and `meets_goal` are None, and the caller reports "not definable".
    """
    low = float(teacher_lift_ci[0])
    # rounded before the comparison, so that the verdict agrees with the share shown (0.009 / 0.010)
    share = round(student_lift / teacher_lift, 3) if low > 0 else None
    return {
        "student_lift": student_lift,
        "teacher_lift": teacher_lift,
        "teacher_lift_ci": [low, float(teacher_lift_ci[1])],
        "share": share,
        "meets_goal": None if share is None else share >= goal,
        "goal": goal,
    }


# -- fits over a study's cells -----------------------------------------------------------------------
def _mean_by(cells: Iterable[dict], keys: tuple[str, ...], metric: str) -> list[dict]:
    """Cells averaged over seeds: one row per distinct `keys` value with the metric's mean."""
    groups: dict[tuple, list[dict]] = {}
    for c in cells:
        if c.get(metric) is not None:
            groups.setdefault(tuple(c[k] for k in keys), []).append(c)
    out = []
    for key, rows in sorted(groups.items()):
        out.append(
            {
                **dict(zip(keys, key, strict=True)),
                "parameters": sum(r["parameters"] for r in rows) / len(rows),
                "train_rows": rows[0]["train_rows"],
                metric: sum(r[metric] for r in rows) / len(rows),
            }
        )
    return out


def scaling_fits(cells: Sequence[dict], metrics: Sequence[str] = METRICS) -> dict:
    """The least-squares fits of each metric over a study's cells (every seed a point).

    Per metric: ``params`` (metric ~ log10 parameters at the largest training size), ``samples``
    (metric ~ log10 training rows at the largest grade), ``joint`` (metric ~ log10 parameters +
    log10 rows over every cell), and ``params_by_size`` / ``samples_by_grade`` (the one-variable fit
    at every other size / grade). A fit needs two distinct x values, else it is None.
    """
    import numpy as np

    def one(rows: list[dict], x_key: str, metric: str) -> dict | None:
        xs = [r[x_key] for r in rows]
        if len(set(xs)) < 2:
            return None
        return log_linear_fit(xs, [r[metric] for r in rows])

    out: dict[str, Any] = {}
    sizes = sorted({c["train_size"] for c in cells})
    grades = sorted({c["grade"] for c in cells})
    for metric in metrics:
        good = [c for c in cells if c.get(metric) is not None]
        by_size = {s: [c for c in good if c["train_size"] == s] for s in sizes}
        by_grade = {g: [c for c in good if c["grade"] == g] for g in grades}
        entry: dict[str, Any] = {
            "params": one(by_size[sizes[-1]], "parameters", metric),
            "samples": one(by_grade[grades[-1]], "train_rows", metric),
            "params_by_size": {str(s): one(by_size[s], "parameters", metric) for s in sizes},
            "samples_by_grade": {str(g): one(by_grade[g], "train_rows", metric) for g in grades},
            "params_at_train_size": sizes[-1],
            "samples_at_grade": grades[-1],
            "joint": None,
        }
        if len({c["grade"] for c in good}) >= 2 and len({c["train_size"] for c in good}) >= 2:
            joint = least_squares(
                {
                    "log10_parameters": np.log10([c["parameters"] for c in good]),
                    "log10_train_rows": np.log10([c["train_rows"] for c in good]),
                },
                [c[metric] for c in good],
            )
            entry["joint"] = joint
        out[metric] = entry
    return out


def fit_rows(fits: Mapping[str, Any]) -> list[dict]:
    """The headline fits as table rows: metric, against what, slope per tenfold [interval], R², n."""

    def fmt(value: float | None, digits: int = 4) -> str | None:
        return None if value is None else f"{value:+.{digits}f}"

    rows = []
    for metric, entry in fits.items():
        size, grade = entry.get("params_at_train_size"), entry.get("samples_at_grade")
        for label, fit in (
            ("log10 parameters" + (f" ({size:,} rows)" if size else ""), entry.get("params")),
            ("log10 samples" + (f" (grade {grade})" if grade else ""), entry.get("samples")),
        ):
            if fit is None:
                continue
            rows.append(_fit_row(metric, label, fit["slope"], fit["se"], fit["ci"], fit["r2"], fit["n"], fmt))
        joint = entry.get("joint")
        if joint:
            for name, label in (
                ("log10_parameters", "joint: parameters"),
                ("log10_train_rows", "joint: samples"),
            ):
                c = joint["coefficients"][name]
                rows.append(
                    _fit_row(metric, label, c["estimate"], c["se"], c["ci"], joint["r2"], joint["n"], fmt)
                )
    return rows


def headline(fits: Mapping[str, Any], metric: str = "test_auc") -> str:
    """One short line: the metric's slope per tenfold parameters and per tenfold samples, with intervals."""
    entry = fits.get(metric) or {}
    parts = []
    for key, label in (("params", "parameters"), ("samples", "samples")):
        fit = entry.get(key)
        if fit is not None:
            r2 = "" if fit["r2"] is None else f", R² {fit['r2']:.2f}"
            parts.append(f"{metric} per tenfold {label}: {describe_slope(fit['slope'], fit['ci'], '')}{r2}")
    return "; ".join(parts).replace("  ", " ") or "no fit (fewer than two distinct values)"


def cell_rows(cells: Sequence[dict]) -> list[dict]:
    """One display row per cell: seed, grade, parameters, samples, AUC [DeLong 95 %], logloss, time."""
    rows = []
    for c in sorted(cells, key=lambda c: (c["seed"], c["grade"], c["train_size"])):
        ci = c.get("test_auc_ci")
        rows.append(
            {
                "seed": c["seed"],
                "grade": c["grade"],
                "parameters": f"{c['parameters']:,}",
                "samples": f"{c['train_rows']:,}",
                "valid AUC": None if c.get("valid_auc") is None else f"{c['valid_auc']:.4f}",
                "test AUC [95 %]": None
                if c.get("test_auc") is None
                else f"{c['test_auc']:.4f}" + (f" [{ci[0]:.4f}, {ci[1]:.4f}]" if ci else ""),
                "test logloss": None if c.get("test_logloss") is None else f"{c['test_logloss']:.4f}",
                "epochs run / max (best)": f"{c['epochs_run']} / {c.get('max_epochs', '?')} ({c['best_epoch']})",
                "fit s": f"{c['fit_s']:.0f}",
            }
        )
    return rows


def markdown(rows: Sequence[Mapping[str, Any]]) -> str:
    """A plain markdown table (empty cell for None)."""
    if not rows:
        return "_(none)_"
    columns = list(rows[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for r in rows:
        lines.append("| " + " | ".join("" if r.get(c) is None else str(r.get(c)) for c in columns) + " |")
    return "\n".join(lines)


# -- the plot ----------------------------------------------------------------------------------------
def scaling_png(doc: Mapping[str, Any], path: Path, title: str = "") -> Path:
    """2 x 2 PNG: test AUC (DeLong 95 % bars) and logloss against log10 parameters (a line per training
    size) and against log10 samples (a line per grade), each panel with its headline least-squares
    line dashed. matplotlib's object API on Agg, written atomically (`reports.save_png`)."""
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from ctr_dagster.reports import save_png

    cells = doc["cells"]
    fits = doc.get("fits") or scaling_fits(cells)
    sizes = sorted({c["train_size"] for c in cells})
    grades = sorted({c["grade"] for c in cells})
    fig = Figure(figsize=(9.5, 7), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, 2)
    for row, metric in enumerate(METRICS):
        for col, (x_key, group_key, fit_key) in enumerate(
            (("parameters", "train_size", "params"), ("train_rows", "grade", "samples"))
        ):
            ax = axes[row][col]
            means = _mean_by(
                cells, (group_key, "grade" if group_key == "train_size" else "train_size"), metric
            )
            for i, g in enumerate(sorted({m[group_key] for m in means})):
                pts = sorted((m for m in means if m[group_key] == g), key=lambda m: m[x_key])
                xs = np.log10([m[x_key] for m in pts])
                ys = [m[metric] for m in pts]
                label = f"{g:,} rows" if group_key == "train_size" else f"grade {g}"
                ax.plot(xs, ys, marker="o", linewidth=1.3, color=f"C{i}", label=label)
                if metric == "test_auc" and len(doc.get("seeds", [0])) == 1:
                    for m, x in zip(pts, xs, strict=True):
                        cell = next(
                            c
                            for c in cells
                            if c[group_key] == g and c[x_key] == m[x_key] and c.get("test_auc_ci")
                        )
                        low, high = cell["test_auc_ci"]
                        ax.errorbar(
                            [x],
                            [m[metric]],
                            yerr=[[m[metric] - low], [high - m[metric]]],
                            color=f"C{i}",
                            capsize=2,
                        )
            fit = fits.get(metric, {}).get(fit_key)
            if fit is not None:
                xs = np.log10([c[x_key] for c in cells])
                grid = np.linspace(xs.min(), xs.max(), 20)
                ci = fit["ci"]
                at = f"{sizes[-1]:,} rows" if fit_key == "params" else f"grade {grades[-1]}"
                interval = f" [{ci[0]:+.4f}, {ci[1]:+.4f}]" if ci else ""
                r2 = "" if fit["r2"] is None else f", R² {fit['r2']:.2f}"
                ax.set_title(f"fit at {at}: {fit['slope']:+.4f}/decade{interval}{r2}", fontsize=8)
                ax.plot(grid, fit["intercept"] + fit["slope"] * grid, "k--", linewidth=1, label="fit")
            ax.set_xlabel("log10 trainable parameters" if x_key == "parameters" else "log10 training samples")
            ax.set_ylabel("test AUC" if metric == "test_auc" else "test logloss")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7, framealpha=0.7)
    fig.suptitle(title or doc.get("title", "scaling study"), fontsize=10)
    fig.tight_layout()
    return save_png(fig, Path(path))


# -- running a study ---------------------------------------------------------------------------------
def split_world(profile: str, seed: int, **overrides: Any) -> tuple[Any, Any, Any, dict[str, int]]:
    """(train, valid, test, cardinalities) of the synthetic world `profile` with `seed` (no corruption):
    the TRAINING table the lineage would build (last day test, the day before valid)."""
    import pyarrow.compute as pc

    from ctr_dagster.testing import synthetic_training_table, training_cardinalities

    table = synthetic_training_table(profile, seed=seed, **overrides)
    parts = tuple(table.filter(pc.equal(table.column("split"), s)) for s in ("train", "valid", "test"))
    return (*parts, training_cardinalities(table))


def subsample(train: Any, n: int, seed: int) -> Any:
    """`n` rows of `train` drawn without replacement, kept in time order. Nested across sizes: for one
    seed the rows of a smaller `n` are a subset of a larger one's (the same permutation's prefix)."""
    import numpy as np
    import pyarrow as pa

    if n > train.num_rows:
        raise ValueError(f"asked for {n:,} training rows; the train split holds {train.num_rows:,}")
    order = np.random.default_rng(seed).permutation(train.num_rows)
    return train.take(pa.array(np.sort(order[:n])))


def evaluate_scores(labels: Any, scores: Any) -> dict[str, Any]:
    """AUC with its DeLong 95 % interval, and logloss."""
    from ctr_dagster.metrics import auc, logloss
    from ctr_dagster.significance import auc_interval

    interval = auc_interval(labels, scores)
    return {
        "auc": auc(labels, scores),
        "auc_ci": None if interval is None else interval.as_list(),
        "logloss": logloss(labels, scores),
    }


def score_model(model: Any, valid: Any, test: Any) -> tuple[dict[str, Any], Any]:
    """A fitted model's validation / test AUC and logloss (test AUC with its DeLong 95 % interval),
    predicting on features only; returns (numbers, test scores)."""
    from ctr_dagster.modeling import features_only

    out: dict[str, Any] = {}
    test_scores = None
    for name, part in (("valid", valid), ("test", test)):
        labels = part.column("label").to_numpy()
        scores = model.predict(features_only(part))
        numbers = evaluate_scores(labels, scores)
        out[f"{name}_auc"], out[f"{name}_logloss"] = numbers["auc"], numbers["logloss"]
        if name == "test":
            out["test_auc_ci"], test_scores = numbers["auc_ci"], scores
    return out, test_scores


def fit_and_score(
    model_cls: type, config: Mapping[str, Any], train: Any, valid: Any, test: Any, cards: dict, seed: int
) -> tuple[Any, dict[str, Any], Any]:
    """Fit one plugin (validation for early stopping) and score it: (model, cell numbers, test scores)."""
    from ctr_dagster.contracts import FitContext
    from ctr_dagster.model_cost import parameter_count

    model = model_cls(model_cls.Config(**config))
    ctx = FitContext(seed=seed, cardinalities=dict(cards), log=lambda s: None)
    started = time.perf_counter()
    model.fit(train, valid, ctx)
    fit_s = time.perf_counter() - started
    numbers, test_scores = score_model(model, valid, test)
    summary = getattr(model, "summary", {}) or {}
    out = {
        "parameters": parameter_count(model),
        "fit_s": round(fit_s, 1),
        **numbers,
        "epochs_run": summary.get("epochs_run"),
        "best_epoch": summary.get("best_epoch"),
    }
    return model, out, test_scores


def run_scaling(
    model_cls: type,
    settings: ScalingSettings = SMALLEST,
    log: Callable[[str], None] = print,
    world_overrides: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Train `model_cls` (its Config needs `grade`, `epochs`, `num_threads`, `log_every`) at every grade x
    training size x seed; returns the study document: settings, cells, fits, wall seconds."""
    import torch

    started = time.perf_counter()
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(settings.num_threads)
    cells: list[dict] = []
    rows_held: dict[int, int] = {}
    try:
        for seed in settings.seeds:
            train, valid, test, cards = split_world(settings.profile, seed, **dict(world_overrides or {}))
            rows_held[seed] = train.num_rows
            for size in sorted(settings.train_rows):
                part = subsample(train, size, seed)
                batch = int(settings.config.get("batch_size", model_cls.Config().batch_size))
                for grade in sorted(settings.grades):
                    config = {
                        **dict(settings.config),
                        "grade": grade,
                        "epochs": settings.epochs_for(part.num_rows, batch),
                        "num_threads": settings.num_threads,
                        "log_every": 0,
                    }
                    _, cell, _ = fit_and_score(model_cls, config, part, valid, test, cards, seed)
                    cell.update(
                        {
                            "seed": seed,
                            "grade": grade,
                            "train_size": size,
                            "train_rows": part.num_rows,
                            "max_epochs": config["epochs"],
                        }
                    )
                    cells.append(cell)
                    log(
                        f"scaling: seed {seed} grade {grade} rows {size:,}: {cell['parameters']:,} parameters, "
                        f"test AUC {cell['test_auc']:.4f}, logloss {cell['test_logloss']:.4f} "
                        f"({cell['fit_s']:.0f} s, {cell['epochs_run']} epochs)"
                    )
        valid_rows, test_rows = valid.num_rows, test.num_rows
    finally:
        torch.set_num_threads(previous_threads)
    return {
        "study": "scaling",
        "model": getattr(model_cls, "name", model_cls.__name__),
        "title": f"{getattr(model_cls, 'name', model_cls.__name__)} scaling on the synthetic "
        f"'{settings.profile}' world",
        "settings": settings.as_dict(),
        "seeds": list(settings.seeds),
        "rows": {"train_split_held": rows_held, "valid": valid_rows, "test": test_rows},
        "cells": cells,
        "fits": scaling_fits(cells),
        "wall_s": round(time.perf_counter() - started, 1),
    }


# -- storing and reading ------------------------------------------------------------------------------
def write_study(doc: Mapping[str, Any], directory: Path, stem: str = "suan_scaling") -> tuple[Path, Path]:
    """`<stem>.json` (atomic) and `<stem>.png` in `directory`; returns both paths."""
    from ctr_dagster.atomic import write_json

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    png = scaling_png(doc, directory / f"{stem}.png")
    path = directory / f"{stem}.json"
    write_json(path, {**doc, "png": png.name}, indent=2)
    return path, png


def load_scaling(path: Path) -> tuple[dict[str, Any], Path | None]:
    """A scaling study from `path`: a `write_study` JSON, or a benchmark record (`benchmarks/results/
    suan.json`: ``figures.scaling``). Returns (document, its PNG next to it, or None if absent)."""
    path = Path(path)
    record = json.loads(path.read_text())
    doc = record.get("figures", {}).get("scaling") if "figures" in record else record
    if not doc or "cells" not in doc:
        raise ValueError(f"{path} holds no scaling study")
    png = doc.get("png")
    png_path = path.parent / png if png else None
    return doc, png_path if png_path is not None and png_path.exists() else None
