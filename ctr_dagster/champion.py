"""The champion: the one model serving would use, its promotion gate, history and rollback.

State lives in ``$CTR_HOME/champion/``: ``current.json`` (the champion, with the champion it replaced
nested under ``previous`` so a rollback needs nothing else) and ``history.jsonl`` (one line per
promotion or rollback: who, when, which model and artifact, its metrics). Writes are atomic and
serialized by a file lock, so the Dagster asset and `ctr champion rollback` cannot interleave.

The gate (`decide`) is pure: given the evaluation's document, the current champion and a
`GatePolicy`, it says whether the best fresh model may replace the champion and why not. The
Dagster side runs it as a blocking asset check on the evaluation, so a failed gate stops the
promotion step and the previous champion stays.
"""

from __future__ import annotations

import datetime as dt
import getpass
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ctr_dagster import atomic
from ctr_dagster.locks import exclusive


@dataclass(frozen=True)
class GatePolicy:
    """When a challenger may replace the champion (all compared on the same test rows).

    The challenger is the best model by *validation* AUC; on the test rows after the champion's own
    training data, DeLong's paired one-sided test must say it beats the champion at `confidence`.
    """

    #: One-sided confidence of the paired test (promote when p < 1 - confidence).
    confidence: float = 0.95
    #: Practical minimum on top of significance: the AUC gain must also reach this (0: any
    #: significant gain).
    margin: float = 0.0
    #: The challenger's logloss / ECE may not exceed the champion's by more than these.
    logloss_tolerance: float = 0.005
    ece_tolerance: float = 0.01
    #: No slice (user activity bucket, new users, new items) may lose more AUC than this.
    slice_tolerance: float = 0.01
    #: Quality floor: never promote a model below this AUC, champion or not.
    min_auc: float = 0.55
    #: Slices with fewer rows (or one class) are too noisy to veto a promotion.
    min_slice_rows: int = 200


@dataclass
class GateDecision:
    passed: bool
    #: "promote" (a new champion), "keep" (the best model already is the champion) or "block".
    action: str
    candidate: dict[str, Any] | None
    champion: dict[str, Any] | None
    reasons: list[str] = field(default_factory=list)
    slice_deltas: dict[str, float] = field(default_factory=dict)
    #: The paired test on the same rows: test, statistic, z, p_value, delta, ci, rows, baseline artifact.
    comparison: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def decide(
    evaluation: dict[str, Any],
    current: dict[str, Any] | None,
    policy: GatePolicy,
    comparison: dict[str, Any] | None = None,
) -> GateDecision:
    """Gate the evaluation's candidate (best validation AUC) against the *current* champion.

    `comparison` is the paired test of the candidate against the current champion's artifact on the
    test rows after the champion's training data (`evaluation.gate_comparison`), made when the gate
    runs, so a rollback between evaluation and promotion is judged against the champion in place.
    `evaluation["champion_baseline"]` gives the champion's slice AUCs on the full test split.
    """
    candidate = evaluation.get("candidate")
    if candidate is None:
        return GateDecision(False, "block", None, current, ["no model was trained successfully"])
    reasons: list[str] = []
    if candidate["auc"] is None or candidate["auc"] < policy.min_auc:
        reasons.append(f"{candidate['name']} AUC {candidate['auc']} is below the floor {policy.min_auc}")
    if current and candidate.get("artifact") == current.get("artifact"):
        return GateDecision(not reasons, "keep" if not reasons else "block", candidate, current, reasons)
    if current is None:
        return GateDecision(not reasons, "promote" if not reasons else "block", candidate, None, reasons)
    if comparison is None:
        reasons.append(
            f"the current champion {current['name']} ({current.get('artifact')}) could not be compared with "
            f"{candidate['name']} on the same test rows (not re-scorable, or one class); roll back or retrain it"
        )
        return GateDecision(False, "block", candidate, current, reasons, comparison=comparison)
    if comparison.get("rows", 0) == 0:
        reasons.append(
            f"no test rows lie after champion {current['name']}'s own training data "
            f"({comparison.get('rows_used')}), so it cannot be judged fairly: the champion is kept"
        )
        return GateDecision(True, "keep", candidate, current, reasons, comparison=comparison)
    alpha = 1 - policy.confidence
    interval = comparison["ci"]
    verdict = (
        f"{comparison['test']}: {candidate['name']} - {current['name']} AUC = {comparison['delta']:+.4f}, "
        f"{policy.confidence:.0%} CI [{interval[0]:+.4f}, {interval[1]:+.4f}], z = {comparison['z']:.2f}, "
        f"p = {comparison['p_value']:.4f} on {comparison['rows']} rows ({comparison.get('rows_used')})"
    )
    if comparison["p_value"] >= alpha:
        reasons.append(f"not significantly better (needs p < {alpha:.3f}): {verdict}")
    if comparison["delta"] < policy.margin:
        reasons.append(f"the AUC gain is below the margin {policy.margin}: {verdict}")
    for metric, tolerance in (("logloss", policy.logloss_tolerance), ("ece", policy.ece_tolerance)):
        mine, theirs = comparison.get(f"{metric}_a"), comparison.get(f"{metric}_b")
        if mine is not None and theirs is not None and mine - theirs > tolerance:
            reasons.append(
                f"{metric} degrades: {mine:.4f} vs champion {theirs:.4f} (more than the tolerance {tolerance})"
            )
    deltas: dict[str, float] = {}
    baseline = evaluation.get("champion_baseline") or {}
    if baseline.get("artifact") == str(current.get("artifact")):
        for name, base in baseline.get("slices", {}).items():
            mine = candidate.get("slices", {}).get(name)
            if not mine or mine["auc"] is None or base["auc"] is None:
                continue
            if min(mine["rows"], base["rows"]) < policy.min_slice_rows:
                continue
            delta = mine["auc"] - base["auc"]
            deltas[name] = delta
            if delta < -policy.slice_tolerance:
                reasons.append(
                    f"slice {name}: AUC {mine['auc']:.4f} vs champion {base['auc']:.4f} "
                    f"({delta:+.4f} beyond the tolerance {policy.slice_tolerance})"
                )
    if not reasons:
        reasons.append(f"promoted: {verdict}")
        return GateDecision(True, "promote", candidate, current, reasons, deltas, comparison)
    return GateDecision(False, "block", candidate, current, reasons, deltas, comparison)


