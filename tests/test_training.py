"""The engine's torch trainer: Arrow batching, the loop, resume after a kill, NaN handling, safe
persistence, distillation and device selection (CPU only; no GPU needed)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

torch = pytest.importorskip("torch")

from ctr_dagster.metrics import auc  # noqa: E402
from ctr_dagster.modeling import read_status, train_and_store  # noqa: E402
from ctr_dagster.registry import PluginInfo  # noqa: E402
from ctr_dagster.settings import Home  # noqa: E402
from ctr_dagster.testing import find_pickles, make_training_table  # noqa: E402
from ctr_dagster.training import checkpoint  # noqa: E402
from ctr_dagster.training.batching import BatchEncoder, epoch_order, pad_sequences  # noqa: E402
from ctr_dagster.training.config import DistillationWeights  # noqa: E402
from ctr_dagster.training.device import amp_dtype, device_name  # noqa: E402
from ctr_dagster.training.spec import FeatureSpec  # noqa: E402
from ctr_dagster.training.state import Callback, LoopState  # noqa: E402
from ctr_dagster.training.trainer import NonFiniteLossError, Trainer, distillation_loss  # noqa: E402
from ctr_dagster.warehouse import Warehouse  # noqa: E402
from tests.training_support import (  # noqa: E402
    CRASH_STATUS,
    TinyConfig,
    TinyTorchModel,
    fit_tiny,
    kit_splits,
)

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def one_thread():
    """Two cores shared by several processes: one torch thread avoids OpenMP oversubscription."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _run(args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})},
        capture_output=True,
        text=True,
        timeout=240,
    )


# -- batching ------------------------------------------------------------------------------------


def test_sequences_keep_the_most_recent_right_aligned():
    lists = pa.array([[5, 6, 7, 8], [], [9], [2, 3]], type=pa.list_(pa.int32()))
    values, lengths = pad_sequences(lists, 3, np.int64)
    assert values.tolist() == [[6, 7, 8], [0, 0, 0], [0, 0, 9], [0, 2, 3]]
    assert lengths.tolist() == [3, 0, 1, 2]
    # slices keep their own offsets
    sliced, sliced_len = pad_sequences(lists.slice(2, 2), 3, np.int64)
    assert sliced.tolist() == [[0, 0, 9], [0, 2, 3]] and sliced_len.tolist() == [1, 2]


def test_sequences_padded_in_row_blocks_equal_one_block(monkeypatch):
    from ctr_dagster.training import batching

    rng = np.random.default_rng(3)
    lists = pa.array(
        [list(rng.integers(2, 99, rng.integers(0, 9))) for _ in range(257)], pa.list_(pa.int32())
    )
    whole, whole_len = pad_sequences(lists.slice(5, 250), 6, np.int64)
    monkeypatch.setattr(batching, "PAD_BLOCK_ELEMENTS", 13)  # blocks of 2 rows, a ragged last one
    blocked, blocked_len = pad_sequences(lists.slice(5, 250), 6, np.int64)
    assert np.array_equal(whole, blocked) and np.array_equal(whole_len, blocked_len)
    for row in range(250):  # every row: its most recent entries, right-aligned, zeros before
        tail = lists[row + 5].as_py()[-6:]
        assert whole[row].tolist() == [0] * (6 - len(tail)) + tail


def test_clipping_takes_one_norm_over_dense_and_sparse_gradients():
    from ctr_dagster.training.optim import clip_grad_norm

    table = torch.nn.Embedding(10, 3, sparse=True)
    layer = torch.nn.Linear(3, 1)
    out = layer(table(torch.tensor([1, 4, 1]))).sum()  # row 1 twice: an uncoalesced sparse grad
    out.backward()
    dense = [layer.weight.grad.clone(), layer.bias.grad.clone()]
    sparse = table.weight.grad.coalesce().to_dense()
    expected = float(torch.sqrt(sum((g**2).sum() for g in dense) + (sparse**2).sum()))

    total = clip_grad_norm([table.weight, *layer.parameters()], max_norm=expected / 2)

    assert total == pytest.approx(expected, rel=1e-6)
    assert table.weight.grad.is_coalesced()
    assert torch.allclose(table.weight.grad.to_dense(), sparse / 2, atol=1e-6)
    assert torch.allclose(layer.weight.grad, dense[0] / 2, atol=1e-6)
    # under the threshold nothing moves
    assert clip_grad_norm([layer.weight], max_norm=1e9) == pytest.approx(float(dense[0].norm() / 2), rel=1e-5)


