"""ctr-lightgbm: the `lightgbm` model plugin for ctr-dagster."""

from ctr_lightgbm.model import LightgbmConfig, LightgbmModel

__all__ = ["LightgbmConfig", "LightgbmModel"]
