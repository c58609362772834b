"""ECUP's compact training loop (why not the engine's trainer: see the `ctr_ecup.model` docstring).

Adam on shuffled mini-batches (a numpy generator seeded by `ctx.seed` orders them; torch's seed
initialises the weights), the two-stage entire-space loss on the observed arm, the validation loss
after every epoch, early stopping after `patience` epochs without improvement, the best epoch's
weights restored, a line per epoch through `ctx.log`. A non-finite loss stops the fit with an error
(a diverging model must fail its own run, never be saved). The fitted module ends on the CPU so that
predictions match those of a saved and reloaded copy bit for bit.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from ctr_ecup.features import FeatureEncoder
from ctr_ecup.network import chain_loss

if TYPE_CHECKING:
    from ctr_dagster.contracts import FitContext

    from ctr_ecup.model import EcupModel


def _binary(table: pa.Table, name: str, split: str) -> np.ndarray:
    column = table.column(name)
    if column.null_count:
        raise ValueError(f"ecup: column {name!r} of the {split} split has {column.null_count} null(s)")
    values = pc.cast(column, pa.float32()).to_numpy(zero_copy_only=False)
    if values.size and not np.isin(values, (0.0, 1.0)).all():
        raise ValueError(f"ecup: column {name!r} of the {split} split must be 0/1")
    return np.array(values, dtype=np.float32)  # a writable copy


def _treatment(table: pa.Table, split: str) -> np.ndarray:
    if "treatment" not in table.column_names:
        raise ValueError(f"ecup: the {split} split has no 'treatment' column (0 = control, 1..K = arms)")
    column = table.column("treatment")
    if not pa.types.is_integer(column.type):
        raise ValueError(f"ecup: column 'treatment' must be integers (0 = control), got {column.type}")
    if column.null_count:
        raise ValueError(f"ecup: column 'treatment' of the {split} split has {column.null_count} null(s)")
    arms = np.array(column.to_numpy(zero_copy_only=False), dtype=np.int64)
    if arms.size and arms.min() < 0:
        raise ValueError(f"ecup: column 'treatment' of the {split} split has negative arms")
    return arms


class _Split:
    """One split as tensors: categorical ids, numeric values, arm, click (label), conversion."""

    def __init__(self, table: pa.Table, encoder: FeatureEncoder, split: str, stages: tuple[str, ...]):
        if "label" not in table.column_names:
            raise ValueError(f"ecup: the {split} split has no 'label' column (the click / visit outcome)")
        cat, num = encoder.transform(table)
        self.cat = torch.from_numpy(cat)
        self.num = torch.from_numpy(num)
        self.arm = torch.from_numpy(_treatment(table, split))
        self.click = torch.from_numpy(_binary(table, "label", split))
        self.conversion = None
        if "conversion" in stages:
            if "conversion" not in table.column_names:
                raise ValueError(f"ecup: the train split has 'conversion' but the {split} split has not")
            self.conversion = torch.from_numpy(_binary(table, "conversion", split))

    def __len__(self) -> int:
        return int(self.arm.shape[0])

    def take(self, idx: torch.Tensor | slice, device: torch.device) -> tuple[Any, ...]:
        conv = None if self.conversion is None else self.conversion[idx].to(device)
        return (
            self.cat[idx].to(device),
            self.num[idx].to(device),
            self.arm[idx].to(device),
            self.click[idx].to(device),
            conv,
        )

    def keep(self, mask: np.ndarray) -> None:
        idx = torch.from_numpy(np.flatnonzero(mask))
        self.cat, self.num, self.arm, self.click = (
            t[idx] for t in (self.cat, self.num, self.arm, self.click)
        )
        if self.conversion is not None:
            self.conversion = self.conversion[idx]


def _loss(model: EcupModel, module: Any, batch: tuple[Any, ...]) -> tuple[torch.Tensor, float, float | None]:
    cat, num, arm, click, conv = batch
    click_loss, conv_loss = chain_loss(module(cat, num, arm), click, conv)
    total = model.config.click_weight * click_loss
    if conv_loss is not None:
        total = total + model.config.conversion_weight * conv_loss
    return total, float(click_loss.detach()), None if conv_loss is None else float(conv_loss.detach())


def _evaluate(
    model: EcupModel, module: Any, data: _Split, device: torch.device
) -> tuple[float, float, float | None]:
    """Row-weighted mean (total, click, conversion) losses over `data` (eval mode, no gradients)."""
    module.eval()
    totals = np.zeros(3)
    step = model.config.eval_batch_size
    with torch.no_grad():
        for start in range(0, len(data), step):
            batch = data.take(slice(start, start + step), device)
            n = int(batch[0].shape[0])
            total, click, conv = _loss(model, module, batch)
            totals += n * np.array([float(total), click, conv or 0.0])
    totals /= max(len(data), 1)
    return float(totals[0]), float(totals[1]), (float(totals[2]) if data.conversion is not None else None)


def _warm_from(model: EcupModel, ctx: FitContext) -> EcupModel | None:
    """The previous ECUP to continue from (`ctx.init_from`, the engine's nightly warm start) when it
    has the same arms, stages and network shape; else None, and the fit starts from scratch (said in
    the log). Its encoder is kept: a category first seen since then maps to the OOV slot until the
    next full retrain refits the vocabularies."""
    from pathlib import Path

    if ctx.init_from is None:
        return None
    try:
        previous = type(model).load(Path(ctx.init_from))
        fresh = model.build_module(previous.encoder.cat_sizes, len(previous.encoder.numeric))
        fresh.load_state_dict(previous.module.state_dict(), strict=True)  # same network shape?
    except Exception as exc:  # an old format, another config's shapes: a full retrain, not a failure
        ctx.log(f"ecup: cannot warm-start from {ctx.init_from} ({type(exc).__name__}: {exc}); from scratch")
        return None
    if previous.n_arms != model.n_arms or previous.stages != model.stages:
        ctx.log(
            f"ecup: {ctx.init_from} has arms {previous.n_arms} / stages {list(previous.stages)}, now "
            f"{model.n_arms} / {list(model.stages)}: from scratch"
        )
        return None
    ctx.log(f"ecup: warm start from {ctx.init_from}")
    return previous


def fit_ecup(model: EcupModel, train: pa.Table, valid: pa.Table, ctx: FitContext) -> None:
    from ctr_dagster.training.device import select_device

    config = model.config
    started = time.perf_counter()
    if train.num_rows == 0:
        raise ValueError("ecup: the train split is empty")
    arms = _treatment(train, "train")
    k = int(arms.max())
    if k < 1 or not (arms == 0).any():
        raise ValueError(
            f"ecup: the train split needs control rows (treatment 0) and at least one coupon arm "
            f"(treatment >= 1); it has arms {sorted(set(arms.tolist()))}"
        )
    model.n_arms = k + 1
    model.stages = ("click", "conversion") if "conversion" in train.column_names else ("click",)
    previous = _warm_from(model, ctx)
    if previous is not None:  # the nightly warm start: its encoder, its weights, the new rows only
        from ctr_dagster.training.plugin import fine_tune_mask

        model.encoder = previous.encoder
        keep = fine_tune_mask(train, ctx, config.batch_size, "ecup")
        if keep is not None:
            train = train.filter(keep)
    else:
        model.encoder = FeatureEncoder.fit(
            train, ctx.cardinalities, exclude=set(config.exclude_columns), max_vocab=config.max_vocab
        )
    train_data = _Split(train, model.encoder, "train", model.stages)
    valid_data = _Split(valid, model.encoder, "valid", model.stages) if valid.num_rows else None
    if valid_data is not None:
        unseen = valid_data.arm.numpy() > k
        if unseen.any():
            ctx.log(
                f"ecup: {int(unseen.sum())} valid row(s) have an arm > {k} (absent from train): not scored"
            )
            valid_data.keep(~unseen)
        if not len(valid_data):
            valid_data = None

    device = select_device(ctx.device or "cpu")
    threads_before = torch.get_num_threads()
    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    try:
        torch.manual_seed(ctx.seed)
        module = model.build_module(model.encoder.cat_sizes, len(model.encoder.numeric))
        if previous is not None:
            module.load_state_dict(previous.module.state_dict(), strict=True)
        module = module.to(device)
        optimizer = torch.optim.Adam(module.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        rng = np.random.default_rng(ctx.seed)
        ctx.log(
            f"ecup: {len(train_data)} train rows, {k} coupon arm(s), stages {list(model.stages)}, "
            f"{model.encoder.n_fields} fields ({len(model.encoder.categorical)} categorical, "
            f"{len(model.encoder.numeric)} numeric), "
            f"{sum(p.numel() for p in module.parameters())} parameters, device {device}"
        )
        best_loss, best_epoch, best_state, waited = float("inf"), 0, None, 0
        history = []
        if previous is not None and valid_data is not None:
            # the warm-started weights are the score to beat: fine-tuning on a few new days keeps
            # them unless an epoch improves the validation loss (epoch 0 = the previous model)
            best_loss, _, _ = _evaluate(model, module, valid_data, device)
            best_state = {key: v.detach().clone() for key, v in module.state_dict().items()}
            ctx.log(f"ecup: warm start: valid loss {best_loss:.5f} before fine-tuning; kept unless beaten")
        for epoch in range(1, config.epochs + 1):
            t0 = time.perf_counter()
            module.train()
            order = torch.from_numpy(rng.permutation(len(train_data)))
            seen, running = 0, 0.0
            for start in range(0, len(train_data), config.batch_size):
                batch = train_data.take(order[start : start + config.batch_size], device)
                loss, _, _ = _loss(model, module, batch)
                if not torch.isfinite(loss):
                    raise FloatingPointError(
                        f"ecup: non-finite training loss at epoch {epoch} (diverged; try a lower lr)"
                    )
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                n = int(batch[0].shape[0])
                seen += n
                running += float(loss.detach()) * n
            train_loss = running / max(seen, 1)
            line = f"ecup: epoch {epoch}/{config.epochs} train loss {train_loss:.5f}"
            monitored = train_loss
            if valid_data is not None:
                monitored, click, conv = _evaluate(model, module, valid_data, device)
                line += f" valid loss {monitored:.5f} (click {click:.5f}"
                line += ")" if conv is None else f", conversion {conv:.5f})"
            history.append({"epoch": epoch, "train_loss": train_loss, "valid_loss": monitored})
            if monitored < best_loss - 1e-7:
                best_loss, best_epoch, waited = monitored, epoch, 0
                best_state = {key: v.detach().clone() for key, v in module.state_dict().items()}
            else:
                waited += 1
            ctx.log(f"{line} {time.perf_counter() - t0:.1f}s")
            if config.patience and waited >= config.patience:
                ctx.log(f"ecup: early stop after epoch {epoch} (best epoch {best_epoch})")
                break
        if best_state is not None:
            module.load_state_dict(best_state)
    finally:
        torch.set_num_threads(threads_before)
    module = module.cpu().eval()
    model.module = module
    model.summary = {
        "epochs_run": len(history),
        "best_epoch": best_epoch,
        "best_valid_loss" if valid_data is not None else "best_train_loss": round(best_loss, 6),
        "coupon_arms": k,
        "stages": ",".join(model.stages),
        "fields": model.encoder.n_fields,
        "parameters": int(sum(p.numel() for p in module.parameters())),
        "fit_seconds": round(time.perf_counter() - started, 2),
    }
