"""Distillation stage: a student plugin is trained from its teacher's soft labels plus the labels,
stored under its own entry beside the lone student, ranked by the evaluation and compared."""

import json
from pathlib import Path

import dagster as dg
import numpy as np
import pytest

from assets.distill import distilled_asset
from assets.resources import WarehouseResource
from ctr_dagster import distillation, evaluation
from ctr_dagster.modeling import read_status, train_and_store
from ctr_dagster.registry import discover
from ctr_dagster.settings import Home
from ctr_dagster.testing import make_training_table
from ctr_dagster.warehouse import Warehouse
from tests.plugin_fixtures import MODELS, distillation_pair_registry, on_sys_path, write_dist


@pytest.fixture
def registry(tmp_path):
    with distillation_pair_registry(tmp_path / "site") as found:
        yield found


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
    # the launchpad config of a distilled/<student> asset shows the same weights, and the temperature
    # grid the stage chooses from on validation (no single temperature to set by hand)
    student, _teacher = _pair(registry)
    fields = _distill_config(student).model_fields
    weights = {k: v for k, v in default.as_dict().items() if k != "temperature"}
    assert {k: fields[k].default for k in weights} == weights
    assert "temperature" not in fields
    assert fields["temperatures"].default == list(distillation.TEMPERATURES) == [1.0, 2.0, 4.0]


# -- issue 14: the temperature is chosen on validation, a lift only against a fresh lone student -----

TEMPERATURE_STUDENT = """
import json

import numpy as np
from ctrfix_student import StudentModel

#: (temperature of the model, splits of the rows it scored): what the test checks never touched test.
SCORED = []


class TemperatureStudent(StudentModel):
    name = "ctrfix_tstudent"

    def fit(self, train, valid, ctx):
        super().fit(train, valid, ctx)
        self.temperature = (ctx.inputs.get("distillation") or {}).get("temperature")
        return self

    def predict(self, batch):
        SCORED.append((self.temperature, set(batch.column("split").to_pylist())))
        scores = super().predict(batch)
        if self.temperature == 2.0:
            return scores
        # any other temperature scrambles the ranking: T = 2 is the clear best on validation
        item = batch.column("item_idx").to_numpy().astype(np.float64)
        return np.clip(0.2 * scores + 0.8 * (0.5 + 0.5 * np.sin(item * 12.9898)), 0.0, 1.0)

    def save(self, directory):
        super().save(directory)
        (directory / "temperature.json").write_text(json.dumps(self.temperature))

    @classmethod
    def load(cls, directory):
        model = super().load(directory)
        model.temperature = json.loads((directory / "temperature.json").read_text())
        return model
"""


@pytest.fixture
def t_registry(tmp_path):
    root = tmp_path / "tsite"
    write_dist(
        root,
        "ctrfix-kdt",
        {
            MODELS: {
                "ctrfix_good": "ctrfix_good:GoodModel",
                "ctrfix_tstudent": "ctrfix_tstudent:TemperatureStudent",
            }
        },
        ("ctrfix_good", "ctrfix_student"),
        sources={"ctrfix_tstudent.py": TEMPERATURE_STUDENT},
    )
    with on_sys_path(root):
        yield discover(["model"], path=[root])


def test_the_temperature_is_chosen_on_validation_never_on_test(t_registry, warehouse, home):
    """Issue 14: T was a default picked on test AUC. Now one fit per grid temperature, the best
    validation AUC wins, only the winner is scored on test, and the grid's validation AUCs are kept."""
    import ctrfix_tstudent

    student, teacher = _pair(t_registry)
    train_and_store(teacher, {}, warehouse, home, log=lambda s: None)
    ctrfix_tstudent.SCORED.clear()
    result = distillation.distill_and_store(
        student, teacher, {}, distillation.DistillationWeights(), warehouse, home, log=lambda s: None
    )
    selection = result.selection
    assert selection["chosen_by"] == "valid_auc" and selection["temperature"] == 2.0
    grid = selection["valid_auc"]
    assert set(grid) == {"1", "2", "4"} and grid["2"] > max(grid["1"], grid["4"])
    assert result.scores["valid_auc"] == pytest.approx(grid["2"])
    scored_test = {t for t, splits in ctrfix_tstudent.SCORED if "test" in splits}
    assert scored_test == {2.0}  # the losing temperatures never saw a test row
    assert {t for t, splits in ctrfix_tstudent.SCORED if splits == {"valid"}} == {1.0, 2.0, 4.0}
    record = json.loads(result.record_path.read_text())
    assert record["distillation"]["temperature"] == 2.0 and record["distillation"]["selection"] == selection


