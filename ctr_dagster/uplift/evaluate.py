"""Score uplift models per arm and chain stage: AUUC / Qini with intervals, the oracle as the ceiling.

`evaluate_uplift(models, test, oracle)` asks every model for its predicted effects on the test rows
(features only: labels and oracle columns are removed first), and for each coupon arm k and stage
(click = `label`, conversion = `conversion`, exposure space) ranks the rows of arm k and of the control
by the predicted effect of arm k and scores the ranking against the observed outcomes
(`metrics.score_uplift`: normalised AUUC, Qini coefficient, 95 % bootstrap intervals, paired across
models). A model with `predict_effects` (the `UpliftPlugin` contract) is scored per arm and stage; one
without is scored on the click stage with `predict` as its ranking for every arm.

The oracle (synthetic world only) gives the true effects: its ranking is the ceiling row ("oracle"),
and it says which arms have no effect at all (the placebo: p_click_arm3 == p_click_arm0 everywhere).
Without an oracle (real experiments), an arm whose observed average effect interval (treated rate -
control rate, `metrics.mean_difference`, on the test rows or the `effect_rows` given) contains 0 is
treated as the zero-effect arm.
On a zero-effect arm any ranking made without the test outcomes is random targeting in expectation
(normalised AUUC / Qini 0), so every model's 95 % interval should contain 0 -- for each model and stage
with probability about 0.95, not always. The verdict says whether it does ("zero-effect arm: interval
contains 0"). On real data "no average effect observed" is weaker than "no effect": an arm can help
some rows and hurt others, so there an interval above 0 is reported as a possible heterogeneous
effect rather than as unexpected.

Elsewhere the verdict compares the model with random targeting: "better than random" (interval above
0), "worse than random" (below), "within noise of random".
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from ctr_dagster.uplift.metrics import (
    DEFAULT_CONFIDENCE,
    DEFAULT_RESAMPLES,
    UpliftScore,
    mean_difference,
    score_uplift,
)

STAGES: tuple[str, ...] = ("click", "conversion")
#: The test table's column holding each stage's observed outcome.
STAGE_COLUMNS: dict[str, str] = {"click": "label", "conversion": "conversion"}
ORACLE = "oracle"
#: An oracle effect this small (in probability) everywhere counts as no effect.
ZERO_EFFECT_TOLERANCE = 1e-7

CONTAINS_ZERO = "zero-effect arm: interval contains 0"
EXCLUDES_ZERO = "zero-effect arm: interval EXCLUDES 0 (unexpected)"


@dataclass
class CurveData:
    """What the curves of one (stage, arm) are drawn from: outcomes, treated flags, each scorer's ranking."""

    outcome: np.ndarray
    treated: np.ndarray
    scores: dict[str, np.ndarray]
    summary: dict[str, UpliftScore]


