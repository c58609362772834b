"""`TrainerConfig`: the trainer's knobs, as a dataclass a torch plugin's `Config` extends.

Torch-free (a plugin's Config is read when the code location loads). Every field has a default,
so the plugin's launchpad config shows and edits them like the plugin's own fields.
"""

from __future__ import annotations

from dataclasses import dataclass

SCHEDULES = ("plateau", "cosine", "constant")


@dataclass
class TrainerConfig:
    """Optimisation and loop settings (Adam; FuxiCTR-like defaults where they fit a CPU).

    * `lr_schedule`: "plateau" (default, as FuxiCTR: lr x `lr_decay` after every epoch whose valid
      AUC does not improve, down to `min_lr`), "cosine" (per batch over all epochs) or "constant".
    * `patience`: early stopping after this many epochs without a better valid AUC; the best
      epoch's weights are restored at the end (0 disables early stopping, the best is still kept).
    * `grad_clip_norm`: global gradient-norm clip (FuxiCTR: 10); 0 disables it.
    * `amp`: mixed precision (bf16 where supported, else fp16 with a GradScaler) -- CUDA only.
    * `log_every`: a progress line every this many batches (0: only per-epoch lines).
    * `sparse_embeddings`: on CPU (single process), embedding tables get sparse gradients and a lazy
      Adam (only the rows in the batch move); much faster with large vocabularies. Ignored on CUDA/DDP.
    * `num_threads`: CPU threads torch may use while training (0: torch's default, one per core).
      On a shared machine fewer threads than cores avoids OpenMP oversubscription, which can slow
      a step down by an order of magnitude.
    """

    epochs: int = 5
    batch_size: int = 2048
    lr: float = 1e-3
    weight_decay: float = 0.0
    lr_schedule: str = "plateau"
    lr_decay: float = 0.1
    min_lr: float = 1e-6
    patience: int = 2
    grad_clip_norm: float = 10.0
    amp: bool = True
    eval_batch_size: int = 8192
    log_every: int = 100
    num_threads: int = 0
    sparse_embeddings: bool = True

    def __post_init__(self) -> None:
        if self.lr_schedule not in SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {SCHEDULES}, got {self.lr_schedule!r}")
        if self.epochs < 1 or self.batch_size < 1 or self.eval_batch_size < 1:
            raise ValueError("epochs, batch_size and eval_batch_size must be >= 1")
        if self.num_threads < 0:
            raise ValueError(f"num_threads must be >= 0, got {self.num_threads}")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")


#: Alias for plugin authors: `class MyConfig(TorchConfig)` reads as "a torch plugin's config".
TorchConfig = TrainerConfig
