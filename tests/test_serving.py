"""Serving bundles (issue 18, item 5): parity with the model's predictions, scored in a process that
cannot import the engine, Dagster, pyarrow or any plugin; the manifest's hash check; `ctr export` /
`ctr score` on a project home; honest refusals.

Fast on purpose: a few hundred rows of the kit world, one or two epochs, CPU only.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from ctr_dagster.contracts import FitContext
from ctr_dagster.modeling import features_only
from ctr_dagster.serving import runtime
from ctr_dagster.serving.bundle import NotExportable
from ctr_dagster.serving.convert import (
    columnar_request,
    inverse_vocabularies,
    requests_from_table,
    vocabularies_from_table,
)
from ctr_dagster.serving.export import write_bundle
from ctr_dagster.testing import make_training_table, training_cardinalities

ROOT = Path(__file__).resolve().parents[1]
TOLERANCE = 1e-5

#: Runs the bundle's own score.py with the repository off sys.path and these imports refused.
ISOLATED = r"""
import json, runpy, sys
repo, score, request, engine = sys.argv[1:5]
# the repository (and the plugins' editable paths) leave sys.path; the interpreter's own packages stay
sys.path[:] = [p for p in sys.path if p and (not p.startswith(repo) or p.startswith(sys.prefix))]
# served by ONNX Runtime, a bundle needs no torch either
BLOCKED = ("ctr_dagster", "dagster", "pyarrow", "ctr_") + (("torch",) if engine == "onnx" else ())

class Refuse:
    def find_spec(self, name, path=None, target=None):
        if name.startswith(BLOCKED):
            raise ModuleNotFoundError(f"blocked in the serving test: {name}", name=name)
        return None

sys.meta_path.insert(0, Refuse())
sys.argv = [score, "--request", request, "--json", "--threads", "1", "--engine", engine]
try:
    runpy.run_path(score, run_name="__main__")
    status = 0
except SystemExit as exc:
    status = exc.code or 0
