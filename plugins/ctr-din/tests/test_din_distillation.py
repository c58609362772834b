"""Distillation on `tiny`: din_student learns more from din's soft labels + labels than from labels alone."""

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from ctr_dagster.contracts import FitContext
from ctr_dagster.distillation import DistillationWeights
from ctr_dagster.metrics import auc
from ctr_dagster.testing import synthetic_training_table, training_cardinalities

from ctr_din.model import DinConfig, DinModel, DinStudentConfig, DinStudentModel


@pytest.mark.parametrize("world_seed", [7, 1, 2, 3])
def test_distilled_student_beats_the_lone_student_and_trails_the_teacher(world_seed):
    """Four `tiny` worlds (7 = the profile's default). Measured (DIN defaults incl. mba_l2=0.3, model
    seed 0): distilled - lone student test AUC = +0.0075, +0.0054, +0.0127, +0.0022 on world seeds
    7 / 1 / 2 / 3 (mean +0.0070, sample standard deviation 0.0044: every seed is asserted, not the
    mean); distilled - teacher = -0.012, -0.027, -0.023, -0.057. About 5 s per seed."""
    overrides = {} if world_seed == 7 else {"seed": world_seed}
    tiny_table: pa.Table = synthetic_training_table("tiny", **overrides)
    train, valid, test = (
        tiny_table.filter(pc.equal(tiny_table.column("split"), s)) for s in ("train", "valid", "test")
    )
    cards = training_cardinalities(tiny_table)
    labels = test.column("label").to_numpy()

    def ctx(**inputs):
        return FitContext(seed=0, cardinalities=cards, log=lambda s: None, inputs=inputs)

    teacher = DinModel(DinConfig(num_threads=1, log_every=0)).fit(train, valid, ctx())
    soft = teacher.predict(train).astype(np.float32)
    weights = DistillationWeights()  # the distillation asset's defaults
    distill = {"teacher": "din", "teacher_scores": soft, **vars(weights)}
    alone = DinStudentModel(DinStudentConfig(num_threads=1, log_every=0)).fit(train, valid, ctx())
    student = DinStudentModel(DinStudentConfig(num_threads=1, log_every=0)).fit(
        train, valid, ctx(distillation=distill)
    )
    teacher_auc, alone_auc, student_auc = (auc(labels, m.predict(test)) for m in (teacher, alone, student))
    print(f"teacher {teacher_auc:.4f}  student alone {alone_auc:.4f}  distilled {student_auc:.4f}")
    assert student_auc > alone_auc, (student_auc, alone_auc)
    assert student_auc < teacher_auc + 0.01  # a 5-behaviour, 8-wide student does not outgrow its teacher
