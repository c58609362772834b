"""`din` and `din_student`: Deep Interest Network plugins on the engine's torch trainer.

DIN (Zhou et al., KDD'18, arXiv 1706.06978): target attention over the user's behaviour sequence
(local activation unit on [q, k, q - k, q * k], unnormalised weights), Dice activations, an MLP
tower. The network is in `ctr_din.modules`; batching, the loop, early stopping, checkpoints, AMP,
DDP and persistence come from `ctr_dagster.training.TorchModel`.

`din_student` is the same network, much smaller (5 most recent behaviours, 8-wide embeddings, tiny
MLPs): it trains alone like any model, and learns from the `din` teacher's scores when the engine
hands it ``ctx.inputs["distillation"]``.

This module is imported when the engine discovers plugins: it imports no torch (the modules are
imported inside `build_module`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

from ctr_dagster.training.config import TrainerConfig
from ctr_dagster.training.plugin import TorchModel

if TYPE_CHECKING:
    from ctr_dagster.training.spec import FeatureSpec
    from torch import nn


POOLINGS = ("attention", "sum")


@dataclass
class DinConfig(TrainerConfig):
    """DIN's CPU-scale defaults (FuxiCTR/BARS use 16-64-wide embeddings, attention [64]..[512, 256]).

    Trainer fields (epochs, batch_size, lr, lr_schedule, patience, ...) come from TrainerConfig.
    Measured on the synthetic `small` profile (see the README): embeddings initialised at std 0.3
    (FuxiCTR's 1e-4 suits far longer training), batches of 512 and no user-id embedding (each user
    has few impressions, so it overfits; the behaviour sequence already represents the user) gave
    test AUC 0.788 against 0.764 with std 0.01, batches of 1024 and the user id.
    """

    epochs: int = 6
    batch_size: int = 512
    embedding_dim: int = 16  # width of every id embedding (items, categories, users, context)
    #: most recent behaviours attended to; None = every one the training dataset holds (its
    #: max_seq_len, 20 by default); a larger number is capped there, with a line in the run log
    max_seq_len: int | None = None
    attention_units: list[int] = field(default_factory=lambda: [64])  # hidden layers of the activation unit
    attention_activation: str = "dice"  # activation unit's nonlinearity: dice (the paper) or prelu
    use_softmax: bool = False  # the paper keeps attention weights unnormalised
    #: "attention" (DIN's local activation unit) or "sum" (every behaviour weighted 1: the ablation
    #: that shows what the target attention adds; tests/test_din_ablation.py)
    pooling: str = "attention"
    tower_units: list[int] = field(default_factory=lambda: [128, 64])  # hidden layers of the output MLP
    tower_activation: str = "dice"  # the MLP's nonlinearity: dice or prelu
    dropout: float = 0.0  # dropout in the output MLP
    embedding_init_std: float = 0.3  # std of the normal init of embedding rows
    #: DIN's mini-batch-aware L2 on the embedding tables (paper section 4.3; the trainer adds
    #: mba_l2 * sum_j ||w_j||^2 / n_j over the ids j of each batch). Chosen on VALIDATION AUC only
    #: (README, "Regularization"): on `small`, the demo profile these defaults are tuned for, 0.3 was
    #: best (mean of world seeds 0-1: 0.8003 vs 0.7977 at 1.0 and 0.7931 without); on `tiny` 0.3 is
    #: +0.0026 over 0 (seeds 0-2).
    mba_l2: float = 0.3
    use_user_idx: bool = False  # a user-id embedding (off: new users are the norm at test time)
    use_item_embeddings: bool = False  # add a projection of the frozen item_embeddings vectors

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.embedding_dim < 1 or (self.max_seq_len is not None and self.max_seq_len < 1):
            raise ValueError("embedding_dim and max_seq_len must be >= 1")
        if not self.attention_units or any(u < 1 for u in self.attention_units):
            raise ValueError(f"attention_units needs at least one positive width, got {self.attention_units}")
        if any(u < 1 for u in self.tower_units):
            raise ValueError(f"tower_units must be positive, got {self.tower_units}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {self.pooling!r}")


@dataclass
class DinStudentConfig(DinConfig):
    """A small DIN: 5 most recent behaviours, 8-wide embeddings, attention [16], tower [32]."""

    embedding_dim: int = 8
    max_seq_len: int | None = 5
    attention_units: list[int] = field(default_factory=lambda: [16])
    tower_units: list[int] = field(default_factory=lambda: [32])


class DinModel(TorchModel):
    """Deep Interest Network (target attention over the behaviour sequence, Dice, MLP tower)."""

    name: ClassVar[str] = "din"
    task: ClassVar[str] = "ctr"
    Config: ClassVar[type] = DinConfig
    requires: ClassVar[frozenset[str]] = frozenset({"sequence"})
    role: ClassVar[str | None] = "teacher"

    def build_module(self, spec: FeatureSpec) -> nn.Module:
        from ctr_din.modules import DinNet

        vectors = self.frozen_item_vectors(spec) if spec.item_embedding_dim is not None else None
        return DinNet(spec, self.config, vectors)


class DinStudentModel(DinModel):
    """Small DIN student (5 behaviours, tiny dims): trains alone or distils from the `din` teacher."""

    name: ClassVar[str] = "din_student"
    Config: ClassVar[type] = DinStudentConfig
    role: ClassVar[str | None] = "student"
    teacher: ClassVar[str | None] = "din"
