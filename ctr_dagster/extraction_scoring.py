"""How attribute extractors are scored: P/R/F1 per slice with item-bootstrap intervals, abstention on
known no-value pairs, and each extractor against the stronger baseline, paired.

Why a module of its own: the scoring decides what every figure in the attribute table means, so its
rules are written down once, here, and the stage (`ctr_dagster.attributes`), the benchmark and
`ctr attributes` all call it.

* What is judged. A prediction for an (item, attribute) pair the fitting catalogue already has is
  not an extraction and is ignored. With a *complete* truth (the synthetic oracle) every other pair
  is judged: a value predicted for an attribute the item does not have is a false positive. With an
  incomplete truth (a holdout of an imported catalogue, a test file) only the *labelled* pairs are
  judged: pairs with a held-out value and pairs known to have none (MAVE's negatives); a prediction
  elsewhere cannot be called right or wrong and is counted as `unjudged`, never as an error.
* Slices. "overall"; "seen" / "unseen": whether the (attribute, value) pair occurs in the fitting
  catalogue (a prediction by its predicted value, a truth by its true value), so "unseen" is the
  zero-shot score; "no_value": the labelled no-value pairs, where `answered` is how many an extractor
  gave a value to (every one an error) and `abstained` the share it correctly left empty.
* Marked slices (optional, `marked`). A caller that knows more about the truth than the files do
  (the synthetic world's oracle: which values neither the title nor the image states) marks
  (item, attribute) pairs under a name, e.g. "hidden"; slice "hidden" then holds the judged pairs
  on marked slots (their true values and every prediction on them) and "hidden_unseen" those of
  them whose value is unseen (split like "seen" / "unseen"). Why: "unseen" mixes values the title
  states with values only the neighbourhood reveals, and only the latter measure what a graph adds.
  Without `marked` (real data: nobody knows what a title does not say) there are no such rows.
* Intervals. Items are resampled with replacement (`n_boot` draws, percentile 95 % interval): the
  unit of sampling is the product, because one product's attributes share its title.
* Against a baseline. For each slice, an extractor's F1 minus the F1 of the stronger baseline on
  that slice (baselines are extractors that declare `baseline = True`: title matching, the text-only
  ablation), over the same bootstrap draws: "better" / "worse" when the interval excludes 0, else
  "noise".
Values compare case-insensitively, trimmed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover - typing only
    import numpy as np
    import pyarrow as pa

SLICES: tuple[str, ...] = ("overall", "seen", "unseen")
NO_VALUE = "no_value"
EVALUATION_COLUMNS: tuple[str, ...] = (
    "extractor",
    "slice",
    "precision",
    "recall",
    "f1",
    "f1_low",
    "f1_high",
    "tp",
    "predicted",
    "true",
    "unjudged",
    "abstained",
)
COMPARISON_COLUMNS: tuple[str, ...] = (
    "extractor",
    "slice",
    "baseline",
    "f1",
    "baseline_f1",
    "difference",
    "difference_low",
    "difference_high",
    "verdict",
)
N_BOOT = 1000


def norm(value: object) -> str:
    return str(value).strip().casefold()


def triples(table: pa.Table) -> list[tuple[str, str, str]]:
    return list(
        zip(
            table.column("item_id").to_pylist(),
            table.column("attribute").to_pylist(),
            [norm(v) for v in table.column("value").to_pylist()],
            strict=True,
        )
    )


def value_pairs(table: pa.Table) -> list[tuple[str, str]]:
    """(attribute, value) rows of a taxonomy-like table, as they are."""
    return list(zip(table.column("attribute").to_pylist(), table.column("value").to_pylist(), strict=True))


def slots(table: pa.Table | None) -> set[tuple[str, str]]:
    if table is None or not table.num_rows:
        return set()
    return set(zip(table.column("item_id").to_pylist(), table.column("attribute").to_pylist(), strict=True))


@dataclass
class Counts:
    """Per-item counts of one extractor: slice -> (tp, predicted, true) int arrays over `Scoring.items`."""

    per_slice: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]
    unjudged: int
    answered_no_value: np.ndarray  # per item: labelled no-value pairs the extractor gave a value to


@dataclass
class Scores:
    rows: list[dict[str, Any]]  # EVALUATION_COLUMNS, one row per (extractor, slice)
    comparisons: list[dict[str, Any]] = field(default_factory=list)  # COMPARISON_COLUMNS


def marked_slices(marked: Mapping[str, pa.Table] | None) -> tuple[str, ...]:
    """Slice names a `marked` mapping adds, in order: per name, the name and "<name>_unseen"."""
    return tuple(s for name in (marked or {}) for s in (name, f"{name}_unseen"))


class Scoring:
    """The judged universe of one evaluation (truth, negatives, fitting catalogue, marked slots),
    shared by every extractor scored against it, so their bootstrap draws are paired."""

    def __init__(
        self,
        truth: pa.Table,
        known: pa.Table,
        negatives: pa.Table | None = None,
        *,
        complete: bool,
        marked: Mapping[str, pa.Table] | None = None,
    ):
        self.marked = {name: slots(table) for name, table in (marked or {}).items()}
        self.slices = SLICES + marked_slices(marked)
        self.known_slots = slots(known)
        self.seen_values = {(a, v) for _, a, v in triples(known)}
        self.truth = {t for t in triples(truth) if (t[0], t[1]) not in self.known_slots}
        self.truth_slots = {(i, a) for i, a, _ in self.truth}
        self.no_value = slots(negatives) - self.known_slots - self.truth_slots
        self.complete = complete
        items = {i for i, _, _ in self.truth} | {i for i, _ in self.no_value}
        self.items = sorted(items)
        self._index = {item: k for k, item in enumerate(self.items)}

    def _grow(self, item: str) -> int:
        if item not in self._index:  # a complete truth judges predictions on items it has no row for
            self._index[item] = len(self.items)
            self.items.append(item)
        return self._index[item]

    def judged(self, slot: tuple[str, str]) -> bool:
        if slot in self.known_slots:
            return False
        return self.complete or slot in self.truth_slots or slot in self.no_value

    def slices_of(self, slot: tuple[str, str], seen: bool) -> tuple[str, ...]:
        """The slices a judged pair (a prediction, or a true value) on `slot` counts in."""
        kind = "seen" if seen else "unseen"
        out = ["overall", kind]
        for name, marked in self.marked.items():
            if slot in marked:
                out += [name] if seen else [name, f"{name}_unseen"]
        return tuple(out)

    def counts(self, predictions: pa.Table) -> tuple[list[tuple[int, tuple[str, ...], bool]], int, list[int]]:
        """(per judged prediction: (item index, its slices, correct); unjudged count; the item of
        each answered no-value pair): raw events, turned into arrays by `count_arrays` once every
        extractor's predictions have been seen (a complete truth adds items as predictions name them)."""
        predicted = {t for t in triples(predictions) if (t[0], t[1]) not in self.known_slots}
        events: list[tuple[int, tuple[str, ...], bool]] = []
        unjudged = 0
        answered: set[tuple[str, str]] = set()
        for item, attribute, value in predicted:
            if not self.judged((item, attribute)):
                unjudged += 1
                continue
            k = self._grow(item)
            in_slices = self.slices_of((item, attribute), (attribute, value) in self.seen_values)
            events.append((k, in_slices, (item, attribute, value) in self.truth))
            if (item, attribute) in self.no_value:
                answered.add((item, attribute))
        return events, unjudged, [self._index[i] for i, _ in answered]

    def count_arrays(self, events, unjudged: int, answered: list[int]) -> Counts:
        import numpy as np

        n = len(self.items)
        per_slice: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        true_by_slice: dict[str, np.ndarray] = {s: np.zeros(n, np.int64) for s in self.slices}
        for item, attribute, value in self.truth:
            k = self._index[item]
            for s in self.slices_of((item, attribute), (attribute, value) in self.seen_values):
                true_by_slice[s][k] += 1
        tp_by_slice = {s: np.zeros(n, np.int64) for s in self.slices}
        pred_by_slice = {s: np.zeros(n, np.int64) for s in self.slices}
        for k, in_slices, correct in events:
            for s in in_slices:
                pred_by_slice[s][k] += 1
                tp_by_slice[s][k] += correct
        for s in self.slices:
            per_slice[s] = (tp_by_slice[s], pred_by_slice[s], true_by_slice[s])
        return Counts(per_slice, unjudged, np.bincount(np.array(answered, np.int64), minlength=n))


