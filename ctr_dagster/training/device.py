"""Device and mixed-precision choice: CUDA when present, else CPU; AMP only on CUDA.

`device_name()` answers without importing torch when no NVIDIA device node exists (the engine asks
for every model, LightGBM included, and importing torch costs seconds).
"""

from __future__ import annotations

import glob
import os
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


def _no_cuda_cheaply() -> bool:
    """True when CUDA is certainly unusable (checked without importing torch)."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return True
    return (
        "torch" not in sys.modules and sys.platform.startswith("linux") and not glob.glob("/dev/nvidia[0-9]*")
    )


def device_name(preference: str = "auto") -> str:
    """ "cuda" (or "cuda:N") when asked for / available, else "cpu". `preference`: auto, cpu, cuda[:N]."""
    preference = (preference or "auto").lower()
    if preference == "cpu":
        return "cpu"
    if preference not in ("auto",) and not preference.startswith("cuda"):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda[:N]', got {preference!r}")
    if preference == "auto" and _no_cuda_cheaply():
        return "cpu"
    import torch

    if torch.cuda.is_available():
        return "cuda" if preference == "auto" else preference
    if preference.startswith("cuda"):
        raise RuntimeError(f"device {preference!r} was requested but CUDA is not available")
    return "cpu"


def select_device(preference: str = "auto") -> torch.device:
    """The torch device for `preference` (see `device_name`)."""
    import torch

    return torch.device(device_name(preference))


def amp_dtype(device: Any, enabled: bool = True) -> torch.dtype | None:
    """The autocast dtype on `device`: bf16 where the GPU supports it, else fp16; None on CPU/off."""
    import torch

    device = torch.device(device)
    if not enabled or device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
