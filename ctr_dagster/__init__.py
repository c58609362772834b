"""ctr-dagster: the engine behind the CTR lineage (contracts, registry, data, quality, reports).

Importing this package is cheap on purpose: heavy libraries load inside the functions that use them.
"""

__version__ = "0.1.0"
