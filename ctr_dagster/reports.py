"""Evaluation report rendering: small PNGs that Dagster shows inline in markdown metadata.

Markdown tables come from `assets.metadata.markdown_table` (not duplicated here). matplotlib and
scikit-learn load inside the functions, so importing this module stays cheap.
"""

from __future__ import annotations

import base64
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np


def roc_calibration_png(
    curves: dict[str, tuple[np.ndarray, np.ndarray]], path: Path, title: str = ""
) -> Path:
    """One PNG: ROC curves (AUC in the legend) and a reliability diagram of every named (labels, scores).

    Both views side by side because a model can rank well and still be miscalibrated (or vice versa).
    Uses matplotlib's object API on the Agg canvas, never pyplot: no global backend switch and no
    figure registry to leak in a long-running Dagster process. Written to a temp file and renamed,
    so a reader never sees half a PNG. Curves with no rows are left out; a curve with one class only
    has no ROC (legend says "n/a") but still gets its reliability points.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from sklearn.calibration import calibration_curve
    from sklearn.metrics import roc_curve

    from ctr_dagster.metrics import auc

    path = Path(path)
    fig = Figure(figsize=(8, 3.5), dpi=100)
    FigureCanvasAgg(fig)
    roc_ax, cal_ax = fig.subplots(1, 2)
    roc_ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    cal_ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1, label="perfect")
    for name, (labels, scores) in curves.items():
        y = np.asarray(labels).astype(np.int64)
        s = np.asarray(scores, dtype=np.float64)
        if y.size == 0:
            continue
        if y.min() != y.max():
            fpr, tpr, _ = roc_curve(y, s)
            roc_ax.plot(fpr, tpr, linewidth=1.5, label=f"{name} (AUC {auc(y, s):.4f})")
        else:
            roc_ax.plot([], [], linewidth=1.5, label=f"{name} (AUC n/a)")  # keeps colours aligned
        frac_pos, mean_pred = calibration_curve(y, np.clip(s, 0.0, 1.0), n_bins=10, strategy="uniform")
        cal_ax.plot(mean_pred, frac_pos, marker="o", markersize=3, linewidth=1.2, label=name)
    roc_ax.set(
        xlim=(0, 1), ylim=(0, 1), xlabel="false positive rate", ylabel="true positive rate", title="ROC"
    )
    cal_ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="mean score", ylabel="positive rate", title="Reliability")
    roc_ax.legend(loc="lower right", fontsize=7)
    cal_ax.legend(loc="upper left", fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()

    return save_png(fig, path)


def save_png(fig: Any, path: Path) -> Path:
    """Write a matplotlib Figure as PNG atomically (temp file + rename): a reader never sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fig.savefig(fh, format="png", dpi=100)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def png_markdown(path: Path, alt: str) -> str:
    """An inline `![alt](data:image/png;base64,...)` image: Dagster markdown metadata cannot link local files."""
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    safe_alt = alt.replace("[", "(").replace("]", ")").replace("\n", " ")
    return f"![{safe_alt}](data:image/png;base64,{data})"


#: Dagster's UI draws a markdown metadata entry inline only while it is shorter than this; longer ones
#: sit behind "[Show Markdown]" (dagster-webserver 1.13, MetadataEntry: `mdStr.length < 1e3`).
INLINE_MARKDOWN_LIMIT = 1000
_THUMB_COLOURS = ("17b", "d22", "2a2", "f80", "94b", "855", "1bc")


