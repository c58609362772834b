"""The training loop every torch model plugin shares, in named steps (after FuxiCTR's `BaseModel`).

``Trainer.fit`` = `_prepare` (checks, run key, optimisers, GradScaler, DDP wrap) -> `_resume` (the
checkpoint of the same run, if any) -> per epoch: `train_epoch` (one `train_step` per mini-batch),
`evaluate` (validation AUC/logloss), `_end_epoch` (monitor, early stopping, plateau lr decay, the
history line), `_save_checkpoint`, the callbacks' ``on_epoch_end`` -> `_finish` (best weights back,
summary). The loop's bookkeeping between epochs is a `LoopState` (`ctr_dagster.training.state`).

`train_epoch`: a (seed, epoch)-determined permutation of the train rows and mini-batches sliced from
tensors converted once (`batching`). `train_step`: forward under autocast on CUDA (bf16, or fp16
with a GradScaler), loss (the plugin's, default BCE on logits, plus any ``aux_loss`` the module
returns, plus the distillation term below, plus the mini-batch-aware L2 on the embedding rows present
in the batch when `mba_l2` > 0, `regularization`), backward, global-norm gradient clipping, Adam step.
Optimisers and schedules (plateau / cosine / constant; sparse lazy Adam for large embedding tables on
CPU) are in `optim`.

Early stopping: the monitor is the validation AUC (-logloss when the valid split has one class,
-train loss without a valid split); after `patience` epochs without a better one the loop stops, and
at the end the best epoch's weights are restored.

Checkpoint/resume: after every epoch the full loop state (model, best-so-far weights, optimizers,
learning rate, scaler, torch RNG, epoch, history) is written to ``<workdir>/checkpoints/last.pt``
(`checkpoint`) under a *run key* -- a hash of the config, the feature spec, the seed, the world size,
the warm-start source, the plugin's and trainer's source code and the data itself. A new run with
the same key continues after the last finished epoch (a run that had already finished restores its
best weights without training again); any other key starts afresh and overwrites the checkpoint.
Because the permutation and the dropout RNG are derived from (seed, epoch) and every other piece of
state is restored, a run killed after epoch k and re-run ends with bit-identical weights (on CPU) to
one that was never interrupted.

Distillation: with ``distillation=DistillationWeights(label_weight=a, teacher_weight=b,
temperature=T)`` (defaults 1, 1, 2; `ctr_dagster.training.config`) and a ``teacher_logit`` tensor
aligned with the train rows, the loss is ``a * loss(z, y) + b * T^2 * BCE(sigmoid(z / T),
sigmoid(z_t / T))`` -- the binary form of Hinton et al.'s soft-target loss (arXiv 1503.02531); T^2
keeps the soft term's gradient scale independent of T.

Non-finite loss: training stops at once with `NonFiniteLossError` naming the epoch and batch; the
caller (the engine's `train_and_store`) then records the failure and never stores an artifact.

Callbacks: ``Trainer(config, callbacks=[...])``; see `ctr_dagster.training.state.Callback` (e.g. a
test ends the process after epoch k's checkpoint to test resume-after-kill).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ctr_dagster.metrics import auc
from ctr_dagster.training import checkpoint, ddp, optim
from ctr_dagster.training.batching import batches, epoch_order, take
from ctr_dagster.training.config import DistillationWeights, TrainerConfig, eval_rows
from ctr_dagster.training.device import amp_dtype
from ctr_dagster.training.state import Callback, LoopState

if TYPE_CHECKING:
    import torch

LossFn = Callable[["torch.Tensor", dict[str, "torch.Tensor"]], "torch.Tensor"]


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite; the run is stopped and nothing is stored."""

    def __init__(self, epoch: int, batch: int, value: float):
        self.epoch, self.batch, self.value = epoch, batch, value
        super().__init__(
            f"non-finite training loss ({value}) at epoch {epoch}, batch {batch}: training stopped "
            "(lower the learning rate, check the inputs, or enable gradient clipping); "
            "the previously stored model is kept"
        )


