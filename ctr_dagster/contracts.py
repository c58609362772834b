"""Plugin contracts: what a model, encoder or extractor plugin must provide.

A plugin is a class exposed through an entry point in one of the groups below. It needs nothing but
this module, pyarrow and numpy: no Dagster, no engine internals. The engine discovers it
(`ctr_dagster.registry`), turns its `Config` dataclass into launchpad config, and calls it.

Worked example (a complete model plugin; `ctr new-plugin NAME` scaffolds one like it)::

    @dataclass
    class PopularityConfig:
        smoothing: float = 10.0          # typed, with defaults: shown and editable in the launchpad

    class PopularityModel:
        name = "popularity"
        task = "ctr"
        Config = PopularityConfig
        requires = frozenset()          # e.g. {"sequence"} or {"item_embeddings"}
        # optional_inputs = frozenset({"item_tags"})  # read by default, switchable off: lineage only

        def __init__(self, config: PopularityConfig | None = None):
            self.config = config or PopularityConfig()

        def fit(self, train, valid, ctx):   # pyarrow Tables in the TRAINING schema
            ...; return self
        def predict(self, batch):           # -> float array in [0, 1], one score per row
            ...
        def save(self, directory): ...      # safe formats only: JSON, safetensors, LightGBM text
        @classmethod
        def load(cls, directory): ...

    # pyproject.toml of the plugin distribution:
    # [project.entry-points."ctr_dagster.models"]
    # popularity = "ctr_popularity.model:PopularityModel"

Nothing heavy is imported here: the code location imports this module at load time.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol, runtime_checkable

if TYPE_CHECKING:  # pragma: no cover - typing only
    import numpy as np
    import pyarrow as pa

MODEL_GROUP = "ctr_dagster.models"
ENCODER_GROUP = "ctr_dagster.encoders"
EXTRACTOR_GROUP = "ctr_dagster.extractors"
GROUPS: dict[str, str] = {"model": MODEL_GROUP, "encoder": ENCODER_GROUP, "extractor": EXTRACTOR_GROUP}

Task = Literal["ctr", "uplift"]
Role = Literal["teacher", "student"]
Modality = Literal["text", "image"]

#: Inputs a model may declare in `requires`; the engine prepares them (or refuses to run the model).
#: The upstream table (= asset key) behind each prepared input a model may read: its model asset's
#: deps. Torch-free and pyarrow-free, so the code location computes lineage without loading data code.
INPUT_TABLES: dict[str, str] = {
    "item_embeddings": "item_embeddings",
    "item_attributes": "item_attributes",
    "item_tags": "item_attributes",
}


def input_tables(inputs: frozenset[str] | set[str]) -> list[str]:
    """The upstream tables of the prepared inputs a plugin requires or reads (sorted asset keys)."""
    return sorted({INPUT_TABLES[name] for name in inputs if name in INPUT_TABLES})


KNOWN_INPUTS = frozenset(
    {"sequence", "item_embeddings", "item_attributes", "item_tags", "treatment", "conversion"}
)

#: Inputs an extractor may declare in `requires` (handed over in `FitContext.inputs`):
#: "interactions": a table (user_id, item_id, ts, click, conversion) of training-period impressions,
#: for co-view / co-buy structure; "candidates": a table (attribute, value), the value taxonomy,
#: i.e. every pair the extractor may predict, including values no catalogue row has yet (zero-shot):
#: the fitting catalogue's values plus the source's published taxonomy, never a held-out value;
#: "negatives": a table (item_id, attribute) of fitting items known to have no value for the
#: attribute (MAVE's empty-evidence attributes), so an extractor can learn when to abstain.
KNOWN_EXTRACTOR_INPUTS = frozenset({"interactions", "candidates", "negatives"})


@dataclass
class FitContext:
    """What the engine hands a plugin's `fit`: everything environment-specific, nothing Dagster."""

    seed: int = 0
    device: str = "cpu"
    workdir: Path | None = None
    #: Vocabulary sizes of the indexed columns (e.g. {"item_idx": 2043}); embedding tables size from it.
    cardinalities: dict[str, int] = field(default_factory=dict)
    #: Extra prepared inputs, keyed by the names in `requires` (e.g. "item_embeddings": float32[n, d]).
    inputs: dict[str, Any] = field(default_factory=dict)
    log: Callable[[str], None] = print
    #: Warm start: the artifact folder of this plugin's current champion (written by its own `save`),
    #: when the run asked to continue from it; None otherwise. A plugin that cannot warm-start ignores it.
    init_from: Path | None = None


