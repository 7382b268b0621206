"""1-D Pareto fronts of sums over layers, built by min-plus merging (Nemhauser-Ullmann).

A front is a pair of arrays (cost ascending, value strictly descending): every point is a
combination no other combination beats in both. Merging a front with one layer's options and
pruning keeps exactly the combinations some limit makes optimal, with float costs (no rounding
onto a grid, unlike dynamic programming over integer capacities), which is what makes the
bounds of `solvers.exact.search` and the curves of `solvers.frontier` exact.
"""
from __future__ import annotations

import numpy as np

__all__ = ["pareto_indices", "merge", "backward_fronts", "front_value"]


def pareto_indices(cost: np.ndarray, value: np.ndarray) -> np.ndarray:
    """Indices of the nondominated points, in ascending cost (of equal points, one is kept)."""
    if cost.size == 0:
        return np.zeros(0, dtype=np.int64)
    order = np.lexsort((value, cost))
    v = value[order]
    running_min = np.minimum.accumulate(v)
    keep = np.ones(v.size, dtype=bool)
    keep[1:] = v[1:] < running_min[:-1]
    return order[keep]


def merge(cost: np.ndarray, value: np.ndarray, opt_cost: np.ndarray, opt_value: np.ndarray,
          max_cost: float = np.inf, max_value: float = np.inf) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Min-plus merge of a front with one layer's options, pruned to cost <= max_cost, value < max_value.

    Returns (cost, value, parent index into the input front, option index) of the new front.
    """
    c = (cost[:, None] + opt_cost[None, :]).ravel()
    v = (value[:, None] + opt_value[None, :]).ravel()
    ok = (c <= max_cost) & (v < max_value)
    idx = np.flatnonzero(ok)
    keep = idx[pareto_indices(c[idx], v[idx])]
    parent, option = np.divmod(keep, opt_cost.size)
    return c[keep], v[keep], parent, option


def backward_fronts(values: list[np.ndarray], costs: list[np.ndarray], cap: float,
                    prefix_min: np.ndarray, value_limit: float) -> list[tuple[np.ndarray, np.ndarray]]:
    """Fronts of the suffixes: entry d covers layers d..F-1 (entry F is the empty sum).

    A suffix combination whose value plus `prefix_min[d]` (the least value layers 0..d-1 can add)
    reaches `value_limit` cannot be part of a combination below it, and is dropped.
    """
    n = len(values)
    fronts: list[tuple[np.ndarray, np.ndarray]] = [None] * (n + 1)  # type: ignore[list-item]
    c, v = np.zeros(1), np.zeros(1)
    fronts[n] = (c, v)
    for d in range(n - 1, -1, -1):
        c, v, _, _ = merge(c, v, costs[d], values[d], cap, value_limit - prefix_min[d])
        fronts[d] = (c, v)
    return fronts


def front_value(front: tuple[np.ndarray, np.ndarray], room: np.ndarray) -> np.ndarray:
    """Least value of a front point whose cost fits in `room` (inf where none fits)."""
    cost, value = front
    i = np.searchsorted(cost, room, side="right") - 1
    return np.where(i >= 0, value[np.maximum(i, 0)] if value.size else np.inf, np.inf)