leaked = sorted(m for m in sys.modules if m.startswith(BLOCKED))
print("IMPORTED-BLOCKED:" + json.dumps(leaked), file=sys.stderr)
sys.exit(status)
"""


@pytest.fixture(scope="module")
def table() -> pa.Table:
    return make_training_table(900, 0)


def _split(table: pa.Table, name: str) -> pa.Table:
    return table.filter(pc.equal(table.column("split"), name))


def fit(model, table: pa.Table, inputs: dict | None = None):
    ctx = FitContext(cardinalities=training_cardinalities(table), log=lambda line: None, inputs=inputs or {})
    return model.fit(_split(table, "train"), _split(table, "valid"), ctx)


def score_isolated(bundle: Path, requests: list[dict], tmp_path: Path, engine: str = "auto") -> list[dict]:
    """The bundle's answers to `requests`, from its score.py in a process that cannot import the engine
    (nor torch when `engine` is "onnx")."""
    request_file = tmp_path / "requests.json"
    request_file.write_text(json.dumps(requests))
    out = subprocess.run(
        [
            sys.executable,
            "-I",
            "-c",
            ISOLATED,
            str(ROOT),
            str(bundle / "score.py"),
            str(request_file),
            engine,
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "IMPORTED-BLOCKED:[]" in out.stderr, out.stderr[-2000:]
    return json.loads(out.stdout)


def assert_parity(
    model, bundle: Path, rows: pa.Table, tmp_path: Path, engines: tuple[str, ...] = ("auto",)
) -> None:
    """Every row, grouped into one request per user context, scores as `model.predict` to 1e-5 (with
    each of `engines` running the network: `runtime.ENGINES`)."""
    for engine in engines:
        _assert_parity(model, bundle, rows, tmp_path, engine)


def _assert_parity(model, bundle: Path, rows: pa.Table, tmp_path: Path, engine: str) -> None:
    expected = np.asarray(model.predict(features_only(rows)), dtype=np.float64)
    grouped = requests_from_table(rows, inverse_vocabularies(bundle))
    assert any(len(r["candidates"]) > 1 for r, _ in grouped), "no multi-candidate request in the sample"
    answers = score_isolated(bundle, [r for r, _ in grouped], tmp_path, engine)
    got = np.full(rows.num_rows, np.nan)
    for (_, indices), answer in zip(grouped, answers, strict=True):
        got[indices] = [s["score"] for s in answer["scores"]]
    assert np.all(np.isfinite(got))
    gap = np.abs(got - expected)
    assert gap.max() <= TOLERANCE, f"largest |bundle - predict| = {gap.max():.2e} at row {int(gap.argmax())}"


def test_din_bundle_scores_as_predict_without_training_code(table, tmp_path):
    from ctr_din.model import DinModel

    model = fit(DinModel(DinModel.Config(epochs=1, batch_size=128, num_threads=1, log_every=0)), table)
    test = _split(table, "test")
    result = write_bundle(
        model,
        tmp_path / "din",
        name="din",
        example=test.slice(0, 64),
        vocabularies=vocabularies_from_table(table),
    )
    assert result.kind == "torch_export" and result.max_gap <= TOLERANCE
    manifest = json.loads((tmp_path / "din" / "manifest.json").read_text())
    assert manifest["model"]["strategy"] in ("eval", "training_path")
    assert set(manifest["files"]) >= {
        "score.py",
        "model/network.pt2",
        "model/encoding.json",
        "vocab/item.json",
    }
    from ctr_dagster.testing import find_pickles

    assert find_pickles(tmp_path / "din") == []
    # the network also as ONNX, checked on the same probes; served by ONNX Runtime (no torch) or torch
    assert manifest["model"]["onnx"]["program"] == "network.onnx", manifest["model"].get("onnx_rejected")
    assert "model/network.onnx" in manifest["files"]
    assert manifest["model"]["onnx"]["probe_gap"] <= TOLERANCE
    timing = manifest["model"]["onnx"]["timing_ms"]
    assert manifest["model"]["onnx"]["preferred"] == min(timing, key=timing.get)
    assert_parity(model, tmp_path / "din", test, tmp_path, engines=("onnx", "torch"))


@pytest.mark.parametrize("plugin", ["awmoe"])
def test_other_torch_models_export_with_parity(table, tmp_path, plugin):
    """Every torch model on the shared trainer gets the export: AW-MoE (gate over packed behaviours) too."""
    from ctr_dagster.registry import default_registry

    info = default_registry().get("model", plugin)
    model = fit(info.instantiate({"epochs": 1, "batch_size": 128, "num_threads": 1}), table)
    test = _split(table, "test")
    result = write_bundle(
        model,
        tmp_path / plugin,
        name=plugin,
        example=test.slice(0, 64),
        vocabularies=vocabularies_from_table(table),
    )
    assert result.kind == "torch_export" and result.max_gap <= TOLERANCE
    assert_parity(model, tmp_path / plugin, test, tmp_path, engines=("onnx", "torch"))


def test_lightgbm_bundle_scores_as_predict_without_training_code(table, tmp_path):
    from ctr_lightgbm.model import LightgbmEmbModel

    # the embedding variant: booster + numpy feature program + id statistics + item vectors
    inputs = __import__("ctr_dagster.testing", fromlist=["x"]).make_fit_inputs({"item_embeddings"}, table)
    model = fit(LightgbmEmbModel(LightgbmEmbModel.Config(num_boost_round=40, num_threads=1)), table, inputs)
    test = _split(table, "test")
    result = write_bundle(
        model,
        tmp_path / "lgb",
        name="lightgbm_emb",
        example=test.slice(0, 64),
        vocabularies=vocabularies_from_table(table),
    )
    assert result.kind == "lightgbm"
    assert (tmp_path / "lgb" / "model" / "model.txt").read_text().startswith("tree")
    assert_parity(model, tmp_path / "lgb", test, tmp_path)


def test_a_tampered_file_fails_the_manifest_check(table, tmp_path):
    from ctr_lightgbm.model import LightgbmModel

    model = fit(LightgbmModel(LightgbmModel.Config(num_boost_round=5, num_threads=1, use_stats=False)), table)
    bundle = tmp_path / "b"
    write_bundle(
        model,
        bundle,
        name="lightgbm",
        example=_split(table, "test").slice(0, 32),
        vocabularies=vocabularies_from_table(table),
    )
    runtime.load(bundle)  # intact: loads
    vocab = bundle / "vocab" / "item.json"
    mapping = json.loads(vocab.read_text())
    first = sorted(mapping)[0]
    mapping[first] = mapping[first] + 1  # one id now points at another item's row
    vocab.write_text(json.dumps(mapping, sort_keys=True, separators=(",", ":")))
    with pytest.raises(runtime.BundleError, match=r"vocab/item\.json does not match its manifest hash"):
        runtime.load(bundle)
    vocab.unlink()
    (bundle / "extra.py").write_text("print('hi')\n")
    with pytest.raises(runtime.BundleError, match=r"vocab/item\.json is missing.*extra\.py is not listed"):
        runtime.load(bundle)


def test_models_without_an_export_are_refused_with_the_reason(table, tmp_path):
    from ctr_baseline_lr.model import BaselineLrModel

    model = fit(BaselineLrModel(BaselineLrModel.Config(epochs=1)), table)
    with pytest.raises(NotExportable, match="does not opt in to export"):
        write_bundle(
            model, tmp_path / "lr", name="baseline_lr", example=_split(table, "test"), vocabularies={}
        )
    assert not (tmp_path / "lr").exists() and not list(tmp_path.glob(".tmp-bundle-*"))


def test_request_errors_name_the_field(table, tmp_path):
    from ctr_lightgbm.model import LightgbmModel

    model = fit(LightgbmModel(LightgbmModel.Config(num_boost_round=5, num_threads=1)), table)
    bundle = tmp_path / "b"
    write_bundle(
        model,
        bundle,
        name="lightgbm",
        example=_split(table, "test").slice(0, 16),
        vocabularies=vocabularies_from_table(table),
    )
    loaded = runtime.load(bundle)
    request, _ = requests_from_table(_split(table, "test").slice(0, 1), inverse_vocabularies(bundle))[0]
    assert loaded.score(request).shape == (1,)
    del request["candidates"][0]["price"]
    with pytest.raises(runtime.BundleError, match=r"candidates\[0\]\.price is missing"):
        loaded.score(request)
    request["candidates"][0]["price"] = "cheap"
    with pytest.raises(runtime.BundleError, match=r"candidates\[0\]\.price must be a number"):
        loaded.score(request)


def test_the_columnar_request_scores_as_the_list_of_candidates(table, tmp_path):
    """One list per field gives the same scores as a list of candidate objects; its defaults are the
    same; a bad value is named by field and position; a length mismatch or an unknown field is refused."""
    from ctr_lightgbm.model import LightgbmModel

    model = fit(LightgbmModel(LightgbmModel.Config(num_boost_round=5, num_threads=1)), table)
    bundle = tmp_path / "b"
    test = _split(table, "test")
    write_bundle(
        model, bundle, name="lightgbm", example=test.slice(0, 16), vocabularies=vocabularies_from_table(table)
    )
    loaded = runtime.load(bundle)
    requests = requests_from_table(test, inverse_vocabularies(bundle))
    request, rows = max(requests, key=lambda r: len(r[1]))
    assert len(rows) > 1
    columns = columnar_request(request)
    assert isinstance(columns["candidates"], dict) and len(columns["candidates"]["item_id"]) == len(rows)
    expected = model.predict(features_only(test.take(rows)))
    np.testing.assert_allclose(loaded.score(columns), loaded.score(request), rtol=0, atol=0)
    np.testing.assert_allclose(loaded.score(columns), expected, atol=1e-5)
    assert loaded.answer(columns) == loaded.answer(request)
    # the optional fields' defaults are the row form's (position = list order, treatment = the user's)
    for name in ("position", "treatment", "is_new_item"):
        for candidate in request["candidates"]:
            candidate.pop(name)
    np.testing.assert_array_equal(loaded.score(columnar_request(request)), loaded.score(request))

    def refused(candidates: dict, message: str) -> None:
        with pytest.raises(runtime.BundleError, match=message):
            loaded.score({**columns, "candidates": candidates})

    good = columns["candidates"]
    refused(
        {**good, "price": [*good["price"][:-1], "cheap"]},
        rf"candidates\.price\[{len(rows) - 1}\] must be a number",
    )
    refused(
        {**good, "item_age_days": [float("nan"), *good["item_age_days"][1:]]},
        r"item_age_days\[0\] must be finite",
    )
    refused(
        {**good, "price": good["price"][:-1]},
        rf"candidates\.price has {len(rows) - 1} values, candidates\.item_id {len(rows)}",
    )
    refused({**good, "prices": good["price"]}, r"unknown field\(s\) 'prices'")
    refused({k: v for k, v in good.items() if k != "category"}, r"candidates\.category is missing")
    refused({**good, "is_new_item": [None] * len(rows)}, r"is_new_item\[0\] must be true or false")
    refused({**good, "price": 3.0}, r"candidates\.price must be a list")
    refused({}, r"candidates must be a non-empty list of objects, or an object")
    with pytest.raises(ValueError, match="set on some candidates only"):
        columnar_request({"user": {}, "candidates": [{"item_id": "a", "price": 1}, {"item_id": "b"}]})


def test_the_fast_request_parse_reads_as_the_field_by_field_one():
    """`_fast_candidates` (one C-level pass per field) gives the columns `_checked_candidates` gives,
    and hands any mistyped value (a bool or a string as a number) to it, which names the field."""
    vocab = runtime.Vocabularies(
        {"item": {"i1": 1, "i2": 2, "7": 3}, "category": {"c": 1}}
        | {name: {} for name in ("user", "device", "region", "age_group")}
    )
    assert vocab.indices("item", ["i2", "x", "i1"]).tolist() == [2, runtime.OOV, 1]
    assert vocab.indices("item", ["i2", 7, None]).tolist() == [2, 3, runtime.OOV]  # mixed: the slow path
    candidates = [
        {"item_id": "i1", "category": "c", "price": 2, "item_age_days": 1.5},
        {"item_id": "i2", "category": "c", "price": 3.5, "item_age_days": 0, "position": 7, "treatment": 2},
        {"item_id": "x", "category": "?", "price": 1.0, "item_age_days": 2.0, "is_new_item": True},
    ]
    fast = runtime._fast_candidates(candidates, vocab, 1)
    slow = runtime._checked_candidates(candidates, vocab, 1)
    assert fast is not None and set(fast) == set(slow)
    for name in slow:
        assert np.asarray(fast[name]).tolist() == np.asarray(slow[name]).tolist(), name
    for bad in (True, "3"):
        candidates[1]["price"] = bad
        assert runtime._fast_candidates(candidates, vocab, 1) is None
        with pytest.raises(runtime.BundleError, match=r"candidates\[1\]\.price must be a number"):
            runtime._checked_candidates(candidates, vocab, 1)


def test_ctr_export_and_score_on_a_project_home(table, tmp_path):
    """`ctr export --model NAME|champion` from the artifacts and status a model asset leaves, then
    `ctr score --bundle`: the CLI path, vocabularies and example rows read from the warehouse."""
    from ctr_baseline_lr.model import BaselineLrModel
    from ctr_lightgbm.model import LightgbmModel
    from typer.testing import CliRunner

    from ctr_dagster.champion import ChampionStore
    from ctr_dagster.cli import app
    from ctr_dagster.modeling import store_artifact, write_status
    from ctr_dagster.settings import Home
    from ctr_dagster.warehouse import Warehouse

    home = Home(tmp_path / "home")
    warehouse = Warehouse(home.warehouse)
    warehouse.write("training_dataset", table)
    for name, vocab_table in vocabularies_from_table(table).items():
        warehouse.write(f"vocab_{name}", vocab_table)
    model = fit(LightgbmModel(LightgbmModel.Config(num_boost_round=10, num_threads=1)), table)
    artifact = store_artifact(model, "lightgbm", home.artifacts)
    write_status(home, "lightgbm", {"status": "ok", "plugin": "lightgbm", "artifact": str(artifact)})
    lr = fit(BaselineLrModel(BaselineLrModel.Config(epochs=1)), table)
    write_status(
        home,
        "baseline_lr",
        {
            "status": "ok",
            "plugin": "baseline_lr",
            "artifact": str(store_artifact(lr, "baseline_lr", home.artifacts)),
        },
    )
    ChampionStore(home.champion).promote({"name": "lightgbm", "artifact": str(artifact)}, who="test")

    runner = CliRunner()
    out = tmp_path / "bundles"
    done = runner.invoke(
        app, ["--home", str(home.root), "export", "--model", "champion", "--out", str(out / "champ")]
    )
    assert done.exit_code == 0, done.output
    assert "exported lightgbm" in done.output
    refused = runner.invoke(
        app, ["--home", str(home.root), "export", "--model", "baseline_lr", "--out", str(out / "lr")]
    )
    assert refused.exit_code == 1 and "does not opt in to export" in refused.output

    request, rows = requests_from_table(_split(table, "test"), inverse_vocabularies(out / "champ"))[0]
    request_file = tmp_path / "request.json"
    request_file.write_text(json.dumps(request))
    scored = runner.invoke(
        app, ["score", "--bundle", str(out / "champ"), "--request", str(request_file), "--json"]
    )
    assert scored.exit_code == 0, scored.output
    answer = json.loads(scored.output)
    expected = model.predict(features_only(_split(table, "test").take(pa.array(rows))))
    assert np.allclose([s["score"] for s in answer["scores"]], expected, atol=TOLERANCE, rtol=0)
    text = runner.invoke(app, ["score", "--bundle", str(out / "champ"), "--request", str(request_file)])
    assert text.exit_code == 0 and "rank" in text.output


def test_a_network_torch_export_cannot_trace_is_refused_with_its_source_line(table, tmp_path):
    """A data-dependent early return (as AW-MoE's `if scores.numel() == 0`) is named, not exported."""
    from torch import nn

    from tests.training_support import TinyTorchModel

    class Branchy(TinyTorchModel):
        name = "branchy"

        def build_module(self, spec):
            inner = super().build_module(spec)

            class Net(nn.Module):
                def __init__(self) -> None:
                    super().__init__()
                    self.inner = inner

                def forward(self, batch):
                    real = batch["hist_mask"].reshape(-1).nonzero()
                    if real.numel() == 0:  # data-dependent: torch.export cannot trace it
                        return self.inner(batch) * 0.0
                    return self.inner(batch)

            return Net()

    model = fit(Branchy(Branchy.Config(epochs=1, batch_size=256)), table)
    with pytest.raises(NotExportable, match=r"(?s)data-dependent.*test_serving\.py.*branches on the data"):
        write_bundle(
            model, tmp_path / "b", name="branchy", example=_split(table, "test").slice(0, 16), vocabularies={}
        )
    assert not (tmp_path / "b").exists()


def test_an_exported_program_checks_each_input_signature_once():
    """`runtime.TorchProgram`: torch.export's per-call input check runs on a signature's first call
    only; a new shape is checked again, so a wrong input still fails with torch's error."""
    import torch

    class Scale(torch.nn.Module):
        def forward(self, batch):
            return batch["x"].sum(dim=1) * 2.0

    rows = torch.export.Dim("rows", min=2)
    exported = torch.export.export(
        Scale(), ({"x": torch.ones(3, 4)},), dynamic_shapes=({"x": {0: rows}},), strict=False
    )
    program = exported.module()
    seen: list[bool] = []
    program.register_forward_pre_hook(lambda module, args: seen.append(bool(module.validate_inputs)))
    checked = runtime.TorchProgram(program)
    ones = np.ones((5, 4), dtype=np.float32)

    assert checked({"x": ones}).tolist() == [8.0] * 5
    assert checked({"x": ones * 2}).tolist() == [16.0] * 5
    assert checked({"x": np.ones((6, 4), dtype=np.float32)}).tolist() == [8.0] * 6
    assert seen == [True, False, True]
    narrow = np.ones((5, 3), dtype=np.float32)
    with pytest.raises((RuntimeError, AssertionError), match=r"== 4|equal to 4"):  # the exported width
        checked({"x": narrow})
    with pytest.raises((RuntimeError, AssertionError), match=r"== 4|equal to 4"):  # not remembered
        checked({"x": narrow})
    assert seen[3:] == [True, True]


def test_the_engine_is_onnx_only_where_the_bundle_holds_onnx():
    """`runtime.choose_engine`: "auto" takes the engine the export timed faster, torch for a bundle
    without ONNX (e.g. one whose conversion was rejected); insisting on "onnx" there is an error that
    says why."""
    with_onnx = {"onnx": {"program": "network.onnx", "preferred": "onnx"}}
    assert runtime.choose_engine(with_onnx, "auto") == "onnx"
    assert runtime.choose_engine(with_onnx, "torch") == "torch"
    torch_faster = {"onnx": {"program": "network.onnx", "preferred": "torch"}}
    assert runtime.choose_engine(torch_faster, "auto") == "torch"
    assert runtime.choose_engine(torch_faster, "onnx") == "onnx"
    rejected = {"onnx_rejected": "ValueError: ONNX Runtime's scores of the program differ"}
    assert runtime.choose_engine(rejected, "auto") == "torch"
    with pytest.raises(runtime.BundleError, match="holds no ONNX program .ValueError: ONNX Runtime"):
        runtime.choose_engine(rejected, "onnx")
    with pytest.raises(runtime.BundleError, match="unknown engine"):
        runtime.choose_engine(with_onnx, "tensorrt")
