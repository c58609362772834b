"""`tin`: Temporal Interest Network plugin on the engine's torch trainer.

TIN (Zhou et al., WWW'24, arXiv 2308.08487; official TF1 code zhouxy1003/TIN@e42f07b,
`model/tin/tin.py`): a target-aware temporal encoding (a position table indexed by the distance
to the target, row 0 = the target, added to the behaviour tokens and to the target token; by
default a rank row plus a time-bucket row, a choice measured in the README), a
scaled dot-product target attention with a masked softmax (no attention MLP) and a target-aware
representation (the element-wise product with the target), then a DIN-style MLP head plus an item
bias. The network and the list of design choices are in `ctr_tin.modules`; batching, the loop,
early stopping, checkpoints, AMP, DDP and persistence come from `ctr_dagster.training.TorchModel`.

This module is imported when the engine discovers plugins: it imports no torch (the modules are
imported inside `build_module`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

from ctr_dagster.training.config import TrainerConfig
from ctr_dagster.training.plugin import TorchModel
from ctr_dagster.training.spec import ID_SEQUENCES, FeatureSpec

if TYPE_CHECKING:
    from torch import nn

POSITIONS = ("rank", "time_bucket", "rank_time")
REPRESENTATIONS = ("code", "paper")
ACTIVATIONS = ("sigmoid", "dice", "prelu", "relu")


@dataclass
class TinConfig(TrainerConfig):
    """TIN's CPU-scale defaults (the official code: 64+64-wide item/category embeddings, a 431-row
    position table, head 80-40 sigmoid, batch 32, 4 epochs; MODELS.md section 3).

    Trainer fields (epochs, batch_size, lr, lr_schedule, patience, ...) come from TrainerConfig.
    The defaults of `position`, `representation` and `tower_activation` were chosen on VALIDATION
    AUC (README, "Choosing the defaults").
    """

    epochs: int = 6
    batch_size: int = 512
    embedding_dim: int = 16  # width of every id embedding; the item token is [item, category] = 2x this
    # most recent behaviours attended to; None = every one the training dataset holds (its
    # max_seq_len, 20 by default); a larger number is capped there, with a line in the run log
    max_seq_len: int | None = None
    # TIN's target-aware temporal encoding: one table indexed by the distance to the target (row 0
    # = the target) added to the behaviour and target tokens. False removes it (the ablation:
    # plain scaled dot-product target attention; tests/test_tin_ablation.py)
    use_positions: bool = True
    # what indexes the position table: "rank" (hist_rel_pos, 1 = most recent: the official code),
    # "time_bucket" (log-spaced buckets of hist_age_s, the seconds before the request) or
    # "rank_time" (a rank row plus a time-bucket row, each table with row 0 for the target; an
    # extension, chosen as the default on validation AUC: README)
    position: str = "rank_time"
    # number of log-spaced time buckets (position time_bucket/rank_time); behaviours with an unknown time
    # (hist_age_s < 0) get one more row of their own
    time_buckets: int = 24
    time_bucket_min_s: float = 60.0  # upper edge of the first time bucket (seconds before the request)
    time_bucket_max_s: float = 30 * 86400.0  # lower edge of the last time bucket (older ages share it)
    # target-aware representation: "code" (the official code: u = Dense(BN(sum_i a_i u_i)), head
    # input [u, v_t, u * v_t]) or "paper" (u = sum_i a_i (u_i * v_t), head input [u, v_t])
    representation: str = "code"
    tower_units: list[int] = field(default_factory=lambda: [80, 40])  # hidden layers of the head MLP
    # the head's nonlinearity: sigmoid (the official code), dice, prelu or relu
    tower_activation: str = "sigmoid"
    tower_input_bn: bool = True  # BatchNorm on the head's input (the official code's `b1`)
    dropout: float = 0.0  # dropout after each hidden layer of the head
    embedding_init_std: float = 0.3  # std of the normal init of the embedding and position rows
    use_item_bias: bool = True  # logit = b_item + head output (the official code's item_b)
    # the head also reads the other id fields' embeddings (device, region, age group, hour, day of
    # week) and the dense features, as the engine's DIN does; the official code has none of them
    use_context: bool = True
    # DIN's mini-batch-aware L2 on the embedding tables (item/category/context/item-bias; the
    # trainer adds mba_l2 * sum_j ||w_j||^2 / n_j over each batch's ids); DIN's default
    mba_l2: float = 0.3
    use_user_idx: bool = False  # a user-id embedding in the head (off: the history represents the user)
    use_item_embeddings: bool = False  # add a projection of the frozen item_embeddings vectors to the token

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.embedding_dim < 1 or (self.max_seq_len is not None and self.max_seq_len < 1):
            raise ValueError("embedding_dim and max_seq_len must be >= 1")
        if self.position not in POSITIONS:
            raise ValueError(f"position must be one of {POSITIONS}, got {self.position!r}")
        if self.representation not in REPRESENTATIONS:
            raise ValueError(f"representation must be one of {REPRESENTATIONS}, got {self.representation!r}")
        if self.tower_activation not in ACTIVATIONS:
            raise ValueError(f"tower_activation must be one of {ACTIVATIONS}, got {self.tower_activation!r}")
        if self.time_buckets < 2:
            raise ValueError(f"time_buckets must be >= 2, got {self.time_buckets}")
        lo, hi = self.time_bucket_min_s, self.time_bucket_max_s
        if not (math.isfinite(lo) and math.isfinite(hi) and 0 < lo < hi):
            raise ValueError(f"need 0 < time_bucket_min_s < time_bucket_max_s, got {lo}, {hi}")
        if not self.tower_units or any(u < 1 for u in self.tower_units):
            raise ValueError(f"tower_units needs at least one positive width, got {self.tower_units}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if not (math.isfinite(self.embedding_init_std) and self.embedding_init_std > 0):
            raise ValueError(f"embedding_init_std must be > 0, got {self.embedding_init_std}")


def position_columns(config: TinConfig) -> tuple[str, ...]:
    """The sequence columns the temporal encoding reads (none without positions)."""
    if not config.use_positions:
        return ()
    rank = ("hist_rel_pos",) if config.position in ("rank", "rank_time") else ()
    return rank + (("hist_age_s",) if config.position in ("time_bucket", "rank_time") else ())


class TinModel(TorchModel):
    """Temporal Interest Network: target-aware temporal encoding, scaled dot-product target
    attention, target-aware representation, DIN-style head with an item bias."""

    name: ClassVar[str] = "tin"
    task: ClassVar[str] = "ctr"
    Config: ClassVar[type] = TinConfig
    requires: ClassVar[frozenset[str]] = frozenset({"sequence"})

    def feature_spec(
        self, cardinalities: dict[str, int], item_embedding_dim: int | None, max_seq_len: int
    ) -> FeatureSpec:
        """The default spec plus the column the position table reads (hist_rel_pos or hist_age_s)."""
        return FeatureSpec.from_cardinalities(
            cardinalities,
            max_seq_len=max_seq_len,
            item_embedding_dim=item_embedding_dim,
            sequence=ID_SEQUENCES + position_columns(self.config),
        )

    def build_module(self, spec: FeatureSpec) -> nn.Module:
        from ctr_tin.modules import TinNet

        vectors = self.frozen_item_vectors(spec) if spec.item_embedding_dim is not None else None
        return TinNet(spec, self.config, vectors)