@dataclass
class TrainSummary:
    """What the loop did, for logs, the artifact's model.json and the asset metadata."""

    run_key: str = ""
    device: str = "cpu"
    amp: str | None = None
    world_size: int = 1
    epochs_run: int = 0
    best_epoch: int = 0
    best_valid_auc: float | None = None
    best_valid_logloss: float | None = None
    resumed_from_epoch: int = 0
    samples_per_s: float = 0.0
    train_seconds: float = 0.0
    rank_weight_spread: float = 0.0
    history: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class EpochStats:
    """One epoch's training pass: mean loss, rows trained (all ranks) and wall seconds."""

    train_loss: float
    rows: int
    seconds: float


def freeze_norm_statistics(module: torch.nn.Module) -> None:
    """Put every batch-norm layer in eval mode (running statistics used and kept, not updated).

    Why: a warm start fine-tunes on the new days only, and batch norm in training mode replaces the
    running statistics of the whole window by those of the newest rows (momentum 0.1, ~50 batches).
    On `small`, one epoch at lr 1e-9 -- no weight change -- dropped TIN's valid AUC from 0.824 to
    0.785 through its pooled/head BatchNorm alone. The affine weights still train."""
    from torch import nn

    for layer in module.modules():
        if isinstance(layer, nn.modules.batchnorm._BatchNorm):
            layer.eval()


@dataclass
class TrainingRun:
    """The fixed pieces of one `fit`, set up once by `Trainer._prepare` and used by every step."""

    module: torch.nn.Module
    wrapped: torch.nn.Module  # the DDP wrapper under torchrun, else the module itself
    train: dict[str, torch.Tensor]
    valid: dict[str, torch.Tensor]
    ctx: Any
    env: ddp.DistEnv
    device: torch.device
    amp: Any  # autocast dtype on CUDA, else None
    seed: int
    rows: int  # train rows
    batch_rows: int  # global batch (divisible by the world size)
    steps: int  # batches per epoch
    params: list[Any]
    optimizers: list[Any]
    scaler: Any
    distillation: DistillationWeights | None
    regularizer: Any  # MiniBatchAwareL2 when mba_l2 > 0, else None
    ckpt_dir: Path | None
    summary: TrainSummary
    rows_seen: int = 0  # all epochs of this process's run, for the throughput
    train_seconds: float = 0.0
    started: float = field(default_factory=time.perf_counter)
    #: The module holds a previous model's weights: fine-tuned with batch-norm statistics frozen.
    warm_start: bool = False

    @property
    def on_device(self) -> bool:
        return self.device.type != "cpu"

    def autocast(self) -> Any:
        import torch

        return torch.autocast(device_type="cuda", dtype=self.amp) if self.amp is not None else nullcontext()


