"""The training loop every torch model plugin shares.

Per epoch: a (seed, epoch)-determined permutation of the train rows, mini-batches sliced from
tensors converted once (`batching`), forward under autocast on CUDA (bf16, or fp16 with a
GradScaler), loss (the plugin's, default BCE on logits, plus any ``aux_loss`` the module returns,
plus the distillation term below), backward, global-norm gradient clipping, Adam step. Then the
validation AUC/logloss (rank 0), the learning-rate schedule, early stopping, a checkpoint and one
log line. At the end the best epoch's weights are restored.

Optimiser: Adam. On CPU in a single process the large embedding tables (>= `SPARSE_MIN_ROWS` rows)
get sparse gradients and a lazy Adam (`lazy_adam.LazyAdam`, the update of `torch.optim.SparseAdam`
/ TF's LazyAdam: only the rows a batch touches move), the other weights dense Adam (with
`weight_decay`); a dense Adam step over 100k-row tables would otherwise cost more than the forward
and backward passes. On CUDA and under DDP every weight gets dense Adam (NCCL has no sparse
all-reduce). `sparse_embeddings=False` forces dense Adam everywhere.

Checkpoint/resume: after every epoch the full loop state (model, best-so-far weights, optimizers,
learning rate, scaler, torch RNG, epoch, history) is written to ``<workdir>/checkpoints/last.pt``
(`checkpoint`) under a *run key* -- a hash of the config, the feature spec, the seed, the world size,
the warm-start source, the plugin's and trainer's source code and the data itself. A new run with
the same key continues after the last finished epoch (a run that had already finished restores its
best weights without training again); any other key starts afresh and overwrites the checkpoint.
Because the permutation and the dropout RNG are derived from (seed, epoch) and every other piece of
state is restored, a run killed after epoch k and re-run ends with bit-identical weights (on CPU) to
one that was never interrupted.

Distillation: with ``distillation = {"label_weight": a, "teacher_weight": b, "temperature": T}`` and a
``teacher_logit`` tensor aligned with the train rows, the loss is
``a * loss(z, y) + b * T^2 * BCE(sigmoid(z / T), sigmoid(z_t / T))`` -- the binary form of Hinton et
al.'s soft-target loss (arXiv 1503.02531); T^2 keeps the soft term's gradient scale independent of T.

Non-finite loss: training stops at once with `NonFiniteLossError` naming the epoch and batch; the
caller (the engine's `train_and_store`) then records the failure and never stores an artifact.

Test hook: ``CTR_TRAINER_CRASH_AFTER_EPOCH=k`` makes the process ``os._exit`` right after epoch k's
checkpoint is written (a crash without any cleanup), to test resume-after-kill.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ctr_dagster.training import checkpoint, ddp
from ctr_dagster.training.batching import batches, epoch_order, take
from ctr_dagster.training.config import TrainerConfig
from ctr_dagster.training.device import amp_dtype

if TYPE_CHECKING:
    import torch

CRASH_ENV = "CTR_TRAINER_CRASH_AFTER_EPOCH"
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


def bce_loss(logits: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    import torch.nn.functional as F

    return F.binary_cross_entropy_with_logits(logits, batch["label"])


def distillation_loss(logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """T^2 * BCE(sigmoid(z/T), sigmoid(z_t/T)): the binary soft-target term."""
    import torch
    import torch.nn.functional as F

    t = float(temperature)
    return t * t * F.binary_cross_entropy_with_logits(logits / t, torch.sigmoid(teacher_logits / t))


def auc(labels: np.ndarray, scores: np.ndarray) -> float | None:
    """ROC AUC with tied scores given their average rank (Mann-Whitney U); None for one class.

    Vectorized numpy (no scikit-learn import in the training process); equals sklearn's roc_auc_score.
    """
    y = np.asarray(labels) > 0.5
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    _, inverse, counts = np.unique(
        np.asarray(scores, dtype=np.float64), return_inverse=True, return_counts=True
    )
    upper = np.cumsum(counts)
    average_rank = upper - (counts - 1) / 2.0  # 1-based average rank of each distinct score
    rank_sum = float(average_rank[inverse][y].sum())
    return (rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)


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
            digest.update(tensor.numpy().tobytes())
    return digest.hexdigest()


def run_key(config: TrainerConfig, extra: dict[str, Any]) -> str:
    """Hash of everything that determines the result (config fields + spec, seed, data, ...)."""
    document = json.dumps({"config": asdict(config), **extra}, sort_keys=True, default=str)
    return hashlib.blake2b(document.encode(), digest_size=16).hexdigest()


def _logits_and_aux(output: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A module returns logits (B,), or a dict with "logit" and optionally "aux_loss"."""
    if isinstance(output, dict):
        return output["logit"], output.get("aux_loss")
    return output, None