def test_batch_encoder_is_columnar_and_consistent_across_slices_and_chunks():
    table = make_training_table(400, seed=2)
    spec = FeatureSpec.from_cardinalities(
        {
            "item_idx": 50,
            "user_idx": 30,
            "category_idx": 9,
            "device_idx": 5,
            "region_idx": 6,
            "age_group_idx": 8,
        },
        max_seq_len=4,
    )
    train = table.slice(0, 300)
    encoder = BatchEncoder.fit(train, spec)
    full = encoder.numpy(table)
    assert full["dense"].dtype == np.float32 and full["dense"].shape == (400, len(spec.dense))
    np.testing.assert_allclose(encoder.numpy(train)["dense"].mean(0), 0.0, atol=1e-5)  # train statistics
    # ids beyond the vocabulary become OOV (1); padding stays 0; the mask marks the real slots
    assert full["item_idx"].max() < 50 and full["hist_item_idx"].max() < 50
    assert ((full["hist_item_idx"] > 0) == full["hist_mask"]).all()
    assert (full["hist_mask"].sum(1) == full["hist_len"]).all() and full["hist_len"].max() == 4
    chunked = pa.concat_tables([table.slice(0, 123), table.slice(123)])
    for key, value in encoder.numpy(chunked).items():
        np.testing.assert_array_equal(value, full[key])
    one = encoder.numpy(table.slice(250, 1))
    for key, value in one.items():
        np.testing.assert_array_equal(value[0], full[key][250])
    # a JSON round trip of the statistics gives the same transform
    again = BatchEncoder.from_state(
        FeatureSpec.from_dict(json.loads(json.dumps(spec.to_dict()))), json.loads(json.dumps(encoder.state()))
    )
    np.testing.assert_array_equal(again.numpy(table)["dense"], full["dense"])


def test_epoch_order_depends_only_on_seed_and_epoch():
    assert np.array_equal(epoch_order(100, 3, 2), epoch_order(100, 3, 2))
    assert not np.array_equal(epoch_order(100, 3, 2), epoch_order(100, 3, 1))
    assert sorted(epoch_order(100, 3, 2)) == list(range(100))


def test_auc_matches_the_rank_definition_with_ties():
    assert auc(np.array([0, 0, 1, 1]), np.array([0.1, 0.5, 0.5, 0.9])) == pytest.approx(0.875)
    assert auc(np.array([1, 1]), np.array([0.2, 0.3])) is None


def test_device_is_cpu_without_cuda_and_amp_only_on_cuda(monkeypatch):
    assert device_name("cpu") == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert device_name("auto") == "cpu"
    with pytest.raises(RuntimeError, match="CUDA is not available"):
        device_name("cuda")
    assert amp_dtype("cpu") is None and amp_dtype("cuda", enabled=False) is None


def test_importing_the_trainer_package_and_a_torch_plugin_imports_nothing_heavy():
    code = (
        "import sys, importlib.util as u, ctr_dagster.training, ctr_dagster.training.plugin;"
        "from ctr_dagster.training import FeatureSpec, TrainerConfig;"
        "u.find_spec('ctr_din') and __import__('ctr_din.model');"
        "heavy = [m for m in ('torch', 'numpy', 'pyarrow') if m in sys.modules];"
        "assert not heavy, heavy;"
        "import ctr_dagster.modeling;"
        "assert 'torch' not in sys.modules, 'modeling imported torch'"
    )
    result = _run(["-c", code])
    assert result.returncode == 0, result.stderr


# -- the loop ------------------------------------------------------------------------------------


def test_loss_decreases_and_the_model_learns(tmp_path):
    lines: list[str] = []
    model = fit_tiny(tmp_path, log=lines.append)
    losses = [r["train_loss"] for r in model.summary["history"]]
    assert losses == sorted(losses, reverse=True) and losses[-1] < losses[0]
    assert model.summary["best_valid_auc"] > 0.6
    assert any(
        line.startswith("epoch 1/4: train loss") and "valid AUC" in line and "samples/s" in line
        for line in lines
    )
    assert (tmp_path / "checkpoints" / "last.pt").is_file()


