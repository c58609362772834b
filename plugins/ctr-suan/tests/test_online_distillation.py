"""Online distillation (`ctr_dagster.online_distillation`): SUAN teacher and LightSUAN student trained
together in one run; the same works for any pair of torch plugins (DIN student, SUAN teacher)."""

import numpy as np
import pyarrow.compute as pc
import pytest
import torch
from ctr_dagster.contracts import FitContext
from ctr_dagster.online_distillation import ONLINE_WEIGHTS, TEACHER_PREFIX, fit_online, online_module
from ctr_dagster.testing import assert_no_pickles, auc, make_training_table, training_cardinalities
from ctr_dagster.training.config import DistillationWeights

from ctr_suan.model import LightSuanModel, SuanModel

FAST = {"epochs": 2, "batch_size": 256, "lr": 3e-3, "num_threads": 1, "log_every": 0}


@pytest.fixture(scope="module")
def data():
    table = make_training_table(3000, 0)
    split = table.column("split")
    parts = tuple(table.filter(pc.equal(split, s)) for s in ("train", "valid", "test"))
    ctx = FitContext(seed=0, cardinalities=training_cardinalities(table), log=lambda s: None)
    return parts, ctx


def test_teacher_and_student_train_together_and_the_student_is_an_ordinary_model(data, tmp_path):
    (train, valid, test), ctx = data
    student, teacher = LightSuanModel(LightSuanModel.Config(**FAST)), SuanModel(SuanModel.Config(**FAST))
    torch.manual_seed(0)
    initial = {
        k: v.clone()
        for k, v in teacher.build_module(teacher.feature_spec(ctx.cardinalities, None, 20))
        .state_dict()
        .items()
    }
    fit_online(student, teacher, train, valid, ctx)
    assert student.summary["online"] == {
        "teacher": "suan",
        "student": "lightsuan",
        **ONLINE_WEIGHTS.as_dict(),
    }
    assert student.summary["epochs_run"] == 2
    # both were trained: the teacher's weights moved away from its initialisation
    moved = [
        k
        for k, v in teacher.module.state_dict().items()
        if k in initial and v.shape == initial[k].shape and not torch.equal(v, initial[k])
    ]
    assert any(k.startswith("blocks.") for k in moved)
    labels = test.column("label").to_numpy()
    assert auc(labels, student.predict(test)) > 0.6 and auc(labels, teacher.predict(test)) > 0.6
    student.save(tmp_path)
    assert_no_pickles(tmp_path)
    loaded = LightSuanModel.load(tmp_path)
    np.testing.assert_array_equal(loaded.predict(test), student.predict(test))


def test_the_teacher_learns_from_the_labels_only_the_student_from_both():
    from ctr_suan.modules import SuanNet

    cards = {
        "user_idx": 20,
        "item_idx": 40,
        "category_idx": 8,
        "device_idx": 4,
        "region_idx": 5,
        "age_group_idx": 7,
    }
    grads = {}
    for weight in (0.0, 5.0):
        nets = []
        for model in (LightSuanModel, SuanModel):
            config = model.Config(max_seq_len=4)
            torch.manual_seed(0)
            nets.append(SuanNet(model(config).feature_spec(cards, None, 4), config, config.resolved()))
        joint = online_module(*nets, DistillationWeights(teacher_weight=weight, temperature=2.0)).train()
        g = torch.Generator().manual_seed(1)
        rows = 16
        batch = {
            "item_idx": torch.randint(2, 40, (rows,), generator=g),
            "category_idx": torch.randint(2, 8, (rows,), generator=g),
            "hist_item_idx": torch.randint(2, 40, (rows, 4), generator=g),
            "hist_category_idx": torch.randint(2, 8, (rows, 4), generator=g),
            "hist_age_s": torch.rand(rows, 4, generator=g) * 1e5,
            "hist_mask": torch.ones(rows, 4, dtype=torch.bool),
            "hist_len": torch.full((rows,), 4),
            "dense": torch.randn(rows, 5, generator=g),
            "hour": torch.randint(0, 24, (rows,), generator=g),
            "day_of_week": torch.randint(0, 7, (rows,), generator=g),
            "device_idx": torch.randint(2, 4, (rows,), generator=g),
            "region_idx": torch.randint(2, 5, (rows,), generator=g),
            "age_group_idx": torch.randint(2, 7, (rows,), generator=g),
            "user_idx": torch.randint(2, 20, (rows,), generator=g),
            "label": (torch.rand(rows, generator=g) < 0.3).float(),
        }
        batch.update({TEACHER_PREFIX + k: v for k, v in batch.items() if k != "label"})
        out = joint(batch)
        loss = (
            torch.nn.functional.binary_cross_entropy_with_logits(out["logit"], batch["label"])
            + out["aux_loss"]
        )
        loss.backward()
        grads[weight] = (
            [p.grad.clone() for p in joint.teacher.parameters() if p.grad is not None],
            [p.grad.clone() for p in joint.student.parameters() if p.grad is not None],
        )
        joint.eval()
        with torch.no_grad():
            torch.testing.assert_close(
                joint(batch),
                joint.student({k: v for k, v in batch.items() if not k.startswith(TEACHER_PREFIX)}),
            )
    for a, b in zip(grads[0.0][0], grads[5.0][0], strict=True):
        torch.testing.assert_close(a, b)  # the soft term sends no gradient to the teacher
    assert any((a - b).abs().max() > 1e-6 for a, b in zip(grads[0.0][1], grads[5.0][1], strict=True))


def test_any_student_plugin_can_learn_from_any_teacher_online(data):
    """DIN's small student (5 behaviours, no ages) with a SUAN teacher (its own spec and columns)."""
    din = pytest.importorskip("ctr_din.model")
    (train, valid, test), ctx = data
    student = din.DinStudentModel(din.DinStudentConfig(**FAST))
    teacher = SuanModel(SuanModel.Config(**FAST, grade=1))
    fit_online(student, teacher, train, valid, ctx)
    assert student.spec.max_seq_len == 5 and "hist_age_s" not in student.spec.sequence
    assert teacher.spec.max_seq_len == 5 and "hist_age_s" in teacher.spec.sequence
    scores = student.predict(test)
    assert scores.shape == (test.num_rows,) and np.all(np.isfinite(scores))
