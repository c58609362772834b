"""Uplift and Qini curves as PNGs: one figure per chain stage, one column of subplots per arm.

Row 1: uplift curve V(φ), row 2: Qini curve Q(φ), over the share φ of the arm's and control's rows
targeted (highest predicted uplift first); every model and the oracle (dashed, the ceiling) in each
panel, the random line dotted; the legend gives each scorer's normalised AUUC (top) or Qini
coefficient (bottom) with its bootstrap interval. matplotlib's object API on the Agg canvas (as
`ctr_dagster.reports`), written atomically.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ctr_dagster.uplift.evaluate import ORACLE, UpliftReport
from ctr_dagster.uplift.metrics import UpliftScore, qini_curve, uplift_curve

#: At most this many points per drawn curve (evenly spaced along the curve's points).
MAX_POINTS = 400


def _thin(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if len(x) <= MAX_POINTS:
        return x, y
    keep = np.unique(np.linspace(0, len(x) - 1, MAX_POINTS).round().astype(int))
    return x[keep], y[keep]


def _interval(value: float | None, low: float | None, high: float | None) -> str:
    if value is None:
        return "n/a"
    if low is None or high is None:
        return f"{value:.3f}"
    return f"{value:.3f} [{low:.3f}, {high:.3f}]"


def uplift_curves_png(report: UpliftReport, directory: Path, prefix: str = "uplift") -> dict[str, Path]:
    """Write `<directory>/<prefix>_<stage>.png` for every stage scored in `report`; {stage: path}."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from ctr_dagster.reports import save_png

    written: dict[str, Path] = {}
    for stage in report.stages:
        arms = sorted(arm for (s, arm) in report.curves if s == stage)
        if not arms:
            continue
        fig = Figure(figsize=(4.2 * len(arms), 7.0), dpi=100)
        FigureCanvasAgg(fig)
        axes = fig.subplots(2, len(arms), squeeze=False)
        for column, arm in enumerate(arms):
            data = report.curves[(stage, arm)]
            n = max(len(data.outcome), 1)
            for row, (curve, label) in enumerate(((uplift_curve, "AUUC"), (qini_curve, "Qini"))):
                ax = axes[row][column]
                end = 0.0
                for name in sorted(data.scores, key=lambda m: (m == ORACLE, m)):
                    x, y = curve(data.outcome, data.scores[name], data.treated)
                    end = float(y[-1])
                    score: UpliftScore = data.summary[name]
                    value = (
                        (score.auuc, score.auuc_low, score.auuc_high)
                        if row == 0
                        else (score.qini, score.qini_low, score.qini_high)
                    )
                    x, y = _thin(x / n, y)
                    ax.plot(
                        x,
                        y,
                        linewidth=1.4,
                        linestyle="--" if name == ORACLE else "-",
                        color="black" if name == ORACLE else None,
                        label=f"{name} {_interval(*value)}",
                    )
                ax.plot([0, 1], [0, end], color="grey", linestyle=":", linewidth=1, label="random")
                ax.set_title(f"arm {arm} vs control: {'uplift' if row == 0 else 'Qini'} curve", fontsize=9)
                ax.set_xlabel("share targeted (by predicted uplift)", fontsize=8)
                ax.set_ylabel("V(φ): incremental responders" if row == 0 else "Q(φ)", fontsize=8)
                ax.legend(loc="best", fontsize=6, title=f"{label} [{report.confidence:.0%} interval]",
                          title_fontsize=6)  # fmt: skip
        fig.suptitle(f"{stage} stage: uplift and Qini curves per arm", fontsize=10)
        fig.tight_layout()
        written[stage] = save_png(fig, Path(directory) / f"{prefix}_{stage}.png")
    return written
