"""The quality gate against the synthetic world's planted corruption: it must find exactly those rows."""

import pytest

from ctr_dagster.datagen import Signals, build_world, profile
from ctr_dagster.quality import split_clean_impressions


@pytest.mark.parametrize("seed", [7, 11])
def test_quarantine_is_exactly_the_planted_corruption(seed):
    world = build_world(profile("tiny", seed=seed))
    kinds = set()
    for day in world.dates():
        data = world.day(day)
        clean, quarantine, report = split_clean_impressions(
            data.impressions, partition=day, items=world.items(), users=world.users()
        )
        planted = set(data.corruption.column("row").to_pylist())
        assert set(quarantine.column("source_row").to_pylist()) == planted, day
        assert report.rows_in == clean.num_rows + report.rows_quarantined == data.impressions.num_rows
        kinds |= set(data.corruption.column("kind").to_pylist())
    assert len(kinds) >= 5  # the gate saw most kinds of corruption, not just one


def test_clean_world_has_nothing_to_quarantine():
    world = build_world(profile("tiny", seed=3, corruption_rate=0.0, signals=Signals()))
    day = world.dates()[0]
    _, quarantine, report = split_clean_impressions(
        world.day(day).impressions, partition=day, items=world.items(), users=world.users()
    )
    assert quarantine.num_rows == 0 and report.success
