"""S-learner and T-learner: LightGBM meta-learner baselines for multi-arm, two-stage uplift.

Both follow the uplift plugin contract (`ctr_dagster.contracts.UpliftPlugin`): `fit` on tables with
`label` (stage 1: click / visit), optionally `conversion` (stage 2, exposure space), `treatment`
(0 = control, 1..K) and generic features (`ctr_metalearners.features`); `predict_outcomes` gives
p(stage | x, arm k) for every arm k = 0..K, `predict_effects` the differences to arm 0, `predict`
the mean click effect over arms 1..K.

* **S-learner** (`s_learner`): one LightGBM classifier per stage over the features plus the arm as a
  categorical feature; every arm is scored counterfactually by setting that feature to k.
* **T-learner** (`t_learner`): one classifier per (stage, arm), each fitted on that arm's rows only.

The conversion stage is modelled directly in exposure space: the classifier's target is `conversion`
on every row (0 for rows that never clicked), so its probability is the entire-space CTCVR
p(click and conversion | x, arm), as the contract asks -- not the conversion rate given a click.
Early stopping on the valid split's log loss (per stage, and per arm for the T-learner). A (stage,
arm) whose training rows hold one class only gets a constant (the smoothed rate) instead of trees.

This module is imported when the engine discovers plugins, so it imports nothing heavy: numpy,
pyarrow and lightgbm are imported inside the methods.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from ctr_dagster.artifact_meta import read_meta, write_meta
from ctr_dagster.contracts import FitContext, config_from_dict, config_to_dict

if TYPE_CHECKING:
    import numpy as np
    import pyarrow as pa

    from ctr_metalearners.features import FeatureSpec

FORMAT_VERSION = 1
#: The S-learner's extra categorical feature: the arm being scored.
ARM_FEATURE = "__arm__"
#: Pseudo-rows at the stage's overall rate when a (stage, arm) has one class only.
CONSTANT_SMOOTHING = 10.0


@dataclass
class MetaLearnerConfig:
    """Typed, defaulted fields: the launchpad shows and edits them."""

    num_boost_round: int = 100  # upper bound; early stopping on the valid log loss picks the best
    early_stopping_rounds: int = 10  # 0 disables early stopping
    learning_rate: float = 0.1  # LightGBM's shrinkage per boosting round
    num_leaves: int = 15  # leaves per tree (model capacity)
    min_data_in_leaf: int = 40  # rows a leaf needs at least (guards against noisy arm-specific splits)
    feature_fraction: float = 0.9  # share of the features each tree samples
    lambda_l2: float = 1.0  # L2 penalty on the leaf values
    max_categories: int = 255  # vocabulary of a text column (most frequent values)
    model_conversion: bool = True  # fit the conversion stage when the table has a `conversion` column
    # Fixed (not "all cores"), as the lightgbm plugin: part of what makes a fit reproducible. One
    # thread: these fits are small (thousands of rows per classifier), where OpenMP threads cost more
    # than they save (2 threads took 2.3 s against 0.1 s for one on 3.6k rows on a busy 2-core
    # machine). 0 = LightGBM's default (OpenMP's thread count), for large experiments.
    num_threads: int = 1


class _MetaLearner:
    """What both learners share: features, LightGBM training, persistence, the contract's outputs."""

    name: ClassVar[str]
    task = "uplift"
    Config = MetaLearnerConfig
    requires: frozenset[str] = frozenset({"treatment", "conversion"})

    def __init__(self, config: MetaLearnerConfig | None = None):
        self.config = config or MetaLearnerConfig()
        self.models: dict[str, Any] = {}  # key -> lightgbm Booster, or a float (constant probability)
        self.meta: dict[str, Any] = {}
        self._spec: FeatureSpec | None = None

    # subclasses -------------------------------------------------------------------------------------
    def _fit_stage(self, stage: str, data: dict[str, Any], ctx: FitContext) -> None:
        raise NotImplementedError

    def _stage_outcomes(self, stage: str, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    # helpers ------------------------------------------------------------------------------------------
    @property
    def n_arms(self) -> int:
        return int(self.meta["n_arms"])

    @property
    def stages(self) -> list[str]:
        return list(self.meta["stages"])

    def _params(self, seed: int) -> dict[str, Any]:
        cfg = self.config
        return {
            "objective": "binary",
            "metric": "binary_logloss",
            "learning_rate": cfg.learning_rate,
            "num_leaves": cfg.num_leaves,
            "min_data_in_leaf": cfg.min_data_in_leaf,
            "feature_fraction": cfg.feature_fraction,
            "lambda_l2": cfg.lambda_l2,
            "num_threads": cfg.num_threads,
            "seed": seed,
            "deterministic": True,
            "force_row_wise": True,
            "verbosity": -1,
        }

    def _train(
        self,
        key: str,
        x: np.ndarray,
        y: np.ndarray,
        valid: tuple[np.ndarray, np.ndarray] | None,
        names: list[str],
        categorical: list[str],
        prior: float,
        ctx: FitContext,
    ) -> None:
        """Fit one binary classifier into `self.models[key]` (a constant if `y` has one class)."""
        import lightgbm as lgb

        positives = float(y.sum())
        if len(y) == 0 or positives in (0.0, float(len(y))) or x.shape[1] == 0:
            constant = (positives + CONSTANT_SMOOTHING * prior) / (len(y) + CONSTANT_SMOOTHING)
            self.models[key] = float(constant)
            self.meta["fits"][key] = {"rows": int(len(y)), "constant": float(constant)}
            ctx.log(f"{self.name}: {key}: {len(y)} rows, one class or no feature: constant {constant:.4f}")
            return
        cfg = self.config
        dtrain = lgb.Dataset(x, y, feature_name=names, categorical_feature=categorical, free_raw_data=True)
        valid_sets, callbacks = [], []
        if valid is not None and len(valid[1]):
            valid_sets = [dtrain.create_valid(valid[0], valid[1])]
            if cfg.early_stopping_rounds > 0:
                callbacks.append(lgb.early_stopping(cfg.early_stopping_rounds, verbose=False))
        booster = lgb.train(
            self._params(ctx.seed),
            dtrain,
            num_boost_round=cfg.num_boost_round,
            valid_sets=valid_sets,
            valid_names=["valid"] * len(valid_sets),
            callbacks=callbacks,
        )
        best = booster.best_iteration if booster.best_iteration > 0 else booster.current_iteration()
        # keep exactly what `save` writes, so in-memory and reloaded predictions are bitwise equal
        self.models[key] = lgb.Booster(model_str=booster.model_to_string(num_iteration=best))
        loss = booster.best_score.get("valid", {}).get("binary_logloss")
        self.meta["fits"][key] = {
            "rows": int(len(y)),
            "best_iteration": int(best),
            "valid_logloss": None if loss is None else float(loss),
        }

    def _predict_one(self, key: str, x: np.ndarray) -> np.ndarray:
        import numpy as np

        model = self.models[key]
        if isinstance(model, float) or len(x) == 0:
            if len(x) == 0:
                return np.zeros(0, dtype=np.float64)
            return np.full(len(x), model, dtype=np.float64)
        return np.asarray(model.predict(x, num_threads=self.config.num_threads), dtype=np.float64)

    def _features(self) -> FeatureSpec:
        if self._spec is None:
            from ctr_metalearners.features import FeatureSpec

            if "features" not in self.meta:
                raise RuntimeError(f"{self.name}: predict before fit() or load()")
            self._spec = FeatureSpec.from_json(self.meta["features"])
        return self._spec

    # contract -----------------------------------------------------------------------------------------
    def fit(self, train: pa.Table, valid: pa.Table, ctx: FitContext) -> _MetaLearner:
        import numpy as np

        from ctr_metalearners.features import FeatureSpec

        started = time.perf_counter()
        arm = np.asarray(train.column("treatment").to_numpy(zero_copy_only=False), dtype=np.int64)
        if not len(arm) or arm.min() < 0:
            raise ValueError(f"{self.name}: treatment must be 0 (control) or 1..K, got {np.unique(arm)[:5]}")
        n_arms = int(arm.max())
        if n_arms < 1:
            raise ValueError(f"{self.name}: the training rows have no treated arm (treatment > 0)")
        absent = sorted(set(range(n_arms + 1)) - set(np.unique(arm).tolist()))
        if absent:
            raise ValueError(f"{self.name}: arm(s) {absent} of 0..{n_arms} have no training row")
        stages = ["click"]
        if self.config.model_conversion and "conversion" in train.column_names:
            stages.append("conversion")
        spec = FeatureSpec.fit(train, self.config.max_categories)
        self._spec, self.models = spec, {}
        self.meta = {"n_arms": n_arms, "stages": stages, "features": spec.to_json(), "fits": {}}
        has_valid = valid is not None and valid.num_rows > 0
        data = {
            "x": spec.matrix(train),
            "arm": arm,
            "valid_x": spec.matrix(valid) if has_valid else None,
            "valid_arm": (
                np.asarray(valid.column("treatment").to_numpy(zero_copy_only=False), dtype=np.int64)
                if has_valid
                else None
            ),
        }
        for stage in stages:
            column = "label" if stage == "click" else "conversion"
            data["y"] = np.asarray(train.column(column).to_numpy(zero_copy_only=False), dtype=np.float64)
            data["valid_y"] = (
                np.asarray(valid.column(column).to_numpy(zero_copy_only=False), dtype=np.float64)
                if has_valid
                else None
            )
            self._fit_stage(stage, data, ctx)
        self.meta["train_rows"] = int(train.num_rows)
        seconds = time.perf_counter() - started
        ctx.log(
            f"{self.name}: {len(self.models)} classifier(s) over {len(spec.names())} features, "
            f"arms 0..{n_arms}, stages {stages}, {seconds:.1f} s"
        )
        return self

    def predict_outcomes(self, batch: pa.Table) -> dict[str, np.ndarray]:
        """{stage: float[n, K+1]}: p(stage | x, arm k) for every arm (conversion: entire space)."""
        import numpy as np

        x = self._features().matrix(batch)
        return {stage: np.clip(self._stage_outcomes(stage, x), 0.0, 1.0) for stage in self.stages}

    def predict_effects(self, batch: pa.Table) -> dict[str, np.ndarray]:
        """{stage: float[n, K+1]}: p(stage | x, arm k) - p(stage | x, arm 0); column 0 is zeros."""
        return {stage: p - p[:, :1] for stage, p in self.predict_outcomes(batch).items()}

    def predict(self, batch: pa.Table) -> np.ndarray:
        """The mean predicted click uplift over arms 1..K, in [-1, 1] (the row's own arm is not read)."""
        import numpy as np

        click = self.predict_effects(batch)["click"]
        return np.clip(click[:, 1:].mean(axis=1), -1.0, 1.0).astype(np.float64)

    def parameter_count(self) -> int:
        """Split thresholds and leaf values of every tree (constants count 1)."""
        total = 0
        for model in self.models.values():
            if isinstance(model, float):
                total += 1
            else:
                total += sum(2 * t["num_leaves"] - 1 for t in model.dump_model()["tree_info"])
        return int(total)

    def save(self, directory: Path) -> None:
        if not self.models:
            raise RuntimeError(f"{self.name}: save() before fit() or load()")
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        files = {}
        for key, model in sorted(self.models.items()):
            if isinstance(model, float):
                files[key] = {"constant": model}
            else:
                model.save_model(str(directory / f"{key}.txt"))
                files[key] = {"file": f"{key}.txt"}
        write_meta(
            directory,
            self.name,
            FORMAT_VERSION,
            config=config_to_dict(self.config),
            models=files,
            **self.meta,
        )

    @classmethod
    def load(cls, directory: Path) -> _MetaLearner:
        import lightgbm as lgb

        directory = Path(directory)
        document = read_meta(directory, cls.name, FORMAT_VERSION)
        model = cls(config_from_dict(cls, document.pop("config")))
        files = document.pop("models")
        model.meta = document
        for key, entry in files.items():
            if "constant" in entry:
                model.models[key] = float(entry["constant"])
            else:
                model.models[key] = lgb.Booster(model_file=str(directory / entry["file"]))
        return model


class SLearner(_MetaLearner):
    """One classifier per stage; the arm is a categorical feature, set to each k to score arm k."""

    name = "s_learner"

    def _with_arm(self, x: np.ndarray, arm: np.ndarray | int) -> np.ndarray:
        import numpy as np

        column = np.broadcast_to(np.asarray(arm, dtype=np.float64), (len(x),))
        return np.column_stack([x, column])

    def _fit_stage(self, stage: str, data: dict[str, Any], ctx: FitContext) -> None:
        spec = self._features()
        names = [*spec.names(), ARM_FEATURE]
        valid = None
        if data["valid_x"] is not None:
            valid = (self._with_arm(data["valid_x"], data["valid_arm"]), data["valid_y"])
        self._train(
            stage,
            self._with_arm(data["x"], data["arm"]),
            data["y"],
            valid,
            names,
            [*spec.categorical(), ARM_FEATURE],
            float(data["y"].mean()),
            ctx,
        )

    def _stage_outcomes(self, stage: str, x: np.ndarray) -> np.ndarray:
        import numpy as np

        return np.column_stack(
            [self._predict_one(stage, self._with_arm(x, k)) for k in range(self.n_arms + 1)]
        )


class TLearner(_MetaLearner):
    """One classifier per (stage, arm), each on that arm's rows; arm k's effect = model k - model 0."""

    name = "t_learner"

    def _fit_stage(self, stage: str, data: dict[str, Any], ctx: FitContext) -> None:
        spec = self._features()
        prior = float(data["y"].mean())
        for k in range(self.n_arms + 1):
            rows = data["arm"] == k
            valid = None
            if data["valid_x"] is not None:
                v = data["valid_arm"] == k
                valid = (data["valid_x"][v], data["valid_y"][v])
            self._train(
                f"{stage}_arm{k}",
                data["x"][rows],
                data["y"][rows],
                valid,
                spec.names(),
                spec.categorical(),
                prior,
                ctx,
            )

    def _stage_outcomes(self, stage: str, x: np.ndarray) -> np.ndarray:
        import numpy as np

        return np.column_stack([self._predict_one(f"{stage}_arm{k}", x) for k in range(self.n_arms + 1)])
