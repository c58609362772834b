"""Distillation stage: a student plugin is trained from its teacher's soft labels plus the labels,
stored under its own entry beside the lone student, ranked by the evaluation and compared."""

import json

import dagster as dg
import numpy as np
import pytest

from assets.distill import distilled_asset
from ctr_dagster import distillation, evaluation
from ctr_dagster.modeling import read_status, train_and_store
from ctr_dagster.registry import discover
from ctr_dagster.settings import Home
from ctr_dagster.testing import make_training_table
from ctr_dagster.warehouse import Warehouse
from tests.plugin_fixtures import MODELS, on_sys_path, write_dist


@pytest.fixture
def registry(tmp_path):
    root = tmp_path / "site"
    write_dist(
        root,
        "ctrfix-kd",
        {MODELS: {"ctrfix_good": "ctrfix_good:GoodModel", "ctrfix_student": "ctrfix_student:StudentModel"}},
        ("ctrfix_good", "ctrfix_student"),
    )
    with on_sys_path(root):
        yield discover(["model"], path=[root])


@pytest.fixture
def home(tmp_path) -> Home:
    return Home(tmp_path / "home")


@pytest.fixture
def warehouse(home):
    wh = Warehouse(home.warehouse)
    wh.write("training_dataset", make_training_table(3000, seed=2))
    return wh


def _pair(registry):
    [(student, teacher)] = distillation.students(registry)
    return student, teacher


def test_students_are_paired_with_their_teachers(registry):
    student, teacher = _pair(registry)
    assert (student.name, teacher.name) == ("ctrfix_student", "ctrfix_good")
    asset = distilled_asset(student, teacher)
    assert asset.key == dg.AssetKey(["distilled", "ctrfix_student"])
    assert dg.AssetKey(["models", "ctrfix_good"]) in asset.dependency_keys
    assert asset.group_names_by_key[asset.key] == "distillation"


def test_distillation_needs_a_fresh_teacher(registry, warehouse, home):
    student, teacher = _pair(registry)
    weights = distillation.DistillationWeights()
    with pytest.raises(RuntimeError, match="never been trained"):
        distillation.distill_and_store(student, teacher, {}, weights, warehouse, home, log=lambda s: None)
    train_and_store(teacher, {}, warehouse, home, log=lambda s: None)
    warehouse.write("training_dataset", make_training_table(3000, seed=5))  # a new day's data
    with pytest.raises(RuntimeError, match="older training_dataset"):
        distillation.distill_and_store(student, teacher, {}, weights, warehouse, home, log=lambda s: None)
    assert read_status(home, "ctrfix_student_distilled")["status"] == "failed"


def test_distilled_student_is_stored_ranked_and_compared(registry, warehouse, home):
    student, teacher = _pair(registry)
    train_and_store(teacher, {}, warehouse, home, log=lambda s: None)
    alone = train_and_store(student, {}, warehouse, home, log=lambda s: None)
    result = distillation.distill_and_store(
        student,
        teacher,
        {"smoothing": 5.0},
        distillation.DistillationWeights(label_weight=0.0, teacher_weight=1.0),
        warehouse,
        home,
        log=lambda s: None,
    )
    assert result.name == "ctrfix_student_distilled"
    assert result.artifact_dir.parent.name == "ctrfix_student_distilled"
    state = json.loads((result.artifact_dir / "model.json").read_text())
    assert state["distilled_from"] == "ctrfix_good"  # the student received the teacher's soft labels
    alone_state = json.loads((alone.artifact_dir / "model.json").read_text())
    assert alone_state["distilled_from"] is None
    # learning from soft labels only: the student's prior is the teacher's mean score on train
    train = warehouse.read("training_dataset")
    train = train.filter(np.asarray(train.column("split").to_pylist()) == "train")
    teacher_model = teacher.cls.load(__import__("pathlib").Path(read_status(home, "ctrfix_good")["artifact"]))
    assert state["prior"] == pytest.approx(float(np.mean(teacher_model.predict(train).astype(np.float32))))

    compared = distillation.comparison(student, teacher, result, warehouse, home)
    assert compared["teacher_auc"] == read_status(home, "ctrfix_good")["metrics"]["test_auc"]
    assert compared["student_alone_auc"] == alone.scores["test_auc"]
    assert compared["gap_to_teacher"] == pytest.approx(compared["teacher_auc"] - result.scores["test_auc"])
    for key in ("student_latency_ms", "teacher_latency_ms"):
        assert compared[key]["candidates"] == 1000 and 0 < compared[key]["p50"] <= compared[key]["p99"]

    doc = evaluation.evaluate(warehouse, home, registry, log=lambda s: None)
    ranked = {row["name"]: row for row in doc["models"]}
    assert set(ranked) == {"ctrfix_good", "ctrfix_student", "ctrfix_student_distilled"}
    assert ranked["ctrfix_student_distilled"]["plugin"] == "ctrfix_student"
    assert ranked["ctrfix_student_distilled"]["kind"] == "distilled"
    [compared_row] = evaluation.comparisons(doc)  # the distilled student beside the lone one
    assert compared_row["model"] == "ctrfix_student_distilled"
    assert compared_row["baseline"] == "ctrfix_student"
    assert compared_row["what"] == "distilled from ctrfix_good"
    assert compared_row["auc_lift"] == pytest.approx(
        ranked["ctrfix_student_distilled"]["auc"] - ranked["ctrfix_student"]["auc"]
    )


def test_one_user_candidates_keep_the_user_and_vary_the_items():
    table = make_training_table(300, seed=1)
    candidates = distillation.one_user_candidates(table, n=1000)
    assert candidates.num_rows == 1000 and candidates.schema == table.schema
    assert len(set(candidates.column("user_idx").to_pylist())) == 1
    assert len(set(map(tuple, candidates.column("hist_item_idx").to_pylist()))) == 1
    # every row of the source lends its item: all of its items are candidates
    assert set(candidates.column("item_idx").to_pylist()) == set(table.column("item_idx").to_pylist())


def test_weights_are_validated():
    with pytest.raises(ValueError, match="not both 0"):
        distillation.DistillationWeights(label_weight=0.0, teacher_weight=0.0)
    with pytest.raises(ValueError, match="temperature"):
        distillation.DistillationWeights(temperature=0.0)
    with pytest.raises(ValueError, match=">= 0"):
        distillation.DistillationWeights(label_weight=-1.0)
    with pytest.raises(ValueError, match="temperature"):
        distillation.DistillationWeights(temperature=float("nan"))


def test_the_weights_have_one_definition_and_one_default(registry):
    """The asset's launchpad, the engine stage, the torch plugin base and the trainer share one type."""
    from assets.distill import _distill_config
    from ctr_dagster.training.config import DistillationWeights

    assert distillation.DistillationWeights is DistillationWeights
    default = DistillationWeights()
    assert default.as_dict() == {"label_weight": 1.0, "teacher_weight": 1.0, "temperature": 2.0}
    # the plugin base reads FitContext.inputs["distillation"]: a missing weight takes the same default
    assert DistillationWeights.from_mapping({"teacher_scores": [0.5], "teacher_weight": 3}) == (
        DistillationWeights(teacher_weight=3.0)
    )
    assert DistillationWeights.from_mapping({}) == default
    with pytest.raises(ValueError, match="temperature"):
        DistillationWeights.from_mapping({"temperature": -1})
    # the launchpad config of a distilled/<student> asset shows the same defaults
    student, _teacher = _pair(registry)
    fields = _distill_config(student).model_fields
    assert {k: fields[k].default for k in default.as_dict()} == default.as_dict()
