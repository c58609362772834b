"""pytest base classes of the kit (no pytest import needed: pytest collects the `test_*` methods of
subclasses): `ModelConformance`, `EncoderConformance`, `ExtractorConformance`."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import pyarrow as pa

from ctr_dagster.contracts import FitContext, config_from_dict
from ctr_dagster.testing.checks import (
    _assert_close,
    _fail,
    _tempdir,
    assert_no_pickles,
    check_config,
    check_contract,
    check_report,
)
from ctr_dagster.testing.data import make_extractor_inputs, make_item_attributes_table, make_items_table
from ctr_dagster.testing.harness import ModelHarness


class ModelConformance:
    """Subclass as `class TestMyModel(ModelConformance): plugin = MyModel`.

    Class attributes to override: `config` (dict of Config overrides, e.g. {"epochs": 1}),
    `n_rows` (size of the synthetic table), `seed`, `min_auc` (held-out AUC to beat), `tolerance`
    (max abs difference allowed between "identical" predictions: save/load and same-seed refit;
    0.0 = bitwise), `batch_tolerance` (1-row vs full-batch score), `inputs` (replaces the stand-in
    prepared inputs of `make_fit_inputs`). The model is fitted once per class (twice with the
    determinism check).
    """

    plugin: ClassVar[type | None] = None
    config: ClassVar[dict[str, Any]] = {}
    n_rows: ClassVar[int] = 3000
    seed: ClassVar[int] = 0
    min_auc: ClassVar[float] = 0.55
    tolerance: ClassVar[float] = 0.0
    batch_tolerance: ClassVar[float] = 1e-5
    inputs: ClassVar[dict[str, Any] | None] = None

    @classmethod
    def harness(cls) -> ModelHarness:
        cached = cls.__dict__.get("_conformance_harness")
        if cached is None:
            cached = ModelHarness(
                cls.plugin,  # type: ignore[arg-type]
                cls.config,
                n_rows=cls.n_rows,
                seed=cls.seed,
                min_auc=cls.min_auc,
                tolerance=cls.tolerance,
                batch_tolerance=cls.batch_tolerance,
                inputs=cls.inputs,
            )
            cls._conformance_harness = cached
        return cached

    def test_contract(self) -> None:
        self.harness().check_contract()

    def test_config_schema(self) -> None:
        self.harness().check_config()

    def test_fit_returns_model(self) -> None:
        self.harness().check_fit_returns_model()

    def test_predict_shape_and_range(self) -> None:
        self.harness().check_predict_output()

    def test_better_than_chance(self) -> None:
        self.harness().check_better_than_chance()

    def test_save_load_round_trip(self) -> None:
        self.harness().check_save_load_round_trip()

    def test_saved_files_are_not_pickles(self) -> None:
        self.harness().check_no_pickle()

    def test_deterministic_under_seed(self) -> None:
        self.harness().check_deterministic_under_seed()

    def test_predict_single_row(self) -> None:
        self.harness().check_single_row()

    def test_predict_does_not_mutate_input(self) -> None:
        self.harness().check_no_input_mutation()

    def test_predict_never_reads_labels(self) -> None:
        self.harness().check_label_blind()


class EncoderConformance:
    """Subclass as `class TestMyEncoder(EncoderConformance): plugin = MyEncoder`.

    Checks: contract, config, `encode` returns float32[n, d] (d > 0, finite), deterministic across two
    instances, and a 1-row batch matches the full-batch row (within `batch_tolerance`). A trainable
    encoder (one with `fit`) is first fitted on `make_items_table` / `make_item_attributes_table`;
    then `fit` must return the encoder, two fits must agree (within `tolerance`), and `save` / `load`
    must round-trip its vectors without pickle files. The optional `summary` / `report(directory)`
    must be valid reports (`check_report`).
    """

    plugin: ClassVar[type | None] = None
    config: ClassVar[dict[str, Any]] = {}
    n_items: ClassVar[int] = 24
    seed: ClassVar[int] = 0
    tolerance: ClassVar[float] = 0.0
    batch_tolerance: ClassVar[float] = 1e-5

    @classmethod
    def _trainable(cls) -> bool:
        return callable(getattr(cls.plugin, "fit", None))

    def _new_encoder(self) -> Any:
        encoder = self.plugin(config_from_dict(self.plugin, self.config))  # type: ignore[misc]
        if self._trainable():
            fitted = encoder.fit(self._items(), make_item_attributes_table(self.n_items, self.seed))
            if fitted is not encoder and not isinstance(fitted, self.plugin):  # type: ignore[arg-type]
                raise _fail("fit", f"fit must return the encoder, got {fitted!r}")
            encoder = fitted
        return encoder

    def _encoder(self) -> Any:
        """One (fitted) encoder per test class, reused by the checks that only call `encode`."""
        cls = type(self)
        cached = cls.__dict__.get("_conformance_encoder")
        if cached is None:
            cached = self._new_encoder()
            cls._conformance_encoder = cached
        return cached

    def _encode(self, items: pa.Table) -> np.ndarray:
        return self._encoder().encode(items)

    def _items(self) -> pa.Table:
        return make_items_table(self.n_items, self.seed)

    def test_report(self) -> None:
        check_report(self._encoder())

    def test_fit_and_persistence(self) -> None:
        """Trainable encoders only: save/load gives the same vectors, and nothing saved is a pickle."""
        if not self._trainable():
            return
        items = self._items()
        encoder = self._encoder()
        with _tempdir("ctr-conformance-encoder-") as tmp:
            encoder.save(tmp)
            if not any(p.is_file() for p in tmp.rglob("*")):
                raise _fail("save_load", "save wrote no file into the directory it was given")
            assert_no_pickles(tmp)
            loaded = self.plugin.load(tmp)  # type: ignore[union-attr]
            _assert_close(
                "save_load",
                encoder.encode(items).ravel(),
                np.asarray(loaded.encode(items)).ravel(),
                self.tolerance,
                "vectors after load",
            )

    def test_contract(self) -> None:
        check_contract("encoder", self.plugin)

    def test_config_schema(self) -> None:
        check_config(self.plugin)  # type: ignore[arg-type]

    def test_output_shape_and_dtype(self) -> None:
        out = self._encode(self._items())
        if (
            not isinstance(out, np.ndarray)
            or out.ndim != 2
            or out.shape[0] != self.n_items
            or out.shape[1] < 1
        ):
            raise _fail(
                "encode", f"encode must return float32[{self.n_items}, d], got {getattr(out, 'shape', out)!r}"
            )
        if out.dtype != np.float32:
            raise _fail("encode", f"encode must return float32, got {out.dtype}")
        if not np.all(np.isfinite(out)):
            raise _fail("encode", "encode returned non-finite values")

    def test_deterministic(self) -> None:
        items = self._items()
        first = self._encode(items)
        again = self._new_encoder().encode(items)
        _assert_close("determinism", first.ravel(), np.asarray(again).ravel(), self.tolerance, "two encoders")

    def test_single_row(self) -> None:
        items = self._items()
        full = self._encode(items)
        one = self._encode(items.slice(0, 1))
        if one.shape != (1, full.shape[1]):
            raise _fail("single_row", f"1-row batch gave shape {one.shape}, expected (1, {full.shape[1]})")
        _assert_close("single_row", full[0], one[0], self.batch_tolerance, "1-row batch vs full batch")


class ExtractorConformance:
    """Subclass as `class TestMyExtractor(ExtractorConformance): plugin = MyExtractor`.

    Checks: contract, config, `fit` returns the extractor, `extract` returns a table with the columns
    item_id, attribute, value (strings) and score (float in [0, 1]) about the given items only, two
    fits with the same `FitContext.seed` extract the same rows, and the optional `summary` /
    `report(directory)` are valid reports (`check_report`). An extractor declaring `requires`
    gets `fit(items, attributes, ctx)` with `make_extractor_inputs` stand-ins (override `inputs`).
    """

    plugin: ClassVar[type | None] = None
    config: ClassVar[dict[str, Any]] = {}
    n_items: ClassVar[int] = 40
    seed: ClassVar[int] = 0
    #: Prepared inputs for an extractor declaring `requires`; None = `make_extractor_inputs` stand-ins.
    inputs: ClassVar[dict[str, Any] | None] = None

    def test_contract(self) -> None:
        check_contract("extractor", self.plugin)

    def test_config_schema(self) -> None:
        check_config(self.plugin)  # type: ignore[arg-type]

    def _fit_extract(self) -> tuple[Any, pa.Table, pa.Table]:
        from ctr_dagster.contracts import extractor_fit

        items = make_items_table(self.n_items, self.seed)
        attributes = make_item_attributes_table(self.n_items, self.seed)
        requires = frozenset(getattr(self.plugin, "requires", ()))
        inputs = (
            self.inputs
            if self.inputs is not None
            else make_extractor_inputs(requires, self.n_items, self.seed)
        )
        ctx = FitContext(seed=self.seed, inputs=dict(inputs), log=lambda _m: None)
        extractor = self.plugin(config_from_dict(self.plugin, self.config))  # type: ignore[misc]
        fitted = extractor_fit(extractor, items, attributes, ctx)
        if not isinstance(fitted, self.plugin):  # type: ignore[arg-type]
            raise _fail("fit", f"fit must return the extractor, got {fitted!r}")
        return fitted, items, fitted.extract(items)

    def test_deterministic(self) -> None:
        _, _, first = self._fit_extract()
        _, _, second = self._fit_extract()
        if isinstance(first, pa.Table) and isinstance(second, pa.Table) and not first.equals(second):
            raise _fail("deterministic", "two fits with the same seed extracted different rows")

    def test_report(self) -> None:
        check_report(self._fit_extract()[0])

    def test_fit_and_extract(self) -> None:
        _fitted, items, out = self._fit_extract()
        if not isinstance(out, pa.Table):
            raise _fail("extract", f"extract must return a pyarrow Table, got {type(out).__name__}")
        missing = [c for c in ("item_id", "attribute", "value", "score") if c not in out.column_names]
        if missing:
            raise _fail("extract", f"extract output lacks column(s) {missing}; has {out.column_names}")
        for name in ("item_id", "attribute", "value"):
            if not pa.types.is_string(out.column(name).type):
                raise _fail("extract", f"column {name!r} must be strings, got {out.column(name).type}")
        if not pa.types.is_floating(out.column("score").type):
            raise _fail("extract", f"column 'score' must be float, got {out.column('score').type}")
        score = out.column("score").to_numpy(zero_copy_only=False)
        if len(score) and (not np.all(np.isfinite(score)) or score.min() < 0 or score.max() > 1):
            raise _fail("extract", "scores must be finite and in [0, 1]")
        unknown = set(out.column("item_id").to_pylist()) - set(items.column("item_id").to_pylist())
        if unknown:
            raise _fail("extract", f"extract returned rows for unknown item(s) {sorted(unknown)[:5]}")
