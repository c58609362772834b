"""The kit's checks as plain functions: each raises `ConformanceError` (an AssertionError) saying which
check failed and why, so they work inside pytest and outside it (the CLI, `check_model`)."""

from __future__ import annotations

import dataclasses
import json
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from ctr_dagster.contracts import config_from_dict, config_to_dict, contract_violations
from ctr_dagster.metrics import auc  # the one AUC (re-exported by the kit)

__all__ = [
    "CheckResult",
    "ConformanceError",
    "assert_no_pickles",
    "assert_scores_valid",
    "auc",
    "check_config",
    "check_contract",
    "check_label_blind",
    "find_pickles",
    "shuffled_labels",
    "uplift_gain",
]


class ConformanceError(AssertionError):
    """A plugin does not conform; the message says which check and why."""


@dataclass(frozen=True)
class CheckResult:
    name: str
    passed: bool
    message: str = ""


def _fail(check: str, message: str) -> ConformanceError:
    return ConformanceError(f"[{check}] {message}")


def check_contract(kind: str, plugin: Any) -> None:
    problems = contract_violations(kind, plugin)
    if problems:
        raise _fail("contract", f"{getattr(plugin, '__name__', plugin)!r}: " + "; ".join(problems))


def _json_normalized(values: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(values))


def check_config(plugin: type) -> None:
    """Config is a dataclass with defaults, JSON-serializable, round-trips, rejects unknown keys,
    and the plugin can be constructed from it."""
    config_cls = getattr(plugin, "Config", None)
    if not (isinstance(config_cls, type) and dataclasses.is_dataclass(config_cls)):
        raise _fail("config", f"Config must be a dataclass, got {config_cls!r}")
    try:
        default = config_cls()
    except TypeError as exc:
        raise _fail("config", f"Config() must work with defaults only: {exc}") from exc
    values = config_to_dict(default)
    try:
        encoded = json.dumps(values)
    except (TypeError, ValueError) as exc:
        raise _fail("config", f"Config defaults are not JSON-serializable ({exc}): {values!r}") from exc
    rebuilt = config_from_dict(plugin, json.loads(encoded))
    if _json_normalized(config_to_dict(rebuilt)) != _json_normalized(values):
        raise _fail(
            "config", f"config_from_dict(to_dict(default)) changed the values: {config_to_dict(rebuilt)!r}"
        )
    try:
        config_from_dict(plugin, {**values, "__not_a_config_key__": 1})
    except ValueError:
        pass
    else:
        raise _fail("config", "an unknown config key was accepted (Config must reject unknown fields)")
    try:
        plugin(default)
    except Exception as exc:
        raise _fail("config", f"{plugin.__name__}(Config()) failed: {type(exc).__name__}: {exc}") from exc


def assert_scores_valid(scores: Any, n: int, task: str = "ctr") -> np.ndarray:
    """Scores are a float ndarray of shape (n,), finite, within [0, 1] (ctr) or [-1, 1] (uplift)."""
    if not isinstance(scores, np.ndarray):
        raise _fail("predict", f"predict must return a numpy array, got {type(scores).__name__}")
    if scores.shape != (n,):
        raise _fail("predict", f"predict must return shape ({n},), got {scores.shape}")
    if scores.dtype.kind != "f":
        raise _fail("predict", f"predict must return floats, got dtype {scores.dtype}")
    if not np.all(np.isfinite(scores)):
        raise _fail("predict", f"predict returned {int((~np.isfinite(scores)).sum())} non-finite score(s)")
    low, high = (-1.0, 1.0) if task == "uplift" else (0.0, 1.0)
    if scores.min() < low or scores.max() > high:
        raise _fail(
            "predict", f"scores must lie in [{low}, {high}], got [{scores.min():.4g}, {scores.max():.4g}]"
        )
    return scores


def uplift_gain(scores: np.ndarray, outcome: np.ndarray, treatment: np.ndarray) -> float:
    """Observed uplift (treated − control outcome rate) in the top half by score minus the bottom half.

    Treated = any coupon arm (treatment > 0), pooled; control = treatment 0.
    """
    order = np.argsort(-np.asarray(scores), kind="mergesort")
    half = len(order) // 2

    def uplift(idx: np.ndarray) -> float:
        t = treatment[idx] > 0
        if t.all() or (~t).all():
            return 0.0
        return float(outcome[idx][t].mean() - outcome[idx][~t].mean())

    return uplift(order[:half]) - uplift(order[half:])