@runtime_checkable
class ModelPlugin(Protocol):
    """A CTR (or uplift) model with scikit-learn-like fit/predict and safe persistence."""

    name: ClassVar[str]
    task: ClassVar[Task]
    Config: ClassVar[type]
    requires: ClassVar[frozenset[str]]

    def fit(self, train: pa.Table, valid: pa.Table, ctx: FitContext) -> ModelPlugin: ...

    def predict(self, batch: pa.Table) -> np.ndarray: ...

    def save(self, directory: Path) -> None: ...

    @classmethod
    def load(cls, directory: Path) -> ModelPlugin: ...


#: Keys of the per-stage dicts an uplift model returns (`UpliftPlugin.predict_effects` / `predict_outcomes`).
UPLIFT_STAGES: tuple[str, ...] = ("click", "conversion")


@runtime_checkable
class UpliftPlugin(ModelPlugin, Protocol):
    """A `ModelPlugin` whose `task` is "uplift": it predicts what each coupon arm changes, per chain stage.

    Declares ``task = "uplift"`` and ``requires ⊇ {"treatment"}`` (plus ``"conversion"`` when it models
    the second stage of the chain).

    * `fit(train, valid, ctx)`: pyarrow Tables with `label` (int8, the stage-1 outcome: click / visit),
      optionally `conversion` (int8, the stage-2 outcome in *exposure* space: 1 only for exposed rows
      that converted, so a row that did not click has conversion 0), `treatment` (int, 0 = control,
      1..K = arms; arms are the values 1..max seen in `train`) and generic feature columns: the
      lineage's TRAINING table, or the columns of any tabular experiment (`ctr uplift --csv`): floats,
      ints, strings. A plugin uses the features it understands and ignores the rest (list and
      timestamp columns, ids).
    * `predict(batch) -> float[n]` in [-1, 1]: the mean over arms 1..K of the predicted stage-1 uplift
      p(click | x, arm k) - p(click | x, arm 0). It must not depend on the row's own `treatment`
      (every arm is scored counterfactually) and never sees a label (`modeling.features_only`).
    * `predict_effects(batch) -> {"click": float[n, K+1], "conversion": float[n, K+1]}` (optional;
      "conversion" only for a plugin that models it): column k = p(stage | x, arm k) -
      p(stage | x, arm 0); column 0 is zeros. The conversion stage is the entire-space CTCVR
      p(click and conversion | x, arm), not the conversion rate given a click.
    * `predict_outcomes(batch) -> {...}` (optional): the same keys, the probabilities themselves
      (float[n, K+1], in [0, 1]).

    A plugin without `predict_effects` is evaluated on the click stage only, with `predict` as its
    score for every arm (`ctr_dagster.uplift.evaluate`). Example: ``plugins/ctr-metalearners``
    (S- and T-learner on LightGBM).
    """

    def predict_effects(self, batch: pa.Table) -> dict[str, np.ndarray]: ...

    def predict_outcomes(self, batch: pa.Table) -> dict[str, np.ndarray]: ...


#: Optional members of an uplift model; when present they must be methods.
UPLIFT_OPTIONAL_MEMBERS = ("predict_effects", "predict_outcomes")


