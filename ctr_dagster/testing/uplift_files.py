"""Randomized experiments with a planted, known uplift, as tables and as CSV files in the shape of
public uplift sets (for tests and for trying `ctr uplift` without downloading anything).

The generative story (`planted_experiment`): features f0.. ~ N(0, 1); treatment drawn uniformly over
the control and K arms; a click (stage 1) with logit -1 + 0.6 f1 - 0.4 f2 + arm effect, the arm
effects heterogeneous (arm 1: 1.2 f0, so it helps half the rows and hurts the other half; arm 2:
0.9 [f3 > 0]; further arms: 0.6 f4), a conversion given the click with logit -0.5 + 0.5 f5 + arm
effect (arm 1: 0.8 f6; arm 2: 0.5; further: 0.4 f7); the conversion in exposure space = click and
converted. The arm named `zero_arm` has no effect on either stage (exactly 0). The true effects per
row and arm (exposure space, like `UpliftPlugin.predict_effects`) come with the rows.

File shapes (`write_criteo_csv`, `write_hillstrom_csv`, `write_mtlift_csv`):

* Criteo-uplift: f0..f11 (floats), treatment (0/1), conversion, visit, exposure (exposure is
  post-treatment: only treated rows are exposed; a caller must ignore it);
* Hillstrom: recency, history_segment (text), history, mens, womens, zip_code (text), newbie,
  channel (text), segment ("Mens E-Mail" / "Womens E-Mail" / "No E-Mail"), visit, conversion, spend;
* MT-LIFT: click, conversion, treatment (0..4), f0..f9 (arm 4 has no effect).

With `bad_rows=True` each writer adds a few broken rows (an outcome that is not 0/1, a missing
treatment, a number that does not parse, a line with a field too many) and returns where they are:
`WrittenExperiment.bad` lists (1-based data row, column or None) for each.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


@dataclass
class PlantedExperiment:
    """Rows of a planted experiment: features, arm, outcomes and the true effects (n, K+1) per stage."""

    features: np.ndarray  # float[n, m]
    treatment: np.ndarray  # int[n], 0..K
    click: np.ndarray  # int8[n]
    conversion: np.ndarray  # int8[n], exposure space (implies click)
    effects: dict[str, np.ndarray]  # {"click", "conversion"}: float[n, K+1], column 0 zeros


def planted_experiment(
    n: int, n_arms: int = 2, *, n_features: int = 10, zero_arm: int | None = None, seed: int = 0
) -> PlantedExperiment:
    """`n` rows of the story in the module docstring; `zero_arm` (1..n_arms) has no effect at all."""
    if n_features < 8:
        raise ValueError("the planted effects use f0..f7: n_features must be >= 8")
    rng = np.random.default_rng(seed)
    x = rng.normal(0.0, 1.0, (n, n_features))
    arm = rng.integers(0, n_arms + 1, n)
    base_click = -1.0 + 0.6 * x[:, 1] - 0.4 * x[:, 2]
    base_conv = -0.5 + 0.5 * x[:, 5]
    click_effect = np.zeros((n, n_arms + 1))
    conv_effect = np.zeros((n, n_arms + 1))
    for k in range(1, n_arms + 1):
        if k == zero_arm:
            continue
        if k == 1:
            click_effect[:, k], conv_effect[:, k] = 1.2 * x[:, 0], 0.8 * x[:, 6]
        elif k == 2:
            click_effect[:, k], conv_effect[:, k] = 0.9 * (x[:, 3] > 0), 0.5
        else:
            click_effect[:, k], conv_effect[:, k] = 0.6 * x[:, 4], 0.4 * x[:, 7]
    p_click = _sigmoid(base_click[:, None] + click_effect)  # (n, K+1)
    p_conv = _sigmoid(base_conv[:, None] + conv_effect)  # given a click
    chain = p_click * p_conv
    rows = np.arange(n)
    click = (rng.random(n) < p_click[rows, arm]).astype(np.int8)
    converted = (rng.random(n) < p_conv[rows, arm]).astype(np.int8)
    return PlantedExperiment(
        features=x,
        treatment=arm,
        click=click,
        conversion=(click & converted).astype(np.int8),
        effects={"click": p_click - p_click[:, :1], "conversion": chain - chain[:, :1]},
    )


def planted_tables(
    n: int, n_arms: int = 2, *, zero_arm: int | None = None, seed: int = 0
) -> tuple[dict[str, object], dict[str, np.ndarray]]:
    """(train / valid / test pyarrow tables in the uplift contract's columns (label, conversion,
    treatment, f0..f9), 60/20/20 by row order; the test rows' true effects {"click", "conversion"})."""
    import pyarrow as pa

    data = planted_experiment(n, n_arms, zero_arm=zero_arm, seed=seed)
    table = pa.table(
        {
            "label": pa.array(data.click, pa.int8()),
            "conversion": pa.array(data.conversion, pa.int8()),
            "treatment": pa.array(data.treatment.astype(np.int8), pa.int8()),
            **{f"f{j}": pa.array(data.features[:, j]) for j in range(data.features.shape[1])},
        }
    )
    a, b = int(0.6 * n), int(0.8 * n)
    tables = {"train": table.slice(0, a), "valid": table.slice(a, b - a), "test": table.slice(b)}
    return tables, {stage: effect[b:] for stage, effect in data.effects.items()}


