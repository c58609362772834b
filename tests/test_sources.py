"""Source selection from the environment: synthetic profile, seed, signal knobs, or import."""

import pytest

from ctr_dagster.sources import SourceSettings, parse_signals


def test_signals_are_parsed_and_reach_the_world_config():
    settings = SourceSettings(profile="tiny", signals="sequence=0, position_bias=0.5")
    signals = settings.world_config().signals
    assert signals.sequence == 0.0 and signals.position_bias == 0.5 and signals.temporal == 1.0
    assert settings.partition_window() == ("2026-11-01", "2026-11-07")


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


def test_environment_is_validated(monkeypatch):
    monkeypatch.setenv("CTR_SOURCE", "import")
    monkeypatch.delenv("CTR_MAPPING", raising=False)
    with pytest.raises(ValueError, match="CTR_MAPPING"):
        SourceSettings.from_env()
    monkeypatch.setenv("CTR_SOURCE", "synthetic")
    monkeypatch.setenv("CTR_PROFILE", "huge")
    with pytest.raises(ValueError, match="CTR_PROFILE must be one of"):
        SourceSettings.from_env()
    monkeypatch.setenv("CTR_SOURCE", "s3")
    with pytest.raises(ValueError, match="CTR_SOURCE must be one of"):
        SourceSettings.from_env()
