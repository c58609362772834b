"""BaselineLrModel: smoothed item CTR + logistic regression, numpy only (scaffolded by `ctr new-plugin`).

fit/predict receive pyarrow Tables in the TRAINING schema (`ctr_dagster.schemas.TRAINING`); the
engine passes a `FitContext` (seed, device, workdir, vocabulary sizes, prepared inputs, log).

This module is imported when the engine discovers plugins (every time the Dagster code location
loads), so it imports nothing heavy: numpy/pyarrow (`features.py`) and any torch or lightgbm you
add are imported inside the methods that use them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ctr_dagster.artifact_meta import read_meta, write_meta
from ctr_dagster.contracts import FitContext, config_from_dict, config_to_dict

if TYPE_CHECKING:
    import numpy as np
    import pyarrow as pa

FORMAT_VERSION = 2


@dataclass
class BaselineLrConfig:
    """Typed, defaulted fields: the launchpad shows and edits them."""

    smoothing: float = 20.0  # pseudo-impressions at the global CTR in the smoothed item CTR
    learning_rate: float = 0.2  # step size of the logistic regression's gradient descent
    epochs: int = 60  # passes over the train split
    batch_size: int = 256  # rows per gradient step
    l2: float = 1e-3  # L2 penalty on the weights


class BaselineLrModel:
    """Smoothed item CTR plus a logistic regression over a handful of dense features."""

    name = "baseline_lr"
    task = "ctr"
    Config = BaselineLrConfig
    requires: frozenset[str] = frozenset()  # e.g. frozenset({"item_embeddings"})

    def __init__(self, config: BaselineLrConfig | None = None):
        self.config = config or BaselineLrConfig()
        self.state: dict[str, Any] = {}  # fitted parameters (plain lists/floats: JSON-serializable)

    def _standardized(self, batch: pa.Table) -> np.ndarray:
        import numpy as np

        from ctr_baseline_lr import features

        s = self.state
        items = batch.column("item_idx").to_numpy()
        ctr = features.lookup_ctr(np.asarray(s["item_ctr"]), items, s["prior"])
        return (features.raw_features(batch, ctr) - np.asarray(s["mean"])) / np.asarray(s["std"])

    # contract ---------------------------------------------------------------------------------
    def fit(self, train: pa.Table, valid: pa.Table, ctx: FitContext) -> BaselineLrModel:
        import numpy as np

        from ctr_baseline_lr import features

        cfg = self.config
        rng = np.random.default_rng(ctx.seed)
        y = features.column(train, "label")
        items = train.column("item_idx").to_numpy()
        prior = float(y.mean()) if len(y) else 0.0
        item_ctr, loo = features.smoothed_item_ctr(items, y, cfg.smoothing, prior)

        raw = features.raw_features(train, loo)
        mean, std = raw.mean(axis=0), raw.std(axis=0)
        std = np.where(std > 1e-12, std, 1.0)
        x = (raw - mean) / std
        weights = np.zeros(x.shape[1])
        bias = float(features.logit(np.array([prior]))[0]) if 0 < prior < 1 else 0.0
        for _ in range(cfg.epochs):
            order = rng.permutation(len(y))
            for start in range(0, len(y), cfg.batch_size):
                idx = order[start : start + cfg.batch_size]
                grad = features.sigmoid(x[idx] @ weights + bias) - y[idx]
                weights -= cfg.learning_rate * (x[idx].T @ grad / len(idx) + cfg.l2 * weights)
                bias -= cfg.learning_rate * float(grad.mean())
        self.state = {
            "prior": prior,
            "item_ctr": item_ctr.tolist(),
            "mean": mean.tolist(),
            "std": std.tolist(),
            "weights": weights.tolist(),
            "bias": bias,
        }
        if valid.num_rows:
            p = np.clip(self.predict(valid), 1e-7, 1 - 1e-7)
            yv = features.column(valid, "label")
            logloss = float(-np.mean(yv * np.log(p) + (1 - yv) * np.log(1 - p)))
            ctx.log(f"{self.name}: valid logloss {logloss:.4f}")
        return self

    def parameter_count(self) -> int:
        """Learned numbers (coefficients + bias): the leaderboard's cost table (`ctr_dagster.model_cost`)."""
        return len(self.state.get("weights", ())) + 1

    def predict(self, batch: pa.Table) -> np.ndarray:
        import numpy as np

        from ctr_baseline_lr import features

        if not self.state:
            raise RuntimeError(f"{self.name}: predict() before fit() or load()")
        x = self._standardized(batch)
        return features.sigmoid(x @ np.asarray(self.state["weights"]) + self.state["bias"])

    def save(self, directory: Path) -> None:
        write_meta(directory, self.name, FORMAT_VERSION, config=config_to_dict(self.config), state=self.state)

    @classmethod
    def load(cls, directory: Path) -> BaselineLrModel:
        document = read_meta(directory, cls.name, FORMAT_VERSION)
        model = cls(config_from_dict(cls, document["config"]))
        model.state = document["state"]
        return model