def test_nightly_distillation_continues_at_the_chosen_temperature_within_the_cadence(
    t_registry, warehouse, home, monkeypatch
):
    """Issue 22: the nightly run warm-starts the distilled student (one fit at the temperature the
    last full retrain chose, from its artifact) instead of the whole grid; the grid runs again at
    the next full retrain. (The fixture student ignores `init_from`: this checks the plan.)"""
    import ctrfix_tstudent

    student, teacher = _pair(t_registry)
    monkeypatch.setattr(student.cls, "supports_warm_start", True, raising=False)
    train_and_store(teacher, {}, warehouse, home, log=lambda s: None)
    kwargs = {"log": lambda s: None, "full_retrain_every_days": 7}
    weights = distillation.DistillationWeights()
    first = distillation.distill_and_store(student, teacher, {}, weights, warehouse, home, **kwargs)
    assert first.lineage["training"] == "full retrain" and set(first.selection["valid_auc"]) == {
        "1",
        "2",
        "4",
    }
    ctrfix_tstudent.SCORED.clear()
    lines: list[str] = []
    kwargs["log"] = lines.append
    night = distillation.distill_and_store(student, teacher, {}, weights, warehouse, home, **kwargs)
    assert night.lineage["training"] == "warm start"
    assert night.lineage["warm_started_from"] == str(first.artifact_dir)
    assert set(night.selection["valid_auc"]) == {"2"}  # one fit, at the temperature chosen then
    assert {t for t, _ in ctrfix_tstudent.SCORED} == {2.0}
    assert any("temperature 2 as chosen then" in line for line in lines)
    # cadence 0: every night is a full retrain, grid included
    kwargs["full_retrain_every_days"] = 0
    full = distillation.distill_and_store(student, teacher, {}, weights, warehouse, home, **kwargs)
    assert full.lineage["training"] == "full retrain" and set(full.selection["valid_auc"]) == {"1", "2", "4"}


def test_temperature_ties_go_to_the_smaller_and_the_grid_is_validated():
    assert distillation.best_on_valid({4.0: 0.7, 1.0: 0.7, 2.0: 0.69}) == 1.0
    assert distillation.best_on_valid({1.0: None, 2.0: 0.6}) == 2.0
    assert distillation.best_on_valid({2.0: None, 1.0: None}) == 1.0
    assert distillation.temperature_grid([4, 1, 2, 2]) == (1.0, 2.0, 4.0)
    for bad in ([], [0.0], [1.0, float("nan")]):
        with pytest.raises(ValueError):
            distillation.temperature_grid(bad)


def test_the_lift_is_reported_only_against_a_lone_student_of_the_same_dataset(registry, warehouse, home):
    """Issue 14: the lift over the lone student was computed whatever data that student was trained
    on. A lone student of an older training_dataset is stale: no lift, and the reason is given."""
    student, teacher = _pair(registry)
    train_and_store(student, {}, warehouse, home, log=lambda s: None)  # alone, on yesterday's data
    warehouse.write("training_dataset", make_training_table(3000, seed=5))  # today's data
    train_and_store(teacher, {}, warehouse, home, log=lambda s: None)
    result = distillation.distill_and_store(
        student, teacher, {}, distillation.DistillationWeights(), warehouse, home, log=lambda s: None
    )
    stale = distillation.comparison(student, teacher, result, warehouse, home)
    assert stale["lift_over_alone"] is None and stale["student_alone_auc"] is None
    assert stale["lift_note"].startswith(
        "stale: models/ctrfix_student was trained on another training_dataset"
    )
    assert stale["gap_to_teacher"] is not None and stale["gap_note"] is None  # the teacher is fresh
    alone = train_and_store(student, {}, warehouse, home, log=lambda s: None)  # alone, on today's data
    fresh = distillation.comparison(student, teacher, result, warehouse, home)
    assert fresh["lift_over_alone"] == pytest.approx(result.scores["test_auc"] - alone.scores["test_auc"])
    assert fresh["lift_note"] is None


