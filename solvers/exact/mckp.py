"""`solve_arrays`: the exact multiple-choice knapsack solver on plain arrays.

Steps (each explained in its module):
1. Scale every limit to 1, subtract each layer's least loss (better conditioned sums), fix
   layers with one option, drop resources no remaining option uses.
2. LP relaxation by column generation (`lagrange`): multipliers lam and a proven bound; a
   Farkas certificate when even the LP is infeasible.
3. Incumbent: LP rounding, repair, local search (`heuristic`), then a narrow beam search.
4. Reduced-cost fixing: with reduced costs rc = loss + lam.c - min_k(loss + lam.c), every plan
   has loss >= LP bound + sum of its rc, so an option whose rc reaches incumbent - bound is in no
   better plan; most layers keep one option.
5. Exact search over the layers still free (`search`).

The result is optimal within `tol` (1e-10 relative to the objective; the contract asks 1e-9),
"feasible" with a proven bound when the deadline passes, or infeasible (proven).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Literal

import numpy as np

from .heuristic import improve, repair, round_lp, usage
from .lagrange import dual_bound, farkas_infeasible, solve_lp
from .search import SearchSpace, search

__all__ = ["ExactResult", "solve_arrays", "RTOL"]

RTOL = 1e-10
BEAM_WIDTH = 32


@dataclass
class ExactResult:
    """choice: option per layer (None if infeasible or no plan found in time); bound: proven lower bound."""

    choice: np.ndarray | None
    status: Literal["optimal", "feasible", "infeasible", "timeout"]
    objective: float
    bound: float
    nodes: int = 0
    free_layers: int = 0


def _tolerance(value: float) -> float:
    return RTOL * max(abs(value), 1e-300)


def solve_arrays(loss: np.ndarray, costs: np.ndarray, limits: np.ndarray, time_limit: float | None = None,
                 incumbent: np.ndarray | None = None) -> ExactResult:
    """Minimise sum_l loss[l, choice[l]] subject to sum_l costs[r, l, choice[l]] <= limits[r] for every r.

    Args:
        loss: (L, K) floats, +inf for options a layer may not take (every layer needs one finite).
        costs: (R, L, K) finite costs >= 0 (values where loss is inf are ignored).
        limits: (R,) limits >= 0.
        time_limit: seconds, or None.
        incumbent: an optional feasible choice to start from (e.g. the previous point of a sweep).
    """
    deadline = None if time_limit is None else time.perf_counter() + time_limit
    loss = np.asarray(loss, dtype=np.float64)
    costs = np.asarray(costs, dtype=np.float64).reshape(-1, *loss.shape)
    limits = np.asarray(limits, dtype=np.float64).reshape(-1)
    n_layers, n_opt = loss.shape
    allowed = np.isfinite(loss)
    if not allowed.any(axis=1).all():
        raise ValueError("loss: every layer needs at least one finite (allowed) option")

    # 1. scaling; a zero limit admits only options free in that resource
    zero = limits <= 0
    allowed &= ~((costs > 0) & zero[:, None, None]).any(axis=0)
    if not allowed.any(axis=1).all():
        return ExactResult(None, "infeasible", np.inf, np.inf)
    keep_res = ~zero
    scaled = np.where(allowed[None], costs[keep_res] / limits[keep_res][:, None, None], 0.0)
    floor = np.where(allowed, loss, np.inf).min(axis=1)
    base = float(floor.sum())
    work = np.where(allowed, loss - floor[:, None], np.inf)
    used = (scaled.max(axis=(1, 2)) > 0) if scaled.size else np.zeros(0, bool)
    scaled = scaled[used]
    n_res = scaled.shape[0]
    if n_res == 0:
        choice = np.argmin(work, axis=1)
        return ExactResult(choice, "optimal", base, base)
    if farkas_infeasible(scaled, allowed, np.ones(n_res) / n_res) or any(
            farkas_infeasible(scaled, allowed, np.eye(n_res)[r]) for r in range(n_res)):
        return ExactResult(None, "infeasible", np.inf, np.inf)

    # 2. LP relaxation
    lp = solve_lp(work, scaled)
    if lp.infeasible:
        return ExactResult(None, "infeasible", np.inf, np.inf)
    lam = lp.lam
    lower = lp.bound

    # 3. incumbent
    rows = np.arange(n_layers)
    candidates = [round_lp(lp.choice_weight, work)]
    if incumbent is not None:
        candidates.insert(0, np.asarray(incumbent, dtype=np.int64))
    best, upper = None, np.inf
    for start in candidates:
        fixed = start if (usage(scaled, start) <= 1.0).all() and np.isfinite(work[rows, start]).all() else repair(work, scaled, start)
        if fixed is None:
            continue
        fixed = improve(work, scaled, fixed, lam)
        value = float(work[rows, fixed].sum())
        if value < upper:
            best, upper = fixed, value
    tol = _tolerance(upper + base) if np.isfinite(upper) else _tolerance(lower + base)
    if best is not None and upper - lower <= tol:
        return ExactResult(best, "optimal", upper + base, upper + base)

    # 4. reduced-cost fixing
    priced = work + np.tensordot(lam, scaled, axes=1)
    reduced = priced - priced.min(axis=1, keepdims=True)
    alive = allowed & (reduced < (upper - lower) + tol) if np.isfinite(upper) else allowed.copy()
    if best is not None:
        alive[rows, best] = True
    n_alive = alive.sum(axis=1)
    fixed_layers = np.flatnonzero(n_alive == 1)
    free_layers = np.flatnonzero(n_alive > 1)
    fixed_choice = np.argmax(alive[fixed_layers], axis=1)
    cap = 1.0 - scaled[:, fixed_layers, fixed_choice].sum(axis=1)
    fixed_loss = float(work[fixed_layers, fixed_choice].sum())
    opts = [np.flatnonzero(alive[l]) for l in free_layers]
    f_loss = [work[l, o] for l, o in zip(free_layers, opts)]
    f_cost = [scaled[:, l, o] for l, o in zip(free_layers, opts)]

    def assemble(positions: list[int]) -> np.ndarray:
        choice = np.empty(n_layers, dtype=np.int64)
        choice[fixed_layers] = fixed_choice
        choice[free_layers] = [o[p] for o, p in zip(opts, positions)]
        return choice

    if (cap < -1e-15).any() or free_layers.size == 0:
        # everything fixed: the incumbent (if any) is the only candidate left
        if best is not None:
            return ExactResult(best, "optimal", upper + base, upper + base, 0, 0)
        return ExactResult(None, "infeasible", np.inf, np.inf)
    cap = np.maximum(cap, 0.0)

    # 5. beam for a better incumbent, then the exact search
    nodes = 0
    sub_upper = upper - fixed_loss
    space = SearchSpace(f_loss, f_cost, cap, lam, sub_upper)
    if BEAM_WIDTH:
        beam = search(space, sub_upper, tol, deadline, beam=BEAM_WIDTH)
        nodes += beam.nodes
        if beam.choice is not None and beam.objective < sub_upper:
            sub_upper = beam.objective
            best = assemble(beam.choice)
            upper = sub_upper + fixed_loss
    result = search(space, sub_upper, tol, deadline)
    nodes += result.nodes
    if result.choice is not None and result.objective < sub_upper:
        best = assemble(result.choice)
        upper = result.objective + fixed_loss
    bound = max(lower, result.bound + fixed_loss) if result.complete else max(lower, min(result.bound + fixed_loss, upper))
    if result.complete:
        if best is None:
            return ExactResult(None, "infeasible", np.inf, np.inf, nodes, free_layers.size)
        return ExactResult(best, "optimal", upper + base, upper + base, nodes, free_layers.size)
    if best is None:
        return ExactResult(None, "timeout", np.inf, bound + base, nodes, free_layers.size)
    return ExactResult(best, "feasible", upper + base, min(bound, upper) + base, nodes, free_layers.size)
