"""Tiny product images that carry attribute signal: fill colour = colour, shape = category, texture = material.

An image encoder can therefore recover the colour and material even when the structured catalogue
lacks them. Rendering is cached per (colour, shape, texture, background); each item then gets a
cheap per-item jitter (a shift of a few pixels) so images are not byte-identical, and PNG encoding
is the only per-item cost.
"""

from __future__ import annotations

import io
import math
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw

from ctr_dagster.datagen.vocab import BACKGROUNDS, COLOUR_RGB

MARGIN = 3  # shapes stay this far from the edge, so a jitter shift never wraps the shape around
MAX_SHIFT = 2


def _polygon(
    cx: float, cy: float, radii: list[float], rotation: float = -math.pi / 2
) -> list[tuple[float, float]]:
    n = len(radii)
    return [
        (cx + r * math.cos(rotation + 2 * math.pi * k / n), cy + r * math.sin(rotation + 2 * math.pi * k / n))
        for k, r in enumerate(radii)
    ]


def shape_mask(shape: str, size: int) -> np.ndarray:
    """Boolean mask of `shape` drawn without anti-aliasing (so the fill colour is exact)."""
    image = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(image)
    lo, hi = MARGIN, size - 1 - MARGIN
    c = (lo + hi) / 2
    r = (hi - lo) / 2
    if shape == "circle":
        draw.ellipse([lo, lo, hi, hi], fill=255)
    elif shape == "square":
        draw.rectangle([lo + 1, lo + 1, hi - 1, hi - 1], fill=255)
    elif shape == "triangle":
        draw.polygon([(c, lo), (hi, hi), (lo, hi)], fill=255)
    elif shape == "diamond":
        draw.polygon([(c, lo), (hi, c), (c, hi), (lo, c)], fill=255)
    elif shape in ("pentagon", "hexagon", "octagon"):
        sides = {"pentagon": 5, "hexagon": 6, "octagon": 8}[shape]
        draw.polygon(_polygon(c, c, [r + 0.5] * sides), fill=255)
    elif shape == "star":
        draw.polygon(_polygon(c, c, [r + 0.5, r * 0.55] * 5), fill=255)
    elif shape == "cross":
        t = r * 0.45
        draw.rectangle([c - t, lo, c + t, hi], fill=255)
        draw.rectangle([lo, c - t, hi, c + t], fill=255)
    elif shape == "ring":
        draw.ellipse([lo, lo, hi, hi], fill=255)
        inner = r * 0.45
        draw.ellipse([c - inner, c - inner, c + inner, c + inner], fill=0)
    elif shape == "bar":
        draw.rectangle([lo, c - r * 0.55, hi, c + r * 0.55], fill=255)
    elif shape == "arrow":
        draw.polygon([(lo, c - r * 0.4), (c, c - r * 0.4), (c, lo), (hi, c), (c, hi), (c, c + r * 0.4), (lo, c + r * 0.4)],
                     fill=255)  # fmt: skip
    else:
        raise ValueError(f"unknown shape {shape!r}")
    return np.asarray(image) > 0


def texture_mask(texture: str, shape: np.ndarray) -> np.ndarray:
    """Pixels of the texture pattern inside the shape; every pattern covers at most ~1/3 of it."""
    size = shape.shape[0]
    y, x = np.mgrid[0:size, 0:size]
    patterns = {
        "plain": np.zeros_like(shape),
        "hstripes": y % 4 == 0,
        "vstripes": x % 4 == 0,
        "dstripes": (x + y) % 4 == 0,
        "cstripes": (x - y) % 4 == 0,
        "dots": (x % 3 == 0) & (y % 3 == 0),
        "checks": (x % 6 < 2) & (y % 6 < 2),
        "grid": (x % 6 == 0) | (y % 6 == 0),
        "hstripes_wide": y % 6 < 2,
        "vstripes_wide": x % 6 < 2,
        "dstripes_wide": (x + y) % 6 < 2,
        "dots_wide": (x % 5 == 1) & (y % 5 == 1),
        "checks_wide": (x % 8 < 3) & (y % 8 < 3),
        "grid_wide": (x % 8 == 0) | (y % 8 == 0),
        "zigzag": (y + np.abs(x % 8 - 4)) % 6 == 0,
    }
    if texture == "border":
        inner = shape.copy()
        inner[1:, :] &= shape[:-1, :]
        inner[:-1, :] &= shape[1:, :]
        inner[:, 1:] &= shape[:, :-1]
        inner[:, :-1] &= shape[:, 1:]
        return shape & ~inner
    if texture not in patterns:
        raise ValueError(f"unknown texture {texture!r}")
    return shape & patterns[texture]


def texture_rgb(fill: tuple[int, int, int]) -> tuple[int, int, int]:
    """A shade of the fill: darker for light fills, lighter for dark ones (always visible)."""
    f = np.asarray(fill, dtype=float)
    shade = f * 0.55 if f.mean() > 70 else f + (255 - f) * 0.45
    return tuple(int(v) for v in shade)  # type: ignore[return-value]


@lru_cache(maxsize=4096)
def base_image(colour: str, shape: str, texture: str, background: int, size: int) -> np.ndarray:
    """The un-jittered RGB image (uint8, size x size x 3) of one attribute combination."""
    fill = COLOUR_RGB[colour]
    body = shape_mask(shape, size)
    pattern = texture_mask(texture, body)
    image = np.empty((size, size, 3), dtype=np.uint8)
    image[:] = BACKGROUNDS[background]
    image[body] = fill
    image[pattern] = texture_rgb(fill)
    image.flags.writeable = False
    return image


def render_png(colour: str, shape: str, texture: str, background: int, dx: int, dy: int, size: int) -> bytes:
    """PNG bytes of one item's image: the cached base image shifted by (dx, dy) pixels."""
    image = np.roll(base_image(colour, shape, texture, background, size), (dy, dx), axis=(0, 1))
    buffer = io.BytesIO()
    Image.fromarray(image, "RGB").save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def dominant_colour(png: bytes) -> tuple[int, int, int]:
    """Most frequent non-background colour of a PNG (what a colour reader of the image would say)."""
    pixels = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).reshape(-1, 3)
    keep = np.ones(len(pixels), dtype=bool)
    for bg in BACKGROUNDS:
        keep &= ~np.all(pixels == bg, axis=1)
    colours, counts = np.unique(pixels[keep], axis=0, return_counts=True)
    return tuple(int(v) for v in colours[np.argmax(counts)])  # type: ignore[return-value]
