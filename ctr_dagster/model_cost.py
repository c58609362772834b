"""What a model costs, measured the same way for every plugin: size, training speed, serving latency.

A ranking engineer picks a model on its lift *and* its cost; a leaderboard that shows only AUC hides
that a 31M-parameter QIN and a 10k-parameter logistic regression may be a point of AUC apart. Three
figures, measured by the engine (no plugin reports its own):

* `parameters`: learned numbers. For a torch plugin the module's trainable parameters (frozen
  buffers such as the item vectors are not counted); any other plugin may define
  ``parameter_count() -> int`` (LightGBM: split thresholds + leaf values; LR: coefficients).
  None when the plugin says nothing.
* `train_rows_per_s`: training rows divided by the fit's wall seconds (all epochs and early stopping
  included): how fast the model turns a day's log into a model, comparable across epoch-based and
  boosting models. The machine and its load matter; compare rows of the same evaluation only.
* `latency_ms`: p50/p99 wall milliseconds to score 1,000 candidates for one user (the serving shape:
  one request, one history) with `predict`, on one thread (`distillation.scoring_latency_ms`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pyarrow as pa

#: Candidates per request in the latency measurement.
LATENCY_CANDIDATES = 1000
#: Timed repeats (after warm-up) per latency measurement: enough for a p99 that is not the max of 10.
LATENCY_REPEATS = 30


def parameter_count(model: Any) -> int | None:
    """Trainable parameters of a fitted model (see the module docstring), or None when unknown."""
    own = getattr(model, "parameter_count", None)
    if callable(own):
        value = own()
        return None if value is None else int(value)
    module = getattr(model, "module", None)
    parameters = getattr(module, "parameters", None)
    if callable(parameters):
        return int(sum(p.numel() for p in parameters() if p.requires_grad))
    return None


def measure(model: Any, train_rows: int, fit_seconds: float, test_features: pa.Table) -> dict[str, Any]:
    """{parameters, train_rows_per_s, latency_ms: {p50, p99, candidates}} of a fitted model.

    `test_features` holds no labels (`modeling.features_only`); the candidates are built from it.
    """
    from ctr_dagster.distillation import one_user_candidates, scoring_latency_ms

    latency = None
    if test_features.num_rows:
        candidates = one_user_candidates(test_features, LATENCY_CANDIDATES)
        latency = scoring_latency_ms(model, candidates, repeats=LATENCY_REPEATS)
    return {
        "parameters": parameter_count(model),
        "train_rows_per_s": round(train_rows / fit_seconds, 1) if fit_seconds > 0 else None,
        "latency_ms": latency,
    }


def cost_row(cost: dict[str, Any] | None) -> dict[str, Any]:
    """Flat leaderboard columns of a `measure` result (all None when it was not measured)."""
    cost = cost or {}
    latency = cost.get("latency_ms") or {}
    return {
        "parameters": cost.get("parameters"),
        "train_rows_per_s": cost.get("train_rows_per_s"),
        "latency_p50_ms": latency.get("p50"),
        "latency_p99_ms": latency.get("p99"),
    }
