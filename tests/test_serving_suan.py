"""Serving bundles of the opt-in SUAN / LightSUAN plugins (issue 18, items 5-6).

SUAN's `forward` branches on the data (the one-request shortcut, length-bucketed groups), so the
network exports through its module's hooks (`ctr_dagster.serving.torch_export`): ``export_module``
(every row at full length: the general program) and ``export_request_module`` (the one-request
program: the user's history encoded once, each candidate scored against that cache). Checked here:
parity to 1e-5 with `predict` through the bundle's own score.py in a process that cannot import the
engine or the plugin; which program the runtime runs; and that the one-request program encodes the
history once (its graph runs every sequence-wide layer on one row, and rows past 0 are never read).

ctr-suan is opt-in and not installed in the venv: it is imported from plugins/ctr-suan, as
benchmarks/bench_suan.py does (its bundles never import it: the isolated process refuses ``ctr_*``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from ctr_dagster.distillation import USER_COLUMNS, one_user_candidates
from ctr_dagster.modeling import features_only
from ctr_dagster.serving import runtime
from ctr_dagster.serving.convert import (
    inverse_vocabularies,
    requests_from_table,
    rows_from_table,
    vocabularies_from_table,
)
from ctr_dagster.serving.export import write_bundle
from ctr_dagster.testing import make_training_table
from tests.test_serving import TOLERANCE, _split, assert_parity, fit

PLUGIN = Path(__file__).resolve().parents[1] / "plugins" / "ctr-suan"
if str(PLUGIN) not in sys.path:
    sys.path.insert(0, str(PLUGIN))

torch = pytest.importorskip("torch")
suan_model = pytest.importorskip("ctr_suan.model")

FAST = {"epochs": 1, "batch_size": 128, "num_threads": 1, "log_every": 0}


@pytest.fixture(scope="module")
def table() -> pa.Table:
    return make_training_table(900, 0)


@pytest.fixture(scope="module", params=["suan", "lightsuan"])
def exported(request, table, tmp_path_factory):
    """(fitted model, its bundle folder, the test rows) for suan and lightsuan."""
    cls = {"suan": suan_model.SuanModel, "lightsuan": suan_model.LightSuanModel}[request.param]
    model = fit(cls(cls.Config(**FAST)), table)
    test = _split(table, "test")
    bundle = tmp_path_factory.mktemp(request.param) / "bundle"
    result = write_bundle(
        model,
        bundle,
        name=request.param,
        example=test.slice(0, 64),
        vocabularies=vocabularies_from_table(table),
    )
    assert result.kind == "torch_export" and result.max_gap <= TOLERANCE
    return model, bundle, test


def test_the_runtime_user_columns_are_the_engines():
    """The runtime (standalone) keeps its own copy of the user-side columns: the same as the engine's."""
    assert set(runtime.USER_COLUMNS) == set(USER_COLUMNS) - {"user_id"}


def test_suan_bundles_hold_both_programs_and_score_as_predict_without_training_code(exported, tmp_path):
    model, bundle, test = exported
    manifest = json.loads((bundle / "manifest.json").read_text())
    spec = manifest["model"]
    assert spec["strategy"] == "eval" and spec["request_strategy"] == "eval"
    assert spec["probe_gap"] <= TOLERANCE and spec["request_probe_gap"] <= TOLERANCE
    assert set(spec["request_probes"]) == {"one_user", "one_row", "busiest_user", "new_user"}
    assert {"model/network.pt2", "model/request.pt2", "model/encoding.json"} <= set(manifest["files"])
    # both programs also as ONNX (served by ONNX Runtime by default), checked on the same probes
    assert {"model/network.onnx", "model/request.onnx"} <= set(manifest["files"]), spec.get("onnx_rejected")
    from ctr_dagster.testing import find_pickles

    assert find_pickles(bundle) == []
    # every test row, one request per user context (the request program), in a process without
    # the engine, Dagster, pyarrow or any plugin (nor torch, run by ONNX Runtime)
    assert_parity(model, bundle, test, tmp_path, engines=("onnx", "torch"))


@pytest.mark.parametrize("engine", ["onnx", "torch"])
def test_the_runtime_runs_the_request_program_on_one_user_and_the_general_one_otherwise(exported, engine):
    model, bundle, test = exported
    loaded = runtime.load(bundle, threads=1, engine=engine)
    net = loaded.model
    assert net.engine == engine
    assert net.request_program is not None

    several = features_only(test)
    assert not runtime.shares_one_user(rows_from_table(several))
    np.testing.assert_allclose(
        loaded.score_rows(rows_from_table(several)), model.predict(several), atol=TOLERANCE, rtol=0
    )
    assert net.runs == {"general": 1, "request": 0}

    request, rows = requests_from_table(one_user_candidates(test, 300), inverse_vocabularies(bundle))[0]
    assert len(rows) == 300
    shared = loaded.score(request)
    assert net.runs == {"general": 1, "request": 1}
    net.use_request_program = False
    general = loaded.score(request)
    assert net.runs == {"general": 2, "request": 1}
    expected = model.predict(features_only(one_user_candidates(test, 300)))
    np.testing.assert_allclose(shared, expected, atol=TOLERANCE, rtol=0)
    np.testing.assert_allclose(general, expected, atol=TOLERANCE, rtol=0)
    # a parsed request is one user's by construction (`Rows.one_user`); the full check agrees
    parsed, _ = runtime.parse_request(request, loaded.vocabularies, loaded.history_capacity)
    assert parsed.one_user
    parsed.one_user = False
    assert runtime.shares_one_user(parsed)


def test_the_request_program_encodes_the_history_once(exported):
    """Every layer that runs over the history's token axis runs on one row (the request's), whatever
    the number of candidates; the general program runs them on every row. And rows past 0 are not
    read for the user's inputs: changing their history leaves every score unchanged."""
    model, bundle, test = exported
    length = model.spec.max_seq_len
    request = torch.export.load(str(bundle / "model" / "request.pt2"))
    general = torch.export.load(str(bundle / "model" / "network.pt2"))

    def sequence_layers(program) -> list[tuple]:
        """Output shapes of the linear layers over a token axis (>= the history length)."""
        shapes = []
        for node in program.graph.nodes:
            if node.op == "call_function" and node.target == torch.ops.aten.linear.default:
                shape = tuple(node.meta["val"].shape)
                if len(shape) == 3 and isinstance(shape[1], int) and shape[1] >= length:
                    shapes.append(shape)
        return shapes

    over_history = sequence_layers(request)
    assert over_history and all(shape[0] == 1 for shape in over_history), over_history
    assert sequence_layers(general) and all(not isinstance(s[0], int) for s in sequence_layers(general))

    rows = features_only(one_user_candidates(test, 50))
    batch = model.encoder.tensors(rows)
    run = request.module()
    with torch.no_grad():
        before = run(batch)
        altered = dict(batch)
        for name in ("hist_item_idx", "hist_category_idx"):
            altered[name] = batch[name].clone()
            altered[name][1:] = torch.randint(2, 5, altered[name][1:].shape)
        altered["hist_age_s"] = batch["hist_age_s"].clone()
        altered["hist_age_s"][1:] = 123.0
        after = run(altered)
    torch.testing.assert_close(before, after, atol=0, rtol=0)
    expected = model.predict(rows)
    np.testing.assert_allclose(runtime.sigmoid(before.numpy()), expected, atol=TOLERANCE, rtol=0)