def test_resume_after_a_kill_gives_the_uninterrupted_result(tmp_path):
    """Kill the process right after epoch 2's checkpoint, re-run: same predictions as never killed."""
    workdir, out = tmp_path / "work", tmp_path / "resumed.npy"
    train = ["-m", "tests.training_support", "train", str(workdir), str(out)]
    killed = _run([*train, "--crash-after-epoch", "2"])
    assert killed.returncode == CRASH_STATUS and not out.exists(), killed.stderr
    assert "epoch 2/4" in killed.stdout and "epoch 3/4" not in killed.stdout
    state, meta = checkpoint.load(workdir / "checkpoints")
    assert meta["epoch"] == 2 and not meta["finished"]
    resumed = _run(train)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming from the checkpoint of epoch 2" in resumed.stdout
    assert "epoch 1/4" not in resumed.stdout and "epoch 3/4" in resumed.stdout
    uninterrupted = fit_tiny(tmp_path / "fresh")
    np.testing.assert_array_equal(np.load(out), uninterrupted.predict(kit_splits()[1]["test"]))


class Recorder(Callback):
    """Records what each epoch end shows; asks to stop after `stop_at` (0: never)."""

    def __init__(self, stop_at: int = 0):
        self.stop_at, self.seen = stop_at, []

    def on_epoch_end(self, state: LoopState) -> None:
        self.seen.append((state.epoch, state.record["epoch"], state.finished, state.stop))
        if state.epoch == self.stop_at:
            state.stop = True


def test_an_epoch_end_callback_sees_every_epoch_and_can_stop_the_run(tmp_path):
    watcher = Recorder()
    fit_tiny(None, epochs=3, callbacks=[watcher])
    assert watcher.seen == [(1, 1, False, False), (2, 2, False, False), (3, 3, True, False)]

    stopper, lines = Recorder(stop_at=2), []
    model = fit_tiny(tmp_path, callbacks=[stopper], log=lines.append)
    assert [s[0] for s in stopper.seen] == [1, 2]
    assert [r["epoch"] for r in model.summary["history"]] == [1, 2]
    _, meta = checkpoint.load(tmp_path / "checkpoints")
    assert meta["epoch"] == 2 and not meta["finished"]  # a stop asked by a callback stays resumable
    assert any(line.startswith("done: best epoch") for line in lines)
    again = Recorder()
    fit_tiny(tmp_path, callbacks=[again])
    assert [s[0] for s in again.seen] == [3, 4]


def test_early_stopping_restores_the_best_epoch(tmp_path):
    """lr so high the monitor stops improving: the loop stops after `patience` bad epochs and the
    model ends with the best epoch's weights, not the last one's."""
    model = fit_tiny(tmp_path, epochs=8, lr=3.0, patience=1, lr_schedule="constant")
    summary = model.summary
    history = summary["history"]
    assert summary["epochs_run"] == len(history) < 8
    best = max(history, key=lambda r: r["valid_auc"])
    assert summary["best_epoch"] == best["epoch"] and history[-1]["epoch"] == best["epoch"] + 1
    state, meta = checkpoint.load(tmp_path / "checkpoints")
    assert meta["finished"] and meta["best_epoch"] == best["epoch"]
    weights = model.module.state_dict()
    for key, value in state["best"].items():
        assert torch.equal(weights[key], value), key
    assert any(not torch.equal(weights[k], v) for k, v in state["model"].items())  # the last epoch's


def test_the_trainer_takes_typed_distillation_weights():
    module = torch.nn.Linear(1, 1)
    with pytest.raises(TypeError, match="DistillationWeights"):
        Trainer(TinyConfig()).fit(module, {}, {}, None, distillation={"temperature": 2.0})


def test_a_checkpoint_of_another_run_is_not_resumed(tmp_path):
    fit_tiny(tmp_path, epochs=1)
    lines: list[str] = []
    fit_tiny(tmp_path, epochs=1, lr=1e-3, log=lines.append)
    assert any("belongs to another run" in line for line in lines)


def test_non_finite_loss_stops_with_a_clear_error(tmp_path):
    per_epoch = len(range(0, kit_splits()[1]["train"].num_rows, TinyConfig.batch_size))
    with pytest.raises(NonFiniteLossError, match=r"epoch 2, batch 3"):
        fit_tiny(tmp_path, nan_after_batches=per_epoch + 2)


