"""Joint damage: what a whole plan does to the logits, measured with every layer quantized at once.

The allocator adds up damages measured one layer at a time; this measures the plan jointly,
which is what the additive model approximates, so a caller can check or rank solved plans
(e.g. a plan against the uniform plan of the same budget) before trusting them.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch

from .metrics import per_sample_damage

__all__ = ["joint_damage"]


def joint_damage(switcher: Any, plans: Sequence[Any], images: torch.Tensor, reference_logits: torch.Tensor, *,
                 metric: str = "kl", batch_size: int = 256) -> list[float]:
    """Mean damage (``metric``, KL of the logits to ``reference_logits`` by default) of each plan
    applied as a whole on ``images``; ``switcher`` is a :class:`quant.PlanSwitcher`."""
    totals = []
    for plan in plans:
        model = switcher.apply(plan)
        device = next(model.parameters()).device
        damage = []
        with torch.no_grad():
            for start in range(0, len(images), batch_size):
                logits = model(images[start:start + batch_size].to(device))
                reference = reference_logits[start:start + batch_size].to(logits.device)
                damage.append(per_sample_damage(metric, logits, reference, None).cpu())
        totals.append(float(torch.cat(damage).mean()))
    return totals
