"""Plugin conformance kit: the checks every plugin must pass, runnable from the plugin's own tests.

Model plugins subclass `ModelConformance` in their test suite (pytest collects the `test_*` methods)::

    from ctr_dagster.testing import ModelConformance
    from ctr_mymodel.model import MyModel

    class TestMyModel(ModelConformance):
        plugin = MyModel
        config = {"epochs": 1}      # optional overrides that keep the test fast
        # n_rows = 3000, seed = 0, min_auc = 0.55, tolerance = 0.0, inputs = None: see the class

Encoders and extractors have `EncoderConformance` and `ExtractorConformance` (same pattern).

Modules:

* `data`: the test tables, thin views of the synthetic world (`ctr_dagster.datagen`, the `tiny`
  profile): `make_training_table`, `synthetic_training_table`, `make_items_table`,
  `make_item_attributes_table`, the stand-in prepared inputs (`make_fit_inputs`,
  `make_extractor_inputs`); cached per process (tables are immutable).
* `checks`: the checks as plain functions raising `ConformanceError` (an AssertionError):
  `check_contract`, `check_config`, `assert_scores_valid`, `find_pickles` / `assert_no_pickles`,
  `check_label_blind` / `shuffled_labels`, `uplift_gain`, and `auc` (the engine's one AUC,
  `ctr_dagster.metrics.auc`).
* `harness`: `ModelHarness` fits a model once and runs every model check; `check_model(plugin)`
  returns a `CheckResult` per check, so the kit works outside pytest too (e.g. from the CLI).
* `conformance`: the pytest base classes.

Nothing here imports pytest, Dagster or torch.
"""

from __future__ import annotations

from ctr_dagster.testing.checks import (
    CheckResult,
    ConformanceError,
    assert_no_pickles,
    assert_scores_valid,
    auc,
    check_config,
    check_contract,
    check_label_blind,
    check_report,
    find_pickles,
    shuffled_labels,
    uplift_gain,
)
from ctr_dagster.testing.conformance import EncoderConformance, ExtractorConformance, ModelConformance
from ctr_dagster.testing.data import (
    kit_training_table,
    kit_world,
    make_extractor_inputs,
    make_fit_inputs,
    make_item_attributes_table,
    make_items_table,
    make_oracle_item_attributes_table,
    make_training_table,
    synthetic_item_inputs,
    synthetic_training_table,
    training_cardinalities,
    world_training_table,
)
from ctr_dagster.testing.harness import ModelHarness, check_model

__all__ = [
    "CheckResult",
    "ConformanceError",
    "EncoderConformance",
    "ExtractorConformance",
    "ModelConformance",
    "ModelHarness",
    "assert_no_pickles",
    "assert_scores_valid",
    "auc",
    "check_config",
    "check_contract",
    "check_label_blind",
    "check_report",
    "check_model",
    "find_pickles",
    "kit_training_table",
    "kit_world",
    "make_extractor_inputs",
    "make_fit_inputs",
    "synthetic_item_inputs",
    "make_item_attributes_table",
    "make_items_table",
    "make_oracle_item_attributes_table",
    "make_training_table",
    "shuffled_labels",
    "synthetic_training_table",
    "training_cardinalities",
    "uplift_gain",
    "world_training_table",
]