def bce_loss(logits: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    import torch.nn.functional as F

    return F.binary_cross_entropy_with_logits(logits, batch["label"])


def distillation_loss(logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """T^2 * BCE(sigmoid(z/T), sigmoid(z_t/T)): the binary soft-target term."""
    import torch
    import torch.nn.functional as F

    t = float(temperature)
    return t * t * F.binary_cross_entropy_with_logits(logits / t, torch.sigmoid(teacher_logits / t))


def logloss_from_logits(labels: np.ndarray, logits: np.ndarray) -> float | None:
    """Mean binary cross-entropy computed stably from logits."""
    if len(labels) == 0:
        return None
    z = np.asarray(logits, dtype=np.float64)
    return float(np.mean(np.logaddexp(0.0, z) - labels * z))


def data_digest(*parts: dict[str, torch.Tensor]) -> str:
    """A content hash of tensor dicts (the data part of the run key)."""
    digest = hashlib.sha256()
    for part in parts:
        for key in sorted(part):
            tensor = part[key].detach().cpu().contiguous()
            digest.update(f"{key}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
            digest.update(tensor.numpy().reshape(-1).view(np.uint8))  # the buffer itself, no copy
    return digest.hexdigest()


def run_key(config: TrainerConfig, extra: dict[str, Any]) -> str:
    """Hash of everything that determines the result (config fields + spec, seed, data, ...)."""
    document = json.dumps({"config": asdict(config), **extra}, sort_keys=True, default=str)
    return hashlib.blake2b(document.encode(), digest_size=16).hexdigest()


def training_threads(explicit: int) -> int | None:
    """torch's intra-op threads for one training process: the config's `num_threads` when > 0, else
    the step's share (`ctr_dagster.threads`, set by the asset glue) split over the DDP processes of
    this machine, else None (torch's own default: nothing is known about other steps)."""
    from ctr_dagster.threads import step_thread_budget

    if explicit > 0:
        return explicit
    budget = step_thread_budget()
    if budget is None:
        return None
    local = int(os.environ.get("LOCAL_WORLD_SIZE", "0") or 0) or ddp.env_world_size()
    return max(1, budget // max(1, local))


def _logits_and_aux(output: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A module returns logits (B,), or a dict with "logit" and optionally "aux_loss"."""
    if isinstance(output, dict):
        return output["logit"], output.get("aux_loss")
    return output, None


def _clone_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _check_inputs(train: dict[str, torch.Tensor], distillation: DistillationWeights | None) -> int:
    """The number of train rows; ValueError when the tensors cannot be trained on."""
    if "label" not in train:
        raise ValueError("the train tensors must hold 'label'")
    if distillation is not None and "teacher_logit" not in train:
        raise ValueError("distillation needs the 'teacher_logit' tensor aligned with the train rows")
    if len(train["label"]) == 0:
        raise ValueError("no training rows")
    return len(train["label"])


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


class Trainer:
    """Trains one module on pre-converted tensor dicts. See the module docstring for the steps."""

    def __init__(
        self,
        config: TrainerConfig,
        loss_fn: LossFn | None = None,
        callbacks: Sequence[Callback] = (),
    ):
        self.config = config
        self.loss_fn = loss_fn or bce_loss
        self.callbacks = list(callbacks)
        self._sparse_tables: list[Any] = []

    # -- fit: the steps in order --------------------------------------------------------------------
    def fit(
        self,
        module: torch.nn.Module,
        train: dict[str, torch.Tensor],
        valid: dict[str, torch.Tensor],
        ctx: Any,
        *,
        key_extra: dict[str, Any] | None = None,
        distillation: DistillationWeights | None = None,
        warm_start: bool = False,
        regularizer_rows: dict[str, torch.Tensor] | None = None,
    ) -> TrainSummary:
        """Train `module` in place on `train` (must hold "label"), early-stopping on `valid`.

        `ctx` is the plugin's FitContext (seed, device, workdir, log). `key_extra` adds to the run key
        (e.g. the feature spec); `distillation` enables the soft-target term (needs "teacher_logit").
        `warm_start`: the module holds a previous model's weights; they are scored on `valid` first
        and kept (best epoch 0) unless a fine-tuning epoch beats them (`_warm_baseline`).
        `regularizer_rows`: the rows whose ids give the mini-batch-aware L2's n_j (default `train`). A
        warm start fine-tunes on the new rows only but passes the whole window here: with the new
        rows' own counts (about 1/12 of the window's for one new day in 13) every id's penalty would
        be that much stronger against the data term than in the full training it continues.
        """
        import torch

        if distillation is not None and not isinstance(distillation, DistillationWeights):
            raise TypeError(f"distillation must be a DistillationWeights, got {type(distillation).__name__}")
        seed = int(ctx.seed)
        random.seed(seed)  # for plugin code that draws from the global generators
        np.random.seed(seed % 2**32)
        threads = torch.get_num_threads()
        wanted = training_threads(self.config.num_threads)
        if wanted:
            torch.set_num_threads(wanted)
        env, device = ddp.setup(torch.device(getattr(ctx, "device", None) or "cpu"))
        self._sparse_tables = []
        try:
            run = self._prepare(
                module, train, valid, ctx, env, device, seed, key_extra, distillation, regularizer_rows
            )
            run.warm_start = warm_start
            state = self._resume(run)
            self._log_start(run)
            if warm_start and state.epoch == 0 and not state.finished:
                self._warm_baseline(run, state)
            if not state.finished:
                for epoch in range(state.epoch + 1, self.config.epochs + 1):
                    stats = self.train_epoch(run, state, epoch)
                    valid_auc, valid_logloss = self.evaluate(run, epoch)
                    self._end_epoch(run, state, epoch, stats, valid_auc, valid_logloss)
                    self._save_checkpoint(run, state)
                    ddp.barrier(env)
                    for callback in self.callbacks:
                        callback.on_epoch_end(state)
                    if state.stop:
                        break
            return self._finish(run, state)
        finally:
            for table in self._sparse_tables:  # back to dense gradients, also after an error
                table.sparse = False
            ddp.teardown(env)
            torch.set_num_threads(threads)

    # -- setup --------------------------------------------------------------------------------------
    def _prepare(
        self,
        module: torch.nn.Module,
        train: dict[str, torch.Tensor],
        valid: dict[str, torch.Tensor],
        ctx: Any,
        env: ddp.DistEnv,
        device: torch.device,
        seed: int,
        key_extra: dict[str, Any] | None,
        distillation: DistillationWeights | None,
        regularizer_rows: dict[str, torch.Tensor] | None = None,
    ) -> TrainingRun:
        """Check the inputs, compute the run key, place the data, build optimisers, scaler and DDP."""
        import torch

        cfg = self.config
        n = _check_inputs(train, distillation)
        amp = amp_dtype(device, cfg.amp)
        module.to(device)
        summary = TrainSummary(
            device=str(device),
            amp=str(amp).removeprefix("torch.") if amp else None,
            world_size=env.world_size,
        )
        extra = {"seed": seed, "world_size": env.world_size, "module": type(module).__qualname__}
        extra["data"] = data_digest(train, valid)
        extra["distillation"] = distillation.as_dict() if distillation is not None else None
        summary.run_key = run_key(cfg, {**extra, **(key_extra or {})})
        regularizer = None
        if cfg.mba_l2 > 0:  # n_j over the whole train split, before it moves to the device
            from ctr_dagster.training.regularization import MiniBatchAwareL2

            counted = train if regularizer_rows is None else regularizer_rows
            regularizer = MiniBatchAwareL2.from_train(module, counted, cfg.mba_l2)
        if device.type != "cpu":
            bytes_total = sum(v.numel() * v.element_size() for v in train.values())
            if bytes_total < 2 * 1024**3:  # small enough: keep the whole split on the GPU
                train = {k: v.to(device) for k, v in train.items()}
        params, optimizers = self._setup_optimizers(module, device, env)
        wrapped: torch.nn.Module = module
        if env.active:
            from torch.nn.parallel import DistributedDataParallel

            wrapped = DistributedDataParallel(
                module, device_ids=[device.index] if device.type == "cuda" else None
            )
        batch_rows = max(1, cfg.batch_size // env.world_size) * env.world_size
        workdir = getattr(ctx, "workdir", None)
        return TrainingRun(
            module=module,
            wrapped=wrapped,
            train=train,
            valid=valid,
            ctx=ctx,
            env=env,
            device=device,
            amp=amp,
            seed=seed,
            rows=n,
            batch_rows=batch_rows,
            steps=math.ceil(n / batch_rows),
            params=params,
            optimizers=optimizers,
            scaler=torch.amp.GradScaler("cuda", enabled=amp == torch.float16),
            distillation=distillation,
            regularizer=regularizer,
            ckpt_dir=Path(workdir) / "checkpoints" if workdir else None,
            summary=summary,
        )

    def _setup_optimizers(
        self, module: torch.nn.Module, device: torch.device, env: ddp.DistEnv
    ) -> tuple[list[Any], list[Any]]:
        """(trainable params, optimisers): sparse lazy Adam for big tables on single-process CPU."""
        params = [p for p in module.parameters() if p.requires_grad]
        if self.config.sparse_embeddings and device.type == "cpu" and not env.active:
            self._sparse_tables = optim.sparse_embeddings(module)
        tables = optim.embedding_weights(module)
        return params, optim.make_optimizers(params, self._sparse_tables, self.config, no_decay=tables)

    def _resume(self, run: TrainingRun) -> LoopState:
        """The state to start from: the checkpoint's when it belongs to this run key, else a fresh one."""
        state = LoopState(lr=self.config.lr)
        if run.ckpt_dir is None:
            return state
        loaded = checkpoint.load(run.ckpt_dir)
        if loaded is None:
            return state
        saved, meta = loaded
        if meta.get("run_key") != run.summary.run_key:
            self._log(run, f"ignoring the checkpoint in {run.ckpt_dir}: it belongs to another run")
            return state
        run.module.load_state_dict(saved["model"])
        for opt, opt_state in zip(run.optimizers, saved["optimizers"], strict=True):
            opt.load_state_dict(opt_state)
        state = LoopState.from_meta(meta, saved["best"])
        optim.set_lr(run.optimizers, state.lr)
        if saved.get("scaler"):
            run.scaler.load_state_dict(saved["scaler"])
        self._log(
            run,
            f"resuming from the checkpoint of epoch {state.epoch} in {run.ckpt_dir}"
            + (" (run already finished: restoring its best weights)" if state.finished else ""),
        )
        return state

    # -- one epoch ----------------------------------------------------------------------------------
    def train_epoch(self, run: TrainingRun, state: LoopState, epoch: int) -> EpochStats:
        """One pass over the train rows in the (seed, epoch) order; the cosine lr moves per batch."""
        import torch

        cfg, env = self.config, run.env
        torch.manual_seed(run.seed * 100_003 + epoch)  # dropout etc.: a function of (seed, epoch) only
        order = epoch_order(run.rows, run.seed, epoch)
        run.wrapped.train()
        if run.warm_start:
            freeze_norm_statistics(run.wrapped)
        cosine = cfg.lr_schedule == "cosine"
        loss_sum, count = 0.0, 0
        started = time.perf_counter()
        for b, part in enumerate(batches(run.rows, run.batch_rows), start=1):
            rows = ddp.shard(order[part], env)
            if env.active and part.stop - part.start < env.world_size:
                break  # a last global batch too small to give every rank a row
            batch = take(run.train, torch.from_numpy(rows).to(run.train["label"].device))
            if run.on_device:
                batch = {k: v.to(run.device, non_blocking=True) for k, v in batch.items()}
            if cosine:  # per batch, a function of the global step only
                state.lr = optim.cosine_lr(cfg, epoch, b, run.steps)
                optim.set_lr(run.optimizers, state.lr)
            value = self.train_step(run, batch, epoch, b)
            loss_sum += value * len(rows)
            count += len(rows)
            if cfg.log_every and b % cfg.log_every == 0:
                rate = count * env.world_size / max(time.perf_counter() - started, 1e-9)
                self._log(
                    run,
                    f"epoch {epoch} batch {b}/{run.steps}: loss {loss_sum / count:.4f}, {rate:,.0f} samples/s",
                )
        seconds = time.perf_counter() - started
        seen = count * env.world_size
        run.rows_seen += seen
        run.train_seconds += seconds
        return EpochStats(loss_sum / max(count, 1), seen, seconds)

    def train_step(self, run: TrainingRun, batch: dict[str, torch.Tensor], epoch: int, b: int) -> float:
        """Forward, loss, backward, clip, optimiser step on one batch; returns the loss (mean over ranks).

        Raises `NonFiniteLossError` (naming epoch and batch `b`) before any weight moves.
        """
        with run.autocast():
            logits, aux = _logits_and_aux(run.wrapped(batch))
        logits = logits.float()
        loss = self.loss_fn(logits, batch)
        if run.distillation is not None:
            d = run.distillation
            soft = distillation_loss(logits, batch["teacher_logit"], d.temperature)
            loss = d.label_weight * loss + d.teacher_weight * soft
        if aux is not None:
            loss = loss + aux.float()
        if run.regularizer is not None:  # DIN's mini-batch-aware L2: rows present in this batch only
            loss = loss + run.regularizer(batch)
        value = float(ddp.all_mean(loss.detach(), run.env))
        if not math.isfinite(value):
            raise NonFiniteLossError(epoch, b, value)
        for opt in run.optimizers:
            opt.zero_grad(set_to_none=True)
        run.scaler.scale(loss).backward()
        if self.config.grad_clip_norm > 0:
            for opt in run.optimizers:
                run.scaler.unscale_(opt)
            optim.clip_grad_norm(run.params, self.config.grad_clip_norm)
        for opt in run.optimizers:
            run.scaler.step(opt)
        run.scaler.update()
        return value

    def evaluate(self, run: TrainingRun, epoch: int) -> tuple[float | None, float | None]:
        """(valid AUC, valid logloss): computed on rank 0, shared with every rank; None without them."""
        valid_auc, valid_logloss = (None, None)
        if run.env.is_main:
            valid_auc, valid_logloss = self.validation_metrics(run.module, run.valid, run.device, run.amp)
        packed = ddp.broadcast_floats(
            [math.nan if v is None else v for v in (valid_auc, valid_logloss)], run.env, run.device
        )
        valid_auc, valid_logloss = (None if math.isnan(v) else v for v in packed)
        if valid_logloss is not None and not math.isfinite(valid_logloss):
            raise NonFiniteLossError(epoch, 0, valid_logloss)
        return valid_auc, valid_logloss

    def validation_metrics(
        self, module: torch.nn.Module, valid: dict[str, torch.Tensor], device: Any, amp: Any
    ) -> tuple[float | None, float | None]:
        """(AUC, logloss) of `module` on `valid` in this process; (nan, nan) for non-finite logits."""
        if not valid or len(valid["label"]) == 0:
            return None, None
        features = {k: v for k, v in valid.items() if k not in ("label", "teacher_logit")}
        logits = self.predict_logits(module, features, device, amp)
        if not np.all(np.isfinite(logits)):
            return float("nan"), float("nan")
        y = valid["label"].numpy().astype(np.float64)
        return auc(y, logits), logloss_from_logits(y, logits)

    def _warm_baseline(self, run: TrainingRun, state: LoopState) -> None:
        """Epoch 0 of a warm start: the starting weights' validation score is the one to beat.

        Why: fine-tuning a previous model on a few new days can only be judged against where it
        started; without this, early stopping picks the best *fine-tuned* epoch even when every epoch
        is worse than the warm-started weights (on `small`, TIN's nightly warm start lost 0.05 valid
        AUC that way). Without a validation score there is nothing to compare: no baseline."""
        valid_auc, valid_logloss = self.evaluate(run, 0)
        monitor = (
            valid_auc if valid_auc is not None else (-valid_logloss if valid_logloss is not None else None)
        )
        if monitor is None:
            return
        state.best_monitor, state.best_epoch = monitor, 0
        state.best_weights = _clone_state(run.module)
        run.summary.best_valid_auc, run.summary.best_valid_logloss = valid_auc, valid_logloss
        self._log(
            run,
            f"warm start: valid AUC {_fmt(valid_auc)} before fine-tuning; kept unless an epoch beats it",
        )

    def _end_epoch(
        self,
        run: TrainingRun,
        state: LoopState,
        epoch: int,
        stats: EpochStats,
        valid_auc: float | None,
        valid_logloss: float | None,
    ) -> None:
        """Monitor, best weights, early stopping, plateau lr decay and the epoch's history line."""
        cfg = self.config
        # Monitor: valid AUC; -logloss when the valid split has one class; -train loss without it.
        if valid_auc is not None:
            monitor = valid_auc
        elif valid_logloss is not None:
            monitor = -valid_logloss
        else:
            monitor = -stats.train_loss
        epoch_lr = run.optimizers[0].param_groups[0]["lr"]
        state.epoch, state.improved = epoch, monitor > state.best_monitor
        if state.improved:
            state.best_monitor, state.bad_epochs, state.best_epoch = monitor, 0, epoch
            state.best_weights = _clone_state(run.module)
        else:
            state.bad_epochs += 1
            if cfg.lr_schedule == "plateau":  # FuxiCTR: decay after each bad epoch
                state.lr = optim.plateau_lr(cfg, state.lr)
                optim.set_lr(run.optimizers, state.lr)
        state.history.append(
            {
                "epoch": epoch,
                "train_loss": stats.train_loss,
                "valid_auc": valid_auc,
                "valid_logloss": valid_logloss,
                "lr": epoch_lr,
                "samples_per_s": stats.rows / max(stats.seconds, 1e-9),
                "seconds": stats.seconds,
            }
        )
        early = cfg.patience > 0 and state.bad_epochs >= cfg.patience
        state.stop = early
        state.finished = early or epoch == cfg.epochs
        self._log(
            run,
            f"epoch {epoch}/{cfg.epochs}: train loss {stats.train_loss:.4f}, valid AUC {_fmt(valid_auc)}, "
            f"logloss {_fmt(valid_logloss)}, lr {epoch_lr:.2e}, "
            f"{state.history[-1]['samples_per_s']:,.0f} samples/s, {stats.seconds:.1f} s"
            + (" *" if state.improved else "")
            + (f" -- early stop (no better valid AUC for {state.bad_epochs} epochs)" if early else ""),
        )

    def _save_checkpoint(self, run: TrainingRun, state: LoopState) -> None:
        """The full loop state after this epoch (rank 0 only; atomic replace of ``last.pt``)."""
        import torch

        if run.ckpt_dir is None or not run.env.is_main:
            return
        tensors = {
            "model": run.module.state_dict(),
            "best": state.best_weights,
            "optimizers": [opt.state_dict() for opt in run.optimizers],
            "scaler": run.scaler.state_dict() if run.scaler.is_enabled() else {},
            "torch_rng": torch.get_rng_state(),
        }
        checkpoint.save(run.ckpt_dir, tensors, {"run_key": run.summary.run_key, **state.meta()})

    # -- the end ------------------------------------------------------------------------------------
    def _finish(self, run: TrainingRun, state: LoopState) -> TrainSummary:
        """Restore the best epoch's weights, check DDP ranks agree, fill and log the summary."""
        module, summary = run.module, run.summary
        if state.best_weights is not None:
            module.load_state_dict(state.best_weights)
        module.eval()
        summary.history = state.history
        summary.best_epoch = state.best_epoch
        summary.resumed_from_epoch = state.resumed_from_epoch
        summary.epochs_run = len(state.history)
        best = next((r for r in state.history if r["epoch"] == state.best_epoch), None)
        if best is None and state.best_epoch == 0 and state.best_weights is not None:
            self._log(run, "warm start: no fine-tuning epoch beat the starting weights; kept them")
        if best is not None:
            summary.best_valid_auc, summary.best_valid_logloss = best["valid_auc"], best["valid_logloss"]
        summary.train_seconds = run.train_seconds
        summary.samples_per_s = run.rows_seen / run.train_seconds if run.train_seconds > 0 else 0.0
        summary.rank_weight_spread = ddp.weight_spread(module, run.env, run.device)
        scale = max(1.0, sum(float(p.detach().abs().sum()) for p in module.parameters()))
        if summary.rank_weight_spread > 1e-6 * scale:
            raise RuntimeError(
                f"DDP ranks ended with different weights (checksum spread {summary.rank_weight_spread})"
            )
        self._log(
            run,
            f"done: best epoch {summary.best_epoch} (valid AUC {_fmt(summary.best_valid_auc)}), "
            f"{summary.epochs_run} epochs, {summary.samples_per_s:,.0f} samples/s, "
            f"{time.perf_counter() - run.started:.1f} s",
        )
        return summary

    # -- helpers ------------------------------------------------------------------------------------
    def _log(self, run: TrainingRun, message: str) -> None:
        if run.env.is_main:
            run.ctx.log(message)

    def _log_start(self, run: TrainingRun) -> None:
        env = run.env
        self._log(
            run,
            f"training on {run.device}{f' with AMP {run.summary.amp}' if run.amp else ''}"
            f"{f', DDP x{env.world_size}' if env.active else ''}: {run.rows} rows, "
            f"{run.steps} batches of {run.batch_rows}/epoch, up to {self.config.epochs} epochs",
        )

    def predict_logits(
        self, module: torch.nn.Module, data: dict[str, torch.Tensor], device: Any, amp: Any = None
    ) -> np.ndarray:
        """Logits of every row of `data` (eval mode, no grad), as float64 numpy."""
        import torch

        module.eval()
        n = len(next(iter(data.values())))
        out = []
        autocast = torch.autocast(device_type="cuda", dtype=amp) if amp is not None else nullcontext()
        with torch.inference_mode(), autocast:
            for part in batches(n, eval_rows(self.config, torch.device(device).type)):
                batch = {k: v[part].to(device, non_blocking=True) for k, v in data.items()}
                logits, _ = _logits_and_aux(module(batch))
                out.append(logits.float().cpu().numpy())
        return np.concatenate(out).astype(np.float64) if out else np.zeros(0)