@runtime_checkable
class EncoderPlugin(Protocol):
    """Turns items (rows of the ITEMS schema) into fixed-width float32 vectors of one modality.

    `encode` must give an item the same vector whatever else is in the batch (the engine caches
    vectors per item content). Optional members:

    * `runtime_fields: ClassVar[frozenset[str]]` — Config fields that do not change the vectors
      (batch size, device); left out of the cache key so changing them re-encodes nothing.
    * A *trainable* encoder (e.g. a CNN learned on the catalogue) also has
      `fit(items, attributes) -> self` (ITEMS and the structured ITEM_ATTRIBUTES; never oracle data),
      `save(directory)` and classmethod `load(directory)` (safe formats only). The engine fits it once,
      stores it, and reloads it on later runs so unchanged items keep hitting the cache; the stored
      files' hash is part of the cache key. Without `fit`, `encode` works from the Config alone.
    * `summary` / `report(directory)` — what it built, shown by the stage (`PluginReporting`).
    """

    name: ClassVar[str]
    modality: ClassVar[Modality]
    Config: ClassVar[type]
    #: Bumped when the encoder's output changes: part of the embedding cache key.
    version: ClassVar[str]

    def encode(self, items: pa.Table) -> np.ndarray: ...


#: Members a trainable encoder (one that has `fit`) must also have.
TRAINABLE_ENCODER_MEMBERS = ("fit", "save", "load")


@runtime_checkable
class ExtractorPlugin(Protocol):
    """Predicts (item_id, attribute, value, score) rows from the catalogue.

    `fit(items, attributes)` sees the ITEMS and ITEM_ATTRIBUTES tables. An extractor that needs more
    declares the class attribute `requires` (a subset of `KNOWN_EXTRACTOR_INPUTS`, possibly empty);
    the engine then calls `fit(items, attributes, ctx)` with a `FitContext` whose `inputs` hold those
    of the tables it has (imported data may have no interactions: an extractor copes with a missing
    one), plus `seed`, `device`, `log`. Extractors without `requires` keep the two-argument fit.
    Optional: `summary` / `report(directory)` to show what it built (`PluginReporting`), and the
    class attribute `baseline = True` for a reference method (title matching, a text-only ablation):
    the attribute stage then judges every other extractor against the stronger baseline.
    """

    name: ClassVar[str]
    Config: ClassVar[type]

    def fit(self, items: pa.Table, attributes: pa.Table) -> ExtractorPlugin: ...

    def extract(self, items: pa.Table) -> pa.Table: ...


#: Picture formats a plugin report may point at (the UI shows them inline).
REPORT_IMAGE_SUFFIXES: frozenset[str] = frozenset({".png"})
#: Kinds whose stage reads the optional `summary` / `report(directory)` members (`PluginReporting`).
REPORTING_KINDS: frozenset[str] = frozenset({"extractor", "encoder"})


class PluginReporting(Protocol):
    """Optional members of an extractor or encoder: what it built, for people to look at. Dagster-free.

    * `summary: dict[str, Any]` — figures about the last `fit`, set by `fit` (validation scores,
      steps, thresholds, seconds).
    * `report(directory: Path) -> dict[str, Any]` — more entries of the same kind, computed after the
      plugin ran (extractor: after `extract`); it may write pictures into `directory`, a folder
      the engine keeps for this plugin (write nothing outside it). Its entries are added to
      `summary`'s (same key: report wins).

    Entry values: a number (int / float, not bool) is shown as numeric metadata `<plugin>/<key>`
    (plotted across runs in the UI); a `pathlib.Path` to a PNG the plugin wrote inside `directory` is
    shown as an inline picture; anything else JSON-able (str, bool, None, list, dict) is shown as is.
    Keys are short names (letters, digits, `_ . / -`). `report_violations` checks one report. A
    failing `report` is logged and shown; it never discards the plugin's results.

    Example (the HyperPAVE extractor reports its hypergraph)::

        def report(self, directory):
            png = render_neighbourhood(self.graph, directory / "neighbourhood.png")
            return {"hypergraph/nodes_av": len(self.graph.avs), "neighbourhood": png}
    """

    summary: dict[str, Any]

    def report(self, directory: Path) -> dict[str, Any]: ...