def _prf(tp: Any, predicted: Any, true: Any) -> tuple[Any, Any, Any]:
    import numpy as np

    with np.errstate(divide="ignore", invalid="ignore"):
        p = np.where(predicted > 0, tp / np.maximum(predicted, 1), 0.0)
        r = np.where(true > 0, tp / np.maximum(true, 1), 0.0)
        f = np.where(p + r > 0, 2 * p * r / np.where(p + r > 0, p + r, 1.0), 0.0)
    return p, r, f


def score_extractors(
    predictions: Mapping[str, pa.Table],
    truth: pa.Table,
    known: pa.Table,
    negatives: pa.Table | None = None,
    *,
    complete: bool,
    baselines: Sequence[str] = (),
    seed: int = 0,
    n_boot: int = N_BOOT,
    marked: Mapping[str, pa.Table] | None = None,
) -> Scores:
    """Rows (EVALUATION_COLUMNS) per extractor and slice, and comparisons against the baselines.
    `marked`: slice name -> (item_id, attribute) table of slots to score as a slice of their own
    (see the module docstring); None adds nothing."""
    import numpy as np

    scoring = Scoring(truth, known, negatives, complete=complete, marked=marked)
    raw = {name: scoring.counts(table) for name, table in predictions.items()}
    counts = {name: scoring.count_arrays(*r) for name, r in raw.items()}
    n = len(scoring.items)
    rng = np.random.default_rng(seed)
    weights = rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot).astype(np.float64) if n else None
    boot_f1: dict[tuple[str, str], Any] = {}
    rows: list[dict[str, Any]] = []
    for name, c in counts.items():
        for s in scoring.slices:
            tp, pred, true = c.per_slice[s]
            p, r, f = (float(x) for x in _prf(tp.sum(), pred.sum(), true.sum()))
            low = high = None
            if weights is not None:
                draws = _prf(weights @ tp, weights @ pred, weights @ true)[2]
                boot_f1[(name, s)] = draws
                low, high = (round(float(x), 4) for x in np.percentile(draws, [2.5, 97.5]))
            rows.append(
                {
                    "extractor": name,
                    "slice": s,
                    "precision": round(p, 4),
                    "recall": round(r, 4),
                    "f1": round(f, 4),
                    "f1_low": low,
                    "f1_high": high,
                    "tp": int(tp.sum()),
                    "predicted": int(pred.sum()),
                    "true": int(true.sum()),
                    "unjudged": c.unjudged if s == "overall" else None,
                    "abstained": None,
                }
            )
        if scoring.no_value:
            answered = int(c.answered_no_value.sum())
            total = len(scoring.no_value)
            rows.append(
                {
                    "extractor": name,
                    "slice": NO_VALUE,
                    "precision": None,
                    "recall": None,
                    "f1": None,
                    "f1_low": None,
                    "f1_high": None,
                    "tp": 0,
                    "predicted": answered,
                    "true": total,
                    "unjudged": None,
                    "abstained": round(1.0 - answered / total, 4),
                }
            )
    comparisons = compare(rows, boot_f1, baselines, scoring.slices) if weights is not None else []
    return Scores(rows, comparisons)


