"""Is a warm start as good as a full retrain? Measured in the lineage, on the user's own data.

A nightly warm start (LightGBM keeps boosting, a torch model fine-tunes on the new days) is only
worth its saving if the model it gives is as good as the one a full retrain would give. That cannot
be measured on a warm night without paying for the full retrain it avoids, but on the night the
full-retrain cadence comes due both are cheap to have: the full retrain runs anyway, and the warm
start the nightly would have made (yesterday's artifact fine-tuned on the new rows) costs one
fine-tune. So on that night the model stage makes both, keeps the full retrain, and records here
how the warm start compared on the validation day: the full retrain's validation AUC with its DeLong
95 % interval, the warm start's, and DeLong's paired difference on the same rows.

The verdict is the issue's criterion: the warm start is *below* when its validation AUC falls under
the full retrain's interval. The audit is carried in the model's status from night to night
(`carried`), and the `evaluation` asset's `warm_starts_track_full_retrains` check reports every
model's latest audit and warns when one is below: that model's warm starts drift from what a full
retrain gives, and a shorter cadence (or none) is the remedy.

A distilled student's audit fine-tunes with the soft labels of tonight's teacher, which on a due
night is itself a full retrain (a warm night's teacher is warm-started), so for a student the audit
is of the warm-start procedure, not a replay of the exact nightly.

This module knows nothing of Dagster; `modeling.train_and_store` and `distillation.distill_and_store`
run the audit, `assets/evaluation.py` turns `check_rows` into an asset check.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ctr_dagster.contracts import FitContext
    from ctr_dagster.modeling import Fitted, Splits, WarmStart
    from ctr_dagster.registry import PluginInfo
    from ctr_dagster.settings import Home

#: The status key the audit is kept under (carried from night to night until the next one).
STATUS_KEY = "warm_start_audit"
BELOW = "below"


def verdict(warm_auc: float, low: float, high: float) -> str:
    """Where the warm start's AUC lies against the full retrain's interval: below / within / above."""
    if warm_auc < low:
        return BELOW
    return "above" if warm_auc > high else "within"


def warm_context(ctx: FitContext, start: WarmStart, workdir: Path) -> FitContext:
    """`ctx` as the nightly's warm start would have had it: continuing from `start.audit_from`,
    fine-tuning on the rows after `start.audit_train_end`, checkpointing in its own `workdir`."""
    from ctr_dagster.modeling import WARM_START_INPUT

    inputs = dict(ctx.inputs)
    if start.audit_train_end:
        inputs[WARM_START_INPUT] = {"previous_train_end": start.audit_train_end}
    return dataclasses.replace(ctx, init_from=start.audit_from, workdir=workdir, inputs=inputs)


def audit(
    plugin: PluginInfo,
    config_values: dict[str, Any],
    ctx: FitContext,
    full: Fitted,
    splits: Splits,
    home: Home,
    name: str,
    start: WarmStart,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Fine-tune `start.audit_from` as the nightly would have (the full retrain's `ctx` and config,
    `warm_context`; checkpoints under ``<work>/<name>/warm-audit``, emptied before and after) and
    compare it with the `full` retrain on the validation split. Never raises: an audit that fails is
    recorded with its error, the full retrain stands either way."""
    from ctr_dagster.modeling import fit_model, score
    from ctr_dagster.significance import auc_interval, paired_comparison

    workdir = home.work / name / "warm-audit"
    shutil.rmtree(workdir, ignore_errors=True)  # a stale audit checkpoint must not be resumed
    base = {"day": start.data_day, "warm_started_from": str(start.audit_from)}
    log(f"{name}: warm-start audit: fine-tuning {start.audit_from} as the nightly would have")
    try:
        started = time.perf_counter()
        warm = fit_model(plugin, config_values, splits, warm_context(ctx, start, workdir), name)
        seconds = time.perf_counter() - started
        labels = splits.valid.column("label").to_numpy()
        full_scores = score(full.model, splits.valid, name, "valid")
        warm_scores = score(warm.model, splits.valid, name, "valid (warm-start audit)")
        full_iv = auc_interval(labels, full_scores)
        warm_iv = auc_interval(labels, warm_scores)
        paired = paired_comparison(labels, warm_scores, full_scores)
        if full_iv is None or warm_iv is None or paired is None:
            raise ValueError("the validation split holds one class: no AUC to compare")
    except Exception as exc:  # noqa: BLE001 - the audit informs; it never fails the full retrain
        log(f"{name}: warm-start audit failed ({type(exc).__name__}: {exc}); the full retrain stands")
        return {**base, "error": f"{type(exc).__name__}: {exc}"}
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    result = {
        **base,
        "valid_rows": int(len(labels)),
        "full_valid_auc": round(full_iv.auc, 6),
        "full_interval": [round(full_iv.low, 6), round(full_iv.high, 6)],
        "warm_valid_auc": round(warm_iv.auc, 6),
        "warm_minus_full": round(paired.delta, 6),
        "difference_interval": [round(paired.low, 6), round(paired.high, 6)],
        "fine_tune_seconds": round(seconds, 3),
        "verdict": verdict(warm_iv.auc, full_iv.low, full_iv.high),
    }
    log(
        f"{name}: warm-start audit: warm {result['warm_valid_auc']:.4f} vs full retrain "
        f"{result['full_valid_auc']:.4f} [{full_iv.low:.4f}, {full_iv.high:.4f}] on {len(labels)} "
        f"validation rows: {result['verdict']} (warm - full {paired.delta:+.4f} "
        f"[{paired.low:+.4f}, {paired.high:+.4f}])"
    )
    return result


