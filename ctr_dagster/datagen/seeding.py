"""Named, independent random streams derived from the world seed (never numpy's global state).

Every purpose (catalogue, users, one stream per day, ...) gets its own Generator from
``SeedSequence([seed, crc32(purpose), *keys])``, so adding a draw in one place never shifts the
numbers drawn anywhere else, and day ``d`` draws the same numbers whichever days ran before it.
"""

from __future__ import annotations

import zlib

import numpy as np


def rng_for(seed: int, purpose: str, *keys: int) -> np.random.Generator:
    """A Generator for `purpose` (and e.g. a day index), independent of every other purpose."""
    return np.random.default_rng(
        np.random.SeedSequence([int(seed), zlib.crc32(purpose.encode()), *map(int, keys)])
    )
