"""The peer side of the DIN benchmark: torch-rechub 0.9.0's DIN on the exported rows.

Runs inside `benchmarks/.peer-venv` (made by `benchmarks/peer_env.sh`), never in the project venv,
and imports nothing of ctr_dagster. `bench_din.py` starts it as a subprocess:

    .peer-venv/bin/python peer_din_rechub.py DATA_DIR --threads 2 --out result.json

Test scores go to test_scores_<mode>.npy beside --out.
DATA_DIR holds train/valid/test.npz (from `din_data.export_npz`) and spec.json (dims, batch size,
lr, epochs, seed, cardinalities), so both libraries get the same rows and hyper-parameters.

Two measurements, both reported:

* ``documented``: the library's own pipeline as its DIN example does it
  (examples/ranking/run_amazon_electronics.py): `DataGenerator` -> `generate_dataloader` ->
  `CTRTrainer.fit(train, valid)` -> `CTRTrainer.evaluate(test)`.
* ``tensor``: the same model class, Adam and BCE loss, but batches sliced from pre-built tensors
  (no per-sample Dataset/collate), i.e. the cost of the peer's model alone, to see how much of the
  gap is its input pipeline.

Features: target item and category (padding_idx 0, so padded history slots embed to zero, as
masking would), history item/category sharing the target tables (`shared_with`), and every context
field as a `SparseFeature` (torch-rechub's DIN accepts only sparse fields, so floats come bucketed).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

CONTEXT = (
    "user_idx",
    "device_idx",
    "region_idx",
    "age_group_idx",
    "position",
    "hour",
    "day_of_week",
    "treatment",
    "price_bucket",
    "item_age_days_bucket",
    "user_click_count_bucket",
)


def _load(data: Path, split: str) -> tuple[dict, object]:
    import numpy as np

    with np.load(data / f"{split}.npz") as npz:
        arrays = {k: npz[k] for k in npz.files}
    y = arrays.pop("label")
    return arrays, y


def _model(spec: dict):
    from torch_rechub.basic.features import SequenceFeature, SparseFeature
    from torch_rechub.models.ranking import DIN

    card, d = spec["cardinalities"], spec["embed_dim"]
    target = [
        SparseFeature("item_idx", vocab_size=card["item_idx"], embed_dim=d, padding_idx=0),
        SparseFeature("category_idx", vocab_size=card["category_idx"], embed_dim=d, padding_idx=0),
    ]
    history = [
        SequenceFeature(
            "hist_item_idx",
            vocab_size=card["item_idx"],
            embed_dim=d,
            pooling="concat",
            shared_with="item_idx",
        ),
        SequenceFeature(
            "hist_category_idx",
            vocab_size=card["category_idx"],
            embed_dim=d,
            pooling="concat",
            shared_with="category_idx",
        ),
    ]
    context = [SparseFeature(name, vocab_size=card[name], embed_dim=d) for name in CONTEXT]
    return DIN(
        features=context,
        history_features=history,
        target_features=target,
        mlp_params={"dims": spec["tower_units"]},
        attention_mlp_params={"dims": spec["attention_units"]},
    )


def _keep(x: dict) -> dict:
    names = {"item_idx", "category_idx", "hist_item_idx", "hist_category_idx", *CONTEXT}
    return {k: v for k, v in x.items() if k in names}


def run_documented(spec: dict, data: Path) -> dict:
    """The library's pipeline, as in its DIN example."""
    import numpy as np
    import torch
    from sklearn.metrics import roc_auc_score
    from torch_rechub.trainers import CTRTrainer
    from torch_rechub.utils.data import DataGenerator

    (train_x, train_y), (valid_x, valid_y), (test_x, test_y) = (
        _load(data, s) for s in ("train", "valid", "test")
    )
    train_x, valid_x, test_x = _keep(train_x), _keep(valid_x), _keep(test_x)
    torch.manual_seed(spec["seed"])
    model = _model(spec)
    loaders = DataGenerator(train_x, train_y).generate_dataloader(
        x_val=valid_x, y_val=valid_y, x_test=test_x, y_test=test_y, batch_size=spec["batch_size"]
    )
    with tempfile.TemporaryDirectory() as tmp:
        trainer = CTRTrainer(
            model,
            optimizer_params={"lr": spec["lr"], "weight_decay": spec["weight_decay"]},
            n_epoch=spec["epochs"],
            earlystop_patience=spec["epochs"],
            device="cpu",
            model_path=tmp,
        )
        started, cpu_started = time.perf_counter(), time.process_time()
        trainer.fit(loaders[0], loaders[1])
        fit_s, cpu_s = time.perf_counter() - started, time.process_time() - cpu_started
    started = time.perf_counter()
    scores = np.asarray(trainer.predict(trainer.model, loaders[2]), dtype=np.float64).reshape(-1)
    return {
        "fit_s": fit_s,
        "samples_per_s": len(train_y) * spec["epochs"] / fit_s,
        "fit_cpu_s": cpu_s,
        "samples_per_cpu_s": len(train_y) * spec["epochs"] / cpu_s,
        "test_auc": float(roc_auc_score(test_y, scores)),
        "test_predict_s": time.perf_counter() - started,
        "params": sum(p.numel() for p in model.parameters()),
        "scores": scores,
    }


