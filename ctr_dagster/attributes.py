"""The item-attributes stage: every extractor over the catalogue -> enriched table -> scored.

`build_item_attributes` is to the attribute stage what `embeddings.pipeline.build_item_embeddings`
is to the embedding stage: the whole stage's work, no Dagster. It sets up what the extractors are
fitted on and judged against (`extraction.evaluation_setup`: the oracle, or a holdout on imported
data), offers them the inputs the contract names (`FitContext.inputs`: "candidates" = the values of
the catalogue they are fitted on plus the source's published taxonomy, never the oracle and never a
held-out value; "interactions" = the train split of the training dataset, when there is one;
"negatives" = the fitting items' known no-value pairs, when the source has any), runs every
extractor through
`plugin_runs.run_plugins` (failures isolated and reported; each plugin's own report collected under
`report_root/<name>/`), builds the enriched table, scores every successful extractor
(`extraction_scoring`: P/R/F1 overall / seen / unseen with item-bootstrap intervals, abstention on
known no-value pairs, each extractor against the stronger baseline) and measures the downstream CTR
AUC with and without the enrichment. The result holds the table and everything the asset shows.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ctr_dagster import extraction, extraction_scoring
from ctr_dagster.contracts import FitContext, config_from_dict
from ctr_dagster.extraction import ExtractorRun
from ctr_dagster.plugin_runs import PluginRuns, Step, run_plugins

if TYPE_CHECKING:  # pragma: no cover - typing only
    import pyarrow as pa

TABLE = "item_attributes"
EVALUATION_TABLE = "item_attributes_evaluation"
#: Columns of the per-extractor table: the uniform plugin row, then the extractor's own figures.
EXTRACTOR_COLUMNS: tuple[str, ...] = (
    "extractor",
    "status",
    "seconds",
    "fit_s",
    "extract_s",
    "rows",
    "enriched_rows",
    "error",
)


@dataclass(frozen=True)
class ExtractorSpec:
    """An extractor plugin class and its (launchpad) config values."""

    cls: type
    config: dict[str, Any] = field(default_factory=dict)


@dataclass
class AttributesResult:
    table: pa.Table  # schemas.ITEM_ATTRIBUTES_ENRICHED: catalogue rows + the best extracted values
    runs: PluginRuns[ExtractorRun]  # every selected extractor (broken ones included)
    evaluation: list[dict[str, Any]]  # P/R/F1 rows (extraction_scoring.EVALUATION_COLUMNS)
    comparisons: list[dict[str, Any]]  # vs the stronger baseline (extraction_scoring.COMPARISON_COLUMNS)
    evaluation_source: str  # "oracle" or "holdout"
    candidate_note: str  # where the candidate values came from (and what that means for "unseen")
    truth_rows: int  # held-out truths the extractors are judged against
    catalogue_rows: int
    downstream: dict[str, float]  # auc_catalogue, auc_enriched, auc_gain, train_rows, test_rows
    seconds: dict[str, float]

    def extractor_rows(self) -> list[dict[str, Any]]:
        """One row per extractor: the uniform plugin row plus timings, output and enrichment counts."""
        from_extractor = self.table.column("extractor").to_pylist()
        rows = []
        for run in self.runs:
            row = run.row("extractor")
            if run.status != "broken":
                row |= {"fit_s": round(run.fit_seconds, 2), "extract_s": round(run.extract_seconds, 2)}
            if run.ok:
                row |= {"rows": run.predictions.num_rows, "enriched_rows": from_extractor.count(run.name)}
            rows.append(row)
        return rows

    def evaluation_table(self) -> pa.Table | None:
        import pyarrow as pa

        if not self.evaluation:
            return None
        return pa.Table.from_pylist(
            [{c: r.get(c) for c in extraction_scoring.EVALUATION_COLUMNS} for r in self.evaluation]
        )

    def numbers(self) -> dict[str, float | int]:
        """Flat numeric metadata (plotted over runs in the UI); plugin reports are rendered apart."""
        out: dict[str, float | int] = {"catalogue_rows": self.catalogue_rows, "truth_rows": self.truth_rows}
        out |= {f"downstream/{k}": v for k, v in self.downstream.items()}
        out |= {f"seconds/fit_{r.name}": round(r.fit_seconds, 3) for r in self.runs if r.status != "broken"}
        out |= {f"seconds/{k}": round(v, 3) for k, v in self.seconds.items()}
        out |= {f"f1/{e['extractor']}/{e['slice']}": e["f1"] for e in self.evaluation if e["f1"] is not None}
        out |= {
            f"abstained/{e['extractor']}": e["abstained"]
            for e in self.evaluation
            if e["abstained"] is not None
        }
        return out


def extractor_inputs(
    fit_attributes: pa.Table,
    taxonomy: pa.Table | None,
    training: pa.Table | None,
    negatives: pa.Table | None = None,
) -> dict[str, pa.Table]:
    """What the engine offers extractors (`contracts.KNOWN_EXTRACTOR_INPUTS`): the candidate values
    (the *fitting* catalogue's values + the published taxonomy: a value held out for evaluation is a
    candidate only if the source publishes it, as a real taxonomy would, next to its distractors),
    with a training dataset its train split, and the fitting items' known no-value pairs."""
    inputs = {"candidates": extraction.taxonomy(fit_attributes, taxonomy)}
    if training is not None:
        inputs["interactions"] = extraction.interactions_from_training(training)
    if negatives is not None and negatives.num_rows:
        inputs["negatives"] = negatives.select(["item_id", "attribute"])
    return inputs


