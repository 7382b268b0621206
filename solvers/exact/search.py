"""Proving optimality: a bounded, dominance-pruned search over partial plans.

The layers left free after reduced-cost fixing are assigned in a fixed order (largest costs
first). A state is a partial plan of the first d layers: its loss `lo` and its usage `u` of
each (scaled) resource. A state is dropped when

- a lower bound on every completion reaches the incumbent (`UB - tol`), or
- another state of the same batch has no more loss and no more of any resource (dominance;
  checked among sort-order neighbours, which finds most dominated states in O(n)).

Lower bound of a state at depth d, the maximum of (all valid for any lam >= 0):
- the fixed-multiplier Lagrangian: lo + lam.(u - cap) + sum_{l>=d} min_k(loss + lam.c);
- for each resource r, the same with resource r kept as an exact knapsack instead of priced:
  lo + lam_{-r}.(u_{-r} - cap_{-r}) + W_r,d(cap_r - u_r), where W_r,d is the least priced loss
  of layers d.. whose r-cost fits, read from the 1-D Pareto front of the suffix
  (`solvers.exact.pareto`). Keeping integrality in one resource is what closes most of the LP
  gap on lumpy problems (a few big layers).

States are expanded breadth-first in batches; a batch larger than `batch` is split by bound and
the parts explored best-first (depth-first over batches), so memory stays bounded and leaves,
hence better incumbents, come early. When the search ends the incumbent is optimal within
`tol`; when the deadline passes, the least bound of the open states is a proven bound.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from .pareto import front_value, merge

__all__ = ["SearchResult", "SearchSpace", "search"]

MAX_FRONT = 200_000      # points per suffix front; earlier depths fall back to the Lagrangian bound
DOMINANCE_MIN = 512      # batches smaller than this skip the dominance filter
DOMINANCE_WINDOW = 8


@dataclass
class SearchResult:
    choice: list[int] | None   # option position per free layer (into its option list)
    objective: float           # loss of that choice (inf if none)
    bound: float               # proven lower bound on the optimum of the free part
    complete: bool             # True: the search finished (choice optimal, or none exists)
    nodes: int


def _window_nondominated(lo: np.ndarray, u: np.ndarray, window: int = DOMINANCE_WINDOW) -> np.ndarray:
    """Mask of states that no neighbour (in any single-key sort order) dominates."""
    table = np.concatenate([lo[:, None], u], axis=1)
    n = table.shape[0]
    keep = np.ones(n, dtype=bool)
    for key in range(table.shape[1]):
        order = np.argsort(table[:, key], kind="stable")
        rows, alive = table[order], keep[order]
        for offset in range(1, min(window, n - 1) + 1):
            a, b = rows[:-offset], rows[offset:]
            a_dom = (a <= b).all(axis=1) & alive[:-offset]
            b_dom = (b <= a).all(axis=1) & alive[offset:] & ~(a == b).all(axis=1)
            alive[offset:] &= ~a_dom
            alive[:-offset] &= ~b_dom
        keep[order] = alive
    return keep


class _Bounds:
    """Lower bounds on completing states at each depth."""

    def __init__(self, losses, costs, cap, lam, value_limit, max_front, deadline=None):
        self.cap, self.lam = cap, lam
        n, n_res = len(losses), cap.size
        priced = [l + lam @ c for l, c in zip(losses, costs)]
        self.suffix_priced = np.concatenate([np.cumsum([p.min() for p in priced][::-1])[::-1], [0.0]])
        self.suffix_cost = np.zeros((n + 1, n_res))
        for d in range(n - 1, -1, -1):
            self.suffix_cost[d] = self.suffix_cost[d + 1] + costs[d].min(axis=1)
        self.fronts = []
        for r in range(n_res):
            others = lam.copy()
            others[r] = 0.0
            values = [l + others @ c for l, c in zip(losses, costs)]
            # least value of layers 0..d-1: plainly, and priced by lam_r given the r-room they leave
            prefix = np.concatenate([[0.0], np.cumsum([v.min() for v in values])])
            prefix_priced = np.concatenate([[0.0], np.cumsum([(v + lam[r] * c[r]).min() for v, c in zip(values, costs)])])
            limit = value_limit + others @ cap
            fronts = _capped_fronts(values, [c[r] for c in costs], cap[r], limit - prefix,
                                    lam[r], limit - prefix_priced + lam[r] * cap[r], max_front, deadline)
            self.fronts.append((others, fronts))

    def __call__(self, d: int, lo: np.ndarray, u: np.ndarray) -> np.ndarray:
        bound = lo + (u - self.cap) @ self.lam + self.suffix_priced[d]
        bound[(u + self.suffix_cost[d] > self.cap).any(axis=1)] = np.inf
        for r, (others, fronts) in enumerate(self.fronts):
            if fronts[d] is not None:
                kept = lo + (u - self.cap) @ others + front_value(fronts[d], self.cap[r] - u[:, r])
                bound = np.maximum(bound, kept)
        return bound


def _capped_fronts(values, costs, cap, max_value, slope, max_priced, max_front, deadline=None):
    """Suffix fronts, stopping (None for earlier depths) once a front exceeds `max_front` points
    or the deadline passes (the bounds there fall back to the Lagrangian one: still valid).

    Entry d covers layers d.. (entry n is the empty sum). A suffix combination (c, v) is dropped
    when no prefix can complete it below the incumbent: v >= max_value[d], or
    v + slope * c >= max_priced[d] (the prefix priced with the LP multiplier of this resource).
    """
    n = len(values)
    fronts: list[tuple[np.ndarray, np.ndarray] | None] = [None] * (n + 1)
    c, v = np.zeros(1), np.zeros(1)
    fronts[n] = (c, v)
    for d in range(n - 1, -1, -1):
        c, v, _, _ = merge(c, v, costs[d], values[d], cap, max_value[d], slope, max_priced[d])
        if c.size > max_front or (deadline is not None and time.perf_counter() > deadline):
            break
        fronts[d] = (c, v)
    return fronts


class SearchSpace:
    """The free layers in search order with their bounds; built once, searched by beam and exactly."""

    def __init__(self, losses: list[np.ndarray], costs: list[np.ndarray], cap: np.ndarray, lam: np.ndarray,
                 upper: float, max_front: int = MAX_FRONT, deadline: float | None = None):
        n_res = cap.size
        self.order = np.argsort([-(c.max() if c.size else 0.0) for c in costs], kind="stable")
        self.losses = [losses[i] for i in self.order]
        self.costs = [costs[i].reshape(n_res, -1) for i in self.order]
        self.cap = cap
        self.bounds = _Bounds(self.losses, self.costs, cap, lam, upper, max_front, deadline)


def search(space: SearchSpace, upper: float, tol: float, deadline: float | None = None, batch: int = 50_000,
           beam: int = 0) -> SearchResult:
    """Search the free layers for a plan with loss below `upper`.

    `beam` > 0 keeps only the `beam` best states per depth: a heuristic (its result is not
    complete) that finds good incumbents fast.
    """
    losses, costs, cap, bounds, order = space.losses, space.costs, space.cap, space.bounds, space.order
    n = len(losses)
    n_res = cap.size

    parents: list[np.ndarray] = []
    options: list[np.ndarray] = []
    starts: list[int] = []
    next_id = 0

    def record(parent_ids: np.ndarray, opts: np.ndarray) -> np.ndarray:
        nonlocal next_id
        starts.append(next_id)
        parents.append(parent_ids)
        options.append(opts)
        ids = np.arange(next_id, next_id + parent_ids.size)
        next_id += parent_ids.size
        return ids

    best_id, best_obj = -1, upper
    nodes = 0
    root = (0, np.zeros(1), np.zeros((1, n_res)), np.array([-1]), bounds(0, np.zeros(1), np.zeros((1, n_res))))
    stack = [root] if root[4][0] < upper - tol else []
    pruned_min = np.inf if stack else float(root[4][0])
    while stack:
        if deadline is not None and time.perf_counter() > deadline:
            open_min = min(float(item[4].min()) for item in stack)
            return _finish(best_id, best_obj, min(best_obj, pruned_min, open_min), False, nodes,
                           n, order, parents, options, starts)
        d, lo, u, ids, _ = stack.pop()
        if d == n:
            j = int(np.argmin(lo))
            if lo[j] < best_obj:
                best_obj, best_id = float(lo[j]), int(ids[j])
            continue
        k = losses[d].size
        child_lo = (lo[:, None] + losses[d][None, :]).ravel()
        child_u = (u[:, None, :] + costs[d].T[None, :, :]).reshape(-1, n_res)
        bound = bounds(d + 1, child_lo, child_u)
        keep = bound < best_obj - tol
        if not keep.all():
            pruned_min = min(pruned_min, float(bound[~keep].min()))
        idx = np.flatnonzero(keep)
        if idx.size > DOMINANCE_MIN and d + 1 < n:
            idx = idx[_window_nondominated(child_lo[idx], child_u[idx])]
        if beam and idx.size > beam:
            idx = idx[np.argsort(bound[idx], kind="stable")[:beam]]
        nodes += idx.size
        if idx.size == 0:
            continue
        parent, option = np.divmod(idx, k)
        new_ids = record(ids[parent], option)
        lo2, u2, b2 = child_lo[idx], child_u[idx], bound[idx]
        if idx.size <= batch:
            stack.append((d + 1, lo2, u2, new_ids, b2))
        else:
            by_bound = np.argsort(b2, kind="stable")
            for part in reversed(np.array_split(by_bound, -(-idx.size // batch))):
                stack.append((d + 1, lo2[part], u2[part], new_ids[part], b2[part]))
    complete = not beam
    return _finish(best_id, best_obj, min(best_obj, pruned_min), complete, nodes, n, order, parents, options, starts)


def _finish(best_id, best_obj, bound, complete, nodes, n, order, parents, options, starts) -> SearchResult:
    if best_id < 0:
        return SearchResult(None, np.inf, bound, complete, nodes)
    chunk_starts = np.asarray(starts)
    positions = [0] * n
    node, depth = best_id, n - 1
    while node >= 0:
        c = int(np.searchsorted(chunk_starts, node, side="right")) - 1
        positions[order[depth]] = int(options[c][node - chunk_starts[c]])
        node = int(parents[c][node - chunk_starts[c]])
        depth -= 1
    return SearchResult(positions, best_obj, bound, complete, nodes)
