"""The engine's torch trainer: Arrow batching, device/AMP selection, training loop, checkpoints, DDP.

A torch model plugin subclasses `TorchModel` and writes only its `nn.Module` (plus `name`, `task`,
`Config`, `requires`); batching, the loop, early stopping, checkpoint/resume, safe persistence and
multi-GPU (torchrun/DDP) are done here, the same way for every deep model.

Nothing here imports torch when this package is imported: the Dagster code location imports plugin
modules (and so this package) at load time, and torch costs seconds. The names below are loaded on
first use; the torch-free ones (`FeatureSpec`, `TrainerConfig`, `TorchConfig`, `DistillationWeights`,
`LoopState`, `Callback`) can be imported by a plugin module at import time.

Modules: `spec` (FeatureSpec), `config` (TrainerConfig, DistillationWeights), `batching` (Arrow ->
tensors), `device` (CUDA/CPU, AMP), `checkpoint` (weights-only state files), `trainer` (Trainer: the
loop in named steps), `state` (LoopState, Callback), `optim` (Adam / lazy Adam, lr schedules,
clipping), `lazy_adam`, `regularization` (DIN's mini-batch-aware L2 on embedding tables), `ddp`
(torchrun process group, sharding), `plugin` (TorchModel), `launch` (`python -m
ctr_dagster.training.launch`: one model under torchrun, reporting through Dagster Pipes).
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "FeatureSpec": "ctr_dagster.training.spec",
    "TrainerConfig": "ctr_dagster.training.config",
    "TorchConfig": "ctr_dagster.training.config",
    "DistillationWeights": "ctr_dagster.training.config",
    "LoopState": "ctr_dagster.training.state",
    "Callback": "ctr_dagster.training.state",
    "BatchEncoder": "ctr_dagster.training.batching",
    "select_device": "ctr_dagster.training.device",
    "device_name": "ctr_dagster.training.device",
    "amp_dtype": "ctr_dagster.training.device",
    "Trainer": "ctr_dagster.training.trainer",
    "NonFiniteLossError": "ctr_dagster.training.trainer",
    "TrainSummary": "ctr_dagster.training.trainer",
    "TorchModel": "ctr_dagster.training.plugin",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'ctr_dagster.training' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