def _clone_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


#: Embedding tables with at least this many rows get sparse gradients + lazy Adam on CPU; smaller ones
#: (devices, hours, categories) stay dense: a sparse update's fixed cost exceeds a dense one there.
SPARSE_MIN_ROWS = 1000


def _sparse_embeddings(module: torch.nn.Module) -> list[Any]:
    """Switch the large trainable embedding tables to sparse gradients; returns them (to switch back)."""
    from torch import nn

    tables = [
        m
        for m in module.modules()
        if isinstance(m, nn.Embedding)
        and m.weight.requires_grad
        and m.max_norm is None
        and not m.sparse
        and m.num_embeddings >= SPARSE_MIN_ROWS
    ]
    for table in tables:
        table.sparse = True
    return tables


def clip_grad_norm(params: list[Any], max_norm: float) -> float:
    """Global-norm gradient clipping that also handles sparse gradients (coalesced in place)."""
    import torch

    squares = []
    for p in params:
        if p.grad is None:
            continue
        if p.grad.is_sparse:
            p.grad = p.grad.coalesce()
            squares.append(p.grad._values().float().pow(2).sum())
        else:
            squares.append(p.grad.float().pow(2).sum())
    if not squares:
        return 0.0
    total = float(torch.stack(squares).sum().sqrt())
    if math.isfinite(total) and total > max_norm:
        scale = max_norm / (total + 1e-6)
        for p in params:
            if p.grad is not None:
                if p.grad.is_sparse:
                    p.grad._values().mul_(scale)
                else:
                    p.grad.mul_(scale)
    return total


