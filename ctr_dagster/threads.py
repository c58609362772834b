"""How many CPU threads one training may use, so that steps running side by side share the cores.

Dagster's multiprocess executor runs several steps at once (``max_concurrent``, by default one per
core). If every LightGBM or torch training then takes every core, two trainings on a 2-core machine
run four busy OpenMP threads and each takes 10x longer than alone (issue 22: 2 min each instead of
12 s). The asset glue (`assets.concurrency`) knows how many training steps can run at the same time
and sets the step's share in ``CTR_STEP_THREADS`` for the duration of the step (`step_threads`); the
engine and the plugins read it here:

* `threads_per_step()`: the step's share, or every usable core when no share was set (a script, a
  test, the in-process ``ctr demo``, where steps run one at a time);
* `resolve(explicit)`: a plugin's own thread setting (> 0) wins, else `threads_per_step()`;
* `step_thread_budget()`: the share only when one was set (None otherwise), for libraries whose own
  default should stand when nothing is known (torch).

Rule: ``share(concurrent) = max(1, cpus // concurrent)``. Standard library only.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

#: The environment variable holding the current step's thread share (set by the asset glue).
ENV_VAR = "CTR_STEP_THREADS"


def cpu_count() -> int:
    """Cores this process may run on (its affinity mask where the OS has one, e.g. a container's
    cpuset), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def share(concurrent: int, cpus: int | None = None) -> int:
    """Threads for one of `concurrent` steps running at once on `cpus` cores: ``max(1, cpus // concurrent)``."""
    cpus = cpu_count() if cpus is None else int(cpus)
    return max(1, cpus // max(1, int(concurrent)))


def step_thread_budget() -> int | None:
    """The current step's share (``CTR_STEP_THREADS``), or None when none was set (or it is not a
    positive integer)."""
    raw = os.environ.get(ENV_VAR, "").strip()
    try:
        value = int(raw)
    except ValueError:
        return None
    return value if value > 0 else None


def threads_per_step() -> int:
    """Threads this training may use: the step's share, else every usable core."""
    return step_thread_budget() or cpu_count()


def resolve(explicit: int | None) -> int:
    """A plugin's explicit thread setting when > 0 (it wins), else `threads_per_step()`."""
    return int(explicit) if explicit and int(explicit) > 0 else threads_per_step()


#: OpenMP's default thread count, read by libraries when they load (torch, imported inside the step,
#: then defaults to the share for its scoring too); set for the block unless the user set it.
OMP_VAR = "OMP_NUM_THREADS"


@contextlib.contextmanager
def step_threads(threads: int) -> Iterator[int]:
    """Set ``CTR_STEP_THREADS`` (and ``OMP_NUM_THREADS`` when unset) to `threads` for the block,
    restored after (in-process runs execute several steps in one process); child processes inherit it."""
    n = max(1, int(threads))
    changes = {ENV_VAR: str(n)}
    if OMP_VAR not in os.environ:
        changes[OMP_VAR] = str(n)
    previous = {name: os.environ.get(name) for name in changes}
    os.environ.update(changes)
    try:
        yield n
    finally:
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
