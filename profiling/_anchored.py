"""Opt-in anchored sensitivity: one bit-width per layer through the whole network, the rest from
the output of the layer's own transformer unit.

The exact sweep re-runs the network suffix after a layer's unit for every bit-width, about half a
forward pass per pair on average. Here only the *anchor* bit-width of each (layer, table) runs the
whole suffix; every other bit-width runs the layer's unit alone and is scored by the squared
error of that unit's output against its baseline output, scaled by the anchor's ratio of logit
damage to unit-output error:

    damage(b) ~= damage(anchor) * err(b) / err(anchor),   err = sum over images of ||u_b - u_base||^2

Meaning: the anchor entries are exact; the others assume the suffix turns a larger perturbation of
the unit's output into proportionally more damage, which holds for small perturbations (KL is
locally quadratic in the logits and the suffix is locally linear) and is an approximation for
large ones. The rank agreement with the exact matrix and the plans solved from both are measured
in ``benchmarks/sensitivity_approx.py``. Layers outside the units (patch embedding, heads) are
measured exactly.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch

from ._chain import Chain

__all__ = ["UnitProbe", "anchored_means"]


class UnitProbe:
    """Unit ``k`` of a chain on one batch's cached input: its baseline output, re-runs of the unit
    alone, and the output it gives inside a full forward pass."""

    def __init__(self, chain: Chain, k: int, h: torch.Tensor) -> None:
        self.unit, self.h = chain.units[k][1], h
        self.base = self.unit(h)  # built while every site is at its baseline bits

    def run(self) -> torch.Tensor:
        """The unit's output under the current bits (the suffix is not run)."""
        return self.unit(self.h)

    @contextmanager
    def capture(self) -> Iterator[list[torch.Tensor]]:
        """Collect the unit's output during a forward pass run inside the block."""
        out: list[torch.Tensor] = []
        handle = self.unit.register_forward_hook(lambda mod, args, o: out.append(o))
        try:
            yield out
        finally:
            handle.remove()

    def error(self, u: torch.Tensor) -> float:
        """Sum over the batch of the squared error against the baseline output (float64)."""
        return float(((u.double() - self.base.double()) ** 2).sum())


def anchored_means(name: str, table: str, damage: float, errors: list[float], anchor: int) -> list[float]:
    """Mean damages of one (layer, table) row: the anchor's measured `damage` at index `anchor`,
    the others scaled by their unit-output `errors` (see module doc)."""
    ref = errors[anchor]
    if ref <= 0:
        if any(e > 0 for e in errors):
            raise RuntimeError(
                f"{name} ({table}): quantizing at the anchor bit-width leaves its unit's output unchanged "
                "while other bit-widths change it, so their damage cannot be scaled from the anchor; pick a "
                "lower anchor bit-width or measure exactly (anchor_bits=None)"
            )
        return [damage if j == anchor else 0.0 for j in range(len(errors))]
    return [damage if j == anchor else damage * e / ref for j, e in enumerate(errors)]
