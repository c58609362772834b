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


#: The slowest test files (seconds on an idle 2-core machine: the browser test ~240-340, `ctr run` over
#: every log format ~230, the in-process graph ~180-250, Celery workers ~60, then the plugins' seed-
#: averaged ablations and the SUAN bundles, 30-70 each: `pytest --durations=40`, 2026-12-07). Collected
#: first, so that pytest-xdist (`--dist loadfile --no-loadscope-reorder`, `make test`; without that flag
#: xdist re-sorts files by test count and these one-test files ran last, one worker alone on them)
#: starts them first and the short files fill the gaps:
#: longest-first keeps the suite's wall time close to (total / workers) instead of ending on one
#: long file started late.
SLOWEST_FIRST = (
    "tests/test_browser.py",
    "tests/test_ctr_run.py",
    "tests/test_integration.py",
    "tests/test_scale_celery.py",
    "tests/test_serving_suan.py",
    "plugins/ctr-qin/tests/test_qin_ablation.py",
    "plugins/ctr-tin/tests/test_tin_ablation.py",
    "plugins/ctr-awmoe/tests/test_awmoe_ablation.py",
    "plugins/ctr-suan/tests/test_suan_tiny.py",
    "tests/test_graph_on_s3.py",
    "plugins/ctr-din/tests/test_din_ablation.py",
    "tests/test_serving.py",
    "plugins/ctr-din/tests/test_din_vs_lightgbm.py",
    "plugins/ctr-din/tests/test_din_distillation.py",
    "tests/test_mmctr_mapping.py",
    "tests/test_distillation.py",
)


def pytest_collection_modifyitems(config, items):
    def rank(item) -> int:
        path = Path(str(item.fspath)).resolve()
        try:
            relative = path.relative_to(ROOT).as_posix()
        except ValueError:
            return len(SLOWEST_FIRST)
        return SLOWEST_FIRST.index(relative) if relative in SLOWEST_FIRST else len(SLOWEST_FIRST)

    items.sort(key=rank)  # stable: the order within each file and among the others is kept
