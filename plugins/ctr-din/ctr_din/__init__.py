"""ctr-din: the `din` and `din_student` model plugins for ctr-dagster."""

from ctr_din.model import DinConfig, DinModel, DinStudentConfig, DinStudentModel

__all__ = ["DinConfig", "DinModel", "DinStudentConfig", "DinStudentModel"]