@dataclass
class WrittenExperiment:
    path: Path
    rows: int  # data rows written (bad ones included)
    bad: list[tuple[int, str | None]] = field(default_factory=list)  # (1-based data row, column)


def _write(path: Path, header: list[str], rows: list[list[str]], bad: list[tuple[int, str | None]]):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
    return WrittenExperiment(path, len(rows), sorted(bad, key=lambda b: b[0]))


def _break(
    rows: list[list[str]], header: list[str], outcome: str, treatment: str, number: str, seed: int
) -> list[tuple[int, str | None]]:
    """Break four rows in place (outcome 2, missing treatment, unparsable number, extra field)."""
    rng = np.random.default_rng(seed + 99)
    picks = rng.choice(len(rows), size=4, replace=False)
    rows[picks[0]][header.index(outcome)] = "2"
    rows[picks[1]][header.index(treatment)] = ""
    rows[picks[2]][header.index(number)] = "abc"
    rows[picks[3]].append("surplus")
    return [(int(picks[0]) + 1, outcome), (int(picks[1]) + 1, treatment), (int(picks[2]) + 1, number),
            (int(picks[3]) + 1, None)]  # fmt: skip


def write_criteo_csv(path: Path, n: int = 3000, *, seed: int = 0, bad_rows: bool = True) -> WrittenExperiment:
    """Criteo-uplift shape: f0..f11, treatment (0/1), conversion, visit, exposure."""
    data = planted_experiment(n, 1, n_features=12, seed=seed)
    rng = np.random.default_rng(seed + 1)
    exposure = (data.treatment == 1) & (rng.random(n) < 0.4)
    header = [*(f"f{j}" for j in range(12)), "treatment", "conversion", "visit", "exposure"]
    rows = [
        [*(f"{v:.5f}" for v in data.features[i]), str(data.treatment[i]), str(data.conversion[i]),
         str(data.click[i]), str(int(exposure[i]))]
        for i in range(n)
    ]  # fmt: skip
    bad = _break(rows, header, "visit", "treatment", "f3", seed) if bad_rows else []
    return _write(path, header, rows, bad)


HILLSTROM_SEGMENTS = ("No E-Mail", "Mens E-Mail", "Womens E-Mail")


def write_hillstrom_csv(
    path: Path, n: int = 3000, *, seed: int = 0, bad_rows: bool = True
) -> WrittenExperiment:
    """Hillstrom shape: recency .. channel, segment (the three e-mail arms, text), visit, conversion, spend.

    The planted story's arm 1 = "Mens E-Mail", arm 2 = "Womens E-Mail" (control "No E-Mail"); its
    features are mapped to Hillstrom's columns (f0 -> mens-leaning, f3 -> womens, ...).
    """
    data = planted_experiment(n, 2, seed=seed)
    x = data.features
    rng = np.random.default_rng(seed + 2)
    bands = ("1) $0 - $100", "2) $100 - $200", "3) $200 - $350", "4) $350 - $500", "5) $500 - $750")
    zips = ("Urban", "Surburban", "Rural")
    channels = ("Phone", "Web", "Multichannel")
    header = ["recency", "history_segment", "history", "mens", "womens", "zip_code", "newbie",
              "channel", "segment", "visit", "conversion", "spend"]  # fmt: skip
    rows = []
    for i in range(n):
        history = float(np.exp(4.5 + 0.8 * x[i, 1]))
        spend = float(rng.gamma(2.0, 40.0)) if data.conversion[i] else 0.0
        rows.append(
            [
                str(int(np.clip(6 + 3 * x[i, 2], 1, 12))),
                bands[int(np.clip(np.searchsorted([100, 200, 350, 500], history), 0, 4))],
                f"{history:.2f}",
                str(int(x[i, 0] > 0)),
                str(int(x[i, 3] > 0)),
                zips[int(abs(x[i, 4]) * 2) % 3],
                str(int(x[i, 5] > 0.5)),
                channels[int(abs(x[i, 6]) * 2) % 3],
                HILLSTROM_SEGMENTS[data.treatment[i]],
                str(data.click[i]),
                str(data.conversion[i]),
                f"{spend:.2f}",
            ]
        )
    bad = _break(rows, header, "visit", "segment", "history", seed) if bad_rows else []
    return _write(path, header, rows, bad)


def write_mtlift_csv(path: Path, n: int = 4000, *, seed: int = 0, bad_rows: bool = True) -> WrittenExperiment:
    """MT-LIFT shape (scaled down): click, conversion, treatment (0..4), f0..f9; arm 4 has no effect."""
    data = planted_experiment(n, 4, zero_arm=4, seed=seed)
    header = ["click", "conversion", "treatment", *(f"f{j}" for j in range(10))]
    rows = [
        [str(data.click[i]), str(data.conversion[i]), str(data.treatment[i]),
         *(f"{v:.5f}" for v in data.features[i])]
        for i in range(n)
    ]  # fmt: skip
    bad = _break(rows, header, "conversion", "treatment", "f7", seed) if bad_rows else []
    return _write(path, header, rows, bad)
