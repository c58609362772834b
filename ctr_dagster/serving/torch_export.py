"""`TorchModel.export`: a torch plugin's network as a torch.export program, its batch encoding as JSON.

Why torch.export first: it ships with the torch the project pins and captures what the plugin's
module computes; the program (``network.pt2``) holds the graph as JSON and the weights as raw
tensors (frozen buffers such as item vectors included), loads with ``torch.export.load`` without the
plugin's Python code, and is saved without sample inputs so the archive holds no pickled data at
all. Each program is then also converted to ONNX (`ctr_dagster.serving.onnx_export`: kept only when
ONNX Runtime matches `predict` on the same probes), which the runtime prefers: it runs the same
graph without torch's per-operator Python overhead.

The batch encoding (``encoding.json``: the `FeatureSpec` layout, the train split's dense mean/std, the
sequence length, the input order) is data for the runtime's copy of `BatchEncoder`
(`ctr_dagster.serving.runtime.TorchExportModel`).

Tracing, with a dynamic batch axis; the first strategy whose program reproduces the model's
`predict` on every probe (`ctr_dagster.serving.probes`, to `PARITY_TOLERANCE`) is kept:

1. ``eval``: the module in eval mode, exactly as `predict` runs it.
2. ``training_path``: eval-only shortcuts that branch on the data -- DIN's and QIN's shared-history
   path, taken when every row holds the same history -- are data-dependent branches torch.export
   cannot capture, while the training code path is the general one. The root module's ``training``
   flag is set and every layer (BatchNorm, Dropout, Dice) stays in eval mode, so tracing follows the
   general path and computes the eval function. The probes (several users, one user's candidates,
   one row, empty histories) must confirm it, or the strategy is rejected.

When neither works the model is not exportable, and the error says why per strategy (for a
data-dependent branch: its source line), e.g. an ``if scores.numel() == 0`` early return (AW-MoE
had one; it was removed so that AW-MoE exports).

Export hooks a plugin's ``nn.Module`` may define (duck-typed, so the engine names no model):

* ``export_module() -> nn.Module``: the module to trace in its place, computing the same function
  without python that reads the data (SUAN: every row at full length instead of its length-bucketed
  groups, and no one-request shortcut). The strategies above run on it.
* ``export_request_module() -> nn.Module | None``: a second, optional **one-request program**
  (``request.pt2``) that may assume every row shares row 0's user-side inputs (`runtime.USER_COLUMNS`:
  the user, the request context, the history) and read them from row 0, e.g. to encode one user's
  history once for all of its candidates (LightSUAN's serving). It is checked on the probes whose
  rows share one user (one user's candidates, one row, the candidates of the example's user with the
  longest history and of a new user); the runtime runs it only on such rows, the general program on
  any others. A request module that fails to trace or to match `predict` makes the model not
  exportable (not silently dropped: the plugin promised it).
"""

from __future__ import annotations

import contextlib
import copy
import io
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from ctr_dagster.atomic import write_json
from ctr_dagster.serving import runtime
from ctr_dagster.serving.bundle import NotExportable
from ctr_dagster.serving.onnx_export import export_onnx, quiet_logs
from ctr_dagster.serving.probes import ONE_USER_CANDIDATES, PARITY_TOLERANCE, largest_gap, probe_tables

if TYPE_CHECKING:
    import pyarrow as pa

    from ctr_dagster.training.plugin import TorchModel

PROGRAM_FILE = "network.pt2"
REQUEST_PROGRAM_FILE = "request.pt2"
ENCODING_FILE = "encoding.json"
STRATEGIES = ("eval", "training_path")
#: Rows of the example the network is traced on (at least 2: a batch of 1 would fix the batch axis).
TRACE_ROWS = 64


