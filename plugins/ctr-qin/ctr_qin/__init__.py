"""ctr-qin: the `qin` model plugin (Quadratic Interest Network) for ctr-dagster."""

from ctr_qin.model import QinConfig, QinModel, parameter_count, parameter_count_for

__all__ = ["QinConfig", "QinModel", "parameter_count", "parameter_count_for"]
