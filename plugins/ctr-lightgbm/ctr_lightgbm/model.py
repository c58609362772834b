"""LightgbmModel: gradient-boosted trees over id, context and behaviour-sequence features.

fit/predict receive pyarrow Tables in the TRAINING schema (`ctr_dagster.schemas.TRAINING`); the
engine passes a `FitContext` (seed, vocabulary sizes, log, and `init_from` for a warm start).

This module is imported when the engine discovers plugins (every time the Dagster code location
loads), so it imports nothing heavy: numpy, pyarrow (`features.py`) and lightgbm are imported
inside the methods that use them.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ctr_dagster.artifact_meta import META_FILE, read_meta, write_meta
from ctr_dagster.contracts import FitContext, config_from_dict, config_to_dict

if TYPE_CHECKING:
    import lightgbm as lgb
    import numpy as np
    import pyarrow as pa

    from ctr_lightgbm.embeddings import ItemVectors

FORMAT_VERSION = 1
MODEL_FILE = "model.txt"  # the booster, LightGBM's own text format
# META_FILE (model.json, ctr_dagster.artifact_meta): kind, format version, config, feature layout, summary.
#: The artifact kind of both entries (lightgbm, lightgbm_emb): one layout, the config says which.
KIND = "lightgbm"


@dataclass
class LightgbmConfig:
    """Typed, defaulted fields: the launchpad shows and edits them."""

    num_boost_round: int = 400  # upper bound; early stopping on the valid AUC picks the best
    early_stopping_rounds: int = 30  # 0 disables early stopping (then all rounds are kept)
    learning_rate: float = 0.1  # shrinkage per boosting round
    num_leaves: int = 31  # leaves per tree
    min_data_in_leaf: int = 200  # rows a leaf needs
    feature_fraction: float = 0.8  # share of features each tree sees
    bagging_fraction: float = 0.8  # row subsampling (1.0 disables bagging)
    bagging_freq: int = 1  # resample rows every this many rounds (0: never)
    lambda_l2: float = 10.0  # L2 on leaf values
    max_bin: int = 255  # histogram bins per numeric feature
    # Categorical handling (category/device/region/age group; item_idx ~2k values if enabled):
    # one-vs-rest below this many categories, otherwise LightGBM's sorted-gradient split with these.
    max_cat_to_onehot: int = 8
    max_cat_threshold: int = 64  # categories one split may group
    cat_smooth: float = 20.0  # smoothing of categorical split statistics
    cat_l2: float = 10.0  # L2 in categorical splits
    min_data_per_group: int = 50  # rows a category group needs
    # Id statistics (item / user / user x category shows and smoothed click rates). On the train rows
    # they come from the past only: `stats_folds` contiguous time blocks, block k counted on blocks < k
    # (10: best valid AUC on `small` of 3/5/10/20, tied with 20; see the README).
    use_stats: bool = True
    stats_folds: int = 10  # time blocks for the past-only click-rate statistics
    stats_smoothing: float = 20.0  # pseudo-impressions at the global rate (item, user)
    user_cat_smoothing: float = 10.0  # pseudo-impressions at the user's rate (user x category)
    use_item_idx: bool = False  # item ids as a LightGBM categorical: overfits on `small` (see README)
    use_user_idx: bool = False  # user ids as a LightGBM categorical: overfits on `small` (see README)
    use_treatment: bool = True  # the coupon arm of the request (it moves the click probability)
    recent_window: int = 5  # clicks counted by hist_cat_recent_count
    # 0: the engine's share for this step (ctr_dagster.threads: cores // trainings running at once, so
    # two side by side do not oversubscribe the cores); > 0 fixes it. The count used is in model.json.
    num_threads: int = 0
    # Warm start (nightly): boost only on the rows the previous booster never saw (the new days);
    # false = continue boosting over the whole window (slower, see `_boosting_rows`).
    warm_start_new_rows_only: bool = True
    # Multimodal item vectors (the item_embeddings asset): PCA components of the target's fused vector
    # and its cosine similarity to the behaviour sequence (ctr_lightgbm.embeddings). Needs the input.
    use_item_embeddings: bool = False
    # PCA components of the target's vector as features (used only with use_item_embeddings; the
    # `lightgbm_emb` default is chosen on validation, see LightgbmEmbConfig).
    embedding_components: int = 0


class LightgbmModel:
    """LightGBM binary classifier (log loss) with early stopping on the valid split's AUC."""

    name = "lightgbm"
    task = "ctr"
    Config = LightgbmConfig
    requires: frozenset[str] = frozenset()
    #: `fit` keeps boosting from `ctx.init_from` (the engine's nightly warm start).
    supports_warm_start = True

    def __init__(self, config: LightgbmConfig | None = None):
        self.config = config or LightgbmConfig()
        self.booster: lgb.Booster | None = None
        self.meta: dict[str, Any] = {}  # feature layout + training summary (JSON-serializable)
        self._tables: dict | None = None  # meta["stats"] as numpy arrays (built on first predict)
        self.vectors: ItemVectors | None = None  # item vectors (use_item_embeddings), saved with the model

    # helpers ----------------------------------------------------------------------------------
    def _spec(self):
        from ctr_lightgbm.features import FeatureSpec

        if "features" in self.meta:
            return FeatureSpec(**self.meta["features"]["spec"])
        cfg = self.config
        return FeatureSpec(
            use_item_idx=cfg.use_item_idx,
            use_user_idx=cfg.use_user_idx,
            use_treatment=cfg.use_treatment,
            use_stats=cfg.use_stats,
            recent=cfg.recent_window,
            embedding_components=cfg.embedding_components if cfg.use_item_embeddings else 0,
            use_embeddings=cfg.use_item_embeddings,
        )

    def _params(self, seed: int) -> dict[str, Any]:
        cfg = self.config
        return {
            "objective": "binary",
            "metric": "auc",
            "learning_rate": cfg.learning_rate,
            "num_leaves": cfg.num_leaves,
            "min_data_in_leaf": cfg.min_data_in_leaf,
            "feature_fraction": cfg.feature_fraction,
            "bagging_fraction": cfg.bagging_fraction,
            "bagging_freq": cfg.bagging_freq if cfg.bagging_fraction < 1.0 else 0,
            "lambda_l2": cfg.lambda_l2,
            "max_bin": cfg.max_bin,
            "max_cat_to_onehot": cfg.max_cat_to_onehot,
            "max_cat_threshold": cfg.max_cat_threshold,
            "cat_smooth": cfg.cat_smooth,
            "cat_l2": cfg.cat_l2,
            "min_data_per_group": cfg.min_data_per_group,
            "num_threads": self._threads(),
            # Reproducibility: one seed drives bagging/feature sampling; deterministic + a fixed
            # histogram layout and the same thread count make two fits bitwise identical.
            "seed": seed,
            "deterministic": True,
            "force_row_wise": True,
            "verbosity": -1,
        }

    def _threads(self) -> int:
        """The config's `num_threads` when > 0, else the engine's share for this step."""
        from ctr_dagster.threads import resolve

        return resolve(self.config.num_threads)

    def _warm_start(self, ctx: FitContext, names: list[str]) -> lgb.Booster | None:
        """The booster to continue from (ctx.init_from written by this plugin's `save`), or None."""
        import lightgbm as lgb

        if ctx.init_from is None:
            return None
        model_file = Path(ctx.init_from) / MODEL_FILE
        if not model_file.is_file():
            ctx.log(f"{self.name}: init_from {ctx.init_from} has no {MODEL_FILE}; training from scratch")
            return None
        init = lgb.Booster(model_file=str(model_file))
        if init.feature_name() != names:
            ctx.log(
                f"{self.name}: init_from {ctx.init_from} was trained on other features "
                f"({init.feature_name()}); training from scratch"
            )
            return None
        ctx.log(
            f"{self.name}: warm start from {ctx.init_from} ({init.num_trees()} trees); continuing boosting"
        )
        return init

    def _boosting_rows(self, train: pa.Table, ctx: FitContext):
        """The train rows a warm start boosts on: those the previous booster never saw (the new
        days), when there are enough of them; None = the whole window.

        Why: continuing to boost over the whole window re-bins every row and re-scores it through all
        the previous trees, which made the nightly warm start slower than a fresh fit; the new trees
        only need to correct the old ensemble on the rows it has not learned from. The whole window
        still feeds the id statistics, and early stopping on the validation day decides how many
        trees to add."""
        from ctr_dagster.training.plugin import fine_tune_mask

        if not self.config.warm_start_new_rows_only:
            return None
        return fine_tune_mask(train, ctx, max(1, 5 * self.config.min_data_in_leaf), self.name)

    def _item_vectors(self, train: pa.Table, ctx: FitContext) -> ItemVectors:
        """The item vectors from the engine's prepared input (float32[item_idx cardinality, d])."""
        from ctr_lightgbm.embeddings import ItemVectors

        matrix = ctx.inputs.get("item_embeddings")
        if matrix is None:
            raise ValueError(
                f"{self.name}: use_item_embeddings needs the 'item_embeddings' input, which the engine "
                "provides once the item_embeddings asset is materialized (materialize it first, or set "
                "use_item_embeddings=false)"
            )
        pairs = (train.column("item_idx").to_numpy(), train.column("category_idx").to_numpy())
        vectors = ItemVectors.fit(matrix, self.config.embedding_components, pairs)
        known = int((abs(vectors.unit).sum(axis=1) > 0).sum())
        ctx.log(f"{self.name}: item vectors for {known} of {len(vectors.unit)} item indices")
        return vectors

    # contract ---------------------------------------------------------------------------------
    def fit(self, train: pa.Table, valid: pa.Table, ctx: FitContext) -> LightgbmModel:
        import lightgbm as lgb
        import numpy as np
        import pyarrow as pa

        from ctr_lightgbm import features, stats

        cfg = self.config
        started = time.perf_counter()
        self.meta, self._tables = {}, None
        spec = self._spec()
        names, categorical = spec.names(), spec.categorical()
        state, train_stats = None, None
        if spec.use_stats:
            state, train_stats = stats.fit(
                train,
                folds=cfg.stats_folds,
                smoothing=cfg.stats_smoothing,
                user_cat_smoothing=cfg.user_cat_smoothing,
            )
        self.vectors = self._item_vectors(train, ctx) if spec.use_embeddings else None
        init = self._warm_start(ctx, names)
        init_trees = init.num_trees() if init is not None else 0
        boosted = self._boosting_rows(train, ctx) if init is not None else None
        window_rows = train.num_rows
        if boosted is not None:  # the statistics above still count the whole window
            train = train.filter(pa.array(boosted))
            train_stats = train_stats[boosted] if train_stats is not None else None
        x = features.build(train, spec, train_stats, self.vectors)
        y = train.column("label").to_numpy().astype(np.float64)

        params = self._params(ctx.seed)
        dtrain = lgb.Dataset(x, y, feature_name=names, categorical_feature=categorical, free_raw_data=False)
        yv = valid.column("label").to_numpy().astype(np.float64) if valid.num_rows else np.zeros(0)
        use_valid = valid.num_rows > 0 and 0 < yv.sum() < len(yv)  # AUC needs both classes
        valid_sets, callbacks = [], []
        if use_valid:
            valid_stats = stats.transform(valid, state) if state is not None else None
            valid_sets = [dtrain.create_valid(features.build(valid, spec, valid_stats, self.vectors), yv)]
            if cfg.early_stopping_rounds > 0:
                callbacks.append(lgb.early_stopping(cfg.early_stopping_rounds, verbose=False))
        booster = lgb.train(
            params,
            dtrain,
            num_boost_round=cfg.num_boost_round,
            valid_sets=valid_sets,
            valid_names=["valid"] * len(valid_sets),
            init_model=init,
            callbacks=callbacks,
        )
        best = booster.best_iteration if booster.best_iteration > 0 else booster.current_iteration()
        valid_auc = booster.best_score.get("valid", {}).get("auc") if use_valid else None
        # Keep exactly what `save` writes, so in-memory and reloaded predictions are bitwise equal.
        self.booster = lgb.Booster(model_str=booster.model_to_string(num_iteration=best))
        seconds = time.perf_counter() - started
        self.meta = {
            "features": {
                "names": names,
                "categorical": categorical,
                "spec": dataclasses.asdict(spec),
            },
            "stats": state,
            "best_iteration": int(best),
            "num_trees": int(self.booster.num_trees()),
            "init_trees": int(init_trees),
            "valid_auc": None if valid_auc is None else float(valid_auc),
            "train_rows": int(window_rows),
            "boosted_rows": int(train.num_rows),
            "num_threads": int(params["num_threads"]),
            "lightgbm_version": lgb.__version__,
        }
        if self.vectors is not None:
            self.meta["item_vectors"] = {
                "rows": len(self.vectors.unit),
                "dim": int(self.vectors.unit.shape[1]),
            }
        auc_text = "n/a" if valid_auc is None else f"{valid_auc:.4f}"
        ctx.log(
            f"{self.name}: best iteration {best} ({self.booster.num_trees()} trees, {init_trees} from warm "
            f"start), valid AUC {auc_text}, {len(names)} features, {seconds:.1f} s"
        )
        return self

    def parameter_count(self) -> int:
        """Learned numbers of the boosted trees: one threshold per split and one value per leaf
        (for the leaderboard's cost table, `ctr_dagster.model_cost`)."""
        if self.booster is None:
            raise RuntimeError(f"{self.name}: parameter_count() before fit() or load()")
        trees = self.booster.dump_model(num_iteration=-1)["tree_info"]
        return int(sum(2 * t["num_leaves"] - 1 for t in trees))

    def predict(self, batch: pa.Table) -> np.ndarray:
        import numpy as np

        from ctr_lightgbm import features, stats

        if self.booster is None:
            raise RuntimeError(f"{self.name}: predict() before fit() or load()")
        if batch.num_rows == 0:
            return np.zeros(0, dtype=np.float64)
        state = self.meta.get("stats")
        extra = None
        if state:
            if self._tables is None:
                self._tables = stats.compile_tables(state)
            extra = stats.transform(batch, state, self._tables)
        x = features.build(batch, self._spec(), extra, self.vectors)
        scores = self.booster.predict(x, num_threads=self._threads())
        return np.clip(np.asarray(scores, dtype=np.float64), 0.0, 1.0)

    def save(self, directory: Path) -> None:
        if self.booster is None:
            raise RuntimeError(f"{self.name}: save() before fit() or load()")
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.booster.save_model(str(directory / MODEL_FILE))
        if self.vectors is not None:
            self.vectors.save(directory)
        write_meta(directory, KIND, FORMAT_VERSION, config=config_to_dict(self.config), **self.meta)

    @classmethod
    def load(cls, directory: Path) -> LightgbmModel:
        import lightgbm as lgb

        directory = Path(directory)
        document = read_meta(directory, KIND, FORMAT_VERSION)
        model = cls(config_from_dict(cls, document.pop("config")))
        model.meta = document
        model.booster = lgb.Booster(model_file=str(directory / MODEL_FILE))
        if model.booster.feature_name() != document["features"]["names"]:
            raise ValueError(f"{cls.name}: {MODEL_FILE} and {META_FILE} disagree on the feature names")
        if model._spec().use_embeddings:
            from ctr_lightgbm.embeddings import ItemVectors

            model.vectors = ItemVectors.load(directory)
        return model


@dataclass
class LightgbmEmbConfig(LightgbmConfig):
    """`LightgbmConfig` with the item-embedding features switched on."""

    use_item_embeddings: bool = True
    # Chosen on VALIDATION AUC on `small` (seed 0, past-only statistics; 2026-12-04): 0 components
    # 0.8145, 4: 0.8181, 8: 0.8166, 16: 0.8145. One seed: the spread between 4 and 8 is within noise.
    embedding_components: int = 4


class LightgbmEmbModel(LightgbmModel):
    """The same LightGBM model with the multimodal item-embedding features (a leaderboard twin)."""

    name = "lightgbm_emb"
    Config = LightgbmEmbConfig
    requires: frozenset[str] = frozenset({"item_embeddings"})
    # The leaderboard's "with vs without" table puts this entry beside `lightgbm` (ctr_dagster.evaluation).
    variant_of = "lightgbm"
    variant = "+ multimodal item embeddings"

    def __init__(self, config: LightgbmConfig | None = None):
        super().__init__(config or LightgbmEmbConfig())