def gate_headline(decision: GateDecision) -> str:
    """One line a person reads first: who the candidate and the incumbent are, and what happened."""
    cand = decision.candidate["name"] if decision.candidate else None
    inc = decision.champion["name"] if decision.champion else None
    if cand is None:
        return "block: no model was trained successfully, nothing to promote"
    if decision.action == "promote" and inc is None:
        return f"first promotion: {cand} (best validation AUC) becomes the champion; there was none"
    if decision.action == "promote":
        return f"promote: {cand} (best validation AUC) replaces the champion {inc}"
    if (
        decision.action == "keep"
        and decision.champion
        and decision.candidate
        and (decision.candidate.get("artifact") == decision.champion.get("artifact"))
    ):
        return f"keep: {cand} is already the champion"
    if decision.action == "keep":
        return f"keep: the champion {inc} stays ({decision.reasons[0] if decision.reasons else 'no fair comparison'})"
    return f"block: {cand} does not replace {inc or 'nobody'} ({len(decision.reasons)} criterion/criteria failed)"


def gate_criteria(decision: GateDecision, policy: GatePolicy) -> list[dict[str, str]]:
    """Every criterion of the gate with passed / failed / n/a and the figures behind it."""
    cand, c = decision.candidate or {}, decision.comparison or {}
    rows: list[dict[str, str]] = []

    def add(name: str, ok: bool | None, detail: str) -> None:
        rows.append(
            {
                "criterion": name,
                "result": "n/a" if ok is None else "passed" if ok else "failed",
                "detail": detail,
            }
        )

    auc = cand.get("auc")
    add(
        "AUC floor",
        None if auc is None else auc >= policy.min_auc,
        f"test AUC {auc if auc is None else f'{auc:.4f}'} vs floor {policy.min_auc}",
    )
    if not c.get("rows"):
        why = (
            "first promotion: no champion to compare with"
            if decision.champion is None
            else (
                "the candidate is the champion"
                if decision.action == "keep" and not decision.reasons
                else "no paired comparison on fair rows"
            )
        )
        for name in ("better than the champion", "margin", "logloss", "ECE", "slices"):
            add(name, None, why)
        return rows
    alpha = 1 - policy.confidence
    add(
        "better than the champion",
        c["p_value"] < alpha,
        f"{c['test']}: ΔAUC {c['delta']:+.4f}, {policy.confidence:.0%} CI [{c['ci'][0]:+.4f}, {c['ci'][1]:+.4f}], "
        f"p = {c['p_value']:.4f} (needs < {alpha:.3f}) on {c['rows']} rows",
    )
    add("margin", c["delta"] >= policy.margin, f"ΔAUC {c['delta']:+.4f} vs margin {policy.margin}")
    for label, key, tolerance in (
        ("logloss", "logloss", policy.logloss_tolerance),
        ("ECE", "ece", policy.ece_tolerance),
    ):
        mine, theirs = c.get(f"{key}_a"), c.get(f"{key}_b")
        if mine is None or theirs is None:
            add(label, None, "not computed")
        else:
            add(
                label,
                mine - theirs <= tolerance,
                f"{mine:.4f} vs champion {theirs:.4f} (tolerance +{tolerance})",
            )
    if decision.slice_deltas:
        worst = min(decision.slice_deltas, key=decision.slice_deltas.get)
        add(
            "slices",
            decision.slice_deltas[worst] >= -policy.slice_tolerance,
            f"worst slice {worst} {decision.slice_deltas[worst]:+.4f} AUC (tolerance -{policy.slice_tolerance})",
        )
    else:
        add("slices", None, f"no slice with >= {policy.min_slice_rows} rows on both sides")
    return rows