_REPORT_KEY_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_./-")


def report_violations(entries: Any, directory: Path | None = None) -> list[str]:
    """Everything wrong with one plugin report (a `summary` or what `report` returned); empty = valid.

    `directory`: the folder the plugin was given; a picture must lie inside it.
    """
    import json
    import math

    if not isinstance(entries, dict):
        return [f"a report must be a dict, got {type(entries).__name__}"]
    problems = []
    for key, value in entries.items():
        if not isinstance(key, str) or not key or set(key) - _REPORT_KEY_CHARS:
            problems.append(f"report key {key!r} must be a short name (letters, digits, _ . / -)")
            continue
        if isinstance(value, Path):
            if value.suffix.lower() not in REPORT_IMAGE_SUFFIXES:
                problems.append(f"report {key!r}: {value} is not a picture ({sorted(REPORT_IMAGE_SUFFIXES)})")
            elif not value.is_file():
                problems.append(f"report {key!r}: {value} does not exist")
            elif directory is not None and not value.resolve().is_relative_to(Path(directory).resolve()):
                problems.append(f"report {key!r}: {value} is outside the directory it was given")
            continue
        if isinstance(value, float) and not math.isfinite(value):
            problems.append(f"report {key!r}: {value!r} is not a finite number (use None)")
            continue
        try:
            json.dumps(value, allow_nan=False)
        except (TypeError, ValueError) as exc:
            problems.append(f"report {key!r}: value is not JSON-able ({exc})")
    return problems


_REQUIRED_MEMBERS: dict[str, tuple[str, ...]] = {
    "model": ("name", "task", "Config", "requires", "fit", "predict", "save", "load"),
    "encoder": ("name", "modality", "Config", "version", "encode"),
    "extractor": ("name", "Config", "fit", "extract"),
}


def contract_violations(kind: str, plugin: Any) -> list[str]:
    """Everything wrong with `plugin` as a `kind` plugin, as readable sentences (empty = valid).

    Checked without instantiating or calling the plugin, so validation never runs plugin code
    beyond its import.
    """
    problems: list[str] = []
    if not isinstance(plugin, type):
        return [f"entry point must name a class, got {type(plugin).__name__}"]
    for member in _REQUIRED_MEMBERS[kind]:
        if not hasattr(plugin, member):
            problems.append(f"missing required member {member!r}")
    if problems:
        return problems
    config = plugin.Config
    if not (isinstance(config, type) and dataclasses.is_dataclass(config)):
        problems.append("Config must be a dataclass (its fields become launchpad config)")
    else:
        for f in dataclasses.fields(config):
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                problems.append(f"Config field {f.name!r} needs a default")
    if kind == "model":
        if plugin.task not in ("ctr", "uplift"):
            problems.append(f"task must be 'ctr' or 'uplift', got {plugin.task!r}")
        unknown = set(plugin.requires) - KNOWN_INPUTS
        if unknown:
            problems.append(f"requires unknown input(s) {sorted(unknown)}; known: {sorted(KNOWN_INPUTS)}")
        role = getattr(plugin, "role", None)
        if role not in (None, "teacher", "student"):
            problems.append(f"role must be None, 'teacher' or 'student', got {role!r}")
        if role == "student" and not getattr(plugin, "teacher", None):
            problems.append("a student must name its teacher (class attribute `teacher`)")
        declared = getattr(plugin, "online_teacher_config", None)
        if declared is not None and not (
            role == "student" and isinstance(declared, dict) and all(isinstance(k, str) for k in declared)
        ):
            problems.append(
                "online_teacher_config must be a dict of the teacher's Config fields, on a student"
            )
        if plugin.task == "uplift":
            problems.extend(_uplift_problems(plugin))
    if kind == "extractor" and hasattr(plugin, "requires"):
        problems.extend(_extractor_requires_problems(plugin))
    if kind == "encoder" and plugin.modality not in ("text", "image"):
        problems.append(f"modality must be 'text' or 'image', got {plugin.modality!r}")
    if kind == "encoder" and hasattr(plugin, "fit"):
        for member in TRAINABLE_ENCODER_MEMBERS:
            if not callable(getattr(plugin, member, None)):
                problems.append(f"a trainable encoder (it has fit) needs a callable {member!r}")
    if kind == "encoder" and not isinstance(getattr(plugin, "runtime_fields", frozenset()), frozenset | set):
        problems.append("runtime_fields must be a frozenset of Config field names")
    if kind in REPORTING_KINDS and hasattr(plugin, "report"):
        problems.extend(_report_member_problems(plugin))
    for method in {
        "model": ("fit", "predict", "save"),
        "encoder": ("encode",),
        "extractor": ("fit", "extract"),
    }[kind]:
        if not callable(getattr(plugin, method, None)):
            problems.append(f"{method} must be a method")
    return problems


