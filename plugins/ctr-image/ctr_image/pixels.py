"""PNG bytes -> normalized float32 pixel tensors (numpy + Pillow only).

Every image is decoded to RGB and resized to `size` x `size` (bilinear) when it is another size, so
catalogues with mixed image sizes work. A missing image (null) or one Pillow cannot decode becomes a
mid-grey square: the encoder still returns a finite vector for it (the engine leaves items without
an image out of the image modality anyway, see `ctr_dagster.embeddings`).
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np

#: Per-channel mean / std used to centre the pixels of the default CNN (images are mostly bright).
MEAN = np.array([0.5, 0.5, 0.5], dtype=np.float32)
STD = np.array([0.25, 0.25, 0.25], dtype=np.float32)
#: ImageNet statistics, for pretrained (timm) backbones.
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


class UnreadableImage(ValueError):
    """An image cell that Pillow cannot decode; `row` is its position in the batch."""

    def __init__(self, row: int, reason: str):
        self.row = row
        super().__init__(f"row {row}: image_png is not a readable image ({reason})")


def decode(
    images: Sequence[bytes | None],
    size: int,
    mean: np.ndarray = MEAN,
    std: np.ndarray = STD,
    strict: bool = False,
) -> np.ndarray:
    """float32[n, 3, size, size], (pixel/255 - mean) / std; unreadable or null cells are grey (0.5).

    With `strict`, an undecodable (non-null) cell raises `UnreadableImage` naming its row instead.
    """
    from PIL import Image, UnidentifiedImageError

    out = np.empty((len(images), size, size, 3), dtype=np.float32)
    for i, data in enumerate(images):
        if data is None:
            out[i] = 0.5
            continue
        try:
            with Image.open(io.BytesIO(data)) as image:
                rgb = image.convert("RGB")
                if rgb.size != (size, size):
                    rgb = rgb.resize((size, size), Image.Resampling.BILINEAR)
                out[i] = np.asarray(rgb, dtype=np.float32) / 255.0
        except (UnidentifiedImageError, OSError, ValueError) as exc:
            if strict:
                raise UnreadableImage(i, f"{type(exc).__name__}: {exc}") from exc
            out[i] = 0.5
    out = (out - mean) / std
    return np.ascontiguousarray(out.transpose(0, 3, 1, 2))
