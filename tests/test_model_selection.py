"""`CTR_MODELS` / `--models`: the code location builds assets for the selected model plugins only, and
every stage (evaluation deps, uplift deps, nightly config, the registry the steps ask) agrees."""

from __future__ import annotations

import pytest

from ctr_dagster.code_location import load_code_location
from ctr_dagster.registry import default_registry, discover, select_models
from ctr_dagster.settings import Settings

ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def every_model_afterwards():
    yield
    select_models(None)


def _model_keys(defs) -> set[str]:
    keys = {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()}
    return {k for k in keys if k.startswith(("models/", "distilled/"))}


def test_only_the_selected_models_get_assets_and_the_stages_agree(tmp_path):
    definitions = load_code_location(ROOT, "definitions")
    settings = Settings(profile="tiny", home=tmp_path, models="lightgbm, din,din_student,s_learner")
    assert settings.model_names == ("din", "din_student", "lightgbm", "s_learner")
    defs = definitions.build_definitions(settings)
    assert _model_keys(defs) == {
        "models/din",
        "models/din_student",
        "models/lightgbm",
        "models/s_learner",
        "distilled/din_student",  # its teacher is selected
    }
    graph = defs.resolve_asset_graph()
    deps = {k.to_user_string() for k in graph.get(definitions.dg.AssetKey("evaluation")).parent_keys}
    assert {d for d in deps if d.startswith(("models/", "distilled/"))} == {
        "models/din",
        "models/din_student",
        "models/lightgbm",
        "distilled/din_student",
    }
    uplift = graph.get(definitions.dg.AssetKey("uplift_evaluation")).parent_keys
    assert {k.to_user_string() for k in uplift} == {"training_dataset", "models/s_learner"}
    assert default_registry().names("model") == ["din", "din_student", "lightgbm", "s_learner"]
    nightly = load_code_location(ROOT, "schedules").warm_start_config(True)  # the nightly's model config
    assert set(nightly["ops"]) == {
        "models__din",
        "models__din_student",
        "models__lightgbm",
        "models__s_learner",
        "distilled__din_student",
        "item_attributes",  # the attribute stage's refresh cadence
    }

    # the same process, the default settings again: every installed model is back
    everything = definitions.build_definitions(Settings(profile="tiny", home=tmp_path))
    assert {f"models/{n}" for n in discover(["model"]).names("model")} <= _model_keys(everything)


def test_a_student_without_its_teacher_trains_alone(tmp_path):
    definitions = load_code_location(ROOT, "definitions")
    defs = definitions.build_definitions(Settings(profile="tiny", home=tmp_path, models="din_student"))
    assert _model_keys(defs) == {"models/din_student"}


def test_an_unknown_model_name_is_an_error_naming_the_installed_ones(tmp_path):
    definitions = load_code_location(ROOT, "definitions")
    with pytest.raises(ValueError, match=r"\['nope'\].*installed: \[.*'lightgbm'"):
        definitions.build_definitions(Settings(profile="tiny", home=tmp_path, models="lightgbm,nope"))


def test_the_environment_variable_selects_as_the_flag_does():
    assert Settings.from_env({"CTR_MODELS": "lightgbm,baseline_lr"}).model_names == (
        "baseline_lr",
        "lightgbm",
    )
    assert Settings.from_env({}).model_names == ()
    assert Settings(models="lightgbm").as_env()["CTR_MODELS"] == "lightgbm"
