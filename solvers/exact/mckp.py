"""`solve_arrays`: the exact multiple-choice knapsack solver on plain arrays.

Steps (each explained in its module):
0. One limit (after step 1's scaling): the hull LP by bisection over breakpoints (no LP solver),
   a greedy incumbent improved by local search, reduced-cost fixing, then the Pareto sets of the
   layers left free merged with pruning against the incumbent (`pareto.best_within`); exact.
   If a front still grows too large, steps 4-5 below take over with the hull LP's multiplier,
   bound and plan (the LP relaxation of one limit is that hull LP: no LP solver). Otherwise:
1. Scale every limit to 1, subtract each layer's least loss (better conditioned sums), fix
   layers with one option, drop resources no remaining option uses.
2. LP relaxation by column generation (`lagrange`): multipliers lam and a proven bound; a
   Farkas certificate when even the LP is infeasible.
3. Incumbent: LP rounding, repair, local search (`heuristic`), then (more than `BEAM_MIN_FREE`
   free layers) a narrow beam search.
4. Reduced-cost fixing: with reduced costs rc = loss + lam.c - min_k(loss + lam.c), every plan
   has loss >= LP bound + sum of its rc, so an option whose rc reaches incumbent - bound is in no
   better plan; most layers keep one option.
5. Exact search over the layers still free (`search`).

The result is optimal within `tol` (1e-10 relative to the objective less each layer's least loss,
stricter than the 1e-9 of the whole objective that the contract asks),
"feasible" with a proven bound when the deadline passes, "timeout" when it passes before any
plan is found, or infeasible (proven). Every phase that can take long (the LP, repair and local
search, front building, the search) stops at the deadline.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from functools import cached_property
from typing import Literal

import numpy as np

from .heuristic import improve, repair, round_lp, usage
from .lagrange import farkas_infeasible, solve_lp, solve_lp_one
from .pareto import FrontTooLarge, OutOfTime, best_within
from .search import SearchSpace, search

__all__ = ["ExactResult", "solve_arrays", "RTOL"]

RTOL = 1e-10
# Totals may exceed a limit by this relative amount (float sums of exact-fit plans round either
# way); far inside the 1e-9 that `solvers.problem.FEASIBILITY_RTOL` accepts.
LIMIT_RTOL = 1e-12
BEAM_WIDTH = 32
BEAM_FRONT = 2_000
# The beam (and the second fixing after it) pays off only on larger searches: with few free
# layers the exact search is cheaper than building a second search space (ViT-B-like problems
# leave 20-30 free and run ~25% faster without it; 1000 layers leave hundreds and need it).
BEAM_MIN_FREE = 40
# one limit: merge Pareto sets directly while fronts stay below this many points
DIRECT_FRONT = 3_000


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
    """Optimality tolerance for a shifted objective (each layer's least loss subtracted): relative
    to what the choices decide, so a constant added to a layer's losses cannot loosen it."""
    return RTOL * max(abs(value), 1e-300)


def _past(deadline: float | None) -> bool:
    return deadline is not None and time.perf_counter() > deadline


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
    scaled = np.where(allowed[None], costs[keep_res] / (limits[keep_res] * (1 + LIMIT_RTOL))[:, None, None], 0.0)
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

    rows = np.arange(n_layers)
    one = _one_limit(work, scaled, allowed, incumbent, base, deadline) if n_res == 1 else None
    if isinstance(one, ExactResult):
        return one
    if one is not None:
        # a front grew too large: the general path, with the hull LP's multiplier, bound and plan
        # (the LP relaxation with one limit is that hull LP, so no LP solver is needed)
        lam, lower, best = np.array([one[0]]), one[1], one[2]
        upper = float(work[rows, best].sum())
    else:
        # 2. LP relaxation
        lp = solve_lp(work, scaled, deadline=deadline)
        if lp.infeasible:
            return ExactResult(None, "infeasible", np.inf, np.inf)
        lam = lp.lam
        lower = lp.bound

        # 3. incumbent
        candidates = [round_lp(lp.choice_weight, work)]
        if incumbent is not None:
            candidates.insert(0, np.asarray(incumbent, dtype=np.int64))
        best, upper = None, np.inf
        for start in candidates:
            fits = (usage(scaled, start) <= 1.0).all() and np.isfinite(work[rows, start]).all()
            fixed = start if fits else repair(work, scaled, start, deadline=deadline)
            if fixed is None:
                continue
            fixed = improve(work, scaled, fixed, lam, deadline=deadline)
            value = float(work[rows, fixed].sum())
            if value < upper:
                best, upper = fixed, value
        if best is None and _past(deadline):
            return ExactResult(None, "timeout", np.inf, lower + base)
    tol = _tolerance(upper) if np.isfinite(upper) else _tolerance(lower)
    if best is not None and upper - lower <= tol:
        return ExactResult(best, "optimal", upper + base, upper + base)

    # 4. reduced-cost fixing
    priced = work + np.tensordot(lam, scaled, axes=1)
    reduced = priced - priced.min(axis=1, keepdims=True)
    nodes = 0
    part = _Fixing(work, scaled, allowed, reduced, upper - lower + tol, best)
    if part.cap is None:
        # fixed layers alone break a limit: nothing but the incumbent (if any) is left
        if best is not None:
            return ExactResult(best, "optimal", upper + base, upper + base, 0, 0)
        return ExactResult(None, "infeasible", np.inf, np.inf)

    # 5. with many free layers, a beam search for a better incumbent (cheap bounds: small
    # fronts), a second fixing with it, then the exact search with full fronts pruned against it.
    # Building a search space costs time linear in the free layers: not begun after the deadline.
    if _past(deadline) and part.free.size:
        return _stopped(best, upper, lower, base, nodes, part.free.size)
    if BEAM_WIDTH and part.free.size > BEAM_MIN_FREE:
        sub_upper = upper - part.fixed_loss
        beam = search(SearchSpace(part.losses, part.costs, part.cap, lam, sub_upper, BEAM_FRONT, deadline), sub_upper,
                      tol, deadline, beam=BEAM_WIDTH)
        nodes += beam.nodes
        if beam.choice is not None and beam.objective < sub_upper:
            best = part.assemble(beam.choice)
            upper = beam.objective + part.fixed_loss
            part = _Fixing(work, scaled, allowed, reduced, upper - lower + tol, best)
    if part.free.size == 0:
        if best is None:  # every layer has one option left and they fit: the only plan
            best = part.assemble([])
            upper = float(work[rows, best].sum())
        return ExactResult(best, "optimal", upper + base, upper + base, nodes, 0)
    if _past(deadline):
        return _stopped(best, upper, lower, base, nodes, part.free.size)
    sub_upper = upper - part.fixed_loss
    result = search(SearchSpace(part.losses, part.costs, part.cap, lam, sub_upper, deadline=deadline), sub_upper, tol,
                    deadline)
    nodes += result.nodes
    free_layers, fixed_loss = part.free, part.fixed_loss
    if result.choice is not None and result.objective < sub_upper:
        best = part.assemble(result.choice)
        upper = result.objective + fixed_loss
    bound = max(lower, result.bound + fixed_loss) if result.complete else max(lower, min(result.bound + fixed_loss, upper))
    if result.complete:
        if best is None:
            return ExactResult(None, "infeasible", np.inf, np.inf, nodes, free_layers.size)
        return ExactResult(best, "optimal", upper + base, upper + base, nodes, free_layers.size)
    if best is None:
        return ExactResult(None, "timeout", np.inf, bound + base, nodes, free_layers.size)
    return ExactResult(best, "feasible", upper + base, min(bound, upper) + base, nodes, free_layers.size)


def _stopped(best: np.ndarray | None, upper: float, lower: float, base: float, nodes: int, free: int) -> ExactResult:
    """The result when the deadline passes between phases: the incumbent (if any) and the LP bound."""
    if best is None:
        return ExactResult(None, "timeout", np.inf, lower + base, nodes, free)
    return ExactResult(best, "feasible", upper + base, min(lower, upper) + base, nodes, free)


def _one_limit(work: np.ndarray, scaled: np.ndarray, allowed: np.ndarray, incumbent: np.ndarray | None,
               base: float, deadline: float | None) -> ExactResult | tuple[float, float, np.ndarray] | None:
    """One limit without an LP solver.

    The hull LP's multiplier and greedy plan (`solve_lp_one`), local search, reduced-cost fixing,
    then the Pareto merge of the layers left free, pruned against the incumbent by value and by
    the Lagrangian bound (`pareto.best_within`). Every pruning drops only points that cannot beat
    the incumbent by more than `tol`, so the result is optimal within `tol`. When a front grows
    too large, returns (lam, bound, incumbent) for the general path's search instead; when the
    deadline passes, the incumbent with status "feasible" and the hull bound; None when the
    bisection finds no plan (the general path then decides, with its LP).
    """
    rows = np.arange(work.shape[0])
    lam, lower, greedy = solve_lp_one(work, scaled[0])
    if greedy is None:  # no plan at any breakpoint (the Farkas test usually proves this first)
        return None
    best = improve(work, scaled, greedy, np.array([lam]), deadline=deadline)
    upper = float(work[rows, best].sum())
    if incumbent is not None:
        incumbent = np.asarray(incumbent, dtype=np.int64)
        value = float(work[rows, incumbent].sum())
        if value < upper and (usage(scaled, incumbent) <= 1.0).all():
            best, upper = incumbent, value
    tol = _tolerance(upper)
    free_count = 0
    if upper - lower > tol:
        priced = work + lam * scaled[0]
        part = _Fixing(work, scaled, allowed, priced - priced.min(axis=1, keepdims=True), upper - lower + tol, best)
        free_count = int(part.free.size)
        if part.cap is not None and free_count:
            free = part.free
            try:
                found = best_within(np.where(part.alive[free], work[free], np.inf), scaled[0, free], float(part.cap[0]),
                                    DIRECT_FRONT, upper - part.fixed_loss - tol, lam, deadline)
            except FrontTooLarge:
                return lam, lower, best
            except OutOfTime:
                return ExactResult(best, "feasible", upper + base, min(lower, upper) + base, 0, free_count)
            if found is not None:
                best = np.empty_like(best)
                best[part.fixed], best[free] = part.fixed_choice, found
                upper = float(work[rows, best].sum())
    return ExactResult(best, "optimal", upper + base, upper + base, 0, free_count)


class _Fixing:
    """Reduced-cost fixing: keep the options whose reduced cost is below `gap` (and the incumbent's);
    layers left with one option are fixed, the rest are free, as lists for `search`."""

    def __init__(self, loss: np.ndarray, costs: np.ndarray, allowed: np.ndarray, reduced: np.ndarray, gap: float,
                 incumbent: np.ndarray | None):
        n_layers = loss.shape[0]
        alive = allowed & (reduced < gap) if np.isfinite(gap) else allowed.copy()
        if incumbent is not None:
            alive[np.arange(n_layers), incumbent] = True
        count = alive.sum(axis=1)
        self.alive = alive
        self.n_layers = n_layers
        self.fixed = np.flatnonzero(count == 1)
        self.free = np.flatnonzero(count > 1)
        self.fixed_choice = np.argmax(alive[self.fixed], axis=1)
        self.fixed_loss = float(loss[self.fixed, self.fixed_choice].sum())
        cap = 1.0 - costs[:, self.fixed, self.fixed_choice].sum(axis=1)
        self.cap = None if (cap < 0).any() else cap
        self._loss, self._costs = loss, costs

    # per-layer lists for `search`, built only when the search runs (the one-limit path never needs them)
    @cached_property
    def options(self) -> list[np.ndarray]:
        return [np.flatnonzero(self.alive[l]) for l in self.free]

    @cached_property
    def losses(self) -> list[np.ndarray]:
        return [self._loss[l, o] for l, o in zip(self.free, self.options)]

    @cached_property
    def costs(self) -> list[np.ndarray]:
        return [self._costs[:, l, o] for l, o in zip(self.free, self.options)]

    def assemble(self, positions: list[int]) -> np.ndarray:
        """Full choice from a position in each free layer's option list."""
        choice = np.empty(self.n_layers, dtype=np.int64)
        choice[self.fixed] = self.fixed_choice
        choice[self.free] = [o[p] for o, p in zip(self.options, positions)]
        return choice