@dataclass
class UpliftReport:
    """Per model x arm x stage scores (`rows`), per arm x stage observed effects (`arms`), failures, notes."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    arms: list[dict[str, Any]] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    stages: list[str] = field(default_factory=list)
    n_rows: int = 0
    confidence: float = DEFAULT_CONFIDENCE
    resamples: int = DEFAULT_RESAMPLES
    #: (stage, arm) -> the arrays the curves are drawn from (not part of `as_json`)
    curves: dict[tuple[str, int], CurveData] = field(default_factory=dict, repr=False)

    def as_json(self) -> dict[str, Any]:
        return {
            "n_rows": self.n_rows,
            "stages": list(self.stages),
            "confidence": self.confidence,
            "resamples": self.resamples,
            "rows": [dict(r) for r in self.rows],
            "arms": [dict(a) for a in self.arms],
            "failed": dict(self.failed),
            "notes": list(self.notes),
        }

    def row(self, model: str, arm: int, stage: str) -> dict[str, Any] | None:
        for r in self.rows:
            if r["model"] == model and r["arm"] == arm and r["stage"] == stage:
                return r
        return None


# -- oracle --------------------------------------------------------------------------------------------
def oracle_for(test: pa.Table, oracle_table: pa.Table) -> dict[str, np.ndarray]:
    """The ORACLE_IMPRESSIONS columns p_click_arm{k} / p_conv_arm{k}, aligned with `test`'s rows by
    impression_id (the `oracle` argument of `evaluate_uplift`). Raises if a test row has no oracle row."""
    from ctr_dagster.metrics import scores_for

    out = {}
    for name in oracle_table.column_names:
        if name.startswith(("p_click_arm", "p_conv_arm")):
            values, missing = scores_for(
                test, oracle_table.column("impression_id"), oracle_table.column(name)
            )
            if missing:
                raise ValueError(f"oracle has no row for {missing} test impressions")
            out[name] = values
    return out


def oracle_effects(oracle: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """True effects {stage: float[n, K+1]} from the oracle.

    `oracle` holds either the effects themselves (keys "click" / "conversion", like `predict_effects`)
    or the ORACLE_IMPRESSIONS columns p_click_arm{k} and p_conv_arm{k} (conversion *given a click*):
    click effect = p_click_arm{k} - p_click_arm0; conversion (entire space) =
    p_click_arm{k} p_conv_arm{k} - p_click_arm0 p_conv_arm0.
    """
    if any(stage in oracle for stage in STAGES):
        return {s: np.asarray(oracle[s], dtype=np.float64) for s in STAGES if s in oracle}
    arms = sorted(int(k[len("p_click_arm") :]) for k in oracle if k.startswith("p_click_arm"))
    if not arms or arms != list(range(len(arms))):
        raise ValueError(f"oracle needs p_click_arm0..K columns, got {sorted(oracle)}")
    click = np.stack([np.asarray(oracle[f"p_click_arm{k}"], dtype=np.float64) for k in arms], axis=1)
    out = {"click": click - click[:, :1]}
    if all(f"p_conv_arm{k}" in oracle for k in arms):
        conv = np.stack([np.asarray(oracle[f"p_conv_arm{k}"], dtype=np.float64) for k in arms], axis=1)
        chain = click * conv
        out["conversion"] = chain - chain[:, :1]
    return out


# -- model effects -------------------------------------------------------------------------------------
def model_effects(model: Any, batch: pa.Table, n_arms: int) -> dict[str, np.ndarray]:
    """{stage: float[n, >= n_arms + 1]} predicted effects of one model on features-only rows.

    `predict_effects` when the model has it, else `predict` (one uplift score per row) as the click
    effect of every arm.
    """
    n = batch.num_rows
    if callable(getattr(model, "predict_effects", None)):
        raw = model.predict_effects(batch)
        if not isinstance(raw, Mapping) or "click" not in raw:
            raise ValueError(f"predict_effects must return a dict with 'click', got {type(raw).__name__}")
        effects = {}
        for stage, values in raw.items():
            if stage not in STAGES:
                continue
            array = np.asarray(values, dtype=np.float64)
            if array.ndim != 2 or array.shape[0] != n:
                raise ValueError(f"predict_effects[{stage!r}] must have shape ({n}, K+1), got {array.shape}")
            if not np.all(np.isfinite(array)):
                raise ValueError(f"predict_effects[{stage!r}] has non-finite values")
            effects[stage] = array
        return effects
    scores = np.asarray(model.predict(batch), dtype=np.float64)
    if scores.shape != (n,) or not np.all(np.isfinite(scores)):
        raise ValueError(f"predict must return {n} finite scores, got shape {scores.shape}")
    return {"click": np.repeat(scores[:, None], n_arms + 1, axis=1)}


def _verdict(score: UpliftScore, zero_effect: bool, basis: str) -> str:
    if score.auuc is None or score.auuc_low is None or score.auuc_high is None:
        return "n/a (undefined: one outcome class or too few rows)"
    versus_random = (
        "better than random"
        if score.auuc_low > 0.0
        else "worse than random"
        if score.auuc_high < 0.0
        else "within noise of random"
    )
    if not zero_effect:
        return versus_random
    contains = _contains_zero(score.auuc_low, score.auuc_high) and _contains_zero(
        score.qini_low, score.qini_high
    )
    if contains:
        return CONTAINS_ZERO
    if basis == "oracle":
        return EXCLUDES_ZERO
    # no average effect observed is not no effect: an arm can help some rows and hurt others
    return f"no average effect observed, yet {versus_random}: an effect that differs by row?"


def _contains_zero(low: float | None, high: float | None) -> bool:
    """Whether [low, high] contains 0 (an undefined interval excludes nothing)."""
    return low is None or high is None or low <= 0.0 <= high


def _column(test: pa.Table, name: str) -> np.ndarray:
    return np.asarray(test.column(name).to_numpy(zero_copy_only=False))


def evaluate_uplift(
    models: Mapping[str, Any],
    test: pa.Table,
    oracle: Mapping[str, Any] | None = None,
    stages: tuple[str, ...] = STAGES,
    *,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    confidence: float = DEFAULT_CONFIDENCE,
    effect_rows: pa.Table | None = None,
    cluster_column: str | None = None,
) -> UpliftReport:
    """Score every fitted uplift model on `test` per arm x stage (see the module docstring).

    `models`: name -> fitted plugin. `test`: rows with `treatment` (0 = control, 1..K), `label` and
    optionally `conversion`, plus the features. `oracle`: the true effects aligned with `test`'s rows
    (`oracle_for` / `oracle_effects` inputs), or None. A model that fails is listed in `failed` and left
    out; the others are still scored. `effect_rows`: the rows (treatment + outcome columns) on which the
    observed average effect of each arm is measured, which decides the zero-effect arms when there is
    no oracle (default: `test`; more rows, e.g. the whole experiment, give that check more power).
    `cluster_column` (e.g. ``user_id``): the bootstrap resamples whole clusters (a user's rows are
    correlated; `metrics.score_uplift`'s `groups`); None or absent: rows are resampled one by one.
    """
    from ctr_dagster.modeling import features_only

    treatment = _column(test, "treatment").astype(np.int64)
    n_arms = int(treatment.max()) if len(treatment) else 0
    report = UpliftReport(n_rows=test.num_rows, confidence=confidence, resamples=n_resamples)
    used = [s for s in stages if STAGE_COLUMNS[s] in test.column_names]
    report.stages = used
    for s in stages:
        if s not in used:
            report.notes.append(f"stage {s!r} skipped: the test table has no {STAGE_COLUMNS[s]!r} column")
    if n_arms < 1:
        report.notes.append("no treated arm in the test rows: nothing to score")
        return report

    batch = features_only(test)
    effects: dict[str, dict[str, np.ndarray]] = {}
    for name, model in models.items():
        try:
            effects[name] = model_effects(model, batch, n_arms)
        except Exception as exc:  # one failing model must not hide the others
            report.failed[name] = f"{type(exc).__name__}: {exc}"
    truth = oracle_effects(oracle) if oracle is not None else None
    if truth is not None:
        effects[ORACLE] = truth

    clusters = (
        _column(test, cluster_column) if cluster_column and cluster_column in test.column_names else None
    )
    if clusters is not None:
        report.notes.append(
            f"intervals: bootstrap over {cluster_column} clusters (their rows resampled together)"
        )
    effect_rows = test if effect_rows is None else effect_rows
    effect_arm = _column(effect_rows, "treatment").astype(np.int64)
    effect_clusters = (
        _column(effect_rows, cluster_column)
        if clusters is not None and cluster_column in effect_rows.column_names
        else None
    )
    for stage_index, stage in enumerate(used):
        outcome_all = _column(test, STAGE_COLUMNS[stage]).astype(np.int64)
        effect_outcome = _column(effect_rows, STAGE_COLUMNS[stage]).astype(np.int64)
        for arm in range(1, n_arms + 1):
            rows = np.flatnonzero((treatment == 0) | (treatment == arm))
            outcome, treated = outcome_all[rows], (treatment[rows] == arm).astype(np.int64)
            judged = (effect_arm == 0) | (effect_arm == arm)
            observed = mean_difference(
                effect_outcome[judged],
                effect_arm[judged] == arm,
                confidence,
                groups=None if effect_clusters is None else effect_clusters[judged],
            )
            zero, basis = _zero_effect(truth, stage, arm, observed)
            report.arms.append(
                {
                    "arm": arm,
                    "stage": stage,
                    "zero_effect": zero,
                    "basis": basis,
                    **_observed_fields(observed),
                }
            )
            scores = {}
            for name, by_stage in effects.items():
                values = by_stage.get(stage)
                if values is None or values.shape[1] <= arm:
                    continue
                scores[name] = values[rows, arm]
            if not scores:
                continue
            summary = score_uplift(
                outcome, treated, scores, n_resamples=n_resamples, seed=_seed(seed, arm, stage_index),
                confidence=confidence, groups=None if clusters is None else clusters[rows],
            )  # fmt: skip
            report.curves[(stage, arm)] = CurveData(outcome, treated, scores, summary)
            for name in sorted(summary, key=lambda m: (m == ORACLE, m)):
                score = summary[name]
                report.rows.append(
                    {
                        "model": name,
                        "kind": "oracle" if name == ORACLE else "model",
                        "arm": arm,
                        "stage": stage,
                        **score.as_dict(),
                        "zero_effect_arm": zero,
                        "verdict": _verdict(score, zero, basis),
                    }
                )
            if zero:
                report.notes.append(_sanity(stage, arm, basis, summary))
    for name in models:
        if name in effects and "conversion" in used and "conversion" not in effects[name]:
            report.notes.append(
                f"{name}: no conversion effects (no predict_effects['conversion']): click only"
            )
    return report


def _seed(seed: int, arm: int, stage_index: int) -> int:
    """One bootstrap seed per (arm, stage), shared by every model there (paired resamples)."""
    return int(np.random.SeedSequence([seed, arm, stage_index]).generate_state(1)[0])


def _zero_effect(
    truth: dict[str, np.ndarray] | None, stage: str, arm: int, observed: dict[str, Any]
) -> tuple[bool, str]:
    if truth is not None and stage in truth and truth[stage].shape[1] > arm:
        return bool(np.all(np.abs(truth[stage][:, arm]) <= ZERO_EFFECT_TOLERANCE)), "oracle"
    if observed["low"] is None:
        return False, "observed effect"
    return bool(observed["low"] <= 0.0 <= observed["high"]), "observed effect"


def _observed_fields(observed: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for key, value in observed.items():
        out["observed_" + key if key in ("ate", "low", "high") else key] = value
    return out


def _sanity(stage: str, arm: int, basis: str, summary: dict[str, UpliftScore]) -> str:
    why = "no true effect (oracle)" if basis == "oracle" else "observed average effect interval contains 0"
    excluded = [
        name
        for name, s in sorted(summary.items())
        if name != ORACLE
        and not (_contains_zero(s.auuc_low, s.auuc_high) and _contains_zero(s.qini_low, s.qini_high))
    ]
    if not excluded:
        return f"arm {arm} {stage} ({why}): every model's interval contains 0"
    if basis == "oracle":
        return f"arm {arm} {stage} ({why}): interval EXCLUDES 0 for {', '.join(excluded)} (unexpected)"
    return (
        f"arm {arm} {stage} ({why}): interval excludes 0 for {', '.join(excluded)}: the arm may still "
        "have an effect that differs by row (helping some, hurting others)"
    )
