"""`qin`: the Quadratic Interest Network plugin on the engine's torch trainer.

QIN (WWW'25 EReL@MIR multimodal CTR challenge, task 2, 2nd place; arXiv 2504.17699; official code
salmon1802/QIN@5d07dd1, ``src/QIN_variety_v9.py``): an item token built from the item id, its tags
and its multimodal vector; adaptive sparse target attention (ASTA: ReLU of scaled dot products, no
softmax) over the behaviour sequence; a quadratic neural network (QNN) over the context fields, the
target token and the attended interest. The network is in `ctr_qin.modules` (its docstring lists
what follows the official code and every choice); batching, the loop, early stopping, checkpoints,
AMP, DDP and persistence come from `ctr_dagster.training.TorchModel`.

Inputs: the TRAINING table (`requires = {"sequence"}`) plus, by default, the frozen item vectors
(``ctx.inputs["item_embeddings"]``, `use_item_embeddings`) and the item tags
(``ctx.inputs["item_tags"]``, `use_item_tags`). Choice: when one of them is switched on and missing,
`fit` raises the engine's error (which names the asset to materialize, or the switch to turn off)
instead of silently training a different token.

`parameter_count` is the parameter formula of the network, pure Python (no module allocated): at the
paper's MicroLens-1M scale it gives the logged 31,244,293 (R = 4) and 27,045,893 (R = 3);
`parameter_count_for(spec, config)` applies it to a feature spec and a config, and the tests check it
against the real module's ``sum(p.numel())``.

This module is imported when the engine discovers plugins: it imports no torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from ctr_dagster.training.config import TrainerConfig
from ctr_dagster.training.plugin import TorchModel
from ctr_dagster.training.spec import DENSE_COLUMNS

if TYPE_CHECKING:
    from ctr_dagster.training.spec import FeatureSpec
    from torch import nn

INTERACTION_LAYERS = ("quadratic", "mlp")
#: The engine's dense columns less the two that grow with time (see `QinConfig.dense_columns`).
DEFAULT_DENSE = tuple(c for c in DENSE_COLUMNS if c not in ("item_age_days", "user_click_count"))


@dataclass
class QinConfig(TrainerConfig):
    """QIN at CPU scale (MODELS.md "CPU scale-down": d=16, R=2, 2 QNN layers; batches of 256)

    The paper's MicroLens run: d=128, R=4, 4 layers, dropout 0.1, batch norm, Adam 2e-3, batch 8192,
    lr x 0.5 on plateau, early stop after 8 epochs. Trainer fields (epochs, batch_size, lr, ...)
    come from TrainerConfig; the README gives the measurements behind the defaults.
    """

    epochs: int = 6
    #: rows per step. Chosen on VALIDATION AUC (README, "Regularization and batch size"): 256 beat
    #: 512 and 1,024 on the demo home (0.8256 / 0.8233 / 0.8160) and on two demo worlds with
    #: synthetic item inputs; QIN was still improving after 6 epochs of 1,024 (the paper's 8,192
    #: batches run for up to 100 epochs over 3.6M rows)
    batch_size: int = 256
    lr: float = 2e-3  # Adam's learning rate at the start (the paper's 2e-3)
    lr_decay: float = 0.5  # factor applied to lr by the plateau schedule (the paper's `factor` 0.5)
    embedding_dim: int = 16  # width d of every embedding; the item token is up to 4d wide
    #: most recent behaviours attended to; None = every one the training dataset holds (its
    #: max_seq_len, 20 by default; the paper keeps 64); a larger number is capped there, with a log line
    max_seq_len: int | None = None
    num_row: int = 2  # R, row blocks of each quadratic layer (the paper: 4; 3 trains more stably)
    num_layers: int = 2  # quadratic layers in the QNN (the paper: 4)
    #: "quadratic" (QIN's x * sum_r (W_r x + b_r)) or "mlp" (the same layer without the product with
    #: x, same parameters: the ablation of tests/test_qin_ablation.py)
    interaction_layers: str = "quadratic"
    net_dropout: float = 0.1  # dropout on H inside each quadratic layer and after its PReLU (the paper's 0.1)
    batch_norm: bool = True  # BatchNorm after each quadratic layer (the paper: on)
    #: ASTA's query/key/value width; None = 2 x the item token width (the paper)
    attention_dim: int | None = None
    embedding_init_std: float = 0.3  # std of the N(0, std) init of embedding rows (FuxiCTR: 1e-4)
    #: the trainer's mini-batch-aware L2 on the embedding tables (DIN's regulariser; the paper's
    #: FuxiCTR run uses a whole-table embedding L2 of 2e-4). Chosen on VALIDATION AUC on the demo
    #: world (`small`, every knob at its default, seeds 0 and 1): 0.3 gave 0.8195 / 0.8273 against
    #: 0.8130 / 0.8203 without (QIN fitted the train rows faster than DIN and validated lower);
    #: 1.0 gave 0.8181 on seed 0 (README, "Regularization and batch size")
    mba_l2: float = 0.3
    use_item_embeddings: bool = True  # add a bias-free projection of the frozen item vector to the item token
    use_item_tags: bool = True  # add the mean of the item's tag embeddings to the item token
    #: add the item's category embedding to the item token (choice: the engine's data has categories;
    #: the paper's MicroLens token has none)
    use_category: bool = True
    use_user_idx: bool = False  # a user-id embedding in the QNN input (off: the history represents the user)
    #: dense columns fed to the QNN (standardized; log1p first for the skewed ones). Choice: not
    #: item_age_days and user_click_count, which grow day after day, so the later valid/test days lie
    #: beyond the train days' values; with them QIN lost 0.019 test AUC on average over five
    #: interaction-world seeds (README, "Dense features")
    dense_columns: list[str] = field(default_factory=lambda: list(DEFAULT_DENSE))

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("embedding_dim", "num_row", "num_layers"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.max_seq_len is not None and self.max_seq_len < 1:
            raise ValueError(f"max_seq_len must be >= 1 or None, got {self.max_seq_len}")
        if self.attention_dim is not None and self.attention_dim < 1:
            raise ValueError(
                f"attention_dim must be >= 1 or None (2 x token width), got {self.attention_dim}"
            )
        if self.interaction_layers not in INTERACTION_LAYERS:
            raise ValueError(
                f"interaction_layers must be one of {INTERACTION_LAYERS}, got {self.interaction_layers!r}"
            )
        if not 0.0 <= self.net_dropout < 1.0:
            raise ValueError(f"net_dropout must be in [0, 1), got {self.net_dropout}")
        unknown = sorted(set(self.dense_columns) - set(DENSE_COLUMNS))
        if unknown or len(set(self.dense_columns)) != len(self.dense_columns):
            raise ValueError(
                f"dense_columns must be distinct names from {DENSE_COLUMNS}, got {self.dense_columns}"
            )
        if not self.embedding_init_std > 0:
            raise ValueError(f"embedding_init_std must be > 0, got {self.embedding_init_std}")


def parameter_count(
    *,
    item_rows: int,
    embedding_dim: int,
    num_row: int,
    num_layers: int,
    tag_rows: int | None = None,
    item_vector_dim: int | None = None,
    category_rows: int | None = None,
    context_rows: Sequence[int] = (),
    dense: int = 0,
    attention_dim: int | None = None,
    batch_norm: bool = True,
) -> int:
    """Trainable parameters of `QinNet`, from sizes only (no module is built).

    `item_rows`, `tag_rows`, `category_rows`: embedding rows (padding included); None leaves that part
    out of the item token. `item_vector_dim`: width of the frozen multimodal vector (None: none).
    `context_rows`: rows of each context field's table; `dense`: dense columns; `attention_dim`:
    None = 2 x token width. The frozen buffers (item vectors, tags, BatchNorm statistics) are not
    parameters.

    The paper's MicroLens-1M run (d = 128, item 91,718 rows, tags 11,740, 128-d vectors, likes/views
    11 rows each, 4 layers): 31,244,293 with R = 4 and 27,045,893 with R = 3, as logged.
    """
    d = embedding_dim
    parts = 1 + (tag_rows is not None) + (item_vector_dim is not None) + (category_rows is not None)
    token = parts * d
    tables = item_rows + (tag_rows or 0) + (category_rows or 0) + sum(context_rows)
    embeddings = tables * d + (item_vector_dim or 0) * d  # + the bias-free projection
    attention = 4 * token * (attention_dim or 2 * token)  # W_q, W_k, W_v: D x A; W_o: A x D
    width = d * len(context_rows) + dense + 2 * token
    layer = width * width * num_row + width * num_row + (2 * width if batch_norm else 0) + 1  # + PReLU
    return embeddings + attention + num_layers * layer + width + 1


def parameter_count_for(spec: FeatureSpec, config: Any) -> int:
    """`parameter_count` of the module `QinModel(config).build_module(spec)` builds."""
    categorical = spec.categorical
    context = [
        rows
        for name, rows in categorical.items()
        if name not in ("item_idx", "category_idx") and (config.use_user_idx or name != "user_idx")
    ]
    return parameter_count(
        item_rows=categorical["item_idx"],
        embedding_dim=config.embedding_dim,
        num_row=config.num_row,
        num_layers=config.num_layers,
        tag_rows=spec.item_tags[1] if spec.item_tags is not None else None,
        item_vector_dim=spec.item_embedding_dim,
        category_rows=categorical["category_idx"] if config.use_category else None,
        context_rows=context,
        dense=len(spec.dense),
        attention_dim=config.attention_dim,
        batch_norm=config.batch_norm,
    )


class QinModel(TorchModel):
    """Quadratic Interest Network: multimodal item token, ASTA target attention, quadratic layers."""

    name: ClassVar[str] = "qin"
    task: ClassVar[str] = "ctr"
    Config: ClassVar[type] = QinConfig
    requires: ClassVar[frozenset[str]] = frozenset({"sequence"})
    #: read by default (use_item_embeddings / use_item_tags) but switchable off, so not `requires`:
    #: the engine makes the model asset depend on the tables behind them (lineage and run order)
    optional_inputs: ClassVar[frozenset[str]] = frozenset({"item_embeddings", "item_tags"})

    def feature_spec(
        self, cardinalities: dict[str, int], item_embedding_dim: int | None, max_seq_len: int
    ) -> FeatureSpec:
        """The engine's default spec with the config's `dense_columns`."""
        from ctr_dagster.training.spec import FeatureSpec

        return FeatureSpec.from_cardinalities(
            cardinalities,
            max_seq_len=max_seq_len,
            item_embedding_dim=item_embedding_dim,
            dense=tuple(self.config.dense_columns),
        )

    def build_module(self, spec: FeatureSpec) -> nn.Module:
        from ctr_qin.modules import QinNet

        vectors = self.frozen_item_vectors(spec) if spec.item_embedding_dim is not None else None
        tags = self.frozen_item_tags(spec) if spec.item_tags is not None else None
        return QinNet(spec, self.config, vectors, tags)
