"""ctr-tin: the `tin` (Temporal Interest Network) model plugin for ctr-dagster."""

from ctr_tin.model import TinConfig, TinModel

__all__ = ["TinConfig", "TinModel"]
