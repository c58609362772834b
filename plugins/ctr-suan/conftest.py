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
    try:
        importlib.metadata.distribution("ctr-suan")
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


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
