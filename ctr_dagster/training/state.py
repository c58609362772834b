"""The training loop's state between epochs (`LoopState`) and the callbacks that observe it.

`LoopState` is the loop's bookkeeping: the last finished epoch, the learning rate, the best monitored
value and epoch, the early-stopping counter, the per-epoch history and the best weights. Everything
but the weights goes into the checkpoint's JSON (`meta` / `from_meta`), so a resumed run continues
with exactly the state an uninterrupted one would have. Torch-free.

Callbacks: `Trainer(config, callbacks=[...])` calls ``callback.on_epoch_end(state)`` on every rank
after each epoch, once its checkpoint is written. A callback may read the state (``state.epoch``,
``state.record`` -- that epoch's metrics) and set ``state.stop = True`` to leave the loop after this
epoch: the best weights are still restored, and the checkpoint is not marked finished, so a re-run
with the same run key resumes. Under DDP a stop must be decided the same way on every rank (from
the epoch or the metrics, which every rank shares). A callback may also end the process (the
resume-after-kill test does, with ``os._exit``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

#: The keys of `LoopState` stored in the checkpoint's JSON (the best weights travel as tensors).
META_FIELDS = ("epoch", "lr", "finished", "best_monitor", "best_epoch", "bad_epochs", "history")


@dataclass
class LoopState:
    """What the loop carries from one epoch to the next (see the module docstring)."""

    lr: float
    epoch: int = 0  # the last finished epoch (0 before the first)
    best_monitor: float = -math.inf  # valid AUC (or -logloss, or -train loss): higher is better
    best_epoch: int = 0
    bad_epochs: int = 0  # epochs since the monitor last improved
    improved: bool = False  # whether the last finished epoch improved the monitor
    finished: bool = False  # the schedule ended (last epoch or early stop): a re-run only restores
    stop: bool = False  # leave the loop after this epoch (early stop, or a callback asked)
    resumed_from_epoch: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    best_weights: dict[str, Any] | None = field(default=None, repr=False)

    @property
    def record(self) -> dict[str, Any] | None:
        """The last finished epoch's line of the history (epoch, train_loss, valid_auc, ...)."""
        return self.history[-1] if self.history else None

    def meta(self) -> dict[str, Any]:
        """The JSON part of a checkpoint."""
        return {name: getattr(self, name) for name in META_FIELDS}

    @classmethod
    def from_meta(cls, meta: dict[str, Any], best_weights: dict[str, Any] | None) -> LoopState:
        """The state a checkpoint was written in, ready to continue after its epoch."""
        return cls(
            lr=float(meta["lr"]),
            epoch=int(meta["epoch"]),
            best_monitor=float(meta["best_monitor"]),
            best_epoch=int(meta["best_epoch"]),
            bad_epochs=int(meta["bad_epochs"]),
            finished=bool(meta["finished"]),
            resumed_from_epoch=int(meta["epoch"]),
            history=list(meta["history"]),
            best_weights=best_weights,
        )


class Callback:
    """Base of trainer callbacks: override the hooks you need (any object with the methods works)."""

    def on_epoch_end(self, state: LoopState) -> None:
        """After each epoch, once its checkpoint is written; set ``state.stop = True`` to stop."""