def shuffled_labels(table: pa.Table, seed: int = 0) -> pa.Table:
    """`table` with each label / oracle column it holds (`modeling.HIDDEN_AT_PREDICT`) permuted
    across rows by a seeded generator: same features, same label rates, labels that mean nothing."""
    from ctr_dagster.modeling import HIDDEN_AT_PREDICT

    order = pa.array(np.random.default_rng(seed).permutation(table.num_rows))
    for name in HIDDEN_AT_PREDICT:
        if name in table.column_names:
            at = table.column_names.index(name)
            table = table.set_column(at, name, table.column(name).take(order))
    return table


def check_label_blind(
    predict: Callable[[pa.Table], Any],
    with_labels: pa.Table,
    blind_scores: np.ndarray,
    tolerance: float = 0.0,
    seed: int = 0,
) -> None:
    """Predictions must not depend on the labels: `predict` on `with_labels` (label / conversion /
    oracle columns attached) and on the same rows with those columns shuffled must both equal
    `blind_scores`, the scores of the features-only table.

    Why both: the engine never hands `predict` a label (`modeling.features_only`), but a plugin that
    reads one when it is there would still be cheating in any caller that forgets to drop it, and
    its scores would move with the labels.
    """
    shuffled = shuffled_labels(with_labels, seed)
    true_scores = np.asarray(predict(with_labels))
    _assert_close(
        "label_blind",
        true_scores,
        np.asarray(predict(shuffled)),
        tolerance,
        "predictions change when the labels are shuffled (predict must never read label / conversion)",
    )
    _assert_close(
        "label_blind",
        blind_scores,
        true_scores,
        tolerance,
        "predictions change when the labels are attached (predict must never read label / conversion)",
    )


_PICKLE_SUFFIXES = (".pkl", ".pickle", ".joblib")


def _npy_holds_objects(path: Path) -> bool:
    """Whether a .npy file stores Python objects (which np.load can only read through pickle)."""
    readers = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
    with path.open("rb") as fh:
        try:
            version = np.lib.format.read_magic(fh)
            if version in readers:
                return bool(readers[version](fh)[2].hasobject)
        except (ValueError, OSError):
            return False
    try:
        np.load(path, allow_pickle=False)
    except ValueError:
        return True
    except OSError:
        return False
    return False


def find_pickles(directory: Path) -> list[str]:
    """Files under `directory` that are (or are named like) pickles, with the reason."""
    found = []
    for path in sorted(Path(directory).rglob("*")):
        if not path.is_file():
            continue
        rel = path.relative_to(directory).as_posix()
        if path.suffix.lower() in _PICKLE_SUFFIXES:
            found.append(f"{rel} (pickle file extension)")
            continue
        with path.open("rb") as fh:
            head = fh.read(2)
        if len(head) == 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
            found.append(f"{rel} (starts with pickle protocol {head[1]} header)")
        elif path.suffix.lower() == ".npy" and _npy_holds_objects(path):
            found.append(f"{rel} (.npy holding Python objects: needs pickle to load)")
    return found


def assert_no_pickles(directory: Path) -> None:
    found = find_pickles(directory)
    if found:
        raise _fail(
            "no_pickle",
            "saved model contains pickle data (unsafe to load from untrusted files); use JSON, "
            "safetensors, torch.save of a state_dict loaded with weights_only=True, or LightGBM text: "
            + ", ".join(found),
        )


def _snapshot(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def _assert_close(check: str, expected: np.ndarray, actual: np.ndarray, tolerance: float, what: str) -> None:
    actual = np.asarray(actual)
    if actual.shape != expected.shape:
        raise _fail(check, f"{what}: shape {actual.shape} != {expected.shape}")
    diff = (
        float(np.max(np.abs(actual.astype(np.float64) - expected.astype(np.float64))))
        if len(expected)
        else 0.0
    )
    if not diff <= tolerance:
        raise _fail(check, f"{what}: max abs difference {diff:.3g} > tolerance {tolerance:g}")


@contextmanager
def _tempdir(prefix: str) -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix=prefix) as d:
        yield Path(d)


def check_report(plugin: Any) -> None:
    """A plugin instance's optional `summary` / `report(directory)` are valid reports
    (`contracts.PluginReporting`, `contracts.report_violations`); ConformanceError otherwise."""
    from ctr_dagster.contracts import report_violations

    summary = getattr(plugin, "summary", None)
    problems = report_violations(summary) if summary is not None else []
    if callable(getattr(plugin, "report", None)):
        with _tempdir("ctr-conformance-report-") as directory:
            problems += report_violations(plugin.report(directory), directory)
    if problems:
        raise _fail("report", "; ".join(problems))