def compare(
    rows: list[dict[str, Any]],
    boot_f1: dict[tuple[str, str], Any],
    baselines: Sequence[str],
    slices: Sequence[str] = SLICES,
) -> list[dict[str, Any]]:
    """Each non-baseline extractor against the stronger baseline per slice (paired bootstrap)."""
    import numpy as np

    f1 = {(r["extractor"], r["slice"]): r["f1"] for r in rows if r["slice"] in slices}
    names = list(dict.fromkeys(r["extractor"] for r in rows))
    present = [b for b in baselines if b in names]
    out = []
    if not present:
        return out
    for name in names:
        if name in present:
            continue
        for s in slices:
            baseline = max(present, key=lambda b: (f1[(b, s)], -present.index(b)))
            diff = boot_f1[(name, s)] - boot_f1[(baseline, s)]
            low, high = (round(float(x), 4) for x in np.percentile(diff, [2.5, 97.5]))
            verdict = "better" if low > 0 else "worse" if high < 0 else "noise"
            out.append(
                {
                    "extractor": name,
                    "slice": s,
                    "baseline": baseline,
                    "f1": f1[(name, s)],
                    "baseline_f1": f1[(baseline, s)],
                    "difference": round(f1[(name, s)] - f1[(baseline, s)], 4),
                    "difference_low": low,
                    "difference_high": high,
                    "verdict": verdict,
                }
            )
    return out


DISPLAY_COLUMNS: tuple[str, ...] = (
    "extractor",
    "slice",
    "precision",
    "recall",
    "f1 (95% CI)",
    "tp",
    "predicted",
    "true",
    "unjudged",
    "abstained",
)


def display_rows(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, str]]:
    """Rows for people (the asset's table, `ctr attributes`): F1 with its interval, blanks for n/a."""

    def cell(value: Any) -> str:
        if value is None:
            return ""
        return f"{value:.4f}" if isinstance(value, float) else str(value)

    out = []
    for r in rows:
        f1 = cell(r.get("f1"))
        if r.get("f1_low") is not None:
            f1 += f" [{r['f1_low']:.4f}, {r['f1_high']:.4f}]"
        out.append({c: f1 if c == "f1 (95% CI)" else cell(r.get(c)) for c in DISPLAY_COLUMNS})
    return out


def display_comparisons(comparisons: Sequence[Mapping[str, Any]]) -> list[dict[str, str]]:
    return [
        {
            "extractor": c["extractor"],
            "slice": c["slice"],
            "vs baseline": c["baseline"],
            "F1 - baseline F1 (95% CI)": (
                f"{c['difference']:+.4f} [{c['difference_low']:+.4f}, {c['difference_high']:+.4f}]"
            ),
            "verdict": c["verdict"],
        }
        for c in comparisons
    ]