def carried(previous_status: dict[str, Any] | None, start: WarmStart, made: dict[str, Any] | None):
    """The audit a new status keeps: the one made tonight, else (a warm start, which descends from
    the same full retrain) the last one; a full retrain without an audit starts afresh (None)."""
    if made is not None:
        return made
    if start.warm and previous_status:
        return previous_status.get(STATUS_KEY)
    return None


def check_rows(statuses: dict[str, dict[str, Any] | None]) -> list[dict[str, Any]]:
    """One row per model with an audit in its status (model name -> status)."""
    rows = []
    for name, status in sorted(statuses.items()):
        found = (status or {}).get(STATUS_KEY)
        if not found:
            continue
        if "error" in found:
            rows.append({"model": name, "day": found.get("day"), "verdict": "error", "error": found["error"]})
            continue
        low, high = found["full_interval"]
        rows.append(
            {
                "model": name,
                "day": found.get("day"),
                "warm_valid_auc": found["warm_valid_auc"],
                "full_valid_auc": found["full_valid_auc"],
                "full_interval": f"[{low:.4f}, {high:.4f}]",
                "warm_minus_full": found["warm_minus_full"],
                "verdict": found["verdict"],
            }
        )
    return rows


def check_summary(rows: list[dict[str, Any]], cadence_days: int) -> tuple[bool, str]:
    """(passed, description) of the warm-start check: it fails when a model's latest audit is below
    the interval of its full retrain."""
    if not rows:
        return True, (
            "no warm-start audit yet: the first is made on the night a full retrain comes due "
            f"(nightly cadence {cadence_days} days), with a previous artifact to fine-tune"
        )
    below = [r["model"] for r in rows if r["verdict"] == BELOW]
    failed = [r["model"] for r in rows if r["verdict"] == "error"]
    unaudited = f"; the audit itself failed for {', '.join(failed)} (see its error)" if failed else ""
    if below:
        return False, (
            f"warm start below the full retrain's validation-AUC interval for {', '.join(below)}: "
            f"retrain these from scratch more often (a shorter full_retrain_every_days){unaudited}"
        )
    audited = len(rows) - len(failed)
    return True, (
        f"{audited} model(s) audited; every warm start within or above its full retrain's interval{unaudited}"
    )
