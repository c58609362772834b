"""ctr-suan: the `suan` (SUAN) and `lightsuan` (LightSUAN) model plugins for ctr-dagster."""

from ctr_suan.model import GRADES, LightSuanConfig, LightSuanModel, SuanConfig, SuanModel

__all__ = ["GRADES", "LightSuanConfig", "LightSuanModel", "SuanConfig", "SuanModel"]
