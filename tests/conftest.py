"""Shared test settings: every test builds its own `Settings` (the synthetic `tiny` world by default).

Nothing here writes the environment: the code location is built in-process for explicit settings
(`assets.definitions.build_definitions(settings)`), and tests that start a process (the browser
test, `dagster` commands) hand it `settings.as_env()`.
"""

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# The test modules import the code location (`assets/`, not an installed package) by name.
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


@pytest.fixture
def tiny_settings(tmp_path):
    """The `tiny` synthetic world with a fresh project home under this test's temporary folder."""
    from ctr_dagster.settings import Settings

    return Settings(profile="tiny", home=tmp_path / "ctr_home")
