"""ctr-awmoe: the `awmoe` model plugin for ctr-dagster (Attention-Weighted Mixture of Experts).

The long-tail slice lives in `ctr_awmoe.slices` (imported on demand: it needs numpy and pyarrow,
which the code location must not load when it discovers plugins).
"""

from ctr_awmoe.model import AwMoeConfig, AwMoeModel

__all__ = ["AwMoeConfig", "AwMoeModel"]