def test_nan_fails_the_training_and_keeps_the_previous_artifact(tmp_path):
    home = Home(tmp_path / "home")
    wh = Warehouse(home.warehouse)
    wh.write("training_dataset", make_training_table(1200, seed=1))
    plugin = PluginInfo(
        "model", "tiny_torch", None, None, "tests.training_support:TinyTorchModel", TinyTorchModel
    )
    good = train_and_store(plugin, {"epochs": 1}, wh, home, log=lambda s: None)
    assert read_status(home, "tiny_torch")["status"] == "ok"
    with pytest.raises(NonFiniteLossError):
        train_and_store(plugin, {"epochs": 2, "nan_after_batches": 3}, wh, home, log=lambda s: None)
    status = read_status(home, "tiny_torch")
    assert (
        status["status"] == "failed"
        and "NonFiniteLossError" in status["error"]
        and "epoch 1" in status["error"]
    )
    assert good.artifact_dir.is_dir()
    assert [p for p in good.artifact_dir.parent.iterdir() if not p.name.startswith(".")] == [
        good.artifact_dir
    ]
    assert (tmp_path / "home" / "work" / "tiny_torch" / "checkpoints" / "last.pt").is_file()


def test_warm_start_copies_the_saved_weights(tmp_path):
    from ctr_dagster.contracts import FitContext
    from ctr_dagster.testing import training_cardinalities

    first = fit_tiny(None, epochs=1)
    first.save(tmp_path / "champion")
    table, parts = kit_splits()
    lines: list[str] = []
    cards = {k: v + 5 for k, v in training_cardinalities(table).items()}  # the vocabulary grew
    ctx = FitContext(cardinalities=cards, log=lines.append, init_from=tmp_path / "champion")
    model = TinyTorchModel(TinyConfig(epochs=1, lr=1e-9))  # ~no update: the warm start shows through
    model.fit(parts["train"], parts["valid"], ctx)
    assert any("warm start from" in line and "grown embedding tables extended" in line for line in lines)
    old = first.module.state_dict()["item.weight"]
    assert torch.allclose(model.module.state_dict()["item.weight"][: len(old)], old, atol=1e-6)


def test_a_warm_start_keeps_its_weights_when_fine_tuning_only_makes_validation_worse(tmp_path):
    """Epoch 0 of a warm start is the previous model: a fine-tuning that only hurts validation (here
    an absurd learning rate) ends with the starting weights, best epoch 0; a fresh fit has no epoch 0."""
    from ctr_dagster.contracts import FitContext
    from ctr_dagster.testing import training_cardinalities

    first = fit_tiny(None, epochs=3)
    first.save(tmp_path / "previous")
    table, parts = kit_splits()
    lines: list[str] = []
    ctx = FitContext(
        cardinalities=training_cardinalities(table), log=lines.append, init_from=tmp_path / "previous"
    )
    model = TinyTorchModel(TinyConfig(epochs=2, lr=50.0, patience=0)).fit(parts["train"], parts["valid"], ctx)
    assert model.summary["best_epoch"] == 0
    assert model.summary["best_valid_auc"] == pytest.approx(first.summary["best_valid_auc"], abs=1e-6)
    assert any("before fine-tuning" in line for line in lines) and any("kept them" in line for line in lines)
    before, after = first.module.state_dict(), model.module.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    fresh = fit_tiny(None, epochs=2, lr=50.0, patience=0)
    assert fresh.summary["best_epoch"] >= 1


def test_a_warm_start_fine_tunes_with_the_batch_norm_statistics_of_the_previous_model(tmp_path, monkeypatch):
    """Fine-tuning on the new days only must not replace the whole window's batch-norm statistics
    by the new rows' (on `small` that alone cost TIN 0.04 valid AUC): they stay as loaded, while
    dropout and the weights still train."""
    from torch import nn

    from ctr_dagster.contracts import FitContext
    from ctr_dagster.testing import training_cardinalities
    from ctr_dagster.training.trainer import freeze_norm_statistics

    net = nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3), nn.Dropout(0.5)).train()
    freeze_norm_statistics(net)
    assert [m.training for m in net] == [True, False, True]

    first = fit_tiny(None, epochs=2)
    first.save(tmp_path / "previous")
    # no epoch-0 baseline here: the fine-tuned epoch itself is what is kept and checked
    monkeypatch.setattr("ctr_dagster.training.trainer.Trainer._warm_baseline", lambda *args: None)
    table, parts = kit_splits()
    shifted = parts["train"].slice(0, 600)  # a few "new" rows
    ctx = FitContext(
        cardinalities=training_cardinalities(table), log=lambda m: None, init_from=tmp_path / "previous"
    )
    model = TinyTorchModel(TinyConfig(epochs=1, lr=1e-9)).fit(shifted, parts["valid"], ctx)
    before, after = first.module.norm, model.module.norm
    assert torch.equal(before.running_mean, after.running_mean)
    assert torch.equal(before.running_var, after.running_var)
    fresh_start = TinyTorchModel(TinyConfig(epochs=1, lr=1e-9)).fit(
        shifted, parts["valid"], FitContext(cardinalities=training_cardinalities(table), log=lambda m: None)
    )
    assert not torch.equal(fresh_start.module.norm.running_mean, torch.zeros_like(before.running_mean))


