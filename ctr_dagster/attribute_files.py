"""`ctr attributes`: fit every extractor on one product file's known values, score it on another's.

The attribute stage judges extractors on a holdout of one catalogue; a user with annotated product
data (MAVE-style JSONL: titles, values with evidence spans, and empty-evidence attributes = no value)
wants the question they will face: products the extractors never saw, judged on their labelled
attributes. So:

* fit on the train file's products, values and negatives; candidates = the train file's values plus,
  when given, a published taxonomy (`--taxonomy`: its values no train product has are the only way a
  new value can be predicted, next to its distractors); nothing of the test file reaches `fit`;
* extract on the test file's products (new to every extractor: a product id in both files is an
  error, it would be judged on values it was fitted on);
* score with `extraction_scoring` on the test file's labelled pairs only (positives and negatives;
  a prediction on an attribute the test line does not mention is `unjudged`), per slice, with
  item-bootstrap intervals, and each extractor against the stronger baseline.
No interactions exist in such files: graph extractors see no also_view / also_buy hyperedges.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover - typing only
    import pyarrow as pa


class AttributeFilesError(ValueError):
    """The files cannot be scored as asked (overlapping ids, nothing labelled, no extractor ran)."""


@dataclass
class FileScores:
    rows: list[dict[str, Any]]  # extraction_scoring.EVALUATION_COLUMNS
    comparisons: list[dict[str, Any]]  # extraction_scoring.COMPARISON_COLUMNS
    extractors: list[dict[str, Any]]  # name, status, fit_s, extract_s, predictions, error
    counts: dict[str, int]  # products / values / negatives / quarantined per file, candidates
    notes: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "counts": self.counts,
            "evaluation": self.rows,
            "vs_baseline": self.comparisons,
            "extractors": self.extractors,
            "notes": self.notes,
        }


def score_files(
    train: Sequence[Path],
    test: Sequence[Path],
    *,
    taxonomy: Path | None = None,
    extractors: Sequence[str] = (),
    text: str = "title",
    seed: int = 0,
    n_boot: int = 1000,
    log: Callable[[str], None] = print,
) -> FileScores:
    """Fit the installed extractors (all, or those named) on `train`, score them on `test`."""
    from ctr_dagster import extraction, extraction_scoring
    from ctr_dagster.contracts import FitContext, config_from_dict
    from ctr_dagster.importers.mave import read_mave
    from ctr_dagster.plugin_runs import run_plugins
    from ctr_dagster.registry import default_registry

    fit = read_mave(list(train), text=text)
    held = read_mave(list(test), text=text)
    for name, result in (("train", fit), ("test", held)):
        if result.quarantine.num_rows:
            first = result.quarantine.column("detail")[0].as_py()
            log(f"{name}: {result.quarantine.num_rows} line(s) quarantined, e.g. {first}")
    overlap = sorted(
        set(fit.items.column("item_id").to_pylist()) & set(held.items.column("item_id").to_pylist())
    )
    if overlap:
        raise AttributeFilesError(
            f"{len(overlap)} product id(s) are in both the train and the test file (e.g. {overlap[:3]}): "
            "a test product must be new to the extractors"
        )
    published = None
    if taxonomy is not None:
        from ctr_dagster.importers.taxonomy import read_taxonomy

        published, rejected = read_taxonomy(taxonomy)
        if rejected.num_rows:
            log(
                f"taxonomy: {rejected.num_rows} row(s) quarantined, e.g. {rejected.column('detail')[0].as_py()}"
            )
    candidates = extraction.taxonomy(fit.item_attributes, published)
    inputs: dict[str, pa.Table] = {"candidates": candidates}
    if fit.negatives.num_rows:
        inputs["negatives"] = fit.negatives
    test_negatives = held.negatives
    labelled = held.item_attributes.num_rows + test_negatives.num_rows
    if not labelled:
        raise AttributeFilesError(
            "the test file has no labelled attribute (no value, no negative): nothing to score"
        )

    registry = default_registry()
    installed = {p.name: p for p in registry.good("extractor")}
    wanted = list(extractors) or sorted(installed)
    unknown = [n for n in wanted if n not in installed]
    if unknown:
        raise AttributeFilesError(f"unknown extractor(s) {unknown}; installed: {sorted(installed)}")

    def step_for(name: str):
        cls = installed[name].cls

        def step(step):
            extractor = cls(config_from_dict(cls, {}))
            ctx = FitContext(seed=seed, inputs=dict(inputs), log=log)
            table = extraction.fit_and_extract(
                step, name, extractor, fit.items, fit.item_attributes, ctx, extract_on=held.items
            )
            log(f"{name}: {table.num_rows} predictions (fit {step.phases.get('fit', 0.0):.1f} s)")
            return table

        return step

    runs = run_plugins(
        "extractor", [(n, step_for(n)) for n in wanted], warn=log, run_type=extraction.ExtractorRun
    )
    if not runs.ok:
        raise AttributeFilesError("no extractor ran: " + "; ".join(f"{r.name}: {r.error}" for r in runs))
    scores = extraction_scoring.score_extractors(
        {r.name: r.predictions for r in runs.ok},
        held.item_attributes,
        fit.item_attributes,
        test_negatives,
        complete=False,
        baselines=[n for n in wanted if getattr(installed[n].cls, "baseline", False)],
        seed=seed,
        n_boot=n_boot,
    )
    norm = extraction_scoring.norm
    seen = {(a, v) for _, a, v in extraction_scoring.triples(fit.item_attributes)}
    offered = {(a, norm(v)) for a, v in extraction_scoring.value_pairs(candidates)}
    unseen_rows = [
        (a, v) for _, a, v in extraction_scoring.triples(held.item_attributes) if (a, v) not in seen
    ]
    unseen_truth = len(unseen_rows)
    unseen_candidates = sum(1 for pair in unseen_rows if pair in offered)  # test value rows, as above
    notes = []
    if unseen_truth and not published:
        notes.append(
            f"{unseen_truth} test value(s) never occur in the train file and no taxonomy was given: no "
            "extractor has them as candidates, and title matching cannot find them either; pass "
            "--taxonomy to measure zero-shot extraction"
        )
    return FileScores(
        rows=scores.rows,
        comparisons=scores.comparisons,
        extractors=[
            {
                "extractor": r.name,
                "status": r.status,
                "fit_s": round(r.fit_seconds, 2),
                "extract_s": round(r.extract_seconds, 2),
                "predictions": r.predictions.num_rows if r.ok else None,
                "error": r.error or "",
            }
            for r in runs
        ],
        counts={
            "train_products": fit.items.num_rows,
            "train_values": fit.item_attributes.num_rows,
            "train_negatives": fit.negatives.num_rows,
            "train_quarantined": fit.quarantine.num_rows,
            "test_products": held.items.num_rows,
            "test_values": held.item_attributes.num_rows,
            "test_negatives": test_negatives.num_rows,
            "test_quarantined": held.quarantine.num_rows,
            "test_values_unseen_in_train": unseen_truth,
            "test_unseen_values_among_candidates": unseen_candidates,
            "candidates": candidates.num_rows,
        },
        notes=notes,
    )
