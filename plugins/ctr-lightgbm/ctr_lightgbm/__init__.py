"""ctr-lightgbm: the `lightgbm` model plugin for ctr-dagster."""

from ctr_lightgbm.model import LightgbmConfig, LightgbmEmbConfig, LightgbmEmbModel, LightgbmModel

__all__ = ["LightgbmConfig", "LightgbmEmbConfig", "LightgbmEmbModel", "LightgbmModel"]