def test_weights_only_persistence_round_trip(tmp_path):
    model = fit_tiny(None, epochs=2)
    model.save(tmp_path / "artifact")
    assert sorted(p.name for p in (tmp_path / "artifact").iterdir()) == ["model.json", "weights.safetensors"]
    assert find_pickles(tmp_path / "artifact") == []
    loaded = TinyTorchModel.load(tmp_path / "artifact")
    test = kit_splits()[1]["test"]
    np.testing.assert_array_equal(loaded.predict(test), model.predict(test))
    document = json.loads((tmp_path / "artifact" / "model.json").read_text())
    assert document["spec"]["max_seq_len"] == 8 and len(document["dense"]["mean"]) == len(
        document["spec"]["dense"]
    )
    # checkpoints are plain state dicts: they load with weights_only=True
    fit_tiny(tmp_path / "work", epochs=1)
    state = torch.load(tmp_path / "work" / "checkpoints" / "last.pt", weights_only=True)
    assert set(state) >= {"model", "best", "optimizers", "meta_json"}


def test_lazy_adam_is_sparse_adam_faster():
    from ctr_dagster.training.lazy_adam import LazyAdam

    torch.manual_seed(0)
    ours, ref = torch.nn.Embedding(300, 4, sparse=True), torch.nn.Embedding(300, 4, sparse=True)
    ref.load_state_dict(ours.state_dict())
    opt_ours, opt_ref = (
        LazyAdam(ours.parameters(), lr=1e-2),
        torch.optim.SparseAdam(ref.parameters(), lr=1e-2),
    )
    untouched = ours.weight[299].detach().clone()
    for _ in range(5):
        rows = torch.randint(0, 299, (64,))
        for table, opt in ((ours, opt_ours), (ref, opt_ref)):
            opt.zero_grad()
            (table(rows) ** 2).sum().backward()
            opt.step()
    torch.testing.assert_close(ours.weight, ref.weight, rtol=1e-5, atol=1e-5)  # float rounding only
    assert torch.equal(ours.weight[299], untouched)  # rows outside every batch never move


# -- regularization: DIN's mini-batch-aware L2, no device-dependent decay of embedding tables --------


class _TableNet(torch.nn.Module):
    """One embedding table read by the target id and its history, then a linear layer: a model whose
    embedding rows outside the batch must never move."""

    def __init__(self, rows: int = 1200, dim: int = 4):
        super().__init__()
        self.table = torch.nn.Embedding(rows, dim, padding_idx=0)
        torch.nn.init.normal_(self.table.weight, std=0.5)
        with torch.no_grad():
            self.table.weight[0].zero_()
        self.out = torch.nn.Linear(2 * dim, 1)

    def embedding_inputs(self):
        return [(self.table, ("item_idx", "hist_item_idx"))]

    def forward(self, batch):
        target = self.table(batch["item_idx"])
        history = self.table(batch["hist_item_idx"]).sum(1)
        return self.out(torch.cat([target, history], 1)).squeeze(1)


def _hand_built_batch() -> dict[str, torch.Tensor]:
    return {
        "item_idx": torch.tensor([2, 3, 2, 5]),
        "hist_item_idx": torch.tensor([[0, 2, 3], [0, 0, 4], [2, 2, 6], [0, 0, 0]]),
        "label": torch.tensor([1.0, 0.0, 1.0, 0.0]),
    }


