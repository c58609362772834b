"""Serving-bundle export of the `lightgbm` models (`ctr export`; `ctr_dagster.serving.export` finds it).

The bundle's part (``model/``), all in safe formats:

* ``model.txt`` -- the booster in LightGBM's own text format (what `save` writes);
* ``features.py`` -- a copy of `ctr_lightgbm.serving_features`: the feature matrix in numpy alone,
  run by the bundle's runtime on its rows (no pyarrow, no plugin import);
* ``features.json`` -- the feature layout, the id statistics tables (JSON lists) and the feature names;
* ``item_unit.npy`` / ``item_scores.npy`` / ``item_residual.npy`` -- the item vectors, with
  `use_item_embeddings` (``lightgbm_emb``).

`serving_features` re-implements `features.build` (+ `stats.transform`, `ItemVectors.features`) on
the runtime's rows; the engine keeps a bundle only if it scores the export's probe rows as `predict`
does (to 1e-5), so a drift between the two is an export error, never wrong serving scores.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pyarrow as pa

    from ctr_lightgbm.model import LightgbmModel

MODEL_FILE = "model.txt"
FEATURES_FILE = "features.py"
STATE_FILE = "features.json"


def export(model: LightgbmModel, directory: Path, example: pa.Table) -> dict[str, Any]:
    """Write the booster, the feature program and its state into `directory`; the runtime description."""
    import numpy as np

    from ctr_lightgbm import serving_features

    if model.booster is None:
        raise RuntimeError(f"{model.name}: export() before fit() or load()")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model.booster.save_model(str(directory / MODEL_FILE))
    shutil.copyfile(serving_features.__file__, directory / FEATURES_FILE)
    spec = model._spec()
    state = {
        "spec": dataclasses.asdict(spec),
        "table_columns": spec.table_columns(),
        "names": spec.names(),
        "stats": model.meta.get("stats") if spec.use_stats else None,
    }
    (directory / STATE_FILE).write_text(json.dumps(state, sort_keys=True), encoding="utf-8")
    arrays = {}
    if spec.use_embeddings:
        if model.vectors is None:
            raise RuntimeError(f"{model.name}: use_item_embeddings is on but the model has no item vectors")
        for name in ("unit", "scores", "residual"):
            file = f"item_{name}.npy"
            np.save(directory / file, np.ascontiguousarray(getattr(model.vectors, name)), allow_pickle=False)
            arrays[name] = file
    return {
        "kind": "lightgbm",
        "booster": MODEL_FILE,
        "features": FEATURES_FILE,
        "state": STATE_FILE,
        "arrays": arrays,
    }
