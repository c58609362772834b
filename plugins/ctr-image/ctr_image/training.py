"""Supervised multi-task training of the small CNN on the catalogue's own images and attributes.

Why supervised on catalogue attributes (and not self-supervised): the vectors exist to help CTR
models, and what drives clicks in a marketplace is product attributes (category, colour, material,
...). Every item has a category and most have some structured attributes, so there are labels for
free, and a classifier head per attribute organizes the embedding space along exactly those
attributes; a head for an attribute the images do not show (brand, say) simply stays near chance
and adds little. A contrastive/self-supervised objective on a 2k-image catalogue with only shift
and flip augmentations mostly learns the augmentation invariances (colour histograms), needs many
more epochs, and is far less stable on 2 CPU cores.

Labels come only from the ITEMS `category` column and the structured ITEM_ATTRIBUTES table (the
catalogue a real shop has), never from oracle data. A missing value is masked out of its head's
loss; values with fewer than `min_label_count` labelled items are treated as missing (no head can
learn them and they would only add noise). The engine fits on all items' images but hands over
only the attributes of the items outside its probe hold-out, so the probe accuracy it reports is on
items whose labels the CNN never saw.

Determinism: the network init, the batch order and the augmentations all draw from generators
seeded with `seed` (the global torch RNG is left untouched), so two fits give identical weights.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import torch
from torch import nn

MISSING = -1


@dataclass
class Targets:
    """Integer class per (item, head); MISSING where the catalogue has no usable value."""

    heads: list[str]
    values: dict[str, list[str]]  # head -> class names (index = class id)
    labels: np.ndarray  # int64 [n_items, n_heads]
    counts: dict[str, int] = field(default_factory=dict)  # head -> labelled items


def build_targets(items: pa.Table, attributes: pa.Table | None, min_label_count: int = 5) -> Targets:
    """The category head plus one head per attribute of the structured catalogue."""
    ids = items.column("item_id").to_pylist()
    position = {item: i for i, item in enumerate(ids)}
    raw: dict[str, dict[int, str]] = {}
    if "category" in items.column_names:
        raw["category"] = {i: c for i, c in enumerate(items.column("category").to_pylist()) if c is not None}
    if attributes is not None and attributes.num_rows:
        for item, attribute, value in zip(
            attributes.column("item_id").to_pylist(),
            attributes.column("attribute").to_pylist(),
            attributes.column("value").to_pylist(),
            strict=True,
        ):
            row = position.get(item)
            if row is not None and attribute and value is not None and attribute != "category":
                raw.setdefault(str(attribute), {})[row] = str(value)
    heads, values, columns, counts = [], {}, [], {}
    for head in sorted(raw, key=lambda h: (h != "category", h)):
        frequency = Counter(raw[head].values())
        kept = sorted(v for v, c in frequency.items() if c >= min_label_count)
        if len(kept) < 2:  # nothing to discriminate
            continue
        index = {v: k for k, v in enumerate(kept)}
        column = np.full(len(ids), MISSING, dtype=np.int64)
        for row, value in raw[head].items():
            column[row] = index.get(value, MISSING)
        heads.append(head)
        values[head] = kept
        columns.append(column)
        counts[head] = int((column >= 0).sum())
    labels = np.stack(columns, axis=1) if columns else np.zeros((len(ids), 0), dtype=np.int64)
    return Targets(heads, values, labels, counts)


def _augment(x: torch.Tensor, generator: torch.Generator, max_shift: int) -> torch.Tensor:
    """A random circular shift of the whole batch (products are not always centred) and random
    horizontal flips per image."""
    if max_shift > 0:
        dy, dx = (int(v) for v in torch.randint(-max_shift, max_shift + 1, (2,), generator=generator))
        x = torch.roll(x, shifts=(dy, dx), dims=(2, 3))
    flip = torch.rand(x.shape[0], generator=generator) < 0.5
    if bool(flip.any()):
        x = x.clone()
        x[flip] = x[flip].flip(3)
    return x


def train(
    model: nn.Module,
    pixels: np.ndarray,
    targets: Targets,
    *,
    epochs: int,
    batch_size: int,
    learning_rate: float,
    weight_decay: float,
    seed: int,
    device: str = "cpu",
    max_shift: int = 2,
    log: Any = None,
) -> dict[str, Any]:
    """Train `model` (its output = the embedding) with one linear head per target; returns a summary.

    Heads sit directly on the embedding, so attributes become linearly readable from it (what the
    engine's linear probe, and the CTR models, use). The heads are discarded after training.
    """
    n, n_heads = targets.labels.shape
    if n_heads == 0 or epochs <= 0:
        return {"trained": False, "reason": "no attribute with two or more well-represented values"}
    generator = torch.Generator().manual_seed(seed)
    dim = int(model(torch.zeros(1, *pixels.shape[1:])).shape[1])
    heads = nn.ModuleList(nn.Linear(dim, len(targets.values[h])) for h in targets.heads)
    with torch.no_grad():  # head init from the seeded generator (not the global RNG)
        for head in heads:
            bound = 1.0 / np.sqrt(dim)
            head.weight.copy_(torch.rand(head.weight.shape, generator=generator) * 2 * bound - bound)
            head.bias.zero_()
    model.to(device)
    heads.to(device)
    params = list(model.parameters()) + list(heads.parameters())
    optimizer = torch.optim.AdamW(params, lr=learning_rate, weight_decay=weight_decay)
    steps = epochs * max(1, -(-n // batch_size))
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=learning_rate, total_steps=steps)
    x_all = torch.from_numpy(pixels)
    y_all = torch.from_numpy(targets.labels)
    loss_fn = nn.CrossEntropyLoss(ignore_index=MISSING)
    history = []
    for epoch in range(epochs):
        model.train()
        heads.train()
        order = torch.randperm(n, generator=generator)
        total, batches = 0.0, 0
        for start in range(0, n, batch_size):
            idx = order[start : start + batch_size]
            x = _augment(x_all[idx], generator, max_shift).to(device)
            y = y_all[idx].to(device)
            z = model(x)
            losses = [loss_fn(head(z), y[:, h]) for h, head in enumerate(heads) if bool((y[:, h] >= 0).any())]
            if not losses:
                schedule.step()
                continue
            loss = torch.stack(losses).sum()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            total += float(loss.detach())
            batches += 1
        history.append(total / max(1, batches))
        if log is not None:
            log(f"image_cnn: epoch {epoch + 1}/{epochs} loss {history[-1]:.4f}")
    if not np.isfinite(history[-1]):
        raise FloatingPointError(f"image_cnn: training diverged (loss {history[-1]})")
    model.eval()
    heads.eval()
    accuracy = {}
    with torch.no_grad():
        z = torch.cat([model(x_all[s : s + 512].to(device)) for s in range(0, n, 512)])
        for h, head in enumerate(heads):
            known = y_all[:, h] >= 0
            if bool(known.any()):
                predicted = head(z[known.to(z.device)]).argmax(1).cpu()
                accuracy[targets.heads[h]] = float((predicted == y_all[known, h]).float().mean())
    model.to("cpu")
    return {
        "trained": True,
        "epochs": epochs,
        "loss_per_epoch": [round(v, 5) for v in history],
        "heads": {h: len(targets.values[h]) for h in targets.heads},
        "labelled_items": targets.counts,
        "train_accuracy": {k: round(v, 4) for k, v in accuracy.items()},
    }
