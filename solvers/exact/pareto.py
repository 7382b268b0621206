"""1-D Pareto fronts of sums over layers, built by min-plus merging (Nemhauser-Ullmann).

A front is a pair of arrays (cost ascending, value strictly descending): every point is a
combination no other combination beats in both. Merging a front with one layer's options and
pruning keeps exactly the combinations some limit makes optimal, with float costs (no rounding
onto a grid, unlike dynamic programming over integer capacities), which is what makes the
bounds of `solvers.exact.search` and the curves of `solvers.frontier` exact.
"""
from __future__ import annotations

import numpy as np

__all__ = ["pareto_indices", "merge", "front_value", "best_within"]


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
          max_cost: float = np.inf, max_value: float = np.inf, slope: float = 0.0,
          max_priced: float = np.inf) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Min-plus merge of a front with one layer's options, pruned to cost <= max_cost,
    value < max_value and value + slope * cost < max_priced.

    Returns (cost, value, parent index into the input front, option index) of the new front.
    """
    c = (cost[:, None] + opt_cost[None, :]).ravel()
    v = (value[:, None] + opt_value[None, :]).ravel()
    ok = (c <= max_cost) & (v < max_value) & (v + slope * c < max_priced)
    idx = np.flatnonzero(ok)
    keep = idx[pareto_indices(c[idx], v[idx])]
    parent, option = np.divmod(keep, opt_cost.size)
    return c[keep], v[keep], parent, option


def front_value(front: tuple[np.ndarray, np.ndarray], room: np.ndarray) -> np.ndarray:
    """Least value of a front point whose cost fits in `room` (inf where none fits)."""
    cost, value = front
    i = np.searchsorted(cost, room, side="right") - 1
    return np.where(i >= 0, value[np.maximum(i, 0)] if value.size else np.inf, np.inf)


def best_within(loss: np.ndarray, cost: np.ndarray, cap: float, max_points: int) -> np.ndarray | None:
    """Optimal choice for one limit by merging the layers' Pareto sets; None if a front outgrows `max_points`.

    Exact with float costs: the optimum is the lowest-value point of the final front whose cost
    fits (the front is pruned as it grows to costs that leave the later layers room for their
    cheapest options). `loss` (L, K) with +inf for options a
    layer may not take; returns None also when nothing fits.
    """
    c, v = np.zeros(1), np.zeros(1)
    steps = []
    least = np.where(np.isfinite(loss), cost, np.inf).min(axis=1)
    room = cap - np.concatenate([np.cumsum(least[::-1])[::-1][1:], [0.0]])  # left once later layers take least
    for layer in range(loss.shape[0]):
        options = np.flatnonzero(np.isfinite(loss[layer]))
        c, v, parent, option = merge(c, v, cost[layer, options], loss[layer, options], room[layer])
        if c.size == 0 or c.size > max_points:
            return None
        steps.append((parent, options[option]))
    index = int(np.argmin(v))
    choice = np.empty(loss.shape[0], dtype=np.int64)
    for layer in range(loss.shape[0] - 1, -1, -1):
        parent, option = steps[layer]
        choice[layer] = option[index]
        index = int(parent[index])
    return choice
