"""ctr-ecup: the `ecup` (Entire Chain UPlift) uplift model plugin for ctr-dagster."""

from ctr_ecup.model import EcupConfig, EcupModel

__all__ = ["EcupConfig", "EcupModel"]
