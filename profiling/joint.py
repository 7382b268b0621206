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

from quant import find_quantizable_layers, resolve_plan

from ._chain import find_chain
from .metrics import per_sample_damage

__all__ = ["joint_damage", "pair_damage"]


def joint_damage(switcher: Any, plans: Sequence[Any], images: torch.Tensor, reference_logits: torch.Tensor, *,
                 metric: str = "kl", batch_size: int = 256, cache_mb: float = 512.0) -> list[float]:
    """Mean damage (``metric``, KL of the logits to ``reference_logits`` by default) of each plan
    applied as a whole on ``images``; ``switcher`` is a :class:`quant.PlanSwitcher`.

    Plans that a caller scores together are mostly alike (a solver's k best, a local search's
    moves), so the tensors entering each transformer unit are kept for the previous plan and a
    plan is re-run only from the first unit whose bits differ (plans are visited in the order of
    their bits, unit by unit, to make such shared prefixes long). The values are those of a full
    forward pass, bit for bit: the re-run is the model's own forward handed the kept tensor. Up to
    ``cache_mb`` of kept tensors per batch (every unit's input when they fit, else every n-th);
    ``cache_mb=0`` runs every plan in full.
    """
    chain = find_chain(switcher.qmodel) if cache_mb > 0 and len(plans) > 1 else None
    if chain is None:
        return [_plan_damage(switcher.apply(plan), images, reference_logits, metric, batch_size) for plan in plans]
    sites = find_quantizable_layers(switcher.qmodel)
    positions = chain.positions([s.name for s in sites])
    keys = [_unit_bits(resolve_plan(plan, sites, switcher.config), positions, len(chain)) for plan in plans]
    order = sorted(range(len(plans)), key=lambda i: keys[i])
    damage: list[list[torch.Tensor]] = [[] for _ in plans]
    device = next(switcher.qmodel.parameters()).device
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            x = images[start:start + batch_size].to(device)
            kept = _KeptInputs(chain, cache_mb)
            previous = None
            for i in order:
                switcher.apply(plans[i])
                first = 0 if previous is None else next(
                    (j for j, (a, b) in enumerate(zip(keys[i], previous)) if a != b), len(keys[i]))
                logits = kept.run(x, first - 1)  # key slot j holds unit j - 1 (slot 0: the prefix)
                damage[i].append(_batch_damage(metric, logits, reference_logits[start:start + batch_size]))
                previous = keys[i]
    return [float(torch.cat(d).mean()) for d in damage]


def _plan_damage(model: torch.nn.Module, images: torch.Tensor, reference_logits: torch.Tensor, metric: str,
                 batch_size: int) -> float:
    device = next(model.parameters()).device
    with torch.no_grad():
        damage = [_batch_damage(metric, model(images[start:start + batch_size].to(device)),
                                reference_logits[start:start + batch_size])
                  for start in range(0, len(images), batch_size)]
    return float(torch.cat(damage).mean())


def _batch_damage(metric: str, logits: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Per-image damage of one batch, on the CPU."""
    return per_sample_damage(metric, logits, reference.to(logits.device), None).cpu()


def _unit_bits(bits: dict[str, tuple[int | None, int | None]], positions: list[int], units: int) -> tuple:
    """A plan's bits grouped by where they act: slot 0 the prefix, slot k + 1 unit k, the last the
    suffix; float (``None``) as -1 so that keys sort."""
    slots: list[list[tuple[int, int]]] = [[] for _ in range(units + 2)]
    for (w, a), pos in zip(bits.values(), positions):
        slots[pos + 1].append((-1 if w is None else w, -1 if a is None else a))
    return tuple(tuple(s) for s in slots)


class _KeptInputs:
    """The tensors entering the chain's units under the plan run last, on one batch: every
    ``stride``-th unit's, the stride set by the first tensor kept (the largest: later Swin stages
    are smaller) so that all of them fit in ``cache_mb``."""

    def __init__(self, chain: Any, cache_mb: float) -> None:
        self.chain = chain
        self.cache_bytes = cache_mb * 2**20
        self.kept: dict[int, torch.Tensor] = {}
        self.stride: int | None = None

    def run(self, x: torch.Tensor, changed: int) -> torch.Tensor:
        """Logits on ``x`` when the prefix and every unit before ``changed`` (-1: the prefix
        changed; ``len(chain)``: only the suffix) have the bits of the previous run."""
        start = max((k for k in self.kept if k <= changed), default=-1)
        for k in [k for k in self.kept if k > start]:
            del self.kept[k]
        units = len(self.chain)
        handles = []
        try:
            for k in range(start + 1, units + 1):
                if k < units:
                    handles.append(self.chain.units[k][1].register_forward_pre_hook(self._keeper(k, input_=True)))
                else:
                    handles.append(self.chain.units[-1][1].register_forward_hook(self._keeper(k, input_=False)))
            return self.chain.run_from(x, start, self.kept.get(start))
        finally:
            for h in handles:
                h.remove()

    def _keeper(self, k: int, input_: bool):
        def hook(module, args, out=None):
            t = (args[0] if input_ else out).detach()
            if self.stride is None:
                self.stride = max(1, -(-t.numel() * t.element_size() * (len(self.chain) + 1) // max(int(self.cache_bytes), 1)))
            if k % self.stride == 0:
                self.kept[k] = t
        return hook


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
