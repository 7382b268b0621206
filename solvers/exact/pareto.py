"""1-D Pareto fronts of sums over layers, built by min-plus merging (Nemhauser-Ullmann).

A front is a pair of arrays (cost ascending, value strictly descending): every point is a
combination no other combination beats in both. Merging a front with one layer's options and
pruning keeps exactly the combinations some limit makes optimal, with float costs (no rounding
onto a grid, unlike dynamic programming over integer capacities), which is what makes the
bounds of `solvers.exact.search` and the curves of `solvers.frontier` exact.
"""
from __future__ import annotations

import time

import numpy as np

__all__ = ["pareto_indices", "merge", "front_value", "best_within", "FrontTooLarge", "OutOfTime"]


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


def _after(per_layer: np.ndarray) -> np.ndarray:
    """Entry l: the sum over layers l+1.. (0 for the last)."""
    return np.concatenate([np.cumsum(per_layer[::-1])[::-1][1:], [0.0]])


class FrontTooLarge(Exception):
    """A front outgrew the `max_points` given to `best_within`."""


class OutOfTime(Exception):
    """The deadline given to `best_within` passed before the merge finished."""


def best_within(loss: np.ndarray, cost: np.ndarray, cap: float, max_points: int, upper: float = np.inf,
                slope: float = 0.0, deadline: float | None = None) -> np.ndarray | None:
    """Optimal choice for one limit by merging the layers' Pareto sets, or None if none beats `upper`.

    Exact with float costs: the optimum is the lowest-value point of the final front whose cost
    fits. The front is pruned as it grows to
    - costs that leave the later layers room for their cheapest options;
    - values below `upper` once the later layers add their least loss;
    - Lagrangian bounds below `upper`: any completion of a point (c, v) of the layers so far costs
      at least v + slope * (c - cap) + sum over later layers of min_k(loss + slope * cost), for
      any slope >= 0 (the LP multiplier makes it tight).
    So with a good incumbent `upper` (and its multiplier) only the few points that could still
    beat it survive. `loss` (L, K) has +inf for options a layer may not take.

    Raises:
        FrontTooLarge: a front outgrew `max_points` (the caller falls back to another method).
        OutOfTime: `deadline` (a `time.perf_counter()` value) passed.
    """
    allowed = np.isfinite(loss)
    least = np.where(allowed, cost, np.inf).min(axis=1)
    room = cap - _after(least)
    max_value = upper - _after(np.where(allowed, loss, np.inf).min(axis=1))
    max_priced = upper + slope * cap - _after(np.where(allowed, loss + slope * cost, np.inf).min(axis=1))
    c, v = np.zeros(1), np.zeros(1)
    steps = []
    for layer in range(loss.shape[0]):
        options = np.flatnonzero(allowed[layer])
        c, v, parent, option = merge(c, v, cost[layer, options], loss[layer, options], room[layer],
                                     max_value[layer], slope, max_priced[layer])
        if c.size > max_points:
            raise FrontTooLarge(f"front of {c.size} points after layer {layer} (at most {max_points})")
        if c.size == 0:
            return None
        if deadline is not None and time.perf_counter() > deadline:
            raise OutOfTime(f"deadline passed after layer {layer} of {loss.shape[0]}")
        steps.append((parent, options[option]))
    index = int(np.argmin(v))
    choice = np.empty(loss.shape[0], dtype=np.int64)
    for layer in range(loss.shape[0] - 1, -1, -1):
        parent, option = steps[layer]
        choice[layer] = option[index]
        index = int(parent[index])
    return choice
