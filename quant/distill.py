"""The QAT loss: hard-label cross-entropy plus knowledge distillation from a float teacher.

``loss = (1 - kd_weight) * CE(student, labels) + kd_weight * T^2 * KL(p_teacher^T || p_student^T)``
with ``p^T = softmax(logits / T)`` (Hinton et al. 2015; ``T^2`` keeps the soft-target gradient
on the scale of the hard one when ``T`` changes). Without labels (unlabelled training images)
the loss is the distillation term alone; with ``kd_weight == 0`` or no teacher it is the CE
alone.

Models with several heads (timm ``VisionTransformerDistilled``: DeiT's class-token head
``head`` and distillation-token head ``head_dist``) are handled head by head. In training the
student returns both heads' logits (``set_distilled_training(True)``), and the teacher's are
read the same way (:func:`teacher_logits`), so each quantized head learns the labels and
mimics *its own* float counterpart: both heads keep the roles they were trained for, and
their mean, which is what the model outputs at inference, follows the float model's mean.
The loss is the average over heads. A single-head teacher (e.g. a float ViT teaching a
quantized DeiT) is the target of every student head; a two-head teacher teaching a one-head
student gives the mean of its heads, its inference output.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["as_heads", "teacher_logits", "qat_loss", "kd_divergence"]


def as_heads(output: torch.Tensor | tuple[torch.Tensor, ...] | list[torch.Tensor]) -> tuple[torch.Tensor, ...]:
    """Model output as a tuple of per-head logits (one element for a one-head model)."""
    if isinstance(output, torch.Tensor):
        return (output,)
    if isinstance(output, (tuple, list)) and output and all(isinstance(t, torch.Tensor) for t in output):
        return tuple(output)
    raise TypeError(f"expected logits (a tensor or a tuple of per-head tensors), got {type(output).__name__}")


def _has_distillation_head(model: nn.Module) -> bool:
    return hasattr(model, "head_dist") and hasattr(model, "set_distilled_training")


@torch.no_grad()
def teacher_logits(teacher: nn.Module, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Per-head logits of ``teacher`` (used as is, so put it in eval mode), without gradients.

    A DeiT teacher's forward in eval mode averages its two heads; here both heads are
    returned separately (class token -> ``head``, distillation token -> ``head_dist``, as
    timm's ``forward_head`` does in distilled training).
    """
    if _has_distillation_head(teacher):
        features = teacher.forward_features(images)
        return teacher.head(features[:, 0]), teacher.head_dist(features[:, 1])
    return as_heads(teacher(images))


def kd_divergence(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """``T^2 * KL(softmax(teacher/T) || softmax(student/T))``, mean over the batch."""
    t = float(temperature)
    kl = F.kl_div(F.log_softmax(student.float() / t, dim=-1), F.log_softmax(teacher.float() / t, dim=-1),
                  reduction="batchmean", log_target=True)
    return kl * (t * t)


def _targets(student: tuple[torch.Tensor, ...], teacher: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    if len(teacher) == len(student):
        return teacher
    if len(teacher) == 1:
        return teacher * len(student)
    if len(student) == 1:
        return (torch.stack(teacher).mean(dim=0),)
    raise ValueError(f"cannot match {len(teacher)} teacher heads to {len(student)} student heads; "
                     "expected equal counts, or one of them with a single head")


def qat_loss(
    student: torch.Tensor | tuple[torch.Tensor, ...],
    labels: torch.Tensor | None,
    teacher: tuple[torch.Tensor, ...] | torch.Tensor | None = None,
    kd_temperature: float = 2.0,
    kd_weight: float = 0.5,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The QAT loss of one batch and its parts ``{"ce": ..., "kd": ...}`` (NaN when absent).

    ``student``: logits, or per-head logits; ``labels``: class indices or ``None``;
    ``teacher``: the teacher's (per-head) logits, or ``None`` for no distillation.
    Raises ``ValueError`` when neither labels nor a teacher give a target.
    """
    heads = as_heads(student)
    use_kd = teacher is not None and kd_weight > 0
    if labels is None and not use_kd:
        raise ValueError("no training target: the batch has no labels and distillation is off "
                         "(give labels, or a teacher with kd_weight > 0)")
    parts = {"ce": float("nan"), "kd": float("nan")}
    ce = kd = None
    if labels is not None:
        ce = torch.stack([F.cross_entropy(h.float(), labels) for h in heads]).mean()
        parts["ce"] = float(ce.detach())
    if use_kd:
        targets = _targets(heads, as_heads(teacher))
        kd = torch.stack([kd_divergence(h, t, kd_temperature) for h, t in zip(heads, targets)]).mean()
        parts["kd"] = float(kd.detach())
    if ce is None:
        return kd, parts
    if kd is None:
        return ce, parts
    return (1.0 - kd_weight) * ce + kd_weight * kd, parts
