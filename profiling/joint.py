"""Joint damage: what a whole plan does to the logits, measured with every layer quantized at once.

The allocator adds up damages measured one layer at a time; this measures the plan jointly,
which is what the additive model approximates, so a caller can check or rank solved plans
(e.g. a plan against the uniform plan of the same budget) before trusting them.
`pair_damage` measures the second-order terms of that approximation: the damage of every pair
of layers quantized together (all others float), from which `allocator.quadratic` builds the
interaction terms q_ij = D(i, j) - D(i) - D(j) of a quadratic allocation model.
"""
from __future__ import annotations

from itertools import combinations
from types import SimpleNamespace
from typing import Any, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from .metrics import per_sample_damage

__all__ = ["joint_damage", "pair_damage"]


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


def pair_damage(switcher: Any, names: Sequence[str], images: torch.Tensor, reference_logits: torch.Tensor, *,
                w_bits: int = 2, a_bits: int = 2, layers: Sequence[str] | None = None, metric: str = "kl",
                batch_size: int = 256, progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Damage of each layer alone and of each pair together at ``W{w_bits}A{a_bits}``, all others float.

    Args:
        names: every quantizable layer of the switcher's model (e.g. ``profile.names``).
        layers: the layers to measure (default: all of ``names``); pairs are all pairs of them.

    Returns:
        ``single`` (L,) and ``pair`` (L, L), indexed like ``names``: ``single[i]`` is D(i),
        ``pair[i, j] = pair[j, i]`` is D(i, j) and the diagonal is D(i); entries of layers not
        measured are NaN. One forward pass of ``images`` per layer and per pair.
    """
    index = {n: i for i, n in enumerate(names)}
    chosen = list(names) if layers is None else list(layers)
    unknown = [n for n in chosen if n not in index]
    if unknown or len(set(chosen)) != len(chosen):
        raise ValueError(f"pair_damage: layers must be distinct names of the model; unknown {unknown[:5]}")

    def sparse(active: tuple[str, ...]) -> SimpleNamespace:
        return SimpleNamespace(w_bits={n: (w_bits if n in active else None) for n in names},
                               a_bits={n: (a_bits if n in active else None) for n in names})

    sets = [(n,) for n in chosen] + list(combinations(chosen, 2))
    single = np.full(len(names), np.nan)
    pair = np.full((len(names), len(names)), np.nan)
    for active in tqdm(sets, desc=f"pair damage W{w_bits}A{a_bits}", disable=not progress):
        value = joint_damage(switcher, [sparse(active)], images, reference_logits, metric=metric,
                             batch_size=batch_size)[0]
        i, j = index[active[0]], index[active[-1]]
        pair[i, j] = pair[j, i] = value
        if i == j:
            single[i] = value
    return single, pair
