"""`ModelHarness`: fits a model plugin once on the kit's synthetic table and runs every model check.

Checks on a model plugin: contract (`contract_violations` empty); config (dataclass with defaults,
JSON-serializable, `config_from_dict` round trip, unknown key rejected, constructible); `fit`
returns the model; `predict` gives a float array of shape (n,), finite, in [0, 1] ([-1, 1] for
uplift models); better than chance on held-out rows (AUC > `min_auc`; positive uplift gain for
uplift models); save/load round trip in a fresh directory gives identical predictions; saved files
are not pickles; two fits with the same `FitContext.seed` give identical predictions; a 1-row batch
works and matches the full-batch score; `predict` does not mutate its input; `predict` is label-blind
(the kit, like the engine, hands it features only, and its scores must not move when the labels are
attached or shuffled).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ctr_dagster.contracts import FitContext, config_from_dict
from ctr_dagster.metrics import auc
from ctr_dagster.modeling import HIDDEN_AT_PREDICT, features_only
from ctr_dagster.testing.checks import (
    CheckResult,
    ConformanceError,
    _assert_close,
    _fail,
    _snapshot,
    _tempdir,
    assert_no_pickles,
    assert_scores_valid,
    check_config,
    check_contract,
    check_label_blind,
    uplift_gain,
)
from ctr_dagster.testing.data import make_fit_inputs, make_training_table, training_cardinalities


class ModelHarness:
    """Fits a model plugin once on synthetic data and runs every model check against it.

    Each `check_*` method raises ConformanceError; `run_all()` returns a CheckResult per check.
    """

    CHECKS: ClassVar[tuple[str, ...]] = (
        "contract",
        "config",
        "fit_returns_model",
        "predict_output",
        "better_than_chance",
        "save_load_round_trip",
        "no_pickle",
        "deterministic_under_seed",
        "single_row",
        "no_input_mutation",
        "label_blind",
    )

    def __init__(
        self,
        plugin: type,
        config: dict[str, Any] | None = None,
        *,
        n_rows: int = 3000,
        seed: int = 0,
        min_auc: float = 0.55,
        tolerance: float = 0.0,
        batch_tolerance: float = 1e-5,
        inputs: dict[str, Any] | None = None,
        log: Callable[[str], None] | None = None,
    ):
        if plugin is None:
            raise ConformanceError("set `plugin = YourModelClass` on the conformance test class")
        self.plugin = plugin
        self.config = dict(config or {})
        self.n_rows = n_rows
        self.seed = seed
        self.min_auc = min_auc
        self.tolerance = tolerance
        self.batch_tolerance = batch_tolerance
        self._inputs = inputs
        self._log = log or (lambda message: None)
        self._fit_error: BaseException | None = None

    # data -------------------------------------------------------------------------------------
    @cached_property
    def table(self) -> pa.Table:
        return make_training_table(self.n_rows, self.seed)

    def _split(self, name: str) -> pa.Table:
        return self.table.filter(pc.equal(self.table.column("split"), name))

    @cached_property
    def train(self) -> pa.Table:
        return self._split("train")

    @cached_property
    def valid(self) -> pa.Table:
        return self._split("valid")

    @cached_property
    def test(self) -> pa.Table:
        """The test rows with their labels (for scoring); `predict` gets `test_features`."""
        return self._split("test")

    @cached_property
    def test_features(self) -> pa.Table:
        """The test rows as the engine hands them to `predict`: no label, conversion or oracle column."""
        return features_only(self.test)

    @property
    def task(self) -> str:
        return getattr(self.plugin, "task", "ctr")

    def context(self, workdir: Path | None = None) -> FitContext:
        requires = frozenset(getattr(self.plugin, "requires", frozenset()))
        inputs = (
            self._inputs if self._inputs is not None else make_fit_inputs(requires, self.table, self.seed)
        )
        return FitContext(
            seed=self.seed,
            device="cpu",
            workdir=workdir,
            cardinalities=training_cardinalities(self.table),
            inputs=inputs,
            log=self._log,
        )

    def new_model(self) -> Any:
        return self.plugin(config_from_dict(self.plugin, self.config))

    def fit_new(self) -> tuple[Any, Any]:
        """(instance, what its fit returned), fitted on the train/valid splits in a scratch dir."""
        model = self.new_model()
        with _tempdir("ctr-conformance-fit-") as workdir:
            result = model.fit(self.train, self.valid, self.context(workdir))
        return model, result

    @cached_property
    def _fit(self) -> tuple[Any, Any]:
        if self._fit_error is not None:
            raise self._fit_error
        try:
            return self.fit_new()
        except BaseException as exc:
            self._fit_error = exc
            raise

    @property
    def fitted(self) -> Any:
        """The trained model (what fit returned, if it is an instance of the plugin)."""
        model, result = self._fit
        return result if isinstance(result, self.plugin) else model

    def predict(self, model: Any, batch: pa.Table) -> np.ndarray:
        """`model.predict(batch)`; a KeyError on a label column becomes a ConformanceError saying why."""
        try:
            return np.asarray(model.predict(batch))
        except KeyError as exc:
            hidden = [name for name in HIDDEN_AT_PREDICT if name in str(exc)]
            if hidden:
                raise _fail(
                    "label_blind",
                    f"predict read {hidden[0]!r}, which the engine never hands it (predict gets features "
                    f"only: {', '.join(HIDDEN_AT_PREDICT)} are removed): {exc}",
                ) from exc
            raise

    @cached_property
    def test_scores(self) -> np.ndarray:
        return self.predict(self.fitted, self.test_features)

    # checks -----------------------------------------------------------------------------------
    def check_contract(self) -> None:
        check_contract("model", self.plugin)

    def check_config(self) -> None:
        check_config(self.plugin)
        try:
            config_from_dict(self.plugin, self.config)
        except ValueError as exc:
            raise _fail("config", f"the test's config overrides are invalid: {exc}") from exc

    def check_fit_returns_model(self) -> None:
        model, result = self._fit
        if not isinstance(result, self.plugin):
            raise _fail(
                "fit",
                f"fit must return the trained model (an instance of {self.plugin.__name__}), got {result!r}",
            )

    def check_predict_output(self) -> None:
        assert_scores_valid(self.test_scores, self.test.num_rows, self.task)

    def check_better_than_chance(self) -> None:
        scores = assert_scores_valid(self.test_scores, self.test.num_rows, self.task)
        label = self.test.column("label").to_numpy().astype(np.float64)
        if self.task == "uplift":
            gain = uplift_gain(scores, label, self.test.column("treatment").to_numpy())
            if not gain > 0.0:
                raise _fail(
                    "signal",
                    f"uplift ranking is no better than chance on held-out rows (top-half minus bottom-half "
                    f"uplift {gain:.4f} <= 0)",
                )
            return
        score = auc(label, scores)
        if score is None:
            raise _fail("signal", f"the held-out split ({self.test.num_rows} rows) has one class: no AUC")
        if not score > self.min_auc:
            raise _fail(
                "signal",
                f"held-out AUC {score:.4f} <= {self.min_auc} on the synthetic table "
                f"({self.test.num_rows} rows; the planted signal is learnable)",
            )

    def check_save_load_round_trip(self) -> None:
        with _tempdir("ctr-conformance-save-") as tmp:
            directory = tmp / "model"
            directory.mkdir()
            self.fitted.save(directory)
            loaded = self.plugin.load(directory)
            if not isinstance(loaded, self.plugin):
                raise _fail(
                    "save_load", f"load must return a {self.plugin.__name__}, got {type(loaded).__name__}"
                )
            _assert_close(
                "save_load",
                self.test_scores,
                self.predict(loaded, self.test_features),
                self.tolerance,
                "predictions after load",
            )

    def check_no_pickle(self) -> None:
        with _tempdir("ctr-conformance-pickle-") as tmp:
            directory = tmp / "model"
            directory.mkdir()
            self.fitted.save(directory)
            if not any(p.is_file() for p in directory.rglob("*")):
                raise _fail("no_pickle", "save wrote no file into the directory it was given")
            assert_no_pickles(directory)

    def check_deterministic_under_seed(self) -> None:
        model, result = self.fit_new()
        again = result if isinstance(result, self.plugin) else model
        _assert_close(
            "determinism",
            self.test_scores,
            self.predict(again, self.test_features),
            self.tolerance,
            f"two fits with FitContext.seed={self.seed}",
        )

    def check_single_row(self) -> None:
        row = self.test_features.slice(0, 1)
        scores = assert_scores_valid(self.predict(self.fitted, row), 1, self.task)
        _assert_close(
            "single_row",
            self.test_scores[:1],
            scores,
            self.batch_tolerance,
            "1-row batch vs full batch score",
        )

    def check_no_input_mutation(self) -> None:
        batch = self.test_features.slice(0, min(64, self.test.num_rows))
        before = _snapshot(batch)
        self.fitted.predict(batch)
        if _snapshot(batch) != before:
            raise _fail("no_mutation", "predict modified its input batch")

    def check_label_blind(self) -> None:
        check_label_blind(
            lambda batch: self.predict(self.fitted, batch),
            self.test,
            self.test_scores,
            self.tolerance,
            self.seed,
        )

    # runner -----------------------------------------------------------------------------------
    def run_all(self) -> list[CheckResult]:
        results = []
        for name in self.CHECKS:
            try:
                getattr(self, f"check_{name}")()
            except Exception as exc:  # one failing check must not hide the others
                results.append(CheckResult(name, False, f"{type(exc).__name__}: {exc}"))
            else:
                results.append(CheckResult(name, True))
        return results


def check_model(plugin: type, config: dict[str, Any] | None = None, **options: Any) -> list[CheckResult]:
    """Run every model check; `options` are ModelHarness keyword arguments (n_rows, seed, min_auc, ...)."""
    return ModelHarness(plugin, config, **options).run_all()
