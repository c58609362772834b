"""A bundle's torch.export programs also as ONNX, served by ONNX Runtime (`runtime.OnnxProgram`).

Why: a torch.export program runs as Python calling one aten operator at a time, and for the small
tensors of one request that per-operator overhead is most of the cost (LightSUAN's one-request
program: ~390 operators, 3.3 ms on one AMD EPYC thread; the same graph in ONNX Runtime 1.15 ms;
SUAN's 5.9 -> 2.4 ms; docs/benchmarks.md). ONNX Runtime also lets a serving host run a bundle with
numpy and onnxruntime alone, without torch.

The torch.export program stays the bundle's reference (it is what the parity of `torch_export`
proved first); the ONNX copy is converted from that very program (``torch.onnx.export`` on the
ExportedProgram, dynamic batch axis kept) and kept only when ONNX Runtime reproduces the model's
`predict` on the same probes to `PARITY_TOLERANCE`. Otherwise the bundle records why
(``onnx_rejected``) and serves the torch.export program; a bundle is never refused for lack of ONNX.
"""

from __future__ import annotations

import contextlib
import io
import logging
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ctr_dagster.serving import runtime
from ctr_dagster.serving.probes import PARITY_TOLERANCE, largest_gap

if TYPE_CHECKING:
    import torch

    from ctr_dagster.training.plugin import TorchModel

#: ONNX file of each torch.export program of a ``torch_export`` bundle (same keys as its spec).
ONNX_FILES = {"program": "network.onnx", "request_program": "request.onnx"}
#: The rows of the batch both engines are timed on (a request's candidates) and the timed calls.
TIMING_ROWS, TIMING_CALLS, TIMING_WARMUP = 1000, 15, 3


@contextlib.contextmanager
def quiet_logs(*names: str) -> Iterator[None]:
    """Only errors from these loggers meanwhile: torch's tracing and the ONNX exporter log warnings
    (unbacked symbols, operators of libraries not installed) straight to the terminal of `ctr export`,
    through handlers bound before any redirect; the outcome is checked on the probes instead."""
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def convert(
    program: torch.export.ExportedProgram, batch: dict[str, torch.Tensor], path: Path
) -> dict[str, str]:
    """Write `program` as ONNX at `path`; return {ONNX input name: batch key}. The exporter prints its
    progress and logs warnings about operators of libraries not installed: both are silenced."""
    import torch

    with (
        quiet_logs("torch.onnx", "torch.fx.experimental.symbolic_shapes"),
        warnings.catch_warnings(),
        contextlib.redirect_stdout(io.StringIO()),
        contextlib.redirect_stderr(io.StringIO()),
    ):
        warnings.simplefilter("ignore")
        onnx_program = torch.onnx.export(program, (batch,), dynamo=True, optimize=True, verbose=False)
        onnx_program.save(str(path))
    import onnx

    names = [node.name for node in onnx.load(str(path), load_external_data=False).graph.input]
    by_name = {f"batch_{key}": key for key in batch}
    unknown = [name for name in names if name not in by_name]
    if unknown:
        raise ValueError(f"ONNX inputs {unknown} match no batch input {sorted(batch)}")
    return {name: by_name[name] for name in names}


def median_ms(program: Any, arrays: dict[str, np.ndarray]) -> float:
    """Median wall time of `program(arrays)` in ms over `TIMING_CALLS` calls, after a warm-up."""
    for _ in range(TIMING_WARMUP):
        program(arrays)
    times = []
    for _ in range(TIMING_CALLS):
        started = time.perf_counter()
        program(arrays)
        times.append((time.perf_counter() - started) * 1000.0)
    return float(np.median(times))


def faster_engine(
    program: torch.export.ExportedProgram, path: Path, inputs: dict[str, str], batch: dict[str, torch.Tensor]
) -> tuple[str, dict[str, float]]:
    """("onnx" or "torch", {engine: median ms}) on one thread for `batch`'s rows repeated to
    `TIMING_ROWS` (a request's candidates). Neither engine wins everywhere: ONNX Runtime removes
    torch's per-operator Python overhead, which dominates small per-request graphs (SUAN's), while
    torch is as fast or faster on the large tensors of DIN's every-row attention (docs/benchmarks.md)."""
    import torch

    rows = next(iter(batch.values())).shape[0]
    take = np.arange(TIMING_ROWS) % rows
    arrays = {key: np.ascontiguousarray(tensor.numpy()[take]) for key, tensor in batch.items()}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        timings = {
            "onnx": median_ms(runtime.OnnxProgram(path, inputs, threads=1), arrays),
            "torch": median_ms(runtime.TorchProgram(program.module()), arrays),
        }
    finally:
        torch.set_num_threads(threads)
    return min(timings, key=timings.get), {k: round(v, 3) for k, v in timings.items()}


def export_onnx(
    programs: dict[str, tuple[torch.export.ExportedProgram, dict[str, torch.Tensor], dict, dict]],
    directory: Path,
    model: TorchModel,
) -> dict[str, Any]:
    """Convert each program (spec key -> (program, trace batch, probes, expected predictions)) and
    check it. {"onnx": {key: file, "inputs": {key: {ONNX name: batch key}}, "probe_gap": ...,
    "preferred": engine, "timing_ms": ...}} when every program converts and matches, else
    {"onnx_rejected": why} (and no ONNX file is left). `preferred` is the engine that ran the program
    serving requests (the request program where there is one) faster here (`faster_engine`): the
    runtime's "auto" follows it."""
    written: list[Path] = []
    out: dict[str, Any] = {"inputs": {}}
    worst = 0.0
    try:
        for key, (program, batch, probes, expected) in programs.items():
            path = Path(directory) / ONNX_FILES[key]
            written.append(path)
            inputs = convert(program, batch, path)
            gap, where = largest_gap(runtime.OnnxProgram(path, inputs, threads=1), model, probes, expected)
            if not gap <= PARITY_TOLERANCE:
                raise ValueError(
                    f"ONNX Runtime's scores of the {key} differ from predict by {gap:.2e} on the {where} probe"
                )
            out[key], out["inputs"][key], worst = ONNX_FILES[key], inputs, max(worst, gap)
        # timed: the program that serves requests, the request program where there is one (the last)
        out["preferred"], out["timing_ms"] = faster_engine(program, path, inputs, batch)
    except Exception as exc:  # noqa: BLE001 - any failure leaves the torch.export program to serve
        for path in written:
            path.unlink(missing_ok=True)
        reason = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
        return {"onnx_rejected": reason[:300]}
    out["probe_gap"] = worst
    return {"onnx": out}
