"""`ecup`: Entire Chain UPlift modelling with context-enhanced learning (Meituan; WWW'24 Companion;
arXiv 2402.03379), an uplift model plugin (task "uplift").

No official code exists (MODELS.md section 5): the sources are the abstract, a Meituan blog summary
and two unofficial re-implementations whose formulas are hints only. What the sources state is
implemented as stated; every formula they leave open is marked **[choice]** (decided here) or
**[unverified]** (a guess at what the paper does).

Network (`ctr_ecup.network`), for a row x and an arm t (0 = control, 1..K coupon arms):

* **Field embeddings** E in R^{F x d} (`ctr_ecup.features`: every feature column is one field;
  categorical = a table row, numeric = value x vector + bias vector, the AutoInt/FuxiCTR numeric
  embedding [choice]); treatment embedding e_t from an arm table with K + 1 rows.
* **TENet, Treatment-Aware Unit**: E_att = E + MHSA(E) (multi-head self-attention across fields,
  `num_heads` heads; the residual is a [choice]); treatment MLP h_t = ReLU(W e_t + b) (one layer
  [choice]); fusion E_TAU = tanh(W_f [E_att ; h_t] + b_f), h_t broadcast to every field
  (concat -> tanh(Linear), one of the two fusions the re-implementations use [choice]).
* **TENet, Treatment-Enhanced Gate**: bit-level W_b = sigmoid(W_g [E ; E_TAU] + b_g) in (0,1)^{F x d}
  (one Linear shared by the fields [choice]); E_r = W_b * E + (1 - W_b) * E_TAU; the treatment
  embedding is appended as one more token: X = [E_r ; e_t], flattened to (F + 1) d.
  `treatment_gate=False` (ablation): X = E, no TAU, no gate, no appended e_t -- the treatment then
  enters only through the per-arm towers.
* **ECENet**: one tower per (task, arm), task in {ctr, cvr} (`tower_units` hidden ReLU layers, then
  one logit); arm t's row goes through arm t's towers. All arms' towers start from the same weights
  [choice] (an effect must be learned, not inherited from initialisation noise). Entire exposure
  space (ESMM-style [unverified]): p_ctr = sigmoid(l_ctr), p_cvr = sigmoid(l_cvr),
  p_ctcvr = p_ctr * p_cvr.
* **TAENet** (task prior): a learned task embedding q_task is the query, the tokens X the key/value
  of multi-head attention: z_task = MHA(q_task, X, X); each tower's hidden layer l is multiplied
  (after its ReLU) by 2 * sigmoid(W_l z_task + b_l), the "dynamic parameter selection" of the blog.
  The factor 2 (neutral scaling 1 at initialisation, as PEPNet's gate units) and one W_l per layer
  shared by the tasks are [choice]s. `task_prior=False` (ablation): no scaling.

Loss: BCE(p_ctr(x, t_obs), click) + BCE(p_ctcvr(x, t_obs), conversion) on the observed arm only, in
exposure space, weights `click_weight` = `conversion_weight` = 1 [unverified]. When the table has no
`conversion` column (a one-outcome experiment) only the click stage is built and trained.

Scoring is counterfactual: the network is re-run with every arm a = 0..K for each row (the row's
own `treatment` is never read at predict time, nor any label; the field embeddings and E_att, which
do not depend on the arm, are computed once per row): `predict_outcomes` gives
p(stage | x, a), `predict_effects` p(stage | x, a) - p(stage | x, 0) (column 0 is zeros; the
"conversion" stage is the entire-space CTCVR), and `predict` the mean over arms 1..K of the click
effect, in [-1, 1].

Training (`ctr_ecup.training`): Adam, shuffled mini-batches, early stopping on the validation loss
(`patience` epochs; the best epoch's weights are restored), seeds from `ctx.seed`, device from
`ctx.device`. The plugin runs its own compact loop rather than the engine's `TorchModel` trainer,
because that trainer is bound to the TRAINING table's `FeatureSpec` (fixed id/dense columns and
sequences) and to a single-logit loss with early stopping on AUC, while ECUP must read arbitrary
tabular experiments, route each row to its arm's towers and train a two-stage entire-space loss.

This module is imported when the engine discovers plugins: it imports no numpy, pyarrow or torch
(those are imported inside the methods).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    import numpy as np
    import pyarrow as pa
    from ctr_dagster.contracts import FitContext

FORMAT_VERSION = 1
WEIGHTS_FILE = "weights.safetensors"
#: The outcome stages, in the network's task order.
STAGES = ("click", "conversion")


@dataclass
class EcupConfig:
    """ECUP's CPU-scale defaults (MODELS.md section 5 suggests d=8, towers [32, 16] for a 50k-row
    scale-down; the paper's sizes are not published)."""

    # passes over the train split (early stopping may end sooner). 3 keeps the `small` demo short (one
    # epoch of its 337k rows costs ~20-100 s on 2 shared cores, README); 5 reached a lower validation
    # loss there (best epoch 4): raise it when time allows
    epochs: int = 3
    batch_size: int = 1024  # training rows per Adam step
    lr: float = 2e-3  # Adam's learning rate
    weight_decay: float = 0.0  # Adam's L2 on every parameter
    # early stopping: stop after this many epochs without a lower validation loss; the best epoch's
    # weights are restored (0: no early stopping, the best epoch is still kept)
    patience: int = 2
    embedding_dim: int = 16  # d: width of every field embedding and of the treatment embedding
    num_heads: int = 2  # heads of the field self-attention (TAU) and the task attention (TAENet)
    tower_units: list[int] = field(default_factory=lambda: [64, 32])  # hidden layers of each tower
    dropout: float = 0.0  # dropout after each hidden layer of the towers
    embedding_init_std: float = 0.05  # std of the normal init of the field, arm and task embeddings
    # TENet: the Treatment-Aware Unit and the bit-level Treatment-Enhanced Gate (False = ablation:
    # E_r = E, the treatment enters only through the per-arm towers)
    treatment_gate: bool = True
    # TAENet: task-prior attention scaling each tower's hidden units (False = ablation: no scaling)
    task_prior: bool = True
    click_weight: float = 1.0  # weight of BCE(p_ctr, click) in the loss
    conversion_weight: float = 1.0  # weight of BCE(p_ctcvr, conversion) in the loss (exposure space)
    # feature columns never used (e.g. ["user_idx"]); targets, ids, lists and timestamps never are
    exclude_columns: list[str] = field(default_factory=list)
    max_vocab: int = 10_000  # most frequent training values kept per string column (the rest -> OOV)
    eval_batch_size: int = 8192  # rows per forward pass when scoring (validation, predict)
    # CPU threads torch may use while training (0: torch's default); fewer than the cores avoids
    # OpenMP oversubscription on a shared machine
    num_threads: int = 0

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.eval_batch_size < 1:
            raise ValueError("epochs, batch_size and eval_batch_size must be >= 1")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.patience < 0 or self.num_threads < 0:
            raise ValueError("patience and num_threads must be >= 0")
        if self.embedding_dim < 1 or self.num_heads < 1 or self.embedding_dim % self.num_heads:
            raise ValueError(
                f"embedding_dim ({self.embedding_dim}) must be a positive multiple of num_heads "
                f"({self.num_heads})"
            )
        if not self.tower_units or any(int(u) < 1 for u in self.tower_units):
            raise ValueError(f"tower_units needs at least one positive width, got {self.tower_units}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if not (math.isfinite(self.embedding_init_std) and self.embedding_init_std > 0):
            raise ValueError(f"embedding_init_std must be > 0, got {self.embedding_init_std}")
        for name in ("weight_decay", "click_weight", "conversion_weight"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {value}")
        if self.click_weight <= 0:
            raise ValueError("click_weight must be > 0 (the click stage is always trained)")
        if self.max_vocab < 1:
            raise ValueError(f"max_vocab must be >= 1, got {self.max_vocab}")


class EcupModel:
    """ECUP uplift model: counterfactual per-arm, per-stage (click, conversion) outcome predictions."""

    name: ClassVar[str] = "ecup"
    task: ClassVar[str] = "uplift"
    Config: ClassVar[type] = EcupConfig
    requires: ClassVar[frozenset[str]] = frozenset({"treatment", "conversion"})
    #: `fit` continues from `ctx.init_from` (the nightly warm start): the previous encoder and
    #: weights, fine-tuned on the train rows after the last one it saw.
    supports_warm_start: ClassVar[bool] = True

    def __init__(self, config: EcupConfig | None = None):
        self.config = config if config is not None else EcupConfig()
        self.module: Any = None  # ctr_ecup.network.EcupNet once fitted or loaded
        self.encoder: Any = None  # ctr_ecup.features.FeatureEncoder
        self.n_arms: int = 0  # K + 1
        self.stages: tuple[str, ...] = ()  # ("click",) or ("click", "conversion")
        self.summary: dict[str, Any] = {}

    # -- training --------------------------------------------------------------------------------------
    def fit(self, train: pa.Table, valid: pa.Table, ctx: FitContext) -> EcupModel:
        from ctr_ecup.training import fit_ecup

        fit_ecup(self, train, valid, ctx)
        return self

    def build_module(self, cat_sizes: list[int], n_numeric: int) -> Any:
        from ctr_ecup.network import EcupNet

        c = self.config
        return EcupNet(
            cat_sizes,
            n_numeric,
            n_arms=self.n_arms,
            n_tasks=len(self.stages),
            d=c.embedding_dim,
            heads=c.num_heads,
            tower_units=[int(u) for u in c.tower_units],
            treatment_gate=c.treatment_gate,
            task_prior=c.task_prior,
            dropout=c.dropout,
            init_std=c.embedding_init_std,
        )

    # -- scoring ---------------------------------------------------------------------------------------
    def _require_fitted(self) -> None:
        if self.module is None or self.encoder is None:
            raise RuntimeError("ecup: the model is not fitted (call fit or load first)")

    def predict_outcomes(self, batch: pa.Table) -> dict[str, np.ndarray]:
        """{stage: float64[n, K+1]}: p(stage | x, arm a) for every arm a, stage "click" and (when
        trained) "conversion" (the entire-space CTCVR). Reads the feature columns only."""
        import numpy as np
        import torch

        from ctr_ecup.network import entire_space

        self._require_fitted()
        cat, num = self.encoder.transform(batch)
        n = batch.num_rows
        out = np.zeros((len(self.stages), n, self.n_arms), dtype=np.float64)
        module = self.module
        module.eval()
        step = self.config.eval_batch_size
        with torch.no_grad():
            for start in range(0, n, step):
                c = torch.from_numpy(cat[start : start + step])
                x = torch.from_numpy(num[start : start + step])
                logits = module.forward_all_arms(c, x)  # (T, rows, K + 1)
                p = entire_space(logits.flatten(1)).view(logits.shape)
                out[:, start : start + c.shape[0]] = p.double().numpy()
        return {stage: out[i] for i, stage in enumerate(self.stages)}

    def predict_effects(self, batch: pa.Table) -> dict[str, np.ndarray]:
        """{stage: float64[n, K+1]}: p(stage | x, a) - p(stage | x, 0); column 0 is all zeros."""
        return {stage: p - p[:, :1] for stage, p in self.predict_outcomes(batch).items()}

    def predict(self, batch: pa.Table) -> np.ndarray:
        """float64[n] in [-1, 1]: the mean over coupon arms 1..K of the predicted click uplift."""
        import numpy as np

        effects = self.predict_effects(batch)["click"]
        return np.clip(effects[:, 1:].mean(axis=1), -1.0, 1.0)

    def parameter_count(self) -> int | None:
        if self.module is None:
            return None
        return int(sum(p.numel() for p in self.module.parameters() if p.requires_grad))

    # -- persistence -----------------------------------------------------------------------------------
    def save(self, directory: Path) -> None:
        from ctr_dagster.artifact_meta import write_meta
        from ctr_dagster.contracts import config_to_dict
        from safetensors.torch import save_file

        self._require_fitted()
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in self.module.state_dict().items()}
        save_file(state, str(directory / WEIGHTS_FILE))
        write_meta(
            directory,
            self.name,
            FORMAT_VERSION,
            config=config_to_dict(self.config),
            encoder=self.encoder.to_json(),
            n_arms=self.n_arms,
            stages=list(self.stages),
            summary=self.summary,
        )

    @classmethod
    def load(cls, directory: Path) -> EcupModel:
        from ctr_dagster.artifact_meta import read_meta
        from ctr_dagster.contracts import config_from_dict
        from safetensors.torch import load_file

        from ctr_ecup.features import FeatureEncoder

        directory = Path(directory)
        meta = read_meta(directory, cls.name, FORMAT_VERSION)
        model = cls(config_from_dict(cls, meta["config"]))
        model.encoder = FeatureEncoder.from_json(meta["encoder"])
        model.n_arms = int(meta["n_arms"])
        model.stages = tuple(meta["stages"])
        model.summary = dict(meta.get("summary") or {})
        module = model.build_module(model.encoder.cat_sizes, len(model.encoder.numeric))
        module.load_state_dict(load_file(str(directory / WEIGHTS_FILE)), strict=True)
        module.eval()
        model.module = module
        return model
