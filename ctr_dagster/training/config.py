"""The trainer's typed settings: `TrainerConfig` (a torch plugin's `Config` extends it) and
`DistillationWeights` (the soft-target loss weights of a distilled student).

Torch-free (a plugin's Config is read when the code location loads, and the distillation asset
builds its launchpad config from `DistillationWeights`). Every field has a default, so the launchpad
shows and edits them like the plugin's own fields.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

SCHEDULES = ("plateau", "cosine", "constant")


@dataclass
class TrainerConfig:
    """Optimisation and loop settings (Adam; FuxiCTR-like defaults where they fit a CPU).

    * `lr_schedule`: "plateau" (default, as FuxiCTR: lr x `lr_decay` after every epoch whose valid
      AUC does not improve, down to `min_lr`), "cosine" (per batch over all epochs) or "constant".
    * `patience`: early stopping after this many epochs without a better valid AUC; the best
      epoch's weights are restored at the end (0 disables early stopping, the best is still kept).
    * `grad_clip_norm`: global gradient-norm clip (FuxiCTR: 10); 0 disables it.
    * `weight_decay`: Adam's L2 on the network's dense weights (MLPs, attention, projections), never
      on embedding tables, on every device (it used to decay every embedding row on CUDA and none
      with the CPU's lazy Adam).
    * `mba_l2`: strength of the mini-batch-aware L2 on embedding tables (DIN, Zhou et al. KDD'18,
      section 4.3; `ctr_dagster.training.regularization`): each batch adds ``mba_l2 * sum_j ||w_j||^2
      / n_j`` over the ids j occurring in it, n_j = the number of train rows holding id j. Part of
      the loss, so CPU (lazy sparse Adam) and GPU (dense Adam) apply it identically, and only rows
      present in the batch move. 0 (the engine's default) turns it off; the module must declare its
      tables with ``embedding_inputs()``.
    * `amp`: mixed precision (bf16 where supported, else fp16 with a GradScaler) -- CUDA only.
    * `log_every`: a progress line every this many batches (0: only per-epoch lines).
    * `sparse_embeddings`: on CPU (single process), embedding tables get sparse gradients and a lazy
      Adam (only the rows in the batch move); much faster with large vocabularies. Ignored on CUDA/DDP.
    * `eval_batch_size`: rows per forward pass when scoring (validation, predict); 0 picks by device:
      `CPU_EVAL_ROWS` on CPU, where activations that stay cache-sized beat big batches (DIN on 200k
      rows, 1 thread: 1.3 s at 2,048 rows vs 2.0 s at 8,192), `CUDA_EVAL_ROWS` on a GPU.
    * `num_threads`: CPU threads torch may use while training (0: torch's default, one per core).
      On a shared machine fewer threads than cores avoids OpenMP oversubscription, which can slow
      a step down by an order of magnitude.
    """

    epochs: int = 5  # passes over the train split (early stopping may end sooner)
    batch_size: int = 2048  # training rows per optimizer step
    lr: float = 1e-3  # Adam's learning rate at the start
    weight_decay: float = 0.0
    mba_l2: float = 0.0
    lr_schedule: str = "plateau"
    lr_decay: float = 0.1  # factor applied to lr by the plateau schedule
    min_lr: float = 1e-6  # the plateau schedule never goes below this lr
    patience: int = 2
    grad_clip_norm: float = 10.0
    amp: bool = True
    eval_batch_size: int = 0
    log_every: int = 100
    num_threads: int = 0
    sparse_embeddings: bool = True

    def __post_init__(self) -> None:
        if self.lr_schedule not in SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {SCHEDULES}, got {self.lr_schedule!r}")
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError("epochs and batch_size must be >= 1")
        if self.eval_batch_size < 0:
            raise ValueError(f"eval_batch_size must be >= 0 (0: by device), got {self.eval_batch_size}")
        if self.num_threads < 0:
            raise ValueError(f"num_threads must be >= 0, got {self.num_threads}")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        for name in ("weight_decay", "mba_l2"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {value}")


#: Scoring rows per forward pass when `eval_batch_size` is 0 (see `TrainerConfig`).
CPU_EVAL_ROWS = 2048
CUDA_EVAL_ROWS = 16384


def eval_rows(config: object, device_type: str) -> int:
    """Rows per scoring forward pass: the config's `eval_batch_size`, or the device's default."""
    size = int(getattr(config, "eval_batch_size", 0) or 0)
    if size > 0:
        return size
    return CPU_EVAL_ROWS if device_type == "cpu" else CUDA_EVAL_ROWS


#: Alias for plugin authors: `class MyConfig(TorchConfig)` reads as "a torch plugin's config".
TorchConfig = TrainerConfig


@dataclass(frozen=True)
class DistillationWeights:
    """Loss weights of a distilled student: ``label_weight * loss(z, y) + teacher_weight * T^2 *
    BCE(sigmoid(z / T), sigmoid(z_teacher / T))`` (Hinton et al. 2015, arXiv 1503.02531, binary form).

    The one definition of the defaults and of what is valid: the distillation asset's launchpad
    config, the engine's distillation stage, the torch plugin base and the trainer all use it.
    """

    label_weight: float = 1.0
    teacher_weight: float = 1.0
    #: Softens both sides. The distillation stage chooses it on validation AUC from its grid
    #: (`distillation`, launchpad `temperatures`, default 1, 2, 4); this value applies only where no
    #: temperature is passed (a plugin trained directly with these weights).
    temperature: float = 2.0

    def __post_init__(self) -> None:
        weights = (self.label_weight, self.teacher_weight)
        if not all(math.isfinite(w) and w >= 0 for w in weights) or sum(weights) <= 0:
            raise ValueError(
                f"distillation weights must be finite, >= 0 and not both 0, got label_weight="
                f"{self.label_weight} teacher_weight={self.teacher_weight}"
            )
        if not (math.isfinite(self.temperature) and self.temperature > 0):
            raise ValueError(f"distillation temperature must be > 0, got {self.temperature}")

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> DistillationWeights:
        """The weights named in `values` (e.g. ``FitContext.inputs["distillation"]``; other keys such
        as "teacher_scores" are ignored), the defaults for the ones it lacks."""
        names = ("label_weight", "teacher_weight", "temperature")
        return cls(**{k: float(values[k]) for k in names if values.get(k) is not None})

    def as_dict(self) -> dict[str, float]:
        return asdict(self)