def test_the_teacher_scores_features_only(registry, warehouse, home, monkeypatch):
    """The soft labels come from the teacher's predict on the train rows without label / conversion."""
    student, teacher = _pair(registry)
    train_and_store(teacher, {}, warehouse, home, log=lambda s: None)
    seen: list[list[str]] = []
    real_predict = teacher.cls.predict

    def spy(self, batch):
        seen.append(batch.column_names)
        return real_predict(self, batch)

    monkeypatch.setattr(teacher.cls, "predict", spy)
    distillation.distill_and_store(
        student, teacher, {}, distillation.DistillationWeights(), warehouse, home, log=lambda s: None
    )
    assert seen and all(not {"label", "conversion"} & set(columns) for columns in seen)


def test_the_asset_reports_the_grid_the_choice_and_why_there_is_no_lift(t_registry, warehouse, home):
    student, teacher = _pair(t_registry)
    train_and_store(teacher, {}, warehouse, home, log=lambda s: None)  # no lone student at all
    asset = distilled_asset(student, teacher)
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            [asset],
            instance=instance,
            resources={"warehouse": WarehouseResource(home=str(home.root))},
            run_config={"ops": {"distilled__ctrfix_tstudent": {"config": {"temperatures": [4.0, 2.0]}}}},
        )
        assert result.success
        [materialization] = result.asset_materializations_for_node("distilled__ctrfix_tstudent")
    meta = {k: v.value for k, v in materialization.metadata.items()}
    assert meta["temperature"] == 2.0 and meta["temperature_chosen_by"] == "valid_auc"
    assert set(meta["temperature_grid_valid_auc"]) == {"2", "4"}
    assert meta["loss_weights"]["temperature"] == 2.0
    assert "lift_over_alone" not in meta
    assert meta["lift_note"] == "models/ctrfix_tstudent has never been trained"
    assert Path(meta["artifact"]).is_dir()


# -- model quality: din -> din_student through the engine's stage, over seeds ---------------------------

QUALITY_SEEDS = (0, 1, 2)
DIN_CONFIG = {"num_threads": 1, "log_every": 0}


def test_distillation_lifts_din_student_over_seeds(tmp_path):
    """din_student distilled from din (temperature chosen on validation by the stage) beats the lone
    din_student on `tiny`'s test split, as a mean over 3 training seeds judged against its spread.

    Measured (seeds 0-4, the stage's validation-chosen T; `tiny`, 13,208 / 3,440 / 3,376 rows):
    lift over the lone student +0.0082, +0.0196, +0.0220, +0.0107, +0.0246 (mean +0.0170, sd 0.0072
    across seeds; chosen T = 2, 4, 4, 4, 4). The lone student spreads far more (test AUC 0.7821,
    0.7701, 0.7691, 0.7801, 0.7186: sd 0.026), so one seed proves nothing: at a fixed T = 2 (the old
    default) the lifts are +0.0082, +0.0170, +0.0150, +0.0080, -0.0002 (mean +0.0096, sd 0.0068).
    The claim is therefore the mean lift of seeds 0-2 exceeding twice its standard error (measured
    +0.0166, se 0.0042), and each distilled student trailing its teacher (teacher - distilled,
    measured +0.0035 .. +0.0442) within a 0.01 allowance. About 40 s on 2 CPU cores.
    """
    pytest.importorskip("ctr_din")
    from ctr_dagster.testing import synthetic_training_table

    registry = discover(["model"])
    teacher, student = registry.get("model", "din"), registry.get("model", "din_student")
    home = Home(tmp_path / "home")
    wh = Warehouse(home.warehouse)
    wh.write("training_dataset", synthetic_training_table("tiny"))
    lifts, rows = [], []
    for seed in QUALITY_SEEDS:
        quiet = {"seed": seed, "log": lambda s: None}
        teacher_auc = train_and_store(teacher, DIN_CONFIG, wh, home, **quiet).scores["test_auc"]
        alone_auc = train_and_store(student, DIN_CONFIG, wh, home, **quiet).scores["test_auc"]
        distilled = distillation.distill_and_store(
            student, teacher, DIN_CONFIG, distillation.DistillationWeights(), wh, home, **quiet
        )
        distilled_auc = distilled.scores["test_auc"]
        rows.append((seed, teacher_auc, alone_auc, distilled_auc, distilled.selection["temperature"]))
        lifts.append(distilled_auc - alone_auc)
        assert distilled_auc < teacher_auc + 0.01, rows  # a 5-behaviour, 8-wide student stays below
    mean, se = float(np.mean(lifts)), float(np.std(lifts, ddof=1) / np.sqrt(len(lifts)))
    print(f"seed, teacher, alone, distilled, T: {rows}; lift mean {mean:+.4f} se {se:.4f}")
    assert mean > 2 * se and mean > 0, (rows, mean, se)
