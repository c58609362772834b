"""ctr-suan is an opt-in plugin (see the Makefile's OPT_IN_PLUGINS): `make install` does not install it,
so the demo and the full-lineage tests do not train it. Its own tests still run in `make test`: where
the distribution is not installed, this folder goes on sys.path (as tests/test_serving_suan.py and
benchmarks/bench_suan.py import it) and only the tests that need its entry points are skipped
(marker `needs_entry_points`)."""

import importlib.metadata
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def _installed() -> bool:
    """Whether a fresh interpreter finds the distribution (and so its entry points). Not on this folder:
    pytest puts it on sys.path itself, and a `pip install` of it (`make demo WITH_SUAN=1`, an editable
    install since uninstalled) leaves a `ctr_suan.egg-info` here that would pass for an installation."""
    elsewhere = [p for p in sys.path if Path(p or ".").resolve() != HERE]
    return any(True for _ in importlib.metadata.distributions(name="ctr-suan", path=elsewhere))


INSTALLED = _installed()
if not INSTALLED and str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "needs_entry_points: needs ctr-suan installed (its entry points discovered)"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if INSTALLED:
        return
    skip = pytest.mark.skip(reason="ctr-suan is not installed (pip install -e plugins/ctr-suan)")
    for item in items:
        if item.get_closest_marker("needs_entry_points") and str(item.path).startswith(str(HERE)):
            item.add_marker(skip)
