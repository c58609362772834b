"""Session-wide test settings: the code location is loaded on the synthetic `tiny` world."""

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# The daily partitions are fixed when assets/ is imported: pin the source before any test does.
os.environ["CTR_SOURCE"] = "synthetic"
os.environ["CTR_PROFILE"] = "tiny"
os.environ.pop("CTR_MAPPING", None)
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
