"""Settings from the environment and flags (one place), and the source they select."""

from pathlib import Path

import pytest

from ctr_dagster.settings import ENV_VARS, Settings, parse_assignments, parse_model_assignments, parse_signals
from ctr_dagster.sources import Source


def test_signals_are_parsed_and_reach_the_world_config():
    settings = Settings(profile="tiny", signals="sequence=0, position_bias=0.5")
    signals = Source(settings).world_config().signals
    assert signals.sequence == 0.0 and signals.position_bias == 0.5 and signals.temporal == 1.0
    assert Source(settings).partition_window() == ("2026-11-01", "2026-11-07")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("sequnce=0", "bad item 'sequnce=0'"),
        ("sequence", "bad item"),
        ("sequence=off", "not a number"),
        ("sequence=-1", "must be a finite number >= 0"),
    ],
)
def test_bad_signals_fail_naming_the_knob(text, message):
    with pytest.raises(ValueError, match=message):
        parse_signals(text)
    with pytest.raises(ValueError, match=message):
        Settings(signals=text)


def test_config_assignments_read_json_and_keep_bare_words():
    """The benchmarks' and scripts' KEY=VALUE overrides (one parser for all of them)."""
    values = parse_assignments(["lr=1e-3", "hidden=[64, 32]", "lr_schedule=cosine", "amp=false", "note=a=b"])
    assert values == {"lr": 1e-3, "hidden": [64, 32], "lr_schedule": "cosine", "amp": False, "note": "a=b"}
    with pytest.raises(ValueError, match=r"--override: expected KEY=VALUE, got 'batch_size'"):
        parse_assignments(["batch_size"], "--override")
    with pytest.raises(ValueError, match="expected KEY=VALUE"):
        parse_assignments(["=3"])
    per_model = parse_model_assignments(["din:batch_size=256", "suan:grade=5", "din:lr=1e-3"])
    assert per_model == {"din": {"batch_size": 256, "lr": 1e-3}, "suan": {"grade": 5}}
    for bad in ("din", "din:batch_size", ":lr=1"):
        with pytest.raises(ValueError, match="expected MODEL:KEY=JSON"):
            parse_model_assignments([bad])


def test_environment_is_validated():
    with pytest.raises(ValueError, match="CTR_MAPPING"):
        Settings.from_env({"CTR_SOURCE": "import"})
    with pytest.raises(ValueError, match="CTR_PROFILE must be one of"):
        Settings.from_env({"CTR_PROFILE": "huge"})
    with pytest.raises(ValueError, match="CTR_SOURCE must be one of"):
        Settings.from_env({"CTR_SOURCE": "s3"})
    with pytest.raises(ValueError, match="CTR_SEED='x' is not an integer"):
        Settings.from_env({"CTR_SEED": "x"})


def test_defaults_are_declared_once_and_flags_override_the_environment(tmp_path):
    from ctr_dagster.datagen.config import WorldConfig

    default = Settings.from_env({})
    assert (default.source, default.profile, default.seed, default.signals) == (
        "synthetic",
        "small",
        WorldConfig.seed,
        "",
    )
    assert default.home == Path.cwd() / ".ctr_home" and default.dagster_home is None
    env = {"CTR_PROFILE": "tiny", "CTR_SEED": "3", "CTR_HOME": str(tmp_path), "CTR_WARM_START": "yes"}
    from_env = Settings.from_env(env)
    assert (from_env.profile, from_env.seed, from_env.home, from_env.warm_start) == (
        "tiny",
        3,
        tmp_path,
        True,
    )
    # a flag the user gave wins; one they did not give (None) keeps the environment's value
    flagged = Settings.from_env(env, profile="small", seed=None)
    assert (flagged.profile, flagged.seed) == ("small", 3)
    assert flagged.replace(seed=11, profile=None).seed == 11


def test_settings_round_trip_through_the_environment_of_a_child_process(tmp_path):
    settings = Settings(
        profile="tiny",
        seed=5,
        signals="temporal=0.5,sequence=0",
        home=tmp_path / "h",
        dagster_home=tmp_path / "d",
    )
    env = settings.as_env()
    assert set(env) <= set(ENV_VARS.values())
    assert Settings.from_env(env) == settings
    # equal settings compare (and cache) equal, whatever the order the knobs were written in
    assert settings == Settings(
        profile="tiny",
        seed=5,
        signals="sequence=0, temporal=0.5",
        home=tmp_path / "h",
        dagster_home=tmp_path / "d",
    )


def test_the_home_names_every_folder_once(tmp_path):
    home = Settings(home=tmp_path).ctr_home
    assert home.warehouse == tmp_path / "warehouse" and home.champion == tmp_path / "champion"
    assert len({home.warehouse, home.artifacts, home.models, home.records, home.work, home.champion}) == 6


def _import_settings(tmp_path: Path, log: str | None) -> Settings:
    (tmp_path / "logs").mkdir(exist_ok=True)
    if log is not None:
        (tmp_path / "logs" / "a.csv").write_text(log)
    mapping = tmp_path / "mapping.yaml"
    mapping.write_text(
        "tables:\n  impressions:\n    files: logs/*.csv\n    parse: {ts: {unit: s}}\n"
        "    defaults: {position: 1, treatment: 0, conversion: 0}\n"
    )
    return Settings(source="import", mapping=mapping, home=tmp_path / "home")


def test_imported_partitions_span_the_days_in_the_data_not_a_calendar(tmp_path):
    """A 1997 log: partitions from its first to its last day (not 1997 .. today), in the UI too."""
    from assets.resources import daily_partitions

    day = 86_400
    start = 874_724_710  # 1997-09-20
    rows = [f"e{i},{start + d * day},u{i},i{i},{i % 2}" for i, d in enumerate([0, 0, 1, 3])]
    settings = _import_settings(tmp_path, "impression_id,ts,user_id,item_id,click\n" + "\n".join(rows) + "\n")
    source = Source(settings)
    assert source.partition_window() == ("1997-09-20", "1997-09-24")
    assert source.import_plan().days == ["1997-09-20", "1997-09-21", "1997-09-23"]  # what `ctr run` runs
    assert daily_partitions(settings).get_partition_keys() == [
        "1997-09-20",
        "1997-09-21",
        "1997-09-22",
        "1997-09-23",
    ]
    # imported state is kept apart from the demo's, per mapping file
    assert settings.ctr_home.root.parent == settings.home / "import"


def test_an_empty_inbox_does_not_stop_the_code_location_loading(tmp_path):
    from assets.definitions import build_definitions

    settings = _import_settings(tmp_path, None)
    defs = build_definitions(settings)
    graph = defs.resolve_asset_graph()
    assert (
        len(graph.get(__import__("dagster").AssetKey("raw_impressions")).partitions_def.get_partition_keys())
        == 1
    )
