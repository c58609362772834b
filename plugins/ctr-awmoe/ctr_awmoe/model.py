"""`awmoe`: Attention-Weighted Mixture of Experts with contrastive learning, on the engine's torch trainer.

AW-MoE (Zhang et al., ICDE'23, arXiv 2306.05011, JD e-commerce search). **No official or
third-party code exists**, and only the abstract (plus summary pages) could be read: MODELS.md
section 4. What the abstract pins (the faithful checklist): a mixture of experts whose gate reads
the user behaviour sequence through a *gate unit* and an *activation unit* (target attention gives
a fine-grained, per-behaviour weighting of per-behaviour gate vectors); the sequence also feeds the
experts; long-tail users are simulated by randomly masking the behaviour sequence, and an
auxiliary contrastive loss on the gate output makes the gate robust for them; results are
reported separately on long-tail users. The network is in `ctr_awmoe.modules`; batching, the loop,
early stopping, checkpoints, AMP, DDP and persistence come from `ctr_dagster.training.TorchModel`.

Design choices not pinned by the source (all [unverified] against the paper's method section):

* activation unit: DIN's (`ctr_din.modules.ActivationUnit`) on [e_j, q, e_j - q, e_j * q] with
  Dice; by default (``gate_attention="shared"``) the gate reads the raw scores of the unit that
  pools the experts' interest, ``"own"`` gives the gate a unit of its own -- choice (same validation
  AUC, one attention pass instead of two; README "Choices");
* gate weights a_j = masked softmax of those scores (``gate_softmax=True``), so the gate logits are
  b + an attention-weighted MEAN of the g_j; DIN's unnormalised sum saturated the gate and made
  training unstable -- choice;
* gate unit g_j = MLP(e_j) in R^K, hidden layers `gate_units` -- choice;
* G = softmax(b + sum_j a_j g_j), b a learned K-vector: rows without history get softmax(b), the
  learned default gate -- choice;
* experts: K MLPs over DIN's tower input [context, target token, DIN-pooled interest, dense], each
  giving a logit, mixed in logit space y = sum_k G_k f_k -- choice;
* CL views: each real behaviour dropped independently with probability `mask_rate` (rho) in each of
  two views; the scores and g_j are shared with the main pass (exact, see `ctr_awmoe.modules`) --
  choice;
* InfoNCE on the gate OUTPUT G (probabilities), cosine / `cl_temperature` (tau), the other rows of
  the batch as negatives, symmetric; rows with fewer than `cl_min_behaviours` behaviours, or whose
  view lost every behaviour, take no part -- choice;
* loss = BCE + `cl_weight` (lambda) * InfoNCE, returned as the module's ``aux_loss`` -- form from the
  abstract, weight a choice (measured about neutral at 0.01 on the behaviour-segment worlds, worse
  above: README "Measured");
* rho = 0.3, tau = 0.5, lambda = 0.01, K = 4, expert towers [64, 32], d = 16 -- CPU scale-down
  (MODELS.md's ranges: K 4-8, rho 0.2-0.5, tau 0.1-0.5, lambda 0.01-0.1).

The mean contrastive loss of each epoch is written into the training history (``cl_loss``; see
`ContrastiveLossRecorder`). `gate="uniform"` is the ablation: G = 1/K for every row, no gate
network, no contrastive loss.

This module is imported when the engine discovers plugins: it imports no torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from ctr_dagster.training.config import TrainerConfig
from ctr_dagster.training.plugin import TorchModel

if TYPE_CHECKING:
    import pyarrow as pa
    from ctr_dagster.contracts import FitContext
    from ctr_dagster.training.spec import FeatureSpec
    from ctr_dagster.training.state import LoopState
    from torch import nn

GATES = ("attention", "uniform")
GATE_ATTENTIONS = ("own", "shared")
#: smallest cl_temperature (ctr_awmoe.modules.MIN_TEMPERATURE: the InfoNCE's float32 range)
MIN_TEMPERATURE = 0.05
ACTIVATIONS = ("dice", "relu", "prelu", "sigmoid")


@dataclass
class AwMoeConfig(TrainerConfig):
    """AW-MoE's CPU-scale defaults (MODELS.md: K=4 experts [64, 32], d=16).

    Trainer fields (epochs, batch_size, lr, lr_schedule, patience, ...) come from TrainerConfig;
    the trainer and embedding settings are DIN's (plugins/ctr-din) so the two compare fairly.
    """

    epochs: int = 6
    batch_size: int = 512
    embedding_dim: int = 16  # width of every id embedding (items, categories, context)
    #: most recent behaviours read by the gate and the experts; None = every one the training
    #: dataset holds (its max_seq_len, 20 by default); a larger number is capped there
    max_seq_len: int | None = None
    num_experts: int = 4  # K: expert towers mixed by the gate
    tower_units: list[int] = field(default_factory=lambda: [64, 32])  # hidden layers of EACH expert tower
    tower_activation: str = "dice"  # the experts' nonlinearity: dice, relu, prelu or sigmoid
    dropout: float = 0.0  # dropout after each expert layer
    #: hidden layers of the activation units (the gate's, and the one pooling the experts' interest)
    attention_units: list[int] = field(default_factory=lambda: [64])
    attention_activation: str = "dice"  # activation units' nonlinearity
    #: masked softmax over the weights of the activation unit that pools the experts' interest
    #: (DIN keeps them unnormalised)
    use_softmax: bool = False
    #: "attention" (AW-MoE's gate: softmax(b + sum_j a_j g_j)) or "uniform" (G = 1/K for every row,
    #: no gate network and no contrastive loss: the ablation, tests/test_awmoe_ablation.py)
    gate: str = "attention"
    #: masked softmax over the gate's attention weights a_j, so the gate logits are b + a weighted
    #: MEAN of the g_j; False = DIN's unnormalised sum, whose scale grows with the history length
    #: (it saturated the gate and made training unstable: README "Choices")
    gate_softmax: bool = True
    #: "own": the gate has its own activation unit; "shared": it reuses the raw scores of the unit
    #: that pools the experts' interest (one attention pass instead of two; needs use_softmax=False)
    gate_attention: str = "shared"
    #: hidden layers of the gate unit g_j = MLP(e_j) (its output layer has num_experts units)
    gate_units: list[int] = field(default_factory=lambda: [32])
    gate_activation: str = "dice"  # the gate unit's nonlinearity
    mask_rate: float = 0.3  # rho: probability of dropping each behaviour in each contrastive view
    cl_temperature: float = 0.5  # tau: InfoNCE temperature (cosine similarity / tau), >= 0.05
    cl_weight: float = 0.01  # lambda: loss = BCE + lambda * InfoNCE; 0 turns the contrastive branch off
    #: rows with fewer behaviours take no part in the contrastive loss (a view of them is mostly empty)
    cl_min_behaviours: int = 2
    embedding_init_std: float = 0.3  # std of the normal init of embedding rows (DIN's)
    #: DIN's mini-batch-aware L2 on the embedding tables (trainer field; DIN's tuned default)
    mba_l2: float = 0.3
    use_user_idx: bool = False  # a user-id embedding (off: the history represents the user)
    use_item_embeddings: bool = False  # add a projection of the frozen item_embeddings vectors

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.embedding_dim < 1 or (self.max_seq_len is not None and self.max_seq_len < 1):
            raise ValueError("embedding_dim and max_seq_len must be >= 1")
        if self.num_experts < 2:
            raise ValueError(f"num_experts must be >= 2 (a mixture), got {self.num_experts}")
        if not self.attention_units or any(u < 1 for u in self.attention_units):
            raise ValueError(f"attention_units needs at least one positive width, got {self.attention_units}")
        for name in ("tower_units", "gate_units"):
            if any(u < 1 for u in getattr(self, name)):
                raise ValueError(f"{name} must be positive widths, got {getattr(self, name)}")
        for name in ("tower_activation", "attention_activation", "gate_activation"):
            if str(getattr(self, name)).lower() not in ACTIVATIONS:
                raise ValueError(f"{name} must be one of {ACTIVATIONS}, got {getattr(self, name)!r}")
        if self.gate not in GATES:
            raise ValueError(f"gate must be one of {GATES}, got {self.gate!r}")
        if self.gate_attention not in GATE_ATTENTIONS:
            raise ValueError(f"gate_attention must be one of {GATE_ATTENTIONS}, got {self.gate_attention!r}")
        if self.gate_attention == "shared" and self.use_softmax:
            raise ValueError(
                "gate_attention='shared' reads the raw attention scores: it needs use_softmax=False"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if not 0.0 < self.mask_rate < 1.0:
            raise ValueError(f"mask_rate must be in (0, 1), got {self.mask_rate}")
        if not (math.isfinite(self.cl_temperature) and self.cl_temperature >= MIN_TEMPERATURE):
            raise ValueError(f"cl_temperature must be >= {MIN_TEMPERATURE}, got {self.cl_temperature}")
        if not (math.isfinite(self.cl_weight) and self.cl_weight >= 0):
            raise ValueError(f"cl_weight must be a finite number >= 0, got {self.cl_weight}")
        if self.cl_min_behaviours < 1:
            raise ValueError(f"cl_min_behaviours must be >= 1, got {self.cl_min_behaviours}")


class ContrastiveLossRecorder:
    """Trainer callback: writes the epoch's mean contrastive loss (unweighted InfoNCE) into the
    epoch's history line as ``cl_loss`` (None when the branch is off). The line is added after the
    epoch's checkpoint is written, so a resumed run's earlier epochs lack it."""

    def __init__(self, model: AwMoeModel):
        self.model = model

    def on_epoch_end(self, state: LoopState) -> None:
        net = self.model._training_net
        if net is not None and state.history:
            state.history[-1]["cl_loss"] = net.take_cl_mean()


class AwMoeModel(TorchModel):
    """Attention-Weighted Mixture of Experts (behaviour-conditioned gate, K towers, contrastive gate loss)."""

    name: ClassVar[str] = "awmoe"
    task: ClassVar[str] = "ctr"
    Config: ClassVar[type] = AwMoeConfig
    requires: ClassVar[frozenset[str]] = frozenset({"sequence"})

    def __init__(self, config: Any = None):
        super().__init__(config)
        self._training_net: Any = None

    def build_module(self, spec: FeatureSpec) -> nn.Module:
        from ctr_awmoe.modules import AwMoeNet

        vectors = self.frozen_item_vectors(spec) if spec.item_embedding_dim is not None else None
        net = AwMoeNet(spec, self.config, vectors)
        self._training_net = net
        return net

    def fit(self, train: pa.Table, valid: pa.Table, ctx: FitContext) -> AwMoeModel:
        recorder = ContrastiveLossRecorder(self)
        own = list(self.callbacks)
        self.callbacks = [*own, recorder]
        try:
            super().fit(train, valid, ctx)
        finally:
            self.callbacks = own
            self._training_net = None
        return self

    def cl_losses(self) -> list[float | None]:
        """The mean contrastive loss of each trained epoch (from the training summary)."""
        return [r.get("cl_loss") for r in self.summary.get("history", [])]
