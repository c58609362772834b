"""ctr-awmoe: the `awmoe` model plugin for ctr-dagster (Attention-Weighted Mixture of Experts)."""

from ctr_awmoe.model import AwMoeConfig, AwMoeModel
from ctr_awmoe.slices import long_tail_mask, long_tail_metrics

__all__ = ["AwMoeConfig", "AwMoeModel", "long_tail_mask", "long_tail_metrics"]
