"""The image networks: the default small CNN and local-file backbones (torch; imported lazily by callers).

`SmallCnn` is a VGG-style stack sized for 32x32 product thumbnails: per stage `convs` 3x3 conv +
batch norm + ReLU, 2x2 max-pooling between stages, then global average *and* max pooling (colour
area and small texture details both survive) and a linear projection to `dim`. With the default
widths (16, 32, 64) and one conv per stage it has ~32 k parameters and ~2.8 M multiply-adds per
32x32 image: the first stage runs at full resolution because materials show as 1-pixel textures.

Backbone files are safetensors state dicts with string metadata describing the architecture, so a
file is self-describing and loading never runs pickle:

* ``arch = "small_cnn"`` with ``widths`` ("16,32,64"), ``dim`` and ``image_size``: rebuilt here;
* ``arch = "timm:<model name>"`` (e.g. ``timm:resnet18``): `timm.create_model(name, pretrained=False,
  num_classes=0)` and the state dict loaded into it. timm is optional (not in constraints.txt); the
  weights must already be on local disk (nothing is downloaded).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

SMALL_CNN = "small_cnn"
TIMM_PREFIX = "timm:"
FORMAT = "ctr_image.backbone/1"


class SmallCnn(nn.Module):
    """Conv stages -> [global avg pool, global max pool] -> Linear(dim): the item's image vector."""

    def __init__(self, widths: tuple[int, ...] = (16, 32, 64), dim: int = 64, convs: int = 1):
        super().__init__()
        if not widths or any(w < 1 for w in widths) or dim < 1 or convs < 1:
            raise ValueError(f"small_cnn needs positive widths, dim and convs, got {widths}, {dim}, {convs}")
        layers: list[nn.Module] = []
        channels = 3
        for stage, width in enumerate(widths):
            for c_in in (channels, *[width] * (convs - 1)):
                layers += [nn.Conv2d(c_in, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU()]
            if stage < len(widths) - 1:
                layers.append(nn.MaxPool2d(2))
            channels = width
        self.widths = tuple(int(w) for w in widths)
        self.dim = int(dim)
        self.convs = int(convs)
        self.features = nn.Sequential(*layers)
        self.project = nn.Linear(2 * channels, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.features(x)
        return self.project(torch.cat([h.mean(dim=(2, 3)), h.amax(dim=(2, 3))], dim=1))


@dataclass(frozen=True)
class BackboneInfo:
    arch: str
    dim: int
    image_size: int
    imagenet_stats: bool  # normalize pixels with ImageNet mean/std (pretrained timm models)


def save_backbone(model: nn.Module, path: Path, image_size: int, arch: str = SMALL_CNN) -> Path:
    """Write a network's weights as a self-describing safetensors backbone file (`load_backbone` reads it)."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    metadata = {"format": FORMAT, "arch": arch, "image_size": str(int(image_size))}
    if isinstance(model, SmallCnn):
        metadata.update(
            arch=SMALL_CNN,
            widths=",".join(str(w) for w in model.widths),
            dim=str(model.dim),
            convs=str(model.convs),
        )
    save_file(state, str(path), metadata=metadata)
    return path


def _metadata(path: Path) -> dict[str, str]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        return dict(fh.metadata() or {})


def _int(meta: dict[str, str], key: str, path: Path, default: int | None = None) -> int:
    if key not in meta:
        if default is not None:
            return default
        raise ValueError(f"backbone {path}: metadata lacks {key!r} (needed for arch {meta.get('arch')!r})")
    try:
        return int(meta[key])
    except ValueError as exc:
        raise ValueError(f"backbone {path}: metadata {key}={meta[key]!r} is not an integer") from exc


def load_backbone(path: str | Path, arch: str = "", image_size: int = 32) -> tuple[nn.Module, BackboneInfo]:
    """(network in eval mode, its description) from a local safetensors file; never downloads.

    `arch` overrides the file's metadata (needed for plain state dicts saved without it).
    """
    from safetensors.torch import load_file

    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"backbone_path {path} does not exist (weights must be on local disk)")
    try:
        meta = _metadata(path)
        state = load_file(str(path))
    except Exception as exc:  # safetensors raises its own error types for non-safetensors files
        raise ValueError(f"backbone {path} is not a readable safetensors file: {exc}") from exc
    arch = arch or meta.get("arch", "")
    size = _int(meta, "image_size", path, default=image_size)
    if arch == SMALL_CNN:
        widths = tuple(int(w) for w in meta.get("widths", "").split(",") if w.strip())
        if not widths:
            raise ValueError(f"backbone {path}: metadata lacks 'widths' (needed for arch 'small_cnn')")
        model: nn.Module = SmallCnn(widths, _int(meta, "dim", path), _int(meta, "convs", path, default=1))
        _load_state(model, state, path, strict=True)
        info = BackboneInfo(SMALL_CNN, model.dim, size, imagenet_stats=False)
    elif arch.startswith(TIMM_PREFIX):
        model, info = _timm(arch, state, path, size)
    else:
        raise ValueError(
            f"backbone {path}: unknown architecture {arch!r}; use 'small_cnn' or 'timm:<model name>' "
            "(set backbone_arch, or save the file with ctr_image.network.save_backbone)"
        )
    model.eval()
    return model, info


def _load_state(model: nn.Module, state: dict[str, torch.Tensor], path: Path, strict: bool) -> None:
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or (strict and unexpected):
        raise ValueError(
            f"backbone {path} does not fit the architecture: "
            f"missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    wrong = [k for k in expected if tuple(state[k].shape) != tuple(expected[k].shape)]
    if wrong:
        raise ValueError(
            f"backbone {path}: tensor shapes differ for {wrong[:5]} "
            f"(e.g. {wrong[0]}: file {tuple(state[wrong[0]].shape)}, model {tuple(expected[wrong[0]].shape)})"
        )
    model.load_state_dict({k: state[k] for k in expected}, strict=True)


def _timm(arch: str, state: dict[str, torch.Tensor], path: Path, size: int) -> tuple[Any, BackboneInfo]:
    try:
        import timm
    except ImportError as exc:
        raise ImportError(
            f"backbone_arch {arch!r} needs timm, which is not installed (it is optional and not in "
            "constraints.txt); use a 'small_cnn' backbone or install timm"
        ) from exc
    name = arch[len(TIMM_PREFIX) :]
    model = timm.create_model(name, pretrained=False, num_classes=0)  # never downloads
    _load_state(model, state, path, strict=False)  # the classifier of a full checkpoint is dropped
    return model, BackboneInfo(arch, int(model.num_features), size, imagenet_stats=True)