def _uplift_problems(plugin: type) -> list[str]:
    """An uplift model (`UpliftPlugin`) needs the treatment, and its optional members must be methods."""
    problems = []
    if "treatment" not in set(plugin.requires):
        problems.append("an uplift model must declare 'treatment' in requires")
    for member in UPLIFT_OPTIONAL_MEMBERS:
        if hasattr(plugin, member) and not callable(getattr(plugin, member)):
            problems.append(f"{member} must be a method {member}(batch) -> dict[str, ndarray]")
    return problems


def _extractor_requires_problems(plugin: type) -> list[str]:
    """An extractor declaring `requires` must name known inputs and accept `fit(items, attributes, ctx)`."""
    import inspect

    try:
        unknown = set(plugin.requires) - KNOWN_EXTRACTOR_INPUTS
    except TypeError:
        return [f"requires must be a set of input names, got {plugin.requires!r}"]
    problems = []
    if unknown:
        problems.append(
            f"requires unknown extractor input(s) {sorted(unknown)}; known: {sorted(KNOWN_EXTRACTOR_INPUTS)}"
        )
    try:
        inspect.signature(plugin.fit).bind(None, None, None, None)  # self, items, attributes, ctx
    except TypeError:
        problems.append("an extractor declaring `requires` must accept fit(items, attributes, ctx)")
    except ValueError:  # no signature (builtin): nothing to check
        pass
    return problems


def _report_member_problems(plugin: type) -> list[str]:
    """An optional `report` must be a method taking the directory (`PluginReporting`)."""
    import inspect

    report = plugin.report
    if not callable(report):
        return ["report must be a method report(directory) -> dict"]
    try:
        inspect.signature(report).bind(None, None)  # self, directory
    except TypeError:
        return ["report must accept report(directory) -> dict"]
    except ValueError:  # no signature (builtin): nothing to check
        pass
    return []


def extractor_fit(extractor: Any, items: pa.Table, attributes: pa.Table, ctx: FitContext) -> Any:
    """Call an extractor's fit the way its contract says: with `ctx` only when it declares `requires`."""
    if hasattr(type(extractor), "requires"):
        return extractor.fit(items, attributes, ctx)
    return extractor.fit(items, attributes)


def config_from_dict(plugin: type, values: dict[str, Any] | None) -> Any:
    """Build the plugin's Config from (launchpad) values, rejecting unknown keys by name."""
    values = dict(values or {})
    known = {f.name for f in dataclasses.fields(plugin.Config)}
    unknown = set(values) - known
    if unknown:
        raise ValueError(f"{plugin.name}: unknown config key(s) {sorted(unknown)}; known: {sorted(known)}")
    return plugin.Config(**values)


def config_to_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)