def test_mini_batch_aware_l2_is_the_papers_formula_on_a_hand_built_example():
    """DIN section 4.3: penalty_m = lambda * sum_j alpha_mj / n_j * ||w_j||^2, n_j = samples holding j."""
    from ctr_dagster.training.regularization import MiniBatchAwareL2, occurrence_counts

    net = _TableNet(rows=8)
    train = _hand_built_batch()
    # id 2: rows 0 (target and history) and 2 (target, twice in history) -> 2 samples; id 3: rows 0, 1
    counts = occurrence_counts(train, ("item_idx", "hist_item_idx"), 8)
    assert counts.tolist() == [3, 0, 2, 2, 1, 1, 1, 0]  # id 0 = padding: ignored by the regularizer
    reg = MiniBatchAwareL2.from_train(net, train, strength=0.3)
    batch = {k: v[:2] for k, v in train.items()}  # rows 0 and 1: ids 2, 3, 4 occur (alpha = 1)
    w = net.table.weight.detach()
    expected = 0.3 * (w[2].pow(2).sum() / 2 + w[3].pow(2).sum() / 2 + w[4].pow(2).sum() / 1)
    assert float(reg(batch).detach()) == pytest.approx(float(expected), rel=1e-6)
    assert float(reg({k: v[3:] for k, v in train.items()}).detach()) == pytest.approx(
        0.3 * float(w[5].pow(2).sum())
    )


@pytest.mark.parametrize("form", ["mask", "dense lookup", "sparse lookup"])
def test_mini_batch_aware_l2_gradient_touches_only_the_rows_in_the_batch(form, monkeypatch):
    """All three forms: a small dense table (presence mask), a big dense one (GPU: distinct ids
    looked up) and a sparse one (CPU lazy Adam: a sparse gradient) -- the same gradient."""
    from ctr_dagster.training import regularization
    from ctr_dagster.training.regularization import MiniBatchAwareL2

    if form == "dense lookup":
        monkeypatch.setattr(regularization, "MASK_MAX_ROWS", 0)
    sparse = form == "sparse lookup"
    net = _TableNet(rows=8)
    net.table.sparse = sparse
    train = _hand_built_batch()
    reg = MiniBatchAwareL2.from_train(net, train, strength=0.3)
    penalty = reg({k: v[:2] for k, v in train.items()})
    w = net.table.weight.detach()
    formula = 0.3 * (w[2].pow(2).sum() / 2 + w[3].pow(2).sum() / 2 + w[4].pow(2).sum())
    assert float(penalty.detach()) == pytest.approx(float(formula), rel=1e-6)
    penalty.backward()
    grad = net.table.weight.grad
    assert grad.is_sparse == sparse
    grad = grad.coalesce().to_dense() if sparse else grad
    n = torch.tensor([1.0, 1.0, 2.0, 2.0, 1.0, 1.0, 1.0, 1.0])[:, None]
    expected = torch.zeros_like(w)
    expected[[2, 3, 4]] = 2 * 0.3 * w[[2, 3, 4]] / n[[2, 3, 4]]  # d/dw of 0.3 ||w_j||^2 / n_j
    torch.testing.assert_close(grad, expected, rtol=1e-6, atol=1e-7)


def _table_world(n: int = 256, seed: int = 0) -> dict[str, torch.Tensor]:
    """Ids 2..399 of a 1,200-row table (rows >= 400 never occur), a label that depends on them."""
    g = torch.Generator().manual_seed(seed)
    item = torch.randint(2, 400, (n,), generator=g)
    hist = torch.randint(2, 400, (n, 5), generator=g)
    hist[:, :2] = 0  # padded slots
    label = ((item + hist.sum(1)) % 3 == 0).float()
    return {"item_idx": item, "hist_item_idx": hist, "label": label}


def _train_table_net(sparse: bool, batch_size: int, epochs: int, **config) -> tuple[_TableNet, list[float]]:
    from ctr_dagster.contracts import FitContext
    from ctr_dagster.training.config import TrainerConfig

    torch.manual_seed(0)
    net = _TableNet()
    cfg = TrainerConfig(
        epochs=epochs,
        batch_size=batch_size,
        lr=1e-2,
        lr_schedule="constant",
        patience=0,
        log_every=0,
        sparse_embeddings=sparse,
        **config,
    )
    summary = Trainer(cfg).fit(net, _table_world(), {}, FitContext(seed=0, log=lambda s: None))
    return net, [r["train_loss"] for r in summary.history]


