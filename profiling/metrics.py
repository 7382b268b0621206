"""Damage metrics of a perturbed model's logits against the baseline's, per sample.

* ``"kl"`` (default): KL(p_baseline || p_quantized) of the softmax distributions; needs no
  labels and sees every change of the output distribution, not just of the arg-max.
* ``"loss"``: cross-entropy increase (needs labels).
* ``"top1"``: top-1 accuracy drop, as a fraction (needs labels; coarse on small sets).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["METRICS", "per_sample_damage", "needs_labels"]

METRICS = ("kl", "loss", "top1")


def needs_labels(metric: str) -> bool:
    """True for metrics computed against the true labels."""
    check_metric(metric)
    return metric != "kl"


def check_metric(metric: str) -> None:
    """Raise ValueError naming the accepted metrics."""
    if metric not in METRICS:
        raise ValueError(f"metric={metric!r}; expected one of {list(METRICS)}")


def per_sample_damage(metric: str, logits: torch.Tensor, base_logits: torch.Tensor,
                      labels: torch.Tensor | None) -> torch.Tensor:
    """Damage of `logits` relative to `base_logits`, one float64 value per sample."""
    logits, base_logits = logits.double(), base_logits.double()
    if metric == "kl":
        log_p = F.log_softmax(base_logits, dim=1)
        log_q = F.log_softmax(logits, dim=1)
        return (log_p.exp() * (log_p - log_q)).sum(dim=1)
    if labels is None:
        raise ValueError(f"metric {metric!r} needs labels")
    if metric == "loss":
        return (F.cross_entropy(logits, labels, reduction="none")
                - F.cross_entropy(base_logits, labels, reduction="none"))
    if metric == "top1":
        return ((base_logits.argmax(1) == labels).double() - (logits.argmax(1) == labels).double())
    check_metric(metric)
    raise AssertionError("unreachable")