def run_tensor(spec: dict, data: Path) -> dict:
    """The same model fed from pre-built tensors: the peer's model cost without its input pipeline."""
    import numpy as np
    import torch
    from sklearn.metrics import roc_auc_score

    def tensors(split: str) -> tuple[dict, torch.Tensor]:
        x, y = _load(data, split)
        return {k: torch.from_numpy(v) for k, v in _keep(x).items()}, torch.from_numpy(y)

    (train_x, train_y), (valid_x, valid_y), (test_x, test_y) = (
        tensors(s) for s in ("train", "valid", "test")
    )
    torch.manual_seed(spec["seed"])
    model = _model(spec)
    optimizer = torch.optim.Adam(model.parameters(), lr=spec["lr"], weight_decay=spec["weight_decay"])
    loss_fn = torch.nn.BCELoss()
    bs, n = spec["batch_size"], len(train_y)

    def score(x: dict, rows: int) -> np.ndarray:
        model.eval()
        with torch.no_grad():
            out = [model({k: v[i : i + 8192] for k, v in x.items()}) for i in range(0, rows, 8192)]
        return torch.cat(out).numpy()

    started, cpu_started = time.perf_counter(), time.process_time()
    for _ in range(spec["epochs"]):
        model.train()
        order = torch.randperm(n)
        for i in range(0, n, bs):
            idx = order[i : i + bs]
            loss = loss_fn(model({k: v[idx] for k, v in train_x.items()}), train_y[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        valid_auc = roc_auc_score(valid_y.numpy(), score(valid_x, len(valid_y)))
    fit_s, cpu_s = time.perf_counter() - started, time.process_time() - cpu_started
    scores = score(test_x, len(test_y)).astype(np.float64)
    return {
        "fit_s": fit_s,
        "samples_per_s": n * spec["epochs"] / fit_s,
        "fit_cpu_s": cpu_s,
        "samples_per_cpu_s": n * spec["epochs"] / cpu_s,
        "valid_auc": float(valid_auc),
        "test_auc": float(roc_auc_score(test_y.numpy(), scores)),
        "scores": scores,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--modes", default="documented,tensor")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    os.environ.setdefault("TQDM_DISABLE", "1")
    from importlib.metadata import version

    import numpy as np
    import torch
    import torch_rechub  # noqa: F401  (fail early with a clear ImportError outside the peer venv)

    torch.set_num_threads(args.threads)
    spec = json.loads((args.data / "spec.json").read_text())
    result: dict = {
        "library": "torch-rechub",
        "version": version("torch-rechub"),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "spec": spec,
    }
    for mode in args.modes.split(","):
        figures = {"documented": run_documented, "tensor": run_tensor}[mode](spec, args.data)
        np.save(args.out.parent / f"test_scores_{mode}.npy", figures.pop("scores"))
        result[mode] = figures
        print(mode, json.dumps(figures), flush=True)
    args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
