"""Online distillation in the lineage: launchpad ``mode: online`` of ``distilled/<student>`` trains a
fresh teacher and the student together (`ctr_dagster.online_distillation`) and stores the student
where the offline mode does, so the evaluation ranks it; offline stays the default."""

import json
from pathlib import Path

import dagster as dg
import pytest

from assets.distill import _distill_config, distilled_asset
from assets.resources import WarehouseResource
from ctr_dagster import distillation, evaluation
from ctr_dagster.modeling import read_status, train_and_store
from ctr_dagster.registry import discover
from ctr_dagster.settings import Home
from ctr_dagster.testing import make_training_table
from ctr_dagster.warehouse import Warehouse
from tests.plugin_fixtures import distillation_pair_registry


@pytest.fixture
def numpy_pair(tmp_path):
    """A non-torch student and teacher (the fixture plugins of tests/test_distillation.py)."""
    with distillation_pair_registry(tmp_path / "site") as registry:
        [pair] = distillation.students(registry)
        yield pair


@pytest.fixture
def home(tmp_path) -> Home:
    return Home(tmp_path / "home")


def _materialize(asset: dg.AssetsDefinition, home: Home, config: dict) -> dg.ExecuteInProcessResult:
    with dg.instance_for_test() as instance:
        return dg.materialize(
            [asset],
            instance=instance,
            resources={"warehouse": WarehouseResource(home=str(home.root))},
            run_config={"ops": {asset.op.name: {"config": config}}},
            raise_on_error=False,
        )


def test_offline_is_the_default_and_a_non_torch_pair_cannot_go_online(numpy_pair, home):
    student, teacher = numpy_pair
    fields = _distill_config(student, teacher).model_fields
    assert fields["mode"].default == "offline" and "teacher_config" in fields
    assert distillation.online_unsupported(student, teacher).startswith(
        "online distillation trains teacher and student in one torch loop, but ctrfix_student, ctrfix_good "
        "are not torch plugins"
    )
    wh = Warehouse(home.warehouse)
    wh.write("training_dataset", make_training_table(3000, seed=2))
    train_and_store(teacher, {}, wh, home, log=lambda s: None)
    asset = distilled_asset(student, teacher)
    offline = _materialize(asset, home, {"temperatures": [2.0]})  # no mode given: offline
    assert offline.success
    status = read_status(home, "ctrfix_student_distilled")
    assert status["distillation_mode"] == "offline"
    assert json.loads(Path(status["record"]).read_text())["distillation"]["mode"] == "offline"
    # online with a non-torch pair: a clear step error, and the stored offline student is untouched
    online = _materialize(asset, home, {"mode": "online"})
    assert not online.success
    [failure] = [e for e in online.all_events if e.event_type_value == "STEP_FAILURE"]
    assert "ctrfix_student_distilled: online distillation trains" in str(failure.event_specific_data.error)
    assert read_status(home, "ctrfix_student_distilled") == status


def test_a_student_may_declare_the_teacher_its_online_mode_trains(numpy_pair):
    """`online_teacher_config` on the student sets the launchpad's default teacher_config (LightSUAN:
    a grade-5 SUAN); a field the teacher lacks is refused by name, and the launchpad falls back to the
    teacher's own defaults with the reason in the field's description instead of failing the code location."""
    import dataclasses

    from ctr_dagster.contracts import contract_violations

    student, teacher = numpy_pair
    plain = _distill_config(student, teacher).model_fields["teacher_config"]
    assert plain.default.smoothing == 10.0 and "refused" not in plain.description

    class Declaring(student.cls):
        online_teacher_config = {"smoothing": 3.5}

    declaring = dataclasses.replace(student, cls=Declaring)
    assert distillation.online_teacher_defaults(declaring, teacher) == {"smoothing": 3.5}
    field = _distill_config(declaring, teacher).model_fields["teacher_config"]
    assert field.default.smoothing == 3.5 and "{'smoothing': 3.5}" in field.description

    class Misspelt(student.cls):
        online_teacher_config = {"smoothin": 3.5}

    misspelt = dataclasses.replace(student, cls=Misspelt)
    with pytest.raises(ValueError, match="names 'smoothin', not a field of ctrfix_good's Config"):
        distillation.online_teacher_defaults(misspelt, teacher)
    field = _distill_config(misspelt, teacher).model_fields["teacher_config"]
    assert field.default.smoothing == 10.0 and "online_teacher_config was refused" in field.description

    class NotAStudent(teacher.cls):
        online_teacher_config = {"smoothing": 1.0}

    assert any("online_teacher_config must be a dict" in p for p in contract_violations("model", NotAStudent))
    assert not contract_violations("model", Declaring)