class LogitOnly(nn.Module):
    """The plugin's module with one output: the logit (a module may return {"logit", "aux_loss"})."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        output = self.module(batch)
        return output["logit"] if isinstance(output, dict) else output


def describe_error(exc: BaseException) -> str:
    """A one-line reason from a torch.export error: its first line and the plugin source line it names."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    reason = f"{type(exc).__name__}: {lines[0] if lines else ''}"[:240]
    where = next((line for line in lines if line.startswith("Caused by:")), None)
    for i, line in enumerate(lines):
        if line.startswith('File "') and "site-packages" not in line:
            where = line + (f": {lines[i + 1]}" if i + 1 < len(lines) else "")
            break
    return f"{reason} ({where})" if where else reason


def summarize(failures: list[str]) -> str:
    """The strategies' failures, one line per distinct reason, with what to do about a data-dependent branch."""
    reasons: dict[str, list[str]] = {}
    for failure in failures:
        strategy, _, reason = failure.partition(": ")
        reasons.setdefault(reason, []).append(strategy)
    text = " | ".join(f"{' and '.join(names)}: {reason}" for reason, names in reasons.items())
    if "DataDependent" in text:
        text += (
            ". The network branches on the data in a way torch.export cannot trace; make that branch "
            "traceable (no early return on a data-dependent size, or torch._check / guard_or_false) or "
            "give the plugin its own export"
        )
    return text


def trace(module: nn.Module, batch: dict[str, torch.Tensor], strategy: str) -> torch.export.ExportedProgram:
    """The program of `module` on `batch` (dynamic batch axis) by one strategy (module docstring)."""
    wrapper = LogitOnly(module).eval()
    rows = torch.export.Dim("batch", min=1)
    shapes = ({name: {0: rows} for name in batch},)
    if strategy == "training_path":
        module.training = True  # the root only: its layers stay in eval mode
    try:
        # a failed export prints its partial graph to stderr; the reason goes into NotExportable instead
        with (
            torch.no_grad(),
            contextlib.redirect_stderr(io.StringIO()),
            quiet_logs("torch.fx.experimental.symbolic_shapes"),
        ):
            return torch.export.export(wrapper, (batch,), dynamic_shapes=shapes)
    finally:
        module.eval()


def export_views(module: nn.Module) -> tuple[nn.Module, nn.Module | None]:
    """(the module to trace for any rows, the one-request module or None): the module's export hooks
    (module docstring) where it defines them, else the module itself and no request program."""
    general = getattr(module, "export_module", None)
    request = getattr(module, "export_request_module", None)
    return (general() if callable(general) else module), (request() if callable(request) else None)


def shares_one_user(table: pa.Table) -> bool:
    """Whether every row of `table` holds row 0's user-side columns: the rows a request program serves
    (the runtime's own test, on the same rows)."""
    from ctr_dagster.serving.convert import rows_from_table

    return table.num_rows > 0 and runtime.shares_one_user(rows_from_table(table))


def request_probes(example: pa.Table, probes: dict[str, pa.Table]) -> dict[str, pa.Table]:
    """The probes a request program must match: those whose rows share one user, plus the candidates
    of the example's user with the longest history (row 0's may be empty) and a new user's (no history)."""
    import pyarrow.compute as pc

    from ctr_dagster.distillation import one_user_candidates
    from ctr_dagster.serving.probes import without_history

    out = {name: table for name, table in probes.items() if shares_one_user(table)}
    if "hist_item_idx" in example.column_names and example.num_rows:
        lengths = pc.fill_null(pc.list_value_length(example.column("hist_item_idx")), 0).to_numpy()
        busiest = int(np.argmax(lengths))
        rest = example.take(np.r_[busiest, np.delete(np.arange(example.num_rows), busiest)])
        out["busiest_user"] = one_user_candidates(rest, ONE_USER_CANDIDATES)
    out["new_user"] = one_user_candidates(without_history(example), ONE_USER_CANDIDATES)
    return out


