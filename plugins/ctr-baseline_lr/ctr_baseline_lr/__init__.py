"""ctr-baseline_lr: the `baseline_lr` model plugin for ctr-dagster."""

from ctr_baseline_lr.model import BaselineLrConfig, BaselineLrModel

__all__ = ["BaselineLrConfig", "BaselineLrModel"]