def candidate_note(setup: extraction.EvaluationSetup, taxonomy: pa.Table | None) -> str:
    """One sentence on where candidates came from, so an unseen-value score of 0 is read right."""
    if taxonomy is not None and taxonomy.num_rows:
        return (
            f"candidates: the fitting catalogue's values plus the published taxonomy ({taxonomy.num_rows} "
            "values; its values no item has are distractors)"
        )
    if setup.source == "holdout":
        return (
            "candidates: the fitting catalogue's values only (the source publishes no taxonomy), so a "
            "held-out value is no extractor's candidate and the unseen slice scores 0 by construction; "
            "give the mapping an `attribute_taxonomy` to measure zero-shot extraction"
        )
    return "candidates: the fitting catalogue's values"


def build_item_attributes(
    items: pa.Table,
    attributes: pa.Table,
    extractors: Sequence[ExtractorSpec],
    *,
    oracle: pa.Table | None = None,
    taxonomy: pa.Table | None = None,
    training: pa.Table | None = None,
    negatives: pa.Table | None = None,
    seed: int = 0,
    enrich_with: Sequence[str] | None = None,
    downstream: bool = True,
    downstream_max_train_rows: int = 200_000,
    holdout_av_share: float = 0.1,
    holdout_row_share: float = 0.1,
    report_root: Path | None = None,
    broken: Sequence[Any] = (),
    log: Callable[[str], None] = print,
    warn: Callable[[str], None] | None = None,
) -> AttributesResult:
    """Run, enrich and score; see the module docstring.

    `items` / `attributes`: ITEMS and the structured ITEM_ATTRIBUTES; `oracle`: ORACLE_ITEM_ATTRIBUTES
    (synthetic data) or None; `taxonomy`: the source's published (attribute, value) list or None;
    `training`: the TRAINING table or None (then no interactions input and no downstream AUC);
    `negatives`: ATTRIBUTE_NEGATIVES (known no-value pairs) or None.
    `broken`: registry.BrokenPlugin records of selected extractors (reported as "broken" runs).
    Raises RuntimeError, listing every error, when extractors were selected and none worked.
    """
    warn = warn or log
    seconds: dict[str, float] = {}
    if training is None:
        warn("no training dataset: extractors get no interactions input, and no downstream AUC")
    setup = extraction.evaluation_setup(
        attributes,
        oracle,
        seed=seed,
        negatives=negatives,
        av_share=holdout_av_share,
        row_share=holdout_row_share,
    )
    inputs = extractor_inputs(setup.fit_attributes, taxonomy, training, setup.fit_negatives)
    note = candidate_note(setup, taxonomy)
    log(note)

    def step_for(spec: ExtractorSpec) -> Callable[[Step], pa.Table]:
        name = spec.cls.name

        def step(step: Step) -> pa.Table:
            extractor = spec.cls(config_from_dict(spec.cls, spec.config))
            ctx = FitContext(seed=seed, inputs=dict(inputs), log=log)
            report_dir = report_root / name if report_root is not None else None
            table = extraction.fit_and_extract(
                step, name, extractor, items, setup.fit_attributes, ctx, report_dir
            )
            log(f"extractor {name}: {table.num_rows} rows, fit {step.phases.get('fit', 0.0):.1f} s")
            return table

        return step

    runs = run_plugins(
        "extractor",
        [(spec.cls.name, step_for(spec)) for spec in extractors],
        broken=broken,
        warn=warn,
        run_type=ExtractorRun,
    )
    runs.require_any_ok("item_attributes")

    enriched = extraction.enrich(attributes, runs.runs, use=list(enrich_with) if enrich_with else None)
    started = time.perf_counter()
    scores = extraction_scoring.score_extractors(
        {run.name: run.predictions for run in runs.ok},
        setup.truth,
        setup.fit_attributes,
        setup.truth_negatives,
        complete=setup.complete,
        baselines=[spec.cls.name for spec in extractors if getattr(spec.cls, "baseline", False)],
        seed=seed,
    )
    seconds["evaluation"] = time.perf_counter() - started
    gains: dict[str, float] = {}
    if downstream and training is not None:
        started = time.perf_counter()
        gains = extraction.downstream_auc(
            training,
            {"catalogue": attributes, "enriched": enriched},
            seed=seed,
            max_train_rows=downstream_max_train_rows,
            log=log,
        )
        if "auc_enriched" in gains and "auc_catalogue" in gains:
            gains["auc_gain"] = gains["auc_enriched"] - gains["auc_catalogue"]
        seconds["downstream"] = time.perf_counter() - started
    return AttributesResult(
        table=enriched,
        runs=runs,
        evaluation=scores.rows,
        comparisons=scores.comparisons,
        evaluation_source=setup.source,
        candidate_note=note,
        truth_rows=setup.truth.num_rows,
        catalogue_rows=attributes.num_rows,
        downstream=gains,
        seconds=seconds,
    )
