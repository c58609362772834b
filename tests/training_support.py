"""A minimal torch plugin on the engine trainer, and a script entry for subprocess tests.

`TinyTorchModel` embeds the target item/category and mean-pools the history, with a BatchNorm
(buffers) and dropout (RNG) so resume and DDP tests exercise every kind of state.

    python -m tests.training_support train WORKDIR OUT.npy [SEED] [--crash-after-epoch K]
        # fit on the kit table, save the test scores; with --crash-after-epoch the process dies
        # (os._exit, no cleanup) right after epoch K's checkpoint, like a killed job
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.compute as pc

from ctr_dagster.contracts import FitContext
from ctr_dagster.testing import make_training_table, training_cardinalities
from ctr_dagster.training.config import TrainerConfig
from ctr_dagster.training.plugin import TorchModel
from ctr_dagster.training.state import Callback, LoopState

#: The exit status of a run killed by `CrashAfterEpoch`.
CRASH_STATUS = 75


@dataclass
class TinyConfig(TrainerConfig):
    epochs: int = 4
    batch_size: int = 128
    lr: float = 3e-2
    patience: int = 0
    log_every: int = 0
    num_threads: int = 1
    max_seq_len: int | None = 8
    dropout: float = 0.2
    nan_after_batches: int = 0  # > 0: the module returns NaN logits after this many training batches


class TinyTorchModel(TorchModel):
    """Item/category embeddings + mean-pooled history + dense -> BN -> dropout -> linear."""

    name = "tiny_torch"
    task = "ctr"
    Config = TinyConfig
    requires = frozenset({"sequence"})

    def build_module(self, spec):
        import torch
        from torch import nn

        config = self.config

        class Net(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.item = nn.Embedding(spec.categorical["item_idx"], 8, padding_idx=0)
                self.cat = nn.Embedding(spec.categorical["category_idx"], 8, padding_idx=0)
                self.user = nn.Embedding(spec.categorical["user_idx"], 4, padding_idx=0)
                width = 16 + 16 + 4 + len(spec.dense)
                self.norm = nn.BatchNorm1d(width)
                self.drop = nn.Dropout(config.dropout)
                self.out = nn.Linear(width, 1)
                self.calls = 0

            def forward(self, batch):
                target = torch.cat([self.item(batch["item_idx"]), self.cat(batch["category_idx"])], 1)
                hist = torch.cat([self.item(batch["hist_item_idx"]), self.cat(batch["hist_category_idx"])], 2)
                mask = batch["hist_mask"].unsqueeze(2).float()
                pooled = (hist * mask).sum(1) / mask.sum(1).clamp(min=1)
                x = torch.cat([target, pooled * target, self.user(batch["user_idx"]), batch["dense"]], 1)
                logits = self.out(self.drop(self.norm(x))).squeeze(1)
                if self.training:
                    self.calls += 1
                    if config.nan_after_batches and self.calls > config.nan_after_batches:
                        return logits * float("nan")
                return logits

        return Net()


class CrashAfterEpoch(Callback):
    """Ends the process without any cleanup right after epoch `epoch`'s checkpoint (resume-after-kill test)."""

    def __init__(self, epoch: int):
        self.epoch = epoch

    def on_epoch_end(self, state: LoopState) -> None:
        if state.epoch == self.epoch:
            sys.stdout.flush()
            os._exit(CRASH_STATUS)


def kit_splits(n_rows: int = 3000, seed: int = 0):
    table = make_training_table(n_rows, seed)
    parts = {s: table.filter(pc.equal(table.column("split"), s)) for s in ("train", "valid", "test")}
    return table, parts


def fit_tiny(
    workdir: Path | None, seed: int = 0, log=lambda s: None, callbacks=(), **config
) -> TinyTorchModel:
    table, parts = kit_splits()
    model = TinyTorchModel(TinyConfig(**config))
    model.callbacks = list(callbacks)
    ctx = FitContext(seed=seed, workdir=workdir, cardinalities=training_cardinalities(table), log=log)
    return model.fit(parts["train"], parts["valid"], ctx)


def main(argv: list[str]) -> None:
    callbacks = []
    if "--crash-after-epoch" in argv:
        at = argv.index("--crash-after-epoch")
        callbacks.append(CrashAfterEpoch(int(argv[at + 1])))
        argv = argv[:at] + argv[at + 2 :]
    command, workdir, out = argv[0], Path(argv[1]), Path(argv[2])
    seed = int(argv[3]) if len(argv) > 3 else 0
    if command != "train":
        raise SystemExit(f"unknown command {command!r}")
    model = fit_tiny(workdir, seed, log=print, callbacks=callbacks)
    np.save(out, model.predict(kit_splits()[1]["test"]))


if __name__ == "__main__":
    main(sys.argv[1:])