def test_embedding_regularization_is_the_same_on_the_lazy_cpu_path_and_the_dense_gpu_path():
    """weight_decay never touches embedding tables, mba_l2 is in the loss: the sparse lazy Adam (CPU)
    and the dense Adam (CUDA/DDP: `sparse_embeddings` off) give the same losses and weights. Full
    batches, so every present row is present at every step (with several batches the two Adams
    still differ by design: dense Adam's momentum moves a row in steps where it is absent)."""
    config = {"weight_decay": 0.05, "mba_l2": 0.5}
    torch.manual_seed(0)
    init = _TableNet().table.weight.detach().clone()
    lazy, lazy_losses = _train_table_net(True, 256, 3, **config)
    dense, dense_losses = _train_table_net(False, 256, 3, **config)
    # losses near 90 in float32: one ulp is 7.6e-6, so compare relatively (the two paths may sum in
    # another order when torch's threads are busy)
    np.testing.assert_allclose(lazy_losses, dense_losses, rtol=1e-6, atol=0)
    for a, b in zip(lazy.parameters(), dense.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    assert not lazy.table.sparse  # switched back after the fit
    moved = (dense.table.weight.detach() != init).any(1)
    assert moved[2:400].any() and not moved[400:].any()  # rows absent from every batch never move
    assert not (lazy.table.weight.detach() != init)[400:].any()


def test_weight_decay_and_mba_l2_leave_the_rows_outside_the_batches_alone_on_the_dense_path():
    """Several mini-batches on the dense (GPU) path with weight decay and mba_l2: rows never in a
    batch stay put (the old dense Adam decayed all 1,200 rows); the penalty changes the result."""
    torch.manual_seed(0)
    init = _TableNet().table.weight.detach().clone()
    plain, _ = _train_table_net(False, 64, 2)
    regularized, _ = _train_table_net(False, 64, 2, weight_decay=0.1, mba_l2=1.0)
    assert torch.equal(regularized.table.weight.detach()[400:], init[400:])
    assert regularized.table.weight[2:400].norm() < plain.table.weight[2:400].norm()  # it shrinks


def test_mba_l2_needs_the_module_to_declare_its_tables_and_is_validated():
    from ctr_dagster.contracts import FitContext
    from ctr_dagster.training.config import TrainerConfig

    with pytest.raises(ValueError, match="mba_l2 must be"):
        TrainerConfig(mba_l2=-1.0)
    with pytest.raises(ValueError, match="weight_decay must be"):
        TrainerConfig(weight_decay=float("nan"))

    class Undeclared(_TableNet):
        embedding_inputs = None

    with pytest.raises(ValueError, match="declares no embedding_inputs"):
        Trainer(TrainerConfig(epochs=1, mba_l2=0.1, log_every=0)).fit(
            Undeclared(), _table_world(), {}, FitContext(log=lambda s: None)
        )


# -- distillation --------------------------------------------------------------------------------


def test_distillation_loss_is_the_tempered_soft_target_bce():
    z, zt = torch.tensor([0.5, -1.0, 2.0]), torch.tensor([1.0, 0.0, -2.0])
    t = 2.0
    p_t = torch.sigmoid(zt / t)
    p_s = torch.sigmoid(z / t)
    manual = -(p_t * torch.log(p_s) + (1 - p_t) * torch.log(1 - p_s)).mean() * t * t
    assert float(distillation_loss(z, zt, t)) == pytest.approx(float(manual), rel=1e-6)


def test_a_student_follows_the_teacher_scores(tmp_path):
    table, parts = kit_splits()
    train = parts["train"]
    # a "teacher" that scores by position only: a pure-teacher student must learn to rank like it
    teacher = 1.0 / (1.0 + np.exp(train.column("position").to_numpy().astype(float) - 5.0))
    from ctr_dagster.contracts import FitContext
    from ctr_dagster.testing import training_cardinalities

    model = TinyTorchModel(TinyConfig(epochs=3))
    ctx = FitContext(
        cardinalities=training_cardinalities(table),
        log=lambda s: None,
        inputs={
            "distillation": {
                "teacher_scores": teacher,
                "label_weight": 0.0,
                "teacher_weight": 1.0,
                "temperature": 2.0,
            }
        },
    )
    model.fit(train, parts["valid"], ctx)
    test = parts["test"]
    scores = model.predict(test)
    assert np.corrcoef(scores, -test.column("position").to_numpy().astype(float))[0, 1] > 0.9
    bad = dict(ctx.inputs["distillation"], teacher_scores=teacher[:-1])
    with pytest.raises(ValueError, match="teacher_scores has"):
        TinyTorchModel(TinyConfig(epochs=1)).fit(
            train, parts["valid"], FitContext(inputs={"distillation": bad})
        )


def test_the_plugin_base_hands_the_trainer_typed_weights_with_their_defaults(monkeypatch):
    from ctr_dagster.contracts import FitContext
    from ctr_dagster.testing import training_cardinalities

    table, parts = kit_splits()
    seen = {}
    real_fit = Trainer.fit

    def spy(self, *args, distillation=None, **kwargs):
        seen["weights"] = distillation
        return real_fit(self, *args, distillation=distillation, **kwargs)

    monkeypatch.setattr(Trainer, "fit", spy)
    soft = np.full(parts["train"].num_rows, 0.3)
    ctx = FitContext(
        cardinalities=training_cardinalities(table),
        log=lambda s: None,
        inputs={"distillation": {"teacher": "t", "teacher_scores": soft, "label_weight": 0.5}},
    )
    TinyTorchModel(TinyConfig(epochs=1)).fit(parts["train"], parts["valid"], ctx)
    assert seen["weights"] == DistillationWeights(label_weight=0.5)  # teacher weight 1, T = 2
    assert seen["weights"].temperature == 2.0


# -- DDP -----------------------------------------------------------------------------------------


def test_the_model_asset_trains_under_torchrun_with_two_gloo_processes(tmp_path, monkeypatch):
    """CTR_DDP_PROCS=2: the asset runs torchrun through Dagster Pipes; both ranks end with the same
    weights and the result is close to a single-process run's."""
    ctr_din = pytest.importorskip("ctr_din")
    import dagster as dg

    from assets.models import model_asset
    from assets.resources import WarehouseResource

    home = Home(tmp_path / "home")
    wh = Warehouse(home.warehouse)
    wh.write("training_dataset", make_training_table(1500, seed=1))
    plugin = PluginInfo("model", "din", "ctr-din", None, "ctr_din.model:DinModel", ctr_din.DinModel)
    config = {
        "epochs": 3,
        "batch_size": 128,
        "lr": 1e-2,
        "num_threads": 1,
        "embedding_dim": 8,
        "attention_units": [16],
        "tower_units": [32],
        "log_every": 0,
    }
    single = train_and_store(plugin, config, wh, home, log=lambda s: None)

    monkeypatch.setenv("CTR_DDP_PROCS", "2")
    asset = model_asset(plugin)
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            [asset],
            instance=instance,
            resources={"warehouse": WarehouseResource(home=str(home.root))},
            run_config={"ops": {"models__din": {"config": {**config, "gpus": 0}}}},
        )
        assert result.success
        meta = {
            k: v.value for k, v in result.asset_materializations_for_node("models__din")[0].metadata.items()
        }
    assert meta["training/world_size"] == 2 and meta["training/rank_weight_spread"] == 0.0
    assert abs(meta["valid_auc"] - single.scores["valid_auc"]) < 0.05, (meta["valid_auc"], single.scores)
    assert single.scores["valid_auc"] > 0.55, single.scores
    assert read_status(home, "din")["status"] == "ok" and Path(meta["artifact"]).is_dir()