class ChampionStore:
    """Current champion, promotion history and rollback, in plain JSON files."""

    def __init__(self, root: Path):
        """`root`: the champion folder (`Home.champion`)."""
        self.root = root

    @property
    def current_path(self) -> Path:
        return self.root / "current.json"

    @property
    def history_path(self) -> Path:
        return self.root / "history.jsonl"

    def current(self) -> dict[str, Any] | None:
        return json.loads(self.current_path.read_text()) if self.current_path.exists() else None

    def history(self) -> list[dict[str, Any]]:
        if not self.history_path.exists():
            return []
        return [json.loads(line) for line in self.history_path.read_text().splitlines() if line.strip()]

    def promote(
        self,
        candidate: dict[str, Any],
        *,
        who: str | None = None,
        run_id: str | None = None,
        reason: str = "passed the champion gate",
    ) -> dict[str, Any]:
        """Make `candidate` (a leaderboard row: name, artifact, metrics) the champion."""
        with self._locked():
            previous = self.current()
            entry = {
                "name": candidate["name"],
                # the plugin that loads the artifact (differs from `name` for a distilled student)
                "plugin": candidate.get("plugin") or candidate["name"],
                "artifact": candidate.get("artifact"),
                "metrics": {
                    k: candidate.get(k)
                    for k in ("valid_auc", "auc", "gauc", "logloss", "ece")
                    if k in candidate
                },
                # the last timestamp its training saw: the gate later judges it only on rows after this
                "trained_until": candidate.get("trained_until"),
                "promoted_at": _now(),
                "promoted_by": who or current_user(),
                "run_id": run_id,
                "reason": reason,
                "previous": previous,
            }
            self._write_current(entry)
            self._append(
                {
                    "event": "promote",
                    **{k: v for k, v in entry.items() if k != "previous"},
                    "replaced": _summary(previous),
                }
            )
            return entry

    def rollback(self, *, who: str | None = None) -> dict[str, Any]:
        """Restore the champion the current one replaced. Raises LookupError when there is none."""
        with self._locked():
            current = self.current()
            if current is None:
                raise LookupError("there is no champion to roll back")
            previous = current.get("previous")
            if previous is None:
                raise LookupError(
                    f"champion {current['name']} ({current.get('artifact')}) replaced no earlier champion; "
                    "nothing to roll back to"
                )
            self._write_current(previous)
            self._append(
                {
                    "event": "rollback",
                    "name": previous["name"],
                    "artifact": previous.get("artifact"),
                    "metrics": previous.get("metrics"),
                    "promoted_at": _now(),
                    "promoted_by": who or current_user(),
                    "replaced": _summary(current),
                }
            )
            return previous

    def _locked(self):
        self.root.mkdir(parents=True, exist_ok=True)
        return exclusive(self.root / ".lock")

    def _write_current(self, entry: dict[str, Any]) -> None:
        atomic.write_json(self.current_path, entry, indent=2, default=str)

    def _append(self, event: dict[str, Any]) -> None:
        with open(self.history_path, "a") as fh:
            fh.write(json.dumps(event, default=str) + "\n")


def history_rows(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The history as table rows (event, model, auc, at, by, replaced), in the given order."""
    return [
        {
            "event": e["event"],
            "model": e["name"],
            "auc": (e.get("metrics") or {}).get("auc"),
            "at": e["promoted_at"],
            "by": e["promoted_by"],
            "replaced": (e.get("replaced") or {}).get("name"),
        }
        for e in events
    ]


def _summary(entry: dict[str, Any] | None) -> dict[str, Any] | None:
    return None if entry is None else {"name": entry["name"], "artifact": entry.get("artifact")}


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def current_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return os.environ.get("USER", "unknown")
