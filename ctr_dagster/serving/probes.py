"""The rows an export is checked on: the shapes serving meets, each compared with the model's `predict`.

Why several: a traced network may silently keep the branch its tracing example took (one history for
all rows, a non-empty history, a batch of many rows). Checking the bundle on each shape turns such a
capture into an export error instead of wrong scores in production:

* ``rows``: the example as given (several users, each with their own history);
* ``one_user``: one user's history with many candidates (the serving shape);
* ``one_row``: a single candidate;
* ``no_history``: the example with every behaviour sequence empty (new users).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa

from ctr_dagster.serving.runtime import sigmoid

#: |bundle score - model.predict| allowed on every probe row (issue 18: parity to 1e-5).
PARITY_TOLERANCE = 1e-5
#: Candidates in the one-user probe.
ONE_USER_CANDIDATES = 256
LIST_COLUMNS = ("hist_item_idx", "hist_category_idx", "hist_age_s", "hist_rel_pos")


def without_history(table: pa.Table) -> pa.Table:
    """`table` with every behaviour-sequence list emptied (a new user's rows)."""
    for name in LIST_COLUMNS:
        if name in table.column_names:
            i = table.schema.get_field_index(name)
            field = table.schema.field(i)
            table = table.set_column(i, field, pa.array([[]] * table.num_rows, type=field.type))
    return table


def probe_tables(example: pa.Table, candidates: int = ONE_USER_CANDIDATES) -> dict[str, pa.Table]:
    """The probes of `example` (features only; see the module docstring), empty when it has no rows."""
    from ctr_dagster.distillation import one_user_candidates

    if example.num_rows == 0:
        return {}
    return {
        "rows": example,
        "one_user": one_user_candidates(example, candidates),
        "one_row": example.slice(0, 1),
        "no_history": without_history(example),
    }


def largest_gap(
    run: Callable[[dict[str, np.ndarray]], np.ndarray],
    model: Any,
    probes: dict[str, pa.Table],
    expected: dict[str, np.ndarray],
) -> tuple[float, str]:
    """(largest |sigmoid(run(encoded probe)) - predict|, the probe it occurred on) over `probes`:
    `run` is a network program of the runtime (`TorchProgram`, `OnnxProgram`) and the probes are
    encoded by the torch `model`'s own encoder, so any gap is the program's."""
    worst, where = 0.0, ""
    for name, table in probes.items():
        arrays = {key: tensor.numpy() for key, tensor in model.encoder.tensors(table).items()}
        gap = float(np.max(np.abs(sigmoid(run(arrays)) - expected[name]), initial=0.0))
        if gap > worst or not np.isfinite(gap):
            worst, where = gap, name
    return worst, where