def roc_thumbnail_markdown(
    curves: dict[str, tuple[np.ndarray, np.ndarray]], limit: int = INLINE_MARKDOWN_LIMIT - 1, points: int = 7
) -> str:
    """A small ROC picture as an inline SVG data URI, short enough that the UI shows it without a click.

    Why hand-written SVG: a plotting library's PNG or SVG of even a tiny figure is several kB, and only
    markdown under `INLINE_MARKDOWN_LIMIT` characters is drawn on the asset's first view. Each curve
    is its ROC resampled at `points` false-positive rates (integer coordinates on a 100-unit square);
    the curves with the highest AUC come first and as many as fit within `limit` are drawn (at least
    one), the legend naming each with its AUC. The full-size ROC/reliability PNG stays beside it.
    """
    from html import escape
    from urllib.parse import quote

    from sklearn.metrics import roc_curve

    from ctr_dagster.metrics import auc

    drawn: list[tuple[float, str, str]] = []
    for name, (labels, scores) in curves.items():
        y = np.asarray(labels).astype(np.int64)
        if y.size == 0 or y.min() == y.max():
            continue
        s = np.asarray(scores, dtype=np.float64)
        fpr, tpr, _ = roc_curve(y, s)
        grid = np.linspace(0.0, 1.0, points)
        xy = ",".join(
            f"{round(100 * x)},{round(100 - 100 * t)}"
            for x, t in zip(grid, np.interp(grid, fpr, tpr), strict=True)
        )
        drawn.append((auc(y, s), name, xy))
    drawn.sort(key=lambda d: -d[0])

    def render(rows: list[tuple[float, str, str]]) -> str:
        parts = [
            "<svg xmlns='http://www.w3.org/2000/svg' width='330' height='120' viewBox='-2 -2 222 104' "
            "fill='none' font-size='9'><path d='M0 100H100V0H0ZM0 100L100 0' stroke='#bbb'/>",
        ]
        for i, (score, name, xy) in enumerate(rows):
            colour = _THUMB_COLOURS[i % len(_THUMB_COLOURS)]
            parts.append(f"<polyline points='{xy}' stroke='#{colour}'/>")
            parts.append(
                f"<text x='106' y='{10 + 12 * i}' fill='#{colour}'>{escape(name)} {score:.4f}</text>"
            )
        parts.append("</svg>")
        uri = quote("".join(parts), safe="/:=',.")
        return f"![ROC, test split](data:image/svg+xml,{uri})"

    if not drawn:
        return "_(no ROC: no split with both classes)_"
    for n in range(len(drawn), 0, -1):
        text = render(drawn[:n])
        if len(text) <= limit:
            return text
    return render(drawn[:1])


def projection_png(
    points: dict[str, np.ndarray], labels: list[str | None], path: Path, title: str = "", max_legend: int = 12
) -> Path:
    """One PNG: a scatter of each named float[n, 2] projection (e.g. text / image / fused item
    vectors), points coloured by `labels` (e.g. category), so clusters are visible at a glance.

    Same object API / atomic write as `roc_calibration_png`. At most `max_legend` labels get their own
    colour and legend entry (the most frequent); the rest are drawn grey as "other".
    """
    from collections import Counter

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path = Path(path)
    names = list(points)
    fig = Figure(figsize=(3.6 * max(1, len(names)), 3.6), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, max(1, len(names)), squeeze=False)[0]
    text = np.array(["?" if v is None else str(v) for v in labels], dtype=object)
    top = [v for v, _ in Counter(text.tolist()).most_common(max_legend)]
    colours = {v: f"C{i % 10}" if i < 10 else (0.2 + 0.06 * i, 0.4, 0.6) for i, v in enumerate(top)}
    for ax, name in zip(axes, names, strict=False):
        xy = np.asarray(points[name], dtype=np.float64)
        rest = ~np.isin(text, top)
        if rest.any():
            ax.scatter(xy[rest, 0], xy[rest, 1], s=4, color="lightgrey", label="other", linewidths=0)
        for value in top:
            mask = text == value
            ax.scatter(xy[mask, 0], xy[mask, 1], s=4, color=colours[value], label=value, linewidths=0)
        ax.set(title=name, xticks=[], yticks=[])
    axes[-1].legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=7, markerscale=2, frameon=False)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()

    return save_png(fig, path)