class Trainer:
    """Trains one module on pre-converted tensor dicts. See the module docstring for the loop."""

    def __init__(self, config: TrainerConfig, loss_fn: LossFn | None = None):
        self.config = config
        self.loss_fn = loss_fn or bce_loss

    # -- helpers ---------------------------------------------------------------------------------
    def _log(self, ctx: Any, env: ddp.DistEnv, message: str) -> None:
        if env.is_main:
            ctx.log(message)

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
            for part in batches(n, self.config.eval_batch_size):
                batch = {k: v[part].to(device, non_blocking=True) for k, v in data.items()}
                logits, _ = _logits_and_aux(module(batch))
                out.append(logits.float().cpu().numpy())
        return np.concatenate(out).astype(np.float64) if out else np.zeros(0)

    def _evaluate(
        self, module: torch.nn.Module, valid: dict[str, torch.Tensor], device: Any, amp: Any
    ) -> tuple[float | None, float | None]:
        if not valid or len(valid["label"]) == 0:
            return None, None
        features = {k: v for k, v in valid.items() if k not in ("label", "teacher_logit")}
        logits = self.predict_logits(module, features, device, amp)
        if not np.all(np.isfinite(logits)):
            return float("nan"), float("nan")
        y = valid["label"].numpy().astype(np.float64)
        return auc(y, logits), logloss_from_logits(y, logits)

    # -- the loop --------------------------------------------------------------------------------
    def fit(
        self,
        module: torch.nn.Module,
        train: dict[str, torch.Tensor],
        valid: dict[str, torch.Tensor],
        ctx: Any,
        *,
        key_extra: dict[str, Any] | None = None,
        distillation: dict[str, float] | None = None,
    ) -> TrainSummary:
        """Train `module` in place on `train` (must hold "label"), early-stopping on `valid`.

        `ctx` is the plugin's FitContext (seed, device, workdir, log). `key_extra` adds to the run key
        (e.g. the feature spec); `distillation` enables the soft-target term (needs "teacher_logit").
        """
        import torch

        cfg = self.config
        seed = int(ctx.seed)
        random.seed(seed)  # for plugin code that draws from the global generators
        np.random.seed(seed % 2**32)
        base_device = torch.device(getattr(ctx, "device", None) or "cpu")
        threads = torch.get_num_threads()
        if cfg.num_threads > 0:
            torch.set_num_threads(cfg.num_threads)
        env, device = ddp.setup(base_device)
        amp = amp_dtype(device, cfg.amp)
        self._sparse_tables: list[Any] = []
        try:
            return self._fit(module, train, valid, ctx, env, device, amp, seed, key_extra, distillation)
        finally:
            for table in self._sparse_tables:  # back to dense gradients, also after an error
                table.sparse = False
            ddp.teardown(env)
            torch.set_num_threads(threads)

    def _fit(
        self,
        module: torch.nn.Module,
        train: dict[str, torch.Tensor],
        valid: dict[str, torch.Tensor],
        ctx: Any,
        env: ddp.DistEnv,
        device: torch.device,
        amp: Any,
        seed: int,
        key_extra: dict[str, Any] | None,
        distillation: dict[str, float] | None,
    ) -> TrainSummary:
        import torch

        cfg = self.config
        if "label" not in train:
            raise ValueError("the train tensors must hold 'label'")
        if distillation is not None and "teacher_logit" not in train:
            raise ValueError("distillation needs the 'teacher_logit' tensor aligned with the train rows")
        n = len(train["label"])
        if n == 0:
            raise ValueError("no training rows")
        module.to(device)
        summary = TrainSummary(
            device=str(device),
            amp=str(amp).removeprefix("torch.") if amp else None,
            world_size=env.world_size,
        )
        summary.run_key = run_key(
            cfg,
            {
                "seed": seed,
                "world_size": env.world_size,
                "module": type(module).__qualname__,
                "data": data_digest(train, valid),
                "distillation": distillation,
                **(key_extra or {}),
            },
        )
        on_device = device.type != "cpu"
        if on_device:
            bytes_total = sum(v.numel() * v.element_size() for v in train.values())
            if bytes_total < 2 * 1024**3:  # small enough: keep the whole split on the GPU
                train = {k: v.to(device) for k, v in train.items()}

        params = [p for p in module.parameters() if p.requires_grad]
        sparse_tables = (
            _sparse_embeddings(module)
            if cfg.sparse_embeddings and device.type == "cpu" and not env.active
            else []
        )
        self._sparse_tables = sparse_tables
        sparse_ids = {id(t.weight) for t in sparse_tables}
        optimizers = [
            torch.optim.Adam(
                [p for p in params if id(p) not in sparse_ids], lr=cfg.lr, weight_decay=cfg.weight_decay
            )
        ]
        if sparse_tables:
            from ctr_dagster.training.lazy_adam import LazyAdam

            optimizers.append(LazyAdam([t.weight for t in sparse_tables], lr=cfg.lr))
        per_rank = max(1, cfg.batch_size // env.world_size) * env.world_size  # global batch, divisible
        steps = math.ceil(n / per_rank)
        lr = cfg.lr

        def set_lr(value: float) -> None:
            for opt in optimizers:
                for group in opt.param_groups:
                    group["lr"] = value

        scaler = torch.amp.GradScaler("cuda", enabled=amp == torch.float16)
        wrapped: torch.nn.Module = module
        if env.active:
            from torch.nn.parallel import DistributedDataParallel

            wrapped = DistributedDataParallel(
                module, device_ids=[device.index] if device.type == "cuda" else None
            )

        workdir = Path(ctx.workdir) if getattr(ctx, "workdir", None) else None
        ckpt_dir = workdir / "checkpoints" if workdir is not None else None
        start_epoch, best_state, best_monitor, bad_epochs = 1, None, -math.inf, 0
        finished = False
        if ckpt_dir is not None:
            loaded = checkpoint.load(ckpt_dir)
            if loaded is not None and loaded[1].get("run_key") == summary.run_key:
                state, meta = loaded
                module.load_state_dict(state["model"])
                best_state = state["best"]
                for opt, opt_state in zip(optimizers, state["optimizers"], strict=True):
                    opt.load_state_dict(opt_state)
                lr = float(meta["lr"])
                set_lr(lr)
                if state.get("scaler"):
                    scaler.load_state_dict(state["scaler"])
                start_epoch = int(meta["epoch"]) + 1
                best_monitor = float(meta["best_monitor"])
                bad_epochs = int(meta["bad_epochs"])
                finished = bool(meta["finished"])
                summary.history = list(meta["history"])
                summary.best_epoch = int(meta["best_epoch"])
                summary.resumed_from_epoch = int(meta["epoch"])
                self._log(
                    ctx,
                    env,
                    f"resuming from the checkpoint of epoch {meta['epoch']} in {ckpt_dir}"
                    + (" (run already finished: restoring its best weights)" if finished else ""),
                )
            elif loaded is not None:
                self._log(ctx, env, f"ignoring the checkpoint in {ckpt_dir}: it belongs to another run")

        lw = tw = temperature = 0.0
        if distillation is not None:
            lw, tw = float(distillation["label_weight"]), float(distillation["teacher_weight"])
            temperature = float(distillation["temperature"])
            if temperature <= 0:
                raise ValueError(f"distillation temperature must be > 0, got {temperature}")

        autocast = (lambda: torch.autocast(device_type="cuda", dtype=amp)) if amp is not None else nullcontext
        started_all = time.perf_counter()
        seen_total, train_seconds = 0, 0.0
        self._log(
            ctx,
            env,
            f"training on {device}{f' with AMP {summary.amp}' if amp else ''}"
            f"{f', DDP x{env.world_size}' if env.active else ''}: {n} rows, "
            f"{steps} batches of {per_rank}/epoch, up to {cfg.epochs} epochs",
        )
        epoch = start_epoch - 1
        for epoch in range(start_epoch, cfg.epochs + 1):
            if finished:
                break
            torch.manual_seed(seed * 100_003 + epoch)  # dropout etc.: a function of (seed, epoch) only
            order = epoch_order(n, seed, epoch)
            wrapped.train()
            loss_sum, count = 0.0, 0
            epoch_start = time.perf_counter()
            for b, part in enumerate(batches(n, per_rank), start=1):
                rows = ddp.shard(order[part], env)
                if env.active and part.stop - part.start < env.world_size:
                    break  # a last global batch too small to give every rank a row
                index = torch.from_numpy(rows).to(train["label"].device)
                batch = take(train, index)
                if on_device:
                    batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
                with autocast():
                    logits, aux = _logits_and_aux(wrapped(batch))
                logits = logits.float()
                loss = self.loss_fn(logits, batch)
                if distillation is not None:
                    loss = lw * loss + tw * distillation_loss(logits, batch["teacher_logit"], temperature)
                if aux is not None:
                    loss = loss + aux.float()
                value = float(ddp.all_mean(loss.detach(), env))
                if not math.isfinite(value):
                    raise NonFiniteLossError(epoch, b, value)
                for opt in optimizers:
                    opt.zero_grad(set_to_none=True)
                if cfg.lr_schedule == "cosine":  # per batch, a function of the global step only
                    t = ((epoch - 1) * steps + b - 1) / max(1, cfg.epochs * steps)
                    lr = cfg.min_lr + (cfg.lr - cfg.min_lr) * 0.5 * (1 + math.cos(math.pi * t))
                    set_lr(lr)
                scaler.scale(loss).backward()
                if cfg.grad_clip_norm > 0:
                    for opt in optimizers:
                        scaler.unscale_(opt)
                    clip_grad_norm(params, cfg.grad_clip_norm)
                for opt in optimizers:
                    scaler.step(opt)
                scaler.update()
                loss_sum += value * len(rows)
                count += len(rows)
                if cfg.log_every and b % cfg.log_every == 0:
                    rate = count * env.world_size / max(time.perf_counter() - epoch_start, 1e-9)
                    self._log(
                        ctx,
                        env,
                        f"epoch {epoch} batch {b}/{steps}: loss {loss_sum / count:.4f}, {rate:,.0f} samples/s",
                    )
            seconds = time.perf_counter() - epoch_start
            seen = count * env.world_size
            seen_total += seen
            train_seconds += seconds
            train_loss = loss_sum / max(count, 1)

            valid_auc, valid_logloss = (None, None)
            if env.is_main:
                valid_auc, valid_logloss = self._evaluate(module, valid, device, amp)
            packed = ddp.broadcast_floats(
                [
                    math.nan if valid_auc is None else valid_auc,
                    math.nan if valid_logloss is None else valid_logloss,
                ],
                env,
                device,
            )
            valid_auc = None if math.isnan(packed[0]) else packed[0]
            valid_logloss = None if math.isnan(packed[1]) else packed[1]
            if valid_logloss is not None and not math.isfinite(valid_logloss):
                raise NonFiniteLossError(epoch, 0, valid_logloss)
            # Monitor: valid AUC; -logloss when the valid split has one class; -train loss without it.
            if valid_auc is not None:
                monitor = valid_auc
            elif valid_logloss is not None:
                monitor = -valid_logloss
            else:
                monitor = -train_loss
            epoch_lr = optimizers[0].param_groups[0]["lr"]
            improved = monitor > best_monitor
            if improved:
                best_monitor, bad_epochs = monitor, 0
                best_state = _clone_state(module)
                summary.best_epoch = epoch
            else:
                bad_epochs += 1
            if cfg.lr_schedule == "plateau" and not improved:  # FuxiCTR: decay after each bad epoch
                lr = max(lr * cfg.lr_decay, cfg.min_lr)
                set_lr(lr)
            record = {
                "epoch": epoch,
                "train_loss": train_loss,
                "valid_auc": valid_auc,
                "valid_logloss": valid_logloss,
                "lr": epoch_lr,
                "samples_per_s": seen / max(seconds, 1e-9),
                "seconds": seconds,
            }
            summary.history.append(record)
            stop = cfg.patience > 0 and bad_epochs >= cfg.patience
            finished = stop or epoch == cfg.epochs
            auc_text = "n/a" if valid_auc is None else f"{valid_auc:.4f}"
            ll_text = "n/a" if valid_logloss is None else f"{valid_logloss:.4f}"
            self._log(
                ctx,
                env,
                f"epoch {epoch}/{cfg.epochs}: train loss {train_loss:.4f}, valid AUC {auc_text}, "
                f"logloss {ll_text}, lr {epoch_lr:.2e}, {record['samples_per_s']:,.0f} samples/s, {seconds:.1f} s"
                + (" *" if improved else "")
                + (f" -- early stop (no better valid AUC for {bad_epochs} epochs)" if stop else ""),
            )
            if ckpt_dir is not None and env.is_main:
                checkpoint.save(
                    ckpt_dir,
                    {
                        "model": module.state_dict(),
                        "best": best_state,
                        "optimizers": [opt.state_dict() for opt in optimizers],
                        "scaler": scaler.state_dict() if scaler.is_enabled() else {},
                        "torch_rng": torch.get_rng_state(),
                    },
                    {
                        "run_key": summary.run_key,
                        "epoch": epoch,
                        "lr": lr,
                        "finished": finished,
                        "best_monitor": best_monitor,
                        "best_epoch": summary.best_epoch,
                        "bad_epochs": bad_epochs,
                        "history": summary.history,
                    },
                )
            ddp.barrier(env)
            crash = os.environ.get(CRASH_ENV)
            if crash and int(crash) == epoch and not finished:
                os._exit(75)  # test hook: die like a killed process, right after the checkpoint
            if stop:
                break

        if best_state is not None:
            module.load_state_dict(best_state)
        module.eval()
        summary.epochs_run = len(summary.history)
        best = next((r for r in summary.history if r["epoch"] == summary.best_epoch), None)
        if best is not None:
            summary.best_valid_auc, summary.best_valid_logloss = best["valid_auc"], best["valid_logloss"]
        summary.train_seconds = train_seconds
        summary.samples_per_s = seen_total / train_seconds if train_seconds > 0 else 0.0
        summary.rank_weight_spread = ddp.weight_spread(module, env, device)
        scale = max(1.0, sum(float(p.detach().abs().sum()) for p in module.parameters()))
        if summary.rank_weight_spread > 1e-6 * scale:
            raise RuntimeError(
                f"DDP ranks ended with different weights (checksum spread {summary.rank_weight_spread})"
            )
        self._log(
            ctx,
            env,
            f"done: best epoch {summary.best_epoch} (valid AUC "
            f"{'n/a' if summary.best_valid_auc is None else f'{summary.best_valid_auc:.4f}'}), "
            f"{summary.epochs_run} epochs, {summary.samples_per_s:,.0f} samples/s, "
            f"{time.perf_counter() - started_all:.1f} s",
        )
        return summary
