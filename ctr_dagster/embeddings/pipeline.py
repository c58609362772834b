"""The item-embeddings stage: every encoder (and imported precomputed vectors) -> fused -> scored.

`build_item_embeddings` runs each encoder through the cache (`encoding.run_encoder`), isolated by
`ctr_dagster.plugin_runs` (a failing encoder becomes a "failed" run with its error, a broken plugin a
"broken" one; the stage goes on when at least one modality produced vectors), fuses the modalities (`fusion.fuse`) and measures
usefulness per modality and for the fused vector (`usefulness`). The result holds the
`item_embeddings` table (schema `schemas.vector_table`) and everything the asset shows.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ctr_dagster import schemas
from ctr_dagster.embeddings import cache as cache_mod
from ctr_dagster.embeddings import usefulness
from ctr_dagster.embeddings.cache import from_fixed_list, to_fixed_list
from ctr_dagster.embeddings.encoding import EncodeOutcome, run_encoder
from ctr_dagster.embeddings.fusion import Fused, fuse
from ctr_dagster.plugin_runs import PluginRun, PluginRuns, Step, run_plugins

FUSED = schemas.FUSED
CATEGORY = "category"


@dataclass(frozen=True)
class EncoderSpec:
    """An encoder plugin class and its (launchpad) config values."""

    cls: type
    config: dict[str, Any] = field(default_factory=dict)


@dataclass
class Source:
    """One modality column of the output: an encoder's run, or an imported precomputed column."""

    name: str  # encoder name, or "precomputed"
    modality: str
    column: str = ""
    run: PluginRun[EncodeOutcome] | None = None  # the encoder's isolated run (None: precomputed)
    outcome: EncodeOutcome | None = None  # precomputed vectors' counts (an encoder's: run.value)

    def __post_init__(self) -> None:
        if self.run is not None and self.run.ok:
            self.outcome = self.run.value

    @property
    def status(self) -> str:
        """ok | failed | broken (an encoder's run) or precomputed."""
        return self.run.status if self.run is not None else "precomputed"

    @property
    def error(self) -> str | None:
        return self.run.error if self.run is not None else None

    @property
    def detail(self) -> str:
        return self.run.detail if self.run is not None else ""

    def row(self) -> dict[str, Any]:
        """The uniform plugin row (encoder, status, seconds, error) plus the encoder's own figures."""
        o = self.outcome
        speed = o.items_per_second if o else None
        row = (
            self.run.row("encoder") if self.run is not None else {"encoder": self.name, "status": self.status}
        )
        return {
            **row,
            "modality": self.modality,
            "column": self.column or "-",
            "dim": o.dim if o else None,
            "encoded": o.encoded if o else None,
            "cached": o.cached if o else None,
            "without_content": o.without_content if o else None,
            "weights": o.state if o else None,
            "fit_s": round(o.fit_seconds, 2) if o else None,
            "encode_s": round(o.encode_seconds, 2) if o else None,
            "items_per_s": round(speed, 1) if speed else None,
            "identity": o.identity if o else None,
        }


@dataclass
class EmbeddingsResult:
    table: pa.Table
    sources: list[Source]  # every encoder run (ok / failed / broken) and precomputed column
    runs: PluginRuns[PluginRun[EncodeOutcome]]  # the encoders' runs: problems, reports
    fused: Fused
    probes: dict[str, dict[str, usefulness.ProbeResult]]  # column -> attribute -> result
    retrieval: dict[str, float | None]  # column -> P@k
    projections: dict[str, np.ndarray]  # column -> float32[n, 2]
    categories: list[str | None]
    label_source: str
    k: int
    seconds: dict[str, float]

    @property
    def columns(self) -> list[str]:
        return [s.column for s in self.sources if s.status in ("ok", "precomputed")] + [FUSED]

    def probe_rows(self) -> list[dict[str, Any]]:
        """One row per attribute: majority rate, then each column's probe accuracy."""
        attributes = sorted({a for by in self.probes.values() for a in by}, key=lambda a: (a != CATEGORY, a))
        rows = []
        for attribute in attributes:
            row: dict[str, Any] = {"attribute": attribute}
            first = next((by[attribute] for by in self.probes.values() if attribute in by), None)
            row["held_out_items"] = first.n_test if first else 0
            row["classes"] = first.n_classes if first else 0
            row["majority"] = _round(first.majority if first else None)
            for column, by in self.probes.items():
                row[column] = _round(by[attribute].accuracy) if attribute in by else None
            rows.append(row)
        return rows

    def numbers(self) -> dict[str, float | int]:
        """Flat numeric metadata (plotted over runs in the UI)."""
        out: dict[str, float | int] = {
            "items": self.table.num_rows,
            "fused_width": self.fused.vectors.shape[1],
        }
        out["fused_components"] = self.fused.components
        out["fused_explained_variance"] = round(self.fused.explained_variance, 4)
        for source in self.sources:
            if source.outcome is not None:
                out[f"encoded/{source.name}"] = source.outcome.encoded
                out[f"cached/{source.name}"] = source.outcome.cached
        for column, value in self.retrieval.items():
            if value is not None:
                out[f"retrieval_p{self.k}/{column}"] = round(value, 4)
        for column, by in self.probes.items():
            for attribute, result in by.items():
                if result.accuracy is not None:
                    out[f"probe/{column}/{attribute}"] = round(result.accuracy, 4)
        return out


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def _column_name(modality: str, name: str, taken: set[str]) -> str:
    column = modality if modality not in taken and modality != FUSED else f"{modality}_{name}"
    taken.add(column)
    return column


