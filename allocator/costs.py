"""Resource accounting: model size, average weight bits, BOPs and custom cost tables.

Definitions (used for budgets, plan totals and the uniform references alike):

* weight bits of a layer = ``params * w_bits``; size in bytes = total weight bits / 8;
  average weight bits = total weight bits / total params (parameter-weighted, pinned layers
  included; layers without weights count for nothing).
* BOPs of a layer = ``macs * w_bits * a_bits``; for a ``matmul`` layer both operands are
  activations and ``w_bits == a_bits``, so it is ``macs * a_bits**2``.
* a custom cost table (``Profile.cost_tables``) gives a layer's cost per option directly.

Totals are summed with Python integers where the inputs are integers, so a uniform plan hits a
budget such as "avg bits <= 3" exactly rather than 3.0000000000000004 > 3.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from .options import OptionGrid
from .profile import LayerInfo, Profile

__all__ = ["totals", "option_costs", "custom_cost_rows", "custom_total", "uniform_bops"]


def totals(layers: Sequence[LayerInfo], w_bits: Mapping[str, int], a_bits: Mapping[str, int]) -> dict[str, float]:
    """Average weight bits, size in bytes and BOPs of a per-layer bit assignment."""
    weight_bits = sum(layer.params * int(w_bits[layer.name]) for layer in layers)
    params = sum(layer.params for layer in layers)
    bops = sum(layer.macs * int(w_bits[layer.name]) * int(a_bits[layer.name]) for layer in layers)
    return {
        "avg_w_bits": weight_bits / params if params else 0.0,
        "size_bytes": weight_bits / 8,
        "bops": float(bops),
    }


def uniform_bops(profile: Profile, w: float, a: float) -> float:
    """BOPs of the model with every layer (pinned ones too) at ``w`` weight and ``a`` activation bits.

    Matmul layers take ``a * a`` (both operands are activations).
    """
    total = 0.0
    for layer in profile.layers:
        total += layer.macs * (w * a if layer.has_weights else a * a)
    return total


def option_costs(profile: Profile, grid: OptionGrid) -> dict[str, np.ndarray]:
    """Built-in resource use per (layer, option): ``weight_bits`` and ``bops``, shape (L, K)."""
    params = np.array([layer.params for layer in profile.layers], dtype=float)[:, None]
    macs = np.array([layer.macs for layer in profile.layers], dtype=float)[:, None]
    return {
        "weight_bits": params * grid.w_bits,
        "bops": macs * grid.w_bits * grid.a_bits,
    }


def custom_cost_rows(profile: Profile, grid: OptionGrid, name: str) -> np.ndarray:
    """Custom cost table ``name`` per (layer, option), shape (L, K).

    A row is NaN where a pinned layer's fixed bits are not among ``profile.bits`` (the table
    has no column for them); callers decide whether that matters.
    """
    table = profile.cost_tables[name]
    B = len(profile.bits)
    if table.shape[1] == B:
        cost = table[:, grid.w_col]
    else:
        cost = table[:, grid.w_col * B + grid.a_col]
    cost = np.array(cost, dtype=float)
    bits = list(profile.bits)
    for l, b in grid.pins.items():
        if b in bits:
            k = bits.index(b)
            cost[l] = table[l, k] if table.shape[1] == B else table[l, k * B + k]
        else:
            cost[l] = np.nan
    return cost


def custom_total(profile: Profile, name: str, w_bits: Mapping[str, int], a_bits: Mapping[str, int]) -> float | None:
    """Total of custom table ``name`` for a per-layer assignment; None if a layer's bits have no column."""
    table = profile.cost_tables[name]
    bits = list(profile.bits)
    B = len(bits)
    total = 0.0
    for l, layer in enumerate(profile.layers):
        w, a = int(w_bits[layer.name]), int(a_bits[layer.name])
        if w not in bits or (table.shape[1] != B and a not in bits):
            return None
        i = bits.index(w)
        total += float(table[l, i] if table.shape[1] == B else table[l, i * B + bits.index(a)])
    return total
