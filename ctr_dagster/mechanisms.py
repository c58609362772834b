"""Which planted mechanism does each model capture? The mechanism-attribution report.

The synthetic click logit is a sum of components, one per planted mechanism (`schemas.CLICK_COMPONENTS`;
the oracle keeps each per impression as `logit_<name>`). For a component c on the test rows:

* **worth**: what the oracle loses without it, AUC(oracle logit) - AUC(oracle logit - c). A knob at
  0 makes it 0; the gap between the best model and the oracle is made of the worth it misses.
* **residual gain** of a model m: how much AUC adding c to the model's own logit would still buy,
  max over w in `WEIGHTS` of AUC(logit(p_m) + w c) - AUC(logit(p_m)). A model that has the mechanism
  gains nothing (the component is already in its scores); a model blind to it gains about its worth.
  The weight grid allows for models whose logits are on another scale; it is one number per
  (model, component), fitted on the rows it is reported on, so the gain is slightly optimistic for
  a model that misses nothing (a few 1e-4 of AUC), never large.
* **captured** = 1 - gain / worth, clipped to [0, 1]: ~0 for a model blind to the mechanism, ~1 for
  one that has it. Reported only where the worth is at least `MIN_WORTH` (below that the share is
  noise over noise).
Why AUC rather than log-likelihood: the leaderboard ranks by AUC, so the table explains the
leaderboard's gap to the oracle in its own unit.

A second, finer reading: the **loading** of a component in a model's logit, the coefficient of a
least-squares fit of logit(p_m) on every component (plus an intercept) over the rows. The oracle's
loadings are all 1; a model that moves with a component exactly as the truth does has loading 1,
one blind to it ~0. Unlike the residual gain it does not saturate when a component is small next
to the label noise (e.g. `target_time`, a correction of the sequence term), but it reads
correlated components jointly, so compare loadings of models on the same rows, not across worlds.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ctr_dagster.metrics import auc

#: Which world knob (`datagen.config.Signals`) scales each component; None: part of the world's
#: structure, not a knob (popularity, user-item affinity: drift moves the latter over days).
KNOB_OF_COMPONENT: dict[str, str | None] = {
    "popularity": None,
    "affinity": None,
    "sequence": "sequence",  # includes the temporal decay (`temporal` knob) of each behaviour's weight
    "multimodal": "multimodal",
    "interaction": "interaction",
    "segment": "segment",
    "position": "position_bias",
    "scaling": "scaling",
    "uplift_click": "uplift",
    "target_time": "target_time",  # the sequence term's change when its decay depends on the target
    "profile_sequence": "profile_sequence",
    "behaviour_segment": "behaviour_segment",
}
WEIGHTS: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0)
MIN_WORTH = 0.002
COLUMNS: tuple[str, ...] = ("model", *KNOB_OF_COMPONENT)


def _logit(p: np.ndarray) -> np.ndarray:
    q = np.clip(p.astype(np.float64), 1e-6, 1 - 1e-6)
    return np.log(q) - np.log1p(-q)


def worth(labels: np.ndarray, components: Mapping[str, np.ndarray]) -> list[dict[str, Any]]:
    """Per component: the oracle's AUC with and without it, and the difference."""
    total = np.sum([np.asarray(v, np.float64) for v in components.values()], axis=0)
    full = auc(labels, total)
    rows = []
    for name, knob in KNOB_OF_COMPONENT.items():
        if name not in components:
            continue
        without = auc(labels, total - components[name])
        rows.append(
            {
                "component": name,
                "knob": knob,
                "oracle_auc": round(float(full), 4),
                "oracle_auc_without": round(float(without), 4),
                "worth": round(float(full - without), 4),
            }
        )
    return rows


def residual_gain(labels: np.ndarray, scores: np.ndarray, component: np.ndarray) -> float:
    """max_w AUC(logit(scores) + w component) - AUC(logit(scores)), >= 0."""
    z = _logit(scores)
    base = auc(labels, z)
    best = max(auc(labels, z + w * component) for w in WEIGHTS)
    return max(float(best - base), 0.0)


def loadings(components: Mapping[str, np.ndarray], scores: np.ndarray) -> dict[str, float | None]:
    """Least-squares coefficient of each component in logit(scores) (None: a constant component)."""
    names = [n for n in components if np.ptp(np.asarray(components[n], np.float64)) > 1e-12]
    out: dict[str, float | None] = dict.fromkeys(components)
    if not names:
        return out
    design = np.column_stack([np.asarray(components[n], np.float64) for n in names] + [np.ones(len(scores))])
    coef, *_ = np.linalg.lstsq(design, _logit(np.asarray(scores)), rcond=None)
    out.update({n: round(float(c), 3) for n, c in zip(names, coef, strict=False)})
    return out


def attribution(
    labels: np.ndarray, components: Mapping[str, np.ndarray], models: Mapping[str, np.ndarray]
) -> dict[str, Any]:
    """{"components": worth rows, "models": per model {component: {"gain", "captured"}}}."""
    worth_rows = worth(labels, components)
    by_model: dict[str, dict[str, dict[str, float | None]]] = {}
    for model, scores in models.items():
        out: dict[str, dict[str, float | None]] = {}
        for row in worth_rows:
            name = row["component"]
            if row["worth"] < MIN_WORTH:
                out[name] = {"gain": None, "captured": None}
                continue
            gain = residual_gain(labels, scores, components[name])
            out[name] = {
                "gain": round(gain, 4),
                "captured": round(float(np.clip(1.0 - gain / row["worth"], 0.0, 1.0)), 3),
            }
        loading = loadings(components, scores)
        for name in out:
            out[name]["loading"] = loading.get(name)
        by_model[model] = out
    return {
        "components": worth_rows,
        "models": by_model,
        "weights": list(WEIGHTS),
        "min_worth": MIN_WORTH,
        "read_as": "worth = oracle AUC lost without the component; captured = 1 - (AUC a model would still "
        "gain from the component) / worth: ~0 blind to the mechanism, ~1 has it",
    }


def _cell(value: Mapping[str, Any]) -> str:
    """ "captured (loading)", e.g. "0.93 (1.05)"; "" where the component is worth too little."""
    if value["captured"] is None:
        return ""
    loading = value.get("loading")
    return f"{value['captured']:.2f}" + ("" if loading is None else f" ({loading:.2f})")


def table_rows(report: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Rows for people: the worth row, then one row per model of captured shares ("" = too small)."""
    worth_row = {"model": "worth (oracle AUC without it: -x)"}
    worth_row |= {r["component"]: f"{r['worth']:.4f}" for r in report["components"]}
    rows = [worth_row]
    for model, parts in report["models"].items():
        row = {"model": model}
        row |= {c: _cell(v) for c, v in parts.items()}
        rows.append(row)
    return rows