def _precomputed_sources(
    items: pa.Table, precomputed: pa.Table | None, taken: set[str]
) -> list[tuple[Source, np.ndarray, np.ndarray]]:
    """Imported vectors (one fixed-size-list column each), aligned with the catalogue's items."""
    if precomputed is None or precomputed.num_rows == 0:
        return []
    position = pc.index_in(items.column("item_id"), value_set=precomputed.column("item_id"))
    found = position.is_valid().to_numpy(zero_copy_only=False)
    out = []
    for f in precomputed.schema:
        if f.name == "item_id" or not pa.types.is_fixed_size_list(f.type):
            continue
        dim = f.type.list_size
        vectors = np.zeros((items.num_rows, dim), dtype=np.float32)
        present = np.zeros(items.num_rows, dtype=bool)
        if found.any():
            taken_col = pc.take(precomputed.column(f.name), pc.drop_null(position))
            vectors[found] = from_fixed_list(taken_col, dim)
            present[found] = taken_col.is_valid().to_numpy(zero_copy_only=False)
        outcome = EncodeOutcome("precomputed", f.name, vectors, present, dim, 0, int(present.sum()))
        source = Source("precomputed", f.name, _column_name(f.name, "precomputed", taken), outcome=outcome)
        out.append((source, vectors, present))
    return out


def labels_by_attribute(items: pa.Table, labels: pa.Table | None) -> dict[str, list[str | None]]:
    """{attribute: value per item (None = unknown)}, with the items' own category first."""
    ids = items.column("item_id").to_pylist()
    position = {item: i for i, item in enumerate(ids)}
    out: dict[str, list[str | None]] = {CATEGORY: items.column("category").to_pylist()}
    if labels is not None:
        for item, attribute, value in zip(
            labels.column("item_id").to_pylist(),
            labels.column("attribute").to_pylist(),
            labels.column("value").to_pylist(),
            strict=True,
        ):
            row = position.get(item)
            if row is None or attribute == CATEGORY:
                continue
            out.setdefault(attribute, [None] * len(ids))[row] = value
    return out


def _with_content(encoders: Sequence[EncoderSpec], items: pa.Table, log: Callable[[str], None]) -> list:
    """The encoders whose input columns hold content for some item; the others are skipped with a
    log line, not run to fail (an imported catalogue without images is normal, not an error)."""
    kept = []
    for spec in encoders:
        columns = getattr(spec.cls, "columns", None) or cache_mod.MODALITY_COLUMNS.get(spec.cls.modality, ())
        present = [
            c for c in columns if c in items.column_names and items.column(c).null_count < items.num_rows
        ]
        if columns and not present:
            log(
                f"encoder {spec.cls.name} skipped: no item has {spec.cls.modality} content (column(s) {list(columns)})"
            )
            continue
        kept.append(spec)
    return kept


