"""ImageCnnEncoder: item images -> fixed-width vectors, with no pretrained weights needed.

No pretrained image weights can be downloaded on these machines, so by default the encoder is a
small CNN (`ctr_image.network.SmallCnn`) trained in the asset on the catalogue's own images,
supervised by the catalogue's category and structured attributes (`ctr_image.training` says why
supervised rather than self-supervised). It is a *trainable* encoder in the sense of
`ctr_dagster.contracts.EncoderPlugin`: the engine calls `fit(items, attributes)` once, stores the
result with `save` (safetensors + JSON) and reloads it with `load` on later runs, so unchanged
items keep hitting the embedding cache until the user asks for a refit.

With `backbone_path` set, the encoder instead loads a backbone from a local safetensors file (a
`small_cnn` saved by `ctr_image.network.save_backbone`, or a timm model when timm is installed) and
uses its pooled features as they are: `fit` trains nothing. Nothing is ever downloaded.

torch, Pillow and safetensors are imported inside the methods: the Dagster code location imports
this module when it discovers plugins.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ctr_dagster.artifact_meta import read_meta, write_meta
from ctr_dagster.contracts import config_from_dict, config_to_dict

if TYPE_CHECKING:
    import numpy as np
    import pyarrow as pa

FORMAT_VERSION = 1
WEIGHTS_FILE = "backbone.safetensors"
META_FILE = "encoder.json"


@dataclass
class ImageCnnConfig:
    """Typed, defaulted fields: the launchpad shows and edits them."""

    dim: int = 64  # width of the image vector (the CNN's projection)
    widths: list[int] = field(default_factory=lambda: [16, 32, 64])  # channels of each conv stage
    convs_per_stage: int = 1  # 3x3 convolutions per stage
    image_size: int = 32  # images are resized to image_size x image_size
    epochs: int = 10  # passes over the catalogue's images (0 = keep the seeded random init)
    train_batch_size: int = 64  # images per training step
    learning_rate: float = 0.003  # peak of the one-cycle schedule (AdamW)
    weight_decay: float = 0.0001  # AdamW weight decay while training the CNN
    min_label_count: int = 5  # attribute values with fewer labelled items are not learned
    max_train_items: int = 4000  # a seeded sample of at most this many items trains the CNN (bounds the cost)
    max_shift: int = 2  # augmentation: random shift of up to this many pixels (plus horizontal flips)
    seed: int = 0  # seed of the CNN's initialisation and batches
    # torch CPU threads while fitting/encoding (restored after). 1 by default: these tiny convolutions
    # gain little from more threads, and on a busy 2-core machine OpenMP threads that wait on each
    # other made a fit 4x slower (measured: 20 s with 2 threads vs 5 s with 1). 0 = torch's default.
    num_threads: int = 1
    batch_size: int = 512  # images per forward pass when encoding (does not change the vectors)
    device: str = "auto"  # "auto" = cuda when available, else cpu
    backbone_path: str = ""  # local safetensors backbone: use it as is instead of training
    backbone_arch: str = ""  # "" = from the file's metadata; "small_cnn" or "timm:<name>"


@contextmanager
def _threads(n: int) -> Iterator[None]:
    import torch

    if n <= 0:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def resolve_device(device: str) -> str:
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class ImageCnnEncoder:
    """A small CNN trained on the catalogue's images and attributes (or a local backbone), `dim`-d float32."""

    name = "image_cnn"
    modality = "image"
    Config = ImageCnnConfig
    version = "1"
    #: Config fields that do not change the vectors (left out of the engine's cache key).
    runtime_fields = frozenset({"batch_size", "device"})

    def __init__(self, config: ImageCnnConfig | None = None):
        self.config = config or ImageCnnConfig()
        cfg = self.config
        if cfg.dim < 1 or cfg.image_size < 8 or not cfg.widths or min(cfg.widths) < 1:
            raise ValueError(
                f"image_cnn: need dim >= 1, image_size >= 8 and positive widths, got {config_to_dict(cfg)}"
            )
        if cfg.batch_size < 1 or cfg.train_batch_size < 1:
            raise ValueError("image_cnn: batch_size and train_batch_size must be >= 1")
        self._model: Any = None
        self._info: Any = None
        self.summary: dict[str, Any] = {}

    # network ----------------------------------------------------------------------------------
    def _fresh(self) -> tuple[Any, Any]:
        """The default small CNN, initialised from `seed` without touching the global torch RNG."""
        import torch

        from ctr_image.network import SMALL_CNN, BackboneInfo, SmallCnn

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.config.seed)
            model = SmallCnn(tuple(self.config.widths), self.config.dim, self.config.convs_per_stage)
        return model.eval(), BackboneInfo(SMALL_CNN, self.config.dim, self.config.image_size, False)

    def _network(self) -> tuple[Any, Any]:
        if self._model is None:
            if self.config.backbone_path:
                from ctr_image.network import load_backbone

                self._model, self._info = load_backbone(
                    self.config.backbone_path, self.config.backbone_arch, self.config.image_size
                )
                self.summary = {"trained": False, "backbone": str(self.config.backbone_path)}
            else:
                self._model, self._info = self._fresh()
                self.summary = {"trained": False, "reason": "not fitted: seeded random initialisation"}
        return self._model, self._info

    def _pixels(self, items: pa.Table, size: int, imagenet: bool) -> np.ndarray:
        from ctr_image import pixels

        if "image_png" not in items.column_names:
            raise ValueError(f"image_cnn: the items table has no 'image_png' column ({items.column_names})")
        mean, std = (pixels.IMAGENET_MEAN, pixels.IMAGENET_STD) if imagenet else (pixels.MEAN, pixels.STD)
        return pixels.decode(items.column("image_png").to_pylist(), size, mean, std)

    # contract ---------------------------------------------------------------------------------
    def fit(self, items: pa.Table, attributes: pa.Table | None = None) -> ImageCnnEncoder:
        """Train the small CNN on these items' images, supervised by category + catalogue attributes."""
        import torch

        from ctr_image.training import build_targets, train

        cfg = self.config
        if cfg.backbone_path:  # a given backbone is used as it is
            self._model = None
            self._network()
            return self
        model, info = self._fresh()
        if items.num_rows > cfg.max_train_items > 0:
            import numpy as np

            keep = np.sort(
                np.random.default_rng(cfg.seed).choice(items.num_rows, cfg.max_train_items, replace=False)
            )
            items = items.take(keep)
        targets = build_targets(items, attributes, cfg.min_label_count)
        pixels = self._pixels(items, cfg.image_size, imagenet=False)
        device = resolve_device(cfg.device)
        deterministic = torch.backends.cudnn.deterministic
        torch.backends.cudnn.deterministic = True
        try:
            with _threads(cfg.num_threads):
                summary = train(
                    model,
                    pixels,
                    targets,
                    epochs=cfg.epochs,
                    batch_size=cfg.train_batch_size,
                    learning_rate=cfg.learning_rate,
                    weight_decay=cfg.weight_decay,
                    seed=cfg.seed,
                    device=device,
                    max_shift=cfg.max_shift,
                )
        finally:
            torch.backends.cudnn.deterministic = deterministic
        self._model, self._info = model.eval(), info
        self.summary = {**summary, "items": items.num_rows, "device": device}
        return self

    def encode(self, items: pa.Table) -> np.ndarray:
        import numpy as np
        import torch

        model, info = self._network()
        if items.num_rows == 0:
            return np.zeros((0, info.dim), dtype=np.float32)
        x = torch.from_numpy(self._pixels(items, info.image_size, info.imagenet_stats))
        device = resolve_device(self.config.device)
        model.to(device)
        try:
            with torch.inference_mode(), _threads(self.config.num_threads):
                out = [
                    model(x[s : s + self.config.batch_size].to(device)).float().cpu()
                    for s in range(0, len(x), self.config.batch_size)
                ]
        finally:
            model.to("cpu")
        return np.ascontiguousarray(torch.cat(out).numpy(), dtype=np.float32)

    def save(self, directory: Path) -> None:
        from ctr_image.network import save_backbone

        model, info = self._network()
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        save_backbone(model, directory / WEIGHTS_FILE, info.image_size, arch=info.arch)
        write_meta(
            directory,
            self.name,
            FORMAT_VERSION,
            filename=META_FILE,
            config=config_to_dict(self.config),
            arch=info.arch,
            dim=info.dim,
            image_size=info.image_size,
            imagenet_stats=info.imagenet_stats,
            summary=self.summary,
        )

    @classmethod
    def load(cls, directory: Path) -> ImageCnnEncoder:
        from ctr_image.network import BackboneInfo, load_backbone

        directory = Path(directory)
        document = read_meta(directory, cls.name, FORMAT_VERSION, filename=META_FILE)
        encoder = cls(config_from_dict(cls, document["config"]))
        model, _ = load_backbone(directory / WEIGHTS_FILE, document["arch"], document["image_size"])
        encoder._model = model
        encoder._info = BackboneInfo(
            document["arch"],
            int(document["dim"]),
            int(document["image_size"]),
            bool(document["imagenet_stats"]),
        )
        encoder.summary = document.get("summary", {})
        return encoder
