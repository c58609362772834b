"""Online distillation: a teacher and a student torch plugin trained together, in one run.

The second distillation mode beside the offline one (`ctr_dagster.distillation`: a trained teacher's
scores become the student's soft targets). Here neither model exists before the run: both are built
and optimised by one `Trainer` loop, and the student learns from the teacher's current predictions
(the paper's LightSUAN is trained this way with a high-grade SUAN teacher, arXiv 2508.15326; the exact
loss and its weight are not public, MODELS.md section 2). Any two `TorchModel` plugins can be paired.

Loss per mini-batch (z_s, z_t the student's and teacher's logits, y the label, sg = stop-gradient)::

    BCE(z_s, y) + BCE(z_t, y) + teacher_weight * T^2 * BCE(sigmoid(z_s / T), sigmoid(sg(z_t) / T))

the student's own loss (`student.loss`), the teacher's label loss, and the soft-target term of the
offline mode (`ctr_dagster.training.trainer.distillation_loss`) against the teacher's *detached*
logits, so the teacher learns from the labels only. **Assumption** (not from the paper):
``teacher_weight = 1`` and ``T = 1`` (`ONLINE_WEIGHTS`): MODELS.md's placeholder with lambda = 1.

How it runs on the engine: each plugin keeps its own feature spec and batch encoder (they may read
different columns and sequence lengths); the train tensors are the student's batch dict plus the
teacher's under ``"teacher/<key>"``, so the trainer's row sampling keeps them aligned. The trainer
sees one module (`OnlineDistillationModule`) whose training forward returns the student's logits and
the teacher's terms as ``aux_loss``; in eval it is the student alone, so validation AUC, early
stopping and the best-epoch restore follow the student. The loop settings (epochs, lr, batch size,
mba_l2, ...) are the student's config; the teacher's own trainer fields are not used.
Afterwards the student (and the teacher) are ordinary fitted plugins: `predict`, `save`, `load`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ctr_dagster.training.config import DistillationWeights

if TYPE_CHECKING:
    import pyarrow as pa
    import torch

    from ctr_dagster.contracts import FitContext
    from ctr_dagster.training.plugin import TorchModel

#: Prefix of the teacher's tensors in the joint batch dict.
TEACHER_PREFIX = "teacher/"

#: The assumed weights (the paper's are not public): soft term weight 1, temperature 1.
ONLINE_WEIGHTS = DistillationWeights(label_weight=1.0, teacher_weight=1.0, temperature=1.0)


def _logits(output: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
    if isinstance(output, dict):
        return output["logit"], output.get("aux_loss")
    return output, None


def _module_class():
    """`OnlineDistillationModule`, defined on first use (torch is imported only then)."""
    global _MODULE
    if _MODULE is not None:
        return _MODULE
    import torch.nn.functional as F
    from torch import nn

    from ctr_dagster.training.trainer import distillation_loss

    class OnlineDistillationModule(nn.Module):
        """Student and teacher in one module: training forward -> {"logit": student, "aux_loss":
        teacher BCE + weighted soft term}; eval forward -> the student's logits only."""

        def __init__(self, student: nn.Module, teacher: nn.Module, weights: DistillationWeights):
            super().__init__()
            self.student, self.teacher = student, teacher
            self.teacher_weight = float(weights.teacher_weight)
            self.temperature = float(weights.temperature)

        @staticmethod
        def split(batch: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
            """(the student's batch, the teacher's batch) of a joint batch dict."""
            student = {k: v for k, v in batch.items() if not k.startswith(TEACHER_PREFIX)}
            teacher = {k[len(TEACHER_PREFIX) :]: v for k, v in batch.items() if k.startswith(TEACHER_PREFIX)}
            if "label" in batch:
                teacher["label"] = batch["label"]
            return student, teacher

        def forward(self, batch: dict[str, torch.Tensor]) -> Any:
            student_batch, teacher_batch = self.split(batch)
            z_s, aux_s = _logits(self.student(student_batch))
            if not self.training:
                return z_s
            z_t, aux_t = _logits(self.teacher(teacher_batch))
            z_t = z_t.float()
            aux = F.binary_cross_entropy_with_logits(z_t, batch["label"])
            soft = distillation_loss(z_s.float(), z_t.detach(), self.temperature)
            aux = aux + self.teacher_weight * soft
            for extra in (aux_s, aux_t):
                if extra is not None:
                    aux = aux + extra.float()
            return {"logit": z_s, "aux_loss": aux}

        def embedding_inputs(self) -> list[tuple[nn.Embedding, tuple[str, ...]]]:
            """Both models' declared tables (the mini-batch-aware L2), the teacher's columns prefixed."""
            out = list(getattr(self.student, "embedding_inputs", list)())
            for table, columns in getattr(self.teacher, "embedding_inputs", list)():
                out.append((table, tuple(TEACHER_PREFIX + c for c in columns)))
            return out

    _MODULE = OnlineDistillationModule
    return _MODULE


_MODULE: Any = None


def online_module(
    student: torch.nn.Module, teacher: torch.nn.Module, weights: DistillationWeights = ONLINE_WEIGHTS
):
    """The joint module (see the module docstring)."""
    return _module_class()(student, teacher, weights)


def _prepare(model: TorchModel, train: pa.Table, valid: pa.Table, ctx: FitContext) -> None:
    """What `TorchModel.fit` does before building its module: inputs, spec, batch encoder."""
    import dataclasses

    from ctr_dagster.training.batching import BatchEncoder
    from ctr_dagster.training.plugin import _cardinalities

    item_dim = model._prepare_item_matrix(ctx)
    cards = _cardinalities([train, valid], dict(ctx.cardinalities or {}))
    spec = model.feature_spec(cards, item_dim, model.sequence_length(train, ctx))
    tags = model._prepare_item_tags(ctx)
    if tags is not None:
        spec = dataclasses.replace(spec, item_tags=tags)
    model.spec, model.encoder = spec, BatchEncoder.fit(train, spec)


def fit_online(
    student: TorchModel,
    teacher: TorchModel,
    train: pa.Table,
    valid: pa.Table,
    ctx: FitContext,
    weights: DistillationWeights = ONLINE_WEIGHTS,
) -> tuple[TorchModel, TorchModel]:
    """Train `teacher` and `student` together (one loop, the student's trainer settings); returns both,
    fitted. The summary of each holds the run's (validation = the student's) plus ``"online"``."""
    import dataclasses

    import torch

    from ctr_dagster.training.plugin import code_fingerprint
    from ctr_dagster.training.trainer import Trainer

    for model in (student, teacher):
        _prepare(model, train, valid, ctx)
    train_t = student._tensors(train, with_labels=True)
    for key, value in teacher.encoder.tensors(train).items():
        train_t[TEACHER_PREFIX + key] = value
    valid_t = student._tensors(valid, with_labels=True) if valid.num_rows else {}
    torch.manual_seed(int(ctx.seed))
    joint = online_module(student.build_module(student.spec), teacher.build_module(teacher.spec), weights)
    ctx.log(
        f"{student.name}: online distillation with teacher {teacher.name} trained in the same run ({weights})"
    )
    trainer = Trainer(student.config, loss_fn=student.loss, callbacks=getattr(student, "callbacks", ()))
    summary = trainer.fit(
        joint,
        train_t,
        valid_t,
        ctx,
        key_extra={
            "plugin": student.name,
            "teacher": teacher.name,
            "online": weights.as_dict(),
            "spec": student.spec.to_dict(),
            "teacher_spec": teacher.spec.to_dict(),
            "teacher_config": dataclasses.asdict(teacher.config),
            "code": [code_fingerprint(type(student)), code_fingerprint(type(teacher))],
        },
    ).as_dict()
    summary["online"] = {"teacher": teacher.name, "student": student.name, **weights.as_dict()}
    student.module, teacher.module = joint.student.eval(), joint.teacher.eval()
    student.summary, teacher.summary = summary, dict(summary)
    return student, teacher