def faithful_program(
    view: nn.Module,
    model: TorchModel,
    batch: dict[str, torch.Tensor],
    probes: dict[str, pa.Table],
    expected: dict[str, np.ndarray],
) -> tuple[torch.export.ExportedProgram | None, str, float, list[str]]:
    """(program, strategy, largest probe gap, failures) of the first strategy whose program matches
    `predict` on every probe; program None when none does."""
    failures = []
    for strategy in STRATEGIES:
        try:
            program = trace(view, batch, strategy)
        except Exception as exc:  # noqa: BLE001 - every torch.export failure is a reason to report
            failures.append(f"{strategy}: {describe_error(exc)}")
            continue
        gap, where = largest_gap(runtime.TorchProgram(program.module()), model, probes, expected)
        if gap <= PARITY_TOLERANCE:
            return program, strategy, gap, failures
        failures.append(
            f"{strategy}: traced, but its scores differ from predict by {gap:.2e} on the {where} probe"
        )
    return None, "", float("nan"), failures


def save_program(program: torch.export.ExportedProgram, path: Path) -> None:
    program.example_inputs = None  # no sample inputs: nothing in the archive is pickled
    torch.export.save(program, str(path))


def export_torch_model(model: TorchModel, directory: Path, example: pa.Table) -> dict[str, Any]:
    """Write ``network.pt2`` and ``encoding.json`` into `directory`; return the runtime description."""
    from ctr_dagster.distillation import one_user_candidates
    from ctr_dagster.training.plugin import TorchModel

    if model.module is None or model.encoder is None or model.spec is None:
        raise RuntimeError(f"{model.name}: export() before fit() or load()")
    if (
        type(model).predict is not TorchModel.predict
        or type(model).predict_logits is not TorchModel.predict_logits
    ):
        raise NotExportable(
            f"{model.name} overrides predict/predict_logits, so its scores are not the sigmoid of the "
            "network's logit that the generic torch export serves; the plugin needs its own export"
        )
    if example.num_rows < 2:
        raise NotExportable(f"{model.name}: at least 2 example rows are needed to trace the network")
    module = model.module
    if next(module.parameters(), torch.empty(0)).device.type != "cpu":
        module = copy.deepcopy(module).cpu()
    general, request = export_views(module)
    probes = probe_tables(example)
    expected = {name: model.predict(table) for name, table in probes.items()}
    batch = model.encoder.tensors(example.slice(0, TRACE_ROWS))
    program, strategy, gap, failures = faithful_program(general, model, batch, probes, expected)
    if program is None:
        raise NotExportable(
            f"{model.name}: torch.export could not capture the network. " + summarize(failures)
        )
    extra: dict[str, Any] = {}
    request_program = None
    if request is not None:
        one_user = request_probes(example, probes)
        wanted = {name: model.predict(table) for name, table in one_user.items()}
        request_batch = model.encoder.tensors(one_user_candidates(example, TRACE_ROWS))
        request_program, request_strategy, request_gap, request_failures = faithful_program(
            request, model, request_batch, one_user, wanted
        )
        if request_program is None:
            raise NotExportable(
                f"{model.name}: its one-request module (export_request_module) could not be exported. "
                + summarize(request_failures)
            )
        extra = {
            "request_program": REQUEST_PROGRAM_FILE,
            "request_strategy": request_strategy,
            "request_probes": sorted(one_user),
            "request_probe_gap": request_gap,
            "request_shared": list(runtime.USER_COLUMNS),
        }
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    converted = {"program": (program, batch, probes, expected)}
    if request_program is not None:
        converted["request_program"] = (request_program, request_batch, one_user, wanted)
    extra.update(export_onnx(converted, directory, model))  # before saving: saving drops example inputs
    save_program(program, directory / PROGRAM_FILE)
    if request_program is not None:
        save_program(request_program, directory / REQUEST_PROGRAM_FILE)
    spec = model.spec.to_dict()
    write_json(
        directory / ENCODING_FILE,
        {
            "categorical": spec["categorical"],
            "dense": spec["dense"],
            "log_dense": spec["log_dense"],
            "sequence": spec["sequence"],
            "max_seq_len": spec["max_seq_len"],
            "mean": model.encoder.mean.tolist(),
            "std": model.encoder.std.tolist(),
            "inputs": list(batch),
        },
        indent=1,
    )
    return {
        "kind": "torch_export",
        "program": PROGRAM_FILE,
        "encoding": ENCODING_FILE,
        "strategy": strategy,
        "rejected_strategies": failures,
        "probe_gap": gap,
        **extra,
    }
