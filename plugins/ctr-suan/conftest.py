"""ctr-suan is an opt-in plugin (see the Makefile's OPT_IN_PLUGINS): its tests run where it is installed
(`pip install -e plugins/ctr-suan`) and are left out of collection elsewhere. The check asks for the
installed distribution, not the importable package: pytest puts this folder on sys.path itself."""

import importlib.metadata


def _installed() -> bool:
    try:
        importlib.metadata.distribution("ctr-suan")
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


collect_ignore_glob = [] if _installed() else ["tests/*"]