def build_item_embeddings(
    items: pa.Table,
    attributes: pa.Table | None,
    encoders: Sequence[EncoderSpec],
    *,
    cache_root: Path,
    state_root: Path,
    width: int = 128,
    whiten: bool = False,
    refit: bool = False,
    precomputed: pa.Table | None = None,
    probe_labels: pa.Table | None = None,
    label_source: str = "catalogue",
    k: int = 10,
    report_root: Path | None = None,
    broken: Sequence[Any] = (),
    log: Callable[[str], None] = print,
    warn: Callable[[str], None] | None = None,
) -> EmbeddingsResult:
    """Encode (through the cache), fuse and score the catalogue; see the module docstring.

    `attributes` (structured catalogue, ITEM_ATTRIBUTES) is what trainable encoders may learn from,
    minus the held-out items' rows; `probe_labels` (same long form; default `attributes`) is what
    the probes predict, e.g. the complete truth of a synthetic world. Each encoder runs isolated
    (`plugin_runs.run_plugins`; failures logged through `warn`); its report (`summary` /
    `report(directory)`) is collected under `report_root/<name>/`. `broken`: registry.BrokenPlugin
    records of selected encoders, reported as "broken" runs.
    """
    seconds: dict[str, float] = {}
    item_ids = items.column("item_id").to_pylist()
    heldout = usefulness.holdout_mask(item_ids)
    fit_attributes = attributes
    if attributes is not None and attributes.num_rows:
        held_ids = pa.array([i for i, h in zip(item_ids, heldout, strict=True) if h], pa.string())
        fit_attributes = attributes.filter(
            pc.invert(pc.is_in(attributes.column("item_id"), value_set=held_ids))
        )

    encoders = _with_content(encoders, items, log)

    def step_for(spec: EncoderSpec) -> Callable[[Step], EncodeOutcome]:
        def step(step: Step) -> EncodeOutcome:
            name = spec.cls.name
            outcome = run_encoder(
                spec.cls,
                spec.config,
                items,
                fit_attributes,
                cache_root=cache_root,
                state_root=state_root,
                refit=refit,
                report_dir=report_root / name if report_root is not None else None,
                log=log,
            )
            step.phases.update(fit=outcome.fit_seconds, encode=outcome.encode_seconds)
            step.report = outcome.report
            if not outcome.present.any():
                raise ValueError(f"no item has content for {name} (modality {spec.cls.modality})")
            return outcome

        return step

    runs = run_plugins(
        "encoder", [(spec.cls.name, step_for(spec)) for spec in encoders], broken=broken, warn=warn or log
    )
    taken: set[str] = set()
    sources: list[Source] = []
    blocks: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    modality = {spec.cls.name: spec.cls.modality for spec in encoders}
    for run in runs:
        source = Source(run.name, modality.get(run.name, "-"), run=run)
        if run.ok:
            source.column = _column_name(source.modality, run.name, taken)
            blocks[source.column] = (run.value.vectors, run.value.present)
        if run.status != "broken":
            seconds[f"encoder/{run.name}"] = run.seconds
        sources.append(source)
    for source, vectors, present in _precomputed_sources(items, precomputed, taken):
        sources.append(source)
        blocks[source.column] = (vectors, present)
    if not blocks:
        errors = runs.errors() or "no encoder selected"
        raise RuntimeError(f"item_embeddings: no modality produced vectors ({errors})")

    with _blas_threads(BLAS_THREADS):
        return _fuse_and_score(
            items,
            blocks,
            sources,
            runs,
            heldout,
            attributes,
            probe_labels,
            width,
            whiten,
            label_source,
            k,
            seconds,
        )


#: BLAS threads for fusion and the usefulness metrics. 1: these are small dense problems, and on the
#: shared 2-core machines a 2-thread OpenBLAS waiting on a busy core was 6-8x slower (an SVD of
#: 2000x384: 3.2 s with 2 threads vs 0.43 s with 1, load average ~5).
BLAS_THREADS = 1


@contextmanager
def _blas_threads(n: int) -> Iterator[None]:
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
        yield
        return
    with threadpool_limits(limits=n, user_api="blas"):
        yield


def _fuse_and_score(
    items: pa.Table,
    blocks: dict[str, tuple[np.ndarray, np.ndarray]],
    sources: list[Source],
    runs: PluginRuns[PluginRun[EncodeOutcome]],
    heldout: np.ndarray,
    attributes: pa.Table | None,
    probe_labels: pa.Table | None,
    width: int,
    whiten: bool,
    label_source: str,
    k: int,
    seconds: dict[str, float],
) -> EmbeddingsResult:
    started = time.perf_counter()
    fused = fuse(blocks, width=width, whiten=whiten)
    seconds["fusion"] = time.perf_counter() - started

    started = time.perf_counter()
    labels = labels_by_attribute(items, probe_labels if probe_labels is not None else attributes)
    categories = labels[CATEGORY]
    matrices = {column: vectors for column, (vectors, _) in blocks.items()} | {FUSED: fused.vectors}
    probes: dict[str, dict[str, usefulness.ProbeResult]] = {}
    retrieval: dict[str, float | None] = {}
    projections: dict[str, np.ndarray] = {}
    for column, matrix in matrices.items():
        probes[column] = {a: usefulness.linear_probe(matrix, values, heldout) for a, values in labels.items()}
        retrieval[column] = usefulness.retrieval_precision(matrix, categories, k=k)
        projections[column] = usefulness.projection_2d(matrix)
    seconds["usefulness"] = time.perf_counter() - started

    widths = {column: vectors.shape[1] for column, (vectors, _) in blocks.items()} | {FUSED: width}
    arrays: list[pa.Array] = [items.column("item_id").combine_chunks()]
    for column, (vectors, present) in blocks.items():
        values = to_fixed_list(vectors)
        arrays.append(
            pa.FixedSizeListArray.from_arrays(values.values, widths[column], mask=pa.array(~present))
        )
    arrays.append(to_fixed_list(fused.vectors))
    table = pa.Table.from_arrays(arrays, schema=schemas.vector_table(widths))
    return EmbeddingsResult(
        table=table,
        sources=sources,
        runs=runs,
        fused=fused,
        probes=probes,
        retrieval=retrieval,
        projections=projections,
        categories=categories,
        label_source=label_source,
        k=k,
        seconds=seconds,
    )