def test_lightsuan_asks_for_a_grade_5_teacher_online():
    """The shipped declaration is valid against SUAN's Config (ctr-suan imported from its folder)."""
    import dataclasses
    import sys

    plugin = Path(__file__).resolve().parents[1] / "plugins" / "ctr-suan"
    if str(plugin) not in sys.path:  # opt-in: imported from its folder, as tests/test_serving_suan.py does
        sys.path.insert(0, str(plugin))
    from ctr_suan.model import GRADES, LightSuanModel, SuanModel

    from ctr_dagster.contracts import contract_violations
    from ctr_dagster.registry import PluginInfo

    info = {
        cls: PluginInfo("model", cls.name, None, None, f"ctr_suan.model:{cls.__name__}", cls)
        for cls in (LightSuanModel, SuanModel)
    }
    declared = distillation.online_teacher_defaults(info[LightSuanModel], info[SuanModel])
    assert declared == {"grade": 5} and 5 in GRADES and not contract_violations("model", LightSuanModel)
    teacher_config = (
        _distill_config(info[LightSuanModel], info[SuanModel]).model_fields["teacher_config"].default
    )
    assert teacher_config.grade == 5 and SuanModel.Config().grade == 3  # the stored models/suan keeps its own
    assert dataclasses.replace(SuanModel.Config(), grade=5).resolved().n_layers == GRADES[5].n_layers


def test_din_student_distilled_online_is_stored_ranked_and_says_online(tmp_path):
    """din_student with a fresh din teacher, three joint epochs on `tiny` (a few seconds on 2 cores)."""
    pytest.importorskip("ctr_din")
    from ctr_dagster.testing import synthetic_training_table

    registry = discover(["model"])
    student, teacher = registry.get("model", "din_student"), registry.get("model", "din")
    home = Home(tmp_path / "home")
    wh = Warehouse(home.warehouse)
    wh.write("training_dataset", synthetic_training_table("tiny"))
    fast = {"epochs": 3, "lr": 3e-3, "num_threads": 1, "log_every": 0}
    config = {
        "mode": "online",
        **fast,
        "teacher_weight": 0.5,
        "teacher_config": {**fast, "embedding_dim": 8, "tower_units": [32]},
    }
    result = _materialize(distilled_asset(student, teacher), home, config)
    assert result.success  # no models/din was trained: online mode does not read the stored teacher
    [materialization] = result.asset_materializations_for_node("distilled__din_student")
    meta = {k: v.value for k, v in materialization.metadata.items()}
    assert meta["distillation_mode"] == "online"
    assert meta["loss_weights"] == {"label_weight": 1.0, "teacher_weight": 0.5, "temperature": 1.0}
    assert meta["temperature_chosen_by"] == "online_assumption"
    assert meta["online_teacher_test_auc"] > 0.6 and meta["test_auc"] > 0.6  # both learned
    assert "online teacher, this run" in meta["comparison"]

    status = read_status(home, "din_student_distilled")
    assert status["status"] == "ok" and status["distillation_mode"] == "online"
    artifact = Path(status["artifact"])
    assert artifact.parent.name == "din_student_distilled" and Path(meta["artifact"]) == artifact
    record = json.loads(Path(status["record"]).read_text())["distillation"]
    assert record["mode"] == "online" and record["teacher"] == "din"
    assert record["teacher_config"]["embedding_dim"] == 8 and record["teacher_weight"] == 0.5
    assert "assumed" in record["weights_are"]
    saved = json.loads((artifact / "model.json").read_text())  # the artifact itself says online
    assert saved["training"]["online"]["teacher"] == "din"

    doc = evaluation.evaluate(wh, home, registry, log=lambda s: None)
    ranked = {row["name"]: row for row in doc["models"]}
    row = ranked["din_student_distilled"]
    assert row["plugin"] == "din_student" and row["kind"] == "distilled" and row["auc"] > 0.5
    assert row["variant"] == "distilled online from din"

    # the nightly warm start is offline only: it never continues from an online-distilled student
    from ctr_dagster.modeling import Splits

    start, temperature = distillation._warm_start(student, home, "din_student_distilled", Splits.read(wh), 7)
    assert not start.warm and temperature is None and "distilled online" in start.reason