def test_a_model_asking_for_more_behaviours_than_the_dataset_holds_is_told_and_capped():
    """One name (`max_seq_len`) from the world to the dataset to the model; asking for more than the
    training dataset holds says so in the run log and uses what there is."""
    from ctr_dagster.dataset import SEQ_LEN_METADATA, sequence_capacity

    table, parts = kit_splits()
    held = sequence_capacity(parts["train"])
    assert held == int(table.schema.metadata[SEQ_LEN_METADATA]) == 20  # the dataset's own max_seq_len
    lines: list[str] = []
    wide = fit_tiny(None, epochs=1, max_seq_len=held + 10, log=lines.append)
    assert wide.spec.max_seq_len == held
    [said] = [line for line in lines if "max_seq_len" in line]
    assert f"max_seq_len={held + 10}" in said and f"holds ({held} per row" in said
    assert "training_dataset's launchpad" in said
    quiet: list[str] = []
    everything = fit_tiny(None, epochs=1, max_seq_len=None, log=quiet.append)
    assert everything.spec.max_seq_len == held and not [x for x in quiet if "max_seq_len" in x]
    assert fit_tiny(None, epochs=1, max_seq_len=3).spec.max_seq_len == 3
    # a table made elsewhere (no recorded max_seq_len): the longest list it holds
    bare = parts["train"].replace_schema_metadata(None)
    longest = max(len(x) for x in bare.column("hist_item_idx").to_pylist())
    assert sequence_capacity(bare) == longest
