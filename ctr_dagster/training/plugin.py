"""`TorchModel`: the ModelPlugin contract (fit / predict / save / load) on top of the shared trainer.

A torch plugin writes only what is specific to it::

    @dataclass
    class MyConfig(TrainerConfig):          # trainer fields (epochs, lr, ...) + the model's own
        embedding_dim: int = 16
        max_seq_len: int | None = None      # most recent behaviours used; None = all the dataset holds

    class MyModel(TorchModel):
        name = "my_model"
        task = "ctr"
        Config = MyConfig
        requires = frozenset({"sequence"})

        def build_module(self, spec):       # -> nn.Module; forward(batch: dict[str, Tensor]) -> logits (B,)
            from my_plugin.modules import MyNet
            return MyNet(spec, self.config)

and may override `feature_spec` (which columns) and `sequence_length` (how many behaviours: the
config's `max_seq_len`, capped at what the training dataset holds, with a line in the run log when
the config asks for more), `loss` (default: BCE on the
logits; a module may also return ``{"logit": ..., "aux_loss": ...}``) and `predict_logits`.
The batch dict keys are documented in `ctr_dagster.training.batching`.

Persistence is safe by construction: ``weights.safetensors`` (the module's state dict, frozen
buffers included) and ``model.json`` (`ctr_dagster.artifact_meta`: kind = the plugin's name, format
version, config, feature spec, dense statistics, training summary, library versions). `load` rebuilds the module from the JSON and loads the weights;
nothing is unpickled. `export` writes the serving bundle's part (a torch.export program + the batch
encoding as JSON; `ctr_dagster.serving.torch_export`), so every torch plugin can be served by `ctr export`.

Inputs the engine may hand `fit` through ``ctx.inputs``:
* ``item_embeddings``: float32[rows, d], row = item_idx -- used when the config has
  ``use_item_embeddings=True`` or the plugin `requires` it; `frozen_item_vectors` hands it to the module.
* ``item_tags``: `ctr_dagster.item_tags.ItemTags` (int32[rows, T] tag ids per item_idx, 0 = pad) -- used
  when the config has ``use_item_tags=True`` or the plugin `requires` it; `frozen_item_tags` hands it
  to the module and `FeatureSpec.item_tags` records its shape.
* ``warm_start``: ``{"previous_train_end": ISO timestamp}`` -- with ``ctx.init_from``, the last train
  row the previous artifact saw: the warm-started fit fine-tunes on the later rows (`fine_tune_mask`;
  a distilled student's teacher scores are subset with them).
* ``distillation``: ``{"teacher_scores": float[n_train], "label_weight", "teacher_weight",
  "temperature"}`` -- read as a `DistillationWeights` (missing weights take its defaults: 1, 1, T = 2);
  the trainer adds the soft-target term (see `ctr_dagster.training.trainer`).

`callbacks` (an instance attribute, empty by default) are handed to the `Trainer`: objects with
``on_epoch_end(state)`` (`ctr_dagster.training.state.Callback`), e.g. a progress reporter or a test
that stops or kills the run after an epoch.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from ctr_dagster.artifact_meta import META_FILE, read_meta, write_meta
from ctr_dagster.contracts import FitContext, config_from_dict, config_to_dict
from ctr_dagster.training.config import DistillationWeights, TrainerConfig, eval_rows
from ctr_dagster.training.spec import ID_COLUMNS, FeatureSpec
from ctr_dagster.window import DEFAULT_MAX_SEQ_LEN

if TYPE_CHECKING:
    import numpy as np
    import pyarrow as pa
    import torch

FORMAT_VERSION = 1


def fine_tune_mask(train: pa.Table, ctx: FitContext, min_rows: int, name: str) -> np.ndarray | None:
    """Which train rows a warm-started fit trains on: those after the last train row the previous
    artifact saw (``ctx.inputs["warm_start"]["previous_train_end"]``, set by the engine's nightly
    warm start), when there are at least `min_rows` (a batch); None = the whole train split. A mask,
    so row-aligned inputs (a distilled student's teacher scores) can follow. Any plugin that
    warm-starts may use it (the torch models here, ECUP)."""
    import datetime as dt

    import pyarrow as pa
    import pyarrow.compute as pc

    previous = ((ctx.inputs or {}).get("warm_start") or {}).get("previous_train_end")
    if not previous or train.num_rows == 0:
        return None
    after = dt.datetime.fromisoformat(previous)
    ts_type = train.schema.field("ts").type
    if getattr(ts_type, "tz", None) and after.tzinfo is None:
        after = after.replace(tzinfo=dt.UTC)
    keep = pc.greater(train.column("ts"), pa.scalar(after, type=ts_type)).to_numpy(zero_copy_only=False)
    new = int(keep.sum())
    if new < min_rows:
        ctx.log(
            f"{name}: {new} train rows after {previous} (< {min_rows}): fine-tuning on all {train.num_rows}"
        )
        return None
    ctx.log(f"{name}: fine-tuning on the {new} train rows after {previous} (of {train.num_rows})")
    return keep


WEIGHTS_FILE = "weights.safetensors"


def _cardinalities(tables: list[pa.Table], given: dict[str, int]) -> dict[str, int]:
    """Vocabulary sizes: the engine's (`ctx.cardinalities`), raised to max id + 1 seen in the tables
    (a vocabulary that is missing or older than the data must not turn known ids into OOV)."""
    import pyarrow.compute as pc

    out = {k: int(v) for k, v in given.items()}
    for name in ID_COLUMNS:
        top = 1
        for table in tables:
            if name in table.column_names and table.num_rows:
                top = max(top, int(pc.max(table.column(name)).as_py() or 0))
            hist = f"hist_{name}"
            if hist in table.column_names and table.num_rows:
                top = max(top, int(pc.max(pc.list_flatten(table.column(hist))).as_py() or 0))
        out[name] = max(out.get(name, 0), top + 1)
    return out


def code_fingerprint(cls: type) -> str:
    """Hash of the plugin package's and the trainer's Python sources: a checkpoint written by other
    code (a fixed bug, a changed layer) is never resumed, even with the same config and data."""
    import hashlib
    import importlib
    import sys

    digest = hashlib.sha256()
    package = sys.modules[cls.__module__].__name__.split(".")[0]
    folders = []
    for name in (package, "ctr_dagster.training"):
        module = importlib.import_module(name)
        files = getattr(module, "__file__", None)
        if files:
            folders.append(Path(files).parent if Path(files).name == "__init__.py" else Path(files))
    for folder in folders:
        paths = sorted(folder.rglob("*.py")) if folder.is_dir() else [folder]
        for path in paths:
            digest.update(path.name.encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def teacher_logits(scores: Any, n: int) -> np.ndarray:
    """Teacher probabilities -> logits (clipped to [1e-6, 1 - 1e-6]), checked against the train rows."""
    import numpy as np

    p = np.asarray(scores, dtype=np.float64).reshape(-1)
    if p.shape != (n,):
        raise ValueError(f"distillation teacher_scores has {p.shape[0]} values for {n} train rows")
    if not np.all(np.isfinite(p)) or p.min() < 0 or p.max() > 1:
        raise ValueError("distillation teacher_scores must be finite probabilities in [0, 1]")
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p)).astype(np.float32)


class TorchModel:
    """Base class of torch model plugins; subclasses implement `build_module` (see module docstring)."""

    name: ClassVar[str] = "torch_model"
    task: ClassVar[str] = "ctr"
    Config: ClassVar[type] = TrainerConfig
    requires: ClassVar[frozenset[str]] = frozenset({"sequence"})
    role: ClassVar[str | None] = None
    teacher: ClassVar[str | None] = None
    #: The engine may run this plugin under torchrun (DDP) when several GPUs (or CTR_DDP_PROCS) are set.
    distributed: ClassVar[bool] = True
    #: `fit` continues from `ctx.init_from` (the engine's nightly warm start, `modeling.plan_warm_start`).
    supports_warm_start: ClassVar[bool] = True

    def __init__(self, config: Any = None):
        self.config = config if config is not None else self.Config()
        self.module: torch.nn.Module | None = None
        self.spec: FeatureSpec | None = None
        self.encoder: Any = None
        self.summary: dict[str, Any] = {}
        self._item_matrix: np.ndarray | None = None
        self._item_tags: np.ndarray | None = None
        self.callbacks: list[Any] = []  # trainer callbacks (`ctr_dagster.training.state.Callback`)

    # -- hooks for subclasses ----------------------------------------------------------------------
    def build_module(self, spec: FeatureSpec) -> torch.nn.Module:
        raise NotImplementedError(f"{type(self).__name__} must implement build_module(spec)")

    def uses_item_embeddings(self) -> bool:
        return bool(getattr(self.config, "use_item_embeddings", False)) or "item_embeddings" in self.requires

    def uses_item_tags(self) -> bool:
        return bool(getattr(self.config, "use_item_tags", False)) or "item_tags" in self.requires

    def feature_spec(
        self, cardinalities: dict[str, int], item_embedding_dim: int | None, max_seq_len: int
    ) -> FeatureSpec:
        """Default: every id/context column, dense defaults, item+category sequences of `max_seq_len`
        (what `sequence_length` settled on)."""
        return FeatureSpec.from_cardinalities(
            cardinalities, max_seq_len=max_seq_len, item_embedding_dim=item_embedding_dim
        )

    def sequence_length(self, train: pa.Table, ctx: FitContext) -> int:
        """The behaviours per row the model uses: its config's `max_seq_len`, capped at what the
        dataset holds (said in the run log); None in the config means all the dataset holds."""
        from ctr_dagster.dataset import sequence_capacity

        wanted = getattr(self.config, "max_seq_len", None)
        held = sequence_capacity(train)
        if wanted is None:
            return max(held or DEFAULT_MAX_SEQ_LEN, 1)
        if held is not None and wanted > held:
            ctx.log(
                f"{self.name}: max_seq_len={wanted} asks for more behaviours than the training data "
                f"holds ({held} per row, the training_dataset's max_seq_len): the model sees at most "
                f"{held}. Raise max_seq_len in the training_dataset's launchpad config to give it more."
            )
            return max(held, 1)
        return int(wanted)

    def loss(self, logits: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Per-batch training loss (mean); default binary cross-entropy on the logits."""
        import torch.nn.functional as F

        return F.binary_cross_entropy_with_logits(logits, batch["label"])

    def frozen_item_vectors(self, spec: FeatureSpec) -> torch.Tensor:
        """The item-embedding matrix (rows = item_idx cardinality) for a frozen buffer.

        The real vectors during `fit`; zeros of the same shape during `load` (the saved buffer fills them).
        """
        import numpy as np
        import torch

        if spec.item_embedding_dim is None:
            raise ValueError(f"{self.name}: the feature spec has no item embeddings")
        rows = spec.categorical["item_idx"]
        out = torch.zeros(rows, spec.item_embedding_dim)
        if self._item_matrix is not None:
            m = torch.from_numpy(np.ascontiguousarray(self._item_matrix[:rows], dtype=np.float32))
            out[: m.shape[0]] = m
        return out

    def frozen_item_tags(self, spec: FeatureSpec) -> torch.Tensor:
        """The item-tag matrix (int64[rows = item_idx cardinality, T], 0 = pad) for a frozen buffer.

        The real tags during `fit`; zeros of the same shape during `load` (the saved buffer fills them).
        """
        import numpy as np
        import torch

        if spec.item_tags is None:
            raise ValueError(f"{self.name}: the feature spec has no item tags")
        rows = spec.categorical["item_idx"]
        out = torch.zeros(rows, spec.item_tags[0], dtype=torch.int64)
        if self._item_tags is not None:
            m = torch.from_numpy(np.ascontiguousarray(self._item_tags[:rows], dtype=np.int64))
            out[: m.shape[0]] = m
        return out

    # -- contract ----------------------------------------------------------------------------------
    def _prepare_item_tags(self, ctx: FitContext) -> list[int] | None:
        """[T, vocabulary] of the prepared item tags (kept for `frozen_item_tags`), or None when unused."""
        import numpy as np

        self._item_tags = None
        if not self.uses_item_tags():
            return None
        tags = (ctx.inputs or {}).get("item_tags")
        if tags is None:
            raise ValueError(
                f"{self.name}: use_item_tags is on but no item tags were prepared (materialize the "
                "item_attributes asset first, or set use_item_tags=False)"
            )
        from ctr_dagster.item_tags import ItemTags

        if not isinstance(tags, ItemTags):
            raise ValueError(
                f"{self.name}: item_tags must be a ctr_dagster.item_tags.ItemTags, got {type(tags)}"
            )
        self._item_tags = np.asarray(tags.matrix, dtype=np.int64)
        return [tags.width, max(int(tags.vocabulary_size), 2)]

    def _prepare_item_matrix(self, ctx: FitContext) -> int | None:
        import numpy as np

        self._item_matrix = None
        if not self.uses_item_embeddings():
            return None
        matrix = (ctx.inputs or {}).get("item_embeddings")
        if matrix is None:
            raise ValueError(
                f"{self.name}: use_item_embeddings is on but no item embeddings were prepared "
                "(materialize the item_embeddings asset first, or set use_item_embeddings=False)"
            )
        matrix = np.asarray(matrix, dtype=np.float32)
        if matrix.ndim != 2 or matrix.shape[1] < 1 or not np.all(np.isfinite(matrix)):
            raise ValueError(
                f"{self.name}: item_embeddings must be a finite float32[rows, d] matrix, got {matrix.shape}"
            )
        self._item_matrix = matrix
        return int(matrix.shape[1])

    def _tensors(self, table: pa.Table, with_labels: bool) -> dict[str, torch.Tensor]:
        import torch

        from ctr_dagster.training.batching import labels

        out = self.encoder.tensors(table)
        if with_labels:
            out["label"] = torch.from_numpy(labels(table))
        return out

    def fit(self, train: pa.Table, valid: pa.Table, ctx: FitContext) -> TorchModel:
        import numpy as np
        import torch

        from ctr_dagster.training.batching import BatchEncoder
        from ctr_dagster.training.trainer import Trainer

        item_dim = self._prepare_item_matrix(ctx)
        cards = _cardinalities([train, valid], dict(ctx.cardinalities or {}))
        spec = self.feature_spec(cards, item_dim, self.sequence_length(train, ctx))
        tag_shape = self._prepare_item_tags(ctx)
        if tag_shape is not None:
            spec = dataclasses.replace(spec, item_tags=tag_shape)
        self.spec, self.encoder = spec, BatchEncoder.fit(train, spec)
        distill = (ctx.inputs or {}).get("distillation")
        torch.manual_seed(int(ctx.seed))
        module = self.build_module(spec)
        init_from = self._warm_start(module, ctx)
        window = None  # the rows the mini-batch-aware L2 counts ids over (Trainer.fit)
        if init_from is not None:
            keep = self.fine_tune_mask(train, ctx)
            if keep is not None:
                if getattr(self.config, "mba_l2", 0) > 0:
                    window = self._tensors(train, with_labels=False)
                train = train.filter(keep)
                if distill is not None:  # the teacher's soft labels follow their rows
                    distill = {**distill, "teacher_scores": np.asarray(distill["teacher_scores"])[keep]}
        train_t = self._tensors(train, with_labels=True)
        valid_t = self._tensors(valid, with_labels=True) if valid.num_rows else {}
        distillation = None
        if distill is not None:
            train_t["teacher_logit"] = torch.from_numpy(
                teacher_logits(distill["teacher_scores"], train.num_rows)
            )
            distillation = DistillationWeights.from_mapping(distill)
            ctx.log(f"{self.name}: distilling from teacher scores with {distillation}")
        trainer = Trainer(self.config, loss_fn=self.loss, callbacks=getattr(self, "callbacks", ()))
        summary = trainer.fit(
            module,
            train_t,
            valid_t,
            ctx,
            key_extra={
                "plugin": self.name,
                "spec": spec.to_dict(),
                "init_from": init_from,
                "code": code_fingerprint(type(self)),
            },
            distillation=distillation,
            warm_start=init_from is not None,
            regularizer_rows=window,
        )
        self.module = module.eval()
        self.summary = summary.as_dict()
        return self

    def fine_tune_rows(self, train: pa.Table, ctx: FitContext) -> pa.Table:
        """The train rows a warm-started fit trains on (`fine_tune_mask`)."""
        keep = self.fine_tune_mask(train, ctx)
        return train if keep is None else train.filter(keep)

    def fine_tune_mask(self, train: pa.Table, ctx: FitContext) -> np.ndarray | None:
        """Which train rows a warm-started fit trains on (`fine_tune_mask` below, one batch at least)."""
        return fine_tune_mask(train, ctx, self.config.batch_size, self.name)

    def _warm_start(self, module: torch.nn.Module, ctx: FitContext) -> str | None:
        """Copy matching tensors from `ctx.init_from` (this plugin's saved artifact).

        Embedding tables that grew (the vocabulary is append-only) keep their old rows; tensors of
        another shape are left at their initialisation. Returns the source folder, or None.
        """
        if ctx.init_from is None:
            return None
        source = Path(ctx.init_from) / WEIGHTS_FILE
        if not source.is_file():
            ctx.log(f"{self.name}: init_from {ctx.init_from} has no {WEIGHTS_FILE}; training from scratch")
            return None
        import torch
        from safetensors.torch import load_file

        old = load_file(str(source))
        copied, partial, skipped = 0, 0, 0
        with torch.no_grad():
            for key, tensor in module.state_dict().items():
                prev = old.get(key)
                if prev is None or prev.dim() != tensor.dim() or prev.dtype != tensor.dtype:
                    skipped += 1
                elif prev.shape == tensor.shape:
                    tensor.copy_(prev)
                    copied += 1
                elif (
                    prev.dim() == 2 and prev.shape[1] == tensor.shape[1] and prev.shape[0] <= tensor.shape[0]
                ):
                    tensor[: prev.shape[0]].copy_(prev)
                    partial += 1
                else:
                    skipped += 1
        ctx.log(
            f"{self.name}: warm start from {ctx.init_from}: {copied} tensors copied, {partial} grown "
            f"embedding tables extended, {skipped} left at initialisation"
        )
        return str(ctx.init_from)

    def predict_logits(self, batch: pa.Table) -> np.ndarray:
        import numpy as np
        import torch

        if self.module is None or self.encoder is None:
            raise RuntimeError(f"{self.name}: predict() before fit() or load()")
        device = next(self.module.parameters()).device
        size = eval_rows(self.config, device.type)
        out = []
        with torch.inference_mode():
            for start in range(0, batch.num_rows, size):
                part = batch.slice(start, size) if batch.num_rows > size else batch
                tensors = self.encoder.tensors(part, device)
                output = self.module(tensors)
                logits = output["logit"] if isinstance(output, dict) else output
                out.append(logits.float().cpu().numpy())
        return np.concatenate(out).astype(np.float64)

    def predict(self, batch: pa.Table) -> np.ndarray:
        import numpy as np

        if batch.num_rows == 0:
            return np.zeros(0, dtype=np.float64)
        logits = self.predict_logits(batch)
        return 1.0 / (1.0 + np.exp(-np.clip(logits, -50.0, 50.0)))

    def save(self, directory: Path) -> None:
        import torch
        from safetensors.torch import save_file

        if self.module is None or self.spec is None:
            raise RuntimeError(f"{self.name}: save() before fit() or load()")
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().to("cpu").clone().contiguous() for k, v in self.module.state_dict().items()}
        save_file(state, str(directory / WEIGHTS_FILE))
        write_meta(
            directory,
            self.name,
            FORMAT_VERSION,
            filename=META_FILE,
            config=config_to_dict(self.config),
            spec=self.spec.to_dict(),
            dense=self.encoder.state(),
            training=self.summary,
            versions={"torch": torch.__version__.split("+")[0]},
        )

    def export(self, directory: Path, example: pa.Table) -> dict[str, Any]:
        """Serving bundle: write the network as a torch.export program and its batch encoding as JSON
        into `directory`; return how the bundle's runtime runs them (`ctr_dagster.serving`).

        `example`: a few rows (features only) to trace with and to check the program against
        `predict` (several users, one user's candidates, one row, empty histories). Raises
        `ctr_dagster.serving.bundle.NotExportable` with the reason when torch.export cannot capture
        the network (e.g. a data-dependent branch); a plugin may override this method, or give its
        module ``export_module()`` (a traceable stand-in for the module) and ``export_request_module()``
        (a one-request program: rows sharing one user, e.g. the history encoded once). How the network
        is traced: `ctr_dagster.serving.torch_export`.
        """
        from ctr_dagster.serving.torch_export import export_torch_model

        return export_torch_model(self, Path(directory), example)

    @classmethod
    def load(cls, directory: Path) -> TorchModel:
        import torch
        from safetensors.torch import load_file

        from ctr_dagster.training.batching import BatchEncoder

        directory = Path(directory)
        document = read_meta(directory, cls.name, FORMAT_VERSION, filename=META_FILE)
        model = cls(config_from_dict(cls, document["config"]))
        model.spec = FeatureSpec.from_dict(document["spec"])
        model.encoder = BatchEncoder.from_state(model.spec, document["dense"])
        model.summary = document.get("training", {})
        with torch.device("cpu"):
            module = model.build_module(model.spec)
        module.load_state_dict(load_file(str(directory / WEIGHTS_FILE)))
        model.module = module.eval()
        return model
