"""DIN's mini-batch-aware L2 (Zhou et al., KDD'18, section 4.3) on the real network.

Per mini-batch the trainer adds ``mba_l2 * sum_j ||w_j||^2 / n_j`` over the embedding ids j in the
batch (n_j = train rows holding id j). It is part of the loss and embedding tables get no optimiser
weight decay, so the CPU path (sparse gradients, lazy Adam) and the GPU path (dense Adam; here
`sparse_embeddings=False`, what CUDA and DDP use) regularize identically and only rows present in a
batch ever move.
"""

import numpy as np
import pyarrow.compute as pc
import pytest
import torch
from ctr_dagster.contracts import FitContext
from ctr_dagster.testing import make_training_table, training_cardinalities
from ctr_dagster.training.batching import BatchEncoder
from ctr_dagster.training.regularization import MiniBatchAwareL2, embedding_inputs

from ctr_din.model import DinConfig, DinModel


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _train_split(n_rows: int = 900):
    table = make_training_table(n_rows, seed=0)
    return table, table.filter(pc.equal(table.column("split"), "train"))


def _fit(sparse: bool, batch_size: int, epochs: int, **config) -> DinModel:
    table, train = _train_split()
    cfg = DinConfig(
        epochs=epochs,
        batch_size=batch_size,
        lr=3e-3,
        lr_schedule="constant",
        patience=0,
        num_threads=1,
        log_every=0,
        sparse_embeddings=sparse,
        **config,
    )
    ctx = FitContext(seed=0, cardinalities=training_cardinalities(table), log=lambda s: None)
    return DinModel(cfg).fit(train, train.slice(0, 0), ctx)


def _initial_module(model: DinModel) -> torch.nn.Module:
    """The module `fit` started from (it seeds with ctx.seed, then builds from the spec)."""
    torch.manual_seed(0)
    return model.build_module(model.spec)


def test_din_declares_each_embedding_table_with_the_columns_that_index_it():
    model = _fit(True, 4096, 1, use_user_idx=True)
    declared = embedding_inputs(model.module)
    uses = dict(zip(model.module.embeddings, declared, strict=True))
    assert uses["item_idx"].columns == ("item_idx", "hist_item_idx")  # target and behaviours share it
    assert uses["category_idx"].columns == ("category_idx", "hist_category_idx")
    assert uses["user_idx"].columns == ("user_idx",) and uses["hour"].columns == ("hour",)
    assert all(use.table is model.module.embeddings[name] for name, use in uses.items())


def test_din_penalty_counts_ids_per_training_row_and_equals_the_formula():
    """n_j = train rows whose target or history holds item j (numpy, row by row); penalty on a batch
    = mba_l2 * sum over the batch's distinct ids of ||w_j||^2 / n_j, summed over every table."""
    _, train = _train_split()
    model = _fit(True, 4096, 1)
    tensors = BatchEncoder.fit(train, model.spec).tensors(train)
    reg = MiniBatchAwareL2.from_train(model.module, tensors, strength=0.7)
    items = tensors["item_idx"].numpy()
    hist = tensors["hist_item_idx"].numpy()
    expected = np.zeros(model.spec.categorical["item_idx"], dtype=np.int64)
    for target, behaviours in zip(items, hist, strict=True):
        for j in {int(target), *map(int, behaviours)} - {0}:
            expected[j] += 1
    names = list(model.module.embeddings)
    inverse = reg.inverse[names.index("item_idx")].numpy()
    seen = expected > 0
    np.testing.assert_allclose(inverse[seen], 1.0 / expected[seen], rtol=1e-6)

    batch = {k: v[:64] for k, v in tensors.items()}
    total = 0.0
    for name, table in model.module.embeddings.items():
        columns = [batch[name].numpy().reshape(-1)]
        if f"hist_{name}" in batch:
            columns.append(batch[f"hist_{name}"].numpy().reshape(-1))
        ids = set(np.concatenate(columns).tolist()) - ({0} if table.padding_idx == 0 else set())
        counts = reg.inverse[names.index(name)]
        w = table.weight.detach()
        total += sum(float(w[j].pow(2).sum() * counts[j]) for j in ids)
    assert float(reg(batch).detach()) == pytest.approx(0.7 * total, rel=1e-5)


def test_lazy_cpu_path_equals_the_dense_gpu_path_with_regularization(monkeypatch):
    """Same losses (relative 1e-6: float32 sums in another order) and weights (1e-6) with weight_decay
    and mba_l2 on, full batches (every present row present at every step), the item table sparse on
    one path and dense on the other."""
    from ctr_dagster.training import optim

    monkeypatch.setattr(optim, "SPARSE_MIN_ROWS", 100)  # the kit world's item table (~240 rows) goes sparse
    config = {"weight_decay": 0.01, "mba_l2": 0.3}
    lazy = _fit(True, 4096, 3, **config)
    dense = _fit(False, 4096, 3, **config)
    lazy_losses = [r["train_loss"] for r in lazy.summary["history"]]
    dense_losses = [r["train_loss"] for r in dense.summary["history"]]
    np.testing.assert_allclose(lazy_losses, dense_losses, rtol=1e-6, atol=0)
    dense_state = dense.module.state_dict()
    for name, value in lazy.module.state_dict().items():
        torch.testing.assert_close(value, dense_state[name], rtol=0, atol=1e-6, msg=name)


@pytest.mark.parametrize("sparse", [True, False])
def test_rows_outside_every_batch_never_move(monkeypatch, sparse):
    """With weight decay and mba_l2, several batches per epoch: items absent from the train split
    keep their initial rows on both paths (the old dense Adam decayed every row on the GPU)."""
    from ctr_dagster.training import optim

    monkeypatch.setattr(optim, "SPARSE_MIN_ROWS", 100)
    _, train = _train_split()
    model = _fit(sparse, 128, 2, weight_decay=0.05, mba_l2=1.0)
    start = _initial_module(model).embeddings["item_idx"].weight.detach()
    end = model.module.embeddings["item_idx"].weight.detach()
    used = np.zeros(len(end), dtype=bool)
    used[train.column("item_idx").to_numpy()] = True
    used[pc.list_flatten(train.column("hist_item_idx")).to_numpy()] = True
    assert (~used).sum() > 5
    moved = (end != start).any(1).numpy()
    assert not moved[~used].any() and moved[used & (np.arange(len(end)) > 1)].all()


def test_mba_l2_default_is_on_and_validated():
    assert DinConfig().mba_l2 > 0
    with pytest.raises(ValueError, match="mba_l2"):
        DinConfig(mba_l2=-0.1)
