"""The LP relaxation of the multiple-choice knapsack, solved through its Lagrangian dual.

Costs are scaled so every limit is 1. For multipliers lam >= 0 the Lagrangian bound
    D(lam) = sum_l min_k (loss[l, k] + lam . costs[:, l, k]) - sum(lam)
is a valid lower bound on the optimum whatever lam is, so the code never trusts the LP solver's
objective: it recomputes D from the multipliers. The best lam (the LP duals) comes from column
generation: a restricted master LP (HiGHS, warm-started) over a few options per layer, priced
against all options in numpy until no option has a negative reduced cost. Each layer's options
form a simplex, so the Lagrangian dual equals the LP relaxation (Geoffrion's integrality
property) and the master converges to the LP optimum in a few rounds.

With one limit this is the Sinha-Zoltners convex-hull LP; with several it is the exact LP, at
a fraction of the cost of handing the full LP to a solver (most options are never priced in).
One limit needs no LP solver at all (`solve_lp_one`): the dual is a concave function of one
multiplier whose maximum sits at a breakpoint, found by bisection over the sorted breakpoints.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

try:
    import highspy
except ImportError:  # backend "exact" then reports itself unavailable
    highspy = None

from ..quiet import stdout_silenced

__all__ = ["LPResult", "dual_bound", "solve_lp", "solve_lp_one", "farkas_infeasible"]


@dataclass
class LPResult:
    lam: np.ndarray          # (R,) multipliers >= 0
    bound: float             # D(lam), a proven lower bound
    choice_weight: np.ndarray  # (L, K) LP solution (0 for options never priced in)
    infeasible: bool         # proven: even the LP relaxation has no solution


def dual_bound(loss: np.ndarray, costs: np.ndarray, lam: np.ndarray) -> float:
    """D(lam) for scaled costs (limits 1); loss has +inf for options that may not be taken."""
    priced = loss + np.tensordot(lam, costs, axes=1)
    return float(priced.min(axis=1).sum() - lam.sum())


def farkas_infeasible(costs: np.ndarray, allowed: np.ndarray, direction: np.ndarray) -> bool:
    """True if `direction` >= 0 certifies that no choice keeps every scaled total <= 1.

    Every choice has direction . usage >= sum_l min_k direction . costs[:, l, k]; if that exceeds
    sum(direction), some limit must break.
    """
    direction = np.maximum(direction, 0.0)
    if not direction.any():
        return False
    weighted = np.where(allowed, np.tensordot(direction, costs, axes=1), np.inf)
    least = weighted.min(axis=1).sum()
    return bool(least > direction.sum() * (1 + 1e-9))


def _highs():
    with stdout_silenced():  # the banner of the process's first instance
        h = highspy.Highs()
    h.setOptionValue("output_flag", False)
    # One thread: HiGHS keeps one scheduler per process, and other backends (pulp-highs) run it at 1.
    h.setOptionValue("threads", 1)
    # Tiny LPs re-solved after adding columns: presolve costs more than it saves, and the primal
    # simplex restarts from the previous (still primal feasible) basis.
    h.setOptionValue("presolve", "off")
    h.setOptionValue("simplex_strategy", 4)
    return h


def solve_lp(loss: np.ndarray, costs: np.ndarray, max_rounds: int = 100, deadline: float | None = None) -> LPResult:
    """LP relaxation by column generation. `loss` (L, K) with +inf for unavailable options, `costs` (R, L, K) scaled.

    With a `deadline` (a `time.perf_counter()` value) HiGHS gets the time left as its limit and
    no round starts after it; the multipliers reached so far still give a valid bound (D is
    recomputed from them), only a weaker one (lam = 0 if no round ran).
    """
    n_res, n_layers, n_opt = costs.shape
    allowed = np.isfinite(loss)
    layers = np.arange(n_layers)
    h = _highs()
    empty_i, empty_f = np.zeros(0, np.int32), np.zeros(0)
    h.addRows(n_layers, np.ones(n_layers), np.ones(n_layers), 0, empty_i, empty_i, empty_f)
    h.addRows(n_res, np.full(n_res, -np.inf), np.ones(n_res), 0, empty_i, empty_i, empty_f)
    finite_loss = np.where(allowed, loss, np.nan)
    spread = np.nansum(np.nanmax(finite_loss, axis=1) - np.nanmin(finite_loss, axis=1))
    # artificial slack per limit, priced far above any loss change: keeps every master feasible
    big = 1e6 * (1.0 + float(spread))
    h.addCols(n_res, np.full(n_res, big), np.zeros(n_res), np.full(n_res, np.inf), n_res,
              np.arange(n_res, dtype=np.int32), (n_layers + np.arange(n_res)).astype(np.int32), -np.ones(n_res))
    col_layer: list[np.ndarray] = []
    col_opt: list[np.ndarray] = []

    def add(ls: np.ndarray, ks: np.ndarray) -> None:
        n = ls.size
        index = np.empty((n, n_res + 1), np.int32)
        index[:, 0] = ls
        index[:, 1:] = n_layers + np.arange(n_res)
        value = np.empty((n, n_res + 1))
        value[:, 0] = 1.0
        value[:, 1:] = costs[:, ls, ks].T
        h.addCols(n, loss[ls, ks], np.zeros(n), np.full(n, np.inf), n * (n_res + 1),
                  (np.arange(n) * (n_res + 1)).astype(np.int32), index.ravel(), value.ravel())
        col_layer.append(ls)
        col_opt.append(ks)

    # start: each layer's lowest-loss option and its cheapest option in every resource
    starts = [np.argmin(np.where(allowed, loss, np.inf), axis=1)]
    for r in range(n_res):
        scale = np.where(allowed, costs[r], np.inf)
        starts.append(np.lexsort((np.where(allowed, loss, np.inf), scale), axis=1)[:, 0])
    pairs = np.unique(np.stack([np.tile(layers, len(starts)), np.concatenate(starts)], axis=1), axis=0)
    add(pairs[:, 0], pairs[:, 1])

    lam = np.zeros(n_res)
    values = None
    for _ in range(max_rounds):
        if deadline is not None:
            left = deadline - time.perf_counter()
            if left <= 0:
                break
            h.setOptionValue("time_limit", left)
        h.run()
        if h.getModelStatus() != highspy.HighsModelStatus.kOptimal:
            break  # stopped by the time limit: keep the last finished round's multipliers
        solution = h.getSolution()
        values = np.asarray(solution.col_value)
        dual = np.asarray(solution.row_dual)
        mu, lam = dual[:n_layers], np.maximum(-dual[n_layers:], 0.0)
        reduced = loss + np.tensordot(lam, costs, axes=1) - mu[:, None]
        best = np.argmin(reduced, axis=1)
        negative = reduced[layers, best] < -1e-12 * (1.0 + np.abs(mu))
        if not negative.any():
            break
        add(layers[negative], best[negative])
    weight = np.zeros((n_layers, n_opt))
    infeasible = False
    if values is not None:  # the last finished round's LP solution (columns added later are 0)
        n_cols = values.size - n_res
        np.add.at(weight, (np.concatenate(col_layer)[:n_cols], np.concatenate(col_opt)[:n_cols]), values[n_res:])
        infeasible = bool((values[:n_res] > 1e-9).any() and farkas_infeasible(costs, allowed, lam))
    return LPResult(lam=lam, bound=dual_bound(loss, costs, lam), choice_weight=weight, infeasible=infeasible)


def solve_lp_one(loss: np.ndarray, cost: np.ndarray) -> tuple[float, float, np.ndarray]:
    """One limit (scaled to 1): (lam, D(lam), a feasible choice), without an LP solver.

    D(lam) = sum_l min_k(loss + lam * cost) - lam is concave and piecewise linear; its slope is
    the usage of the minimising options minus 1, so the maximum is at the smallest breakpoint
    (a lam where two options of a layer tie) beyond which the minimising options fit. Candidate
    breakpoints are the pairwise tie points of each layer; bisection over them evaluates the
    usage O(log(L K^2)) times. The choice returned (the minimisers just past that breakpoint) is
    the LP solution rounded down to the feasible side: a greedy incumbent. It is None when even
    the cheapest options do not fit. Whatever lam the bisection lands on, D(lam) is recomputed
    from it, so the bound is valid even if float ties blur a breakpoint.
    """
    n_layers = loss.shape[0]
    allowed = np.isfinite(loss)
    rows = np.arange(n_layers)
    work = np.where(allowed, loss, np.inf)
    cost = np.where(allowed, cost, np.inf)

    def minimisers(lam: float) -> np.ndarray:
        # ties broken toward the cheaper option: evaluated at lam * (1 + 1e-9), just past the breakpoint
        return np.argmin(work + (lam * (1.0 + 1e-9) + 1e-300) * cost, axis=1)

    def fits(choice: np.ndarray) -> bool:
        return bool(cost[rows, choice].sum() <= 1.0)

    choice = minimisers(0.0)
    if fits(choice):
        return 0.0, dual_bound(loss, np.where(allowed, cost, 0.0)[None], np.zeros(1)), choice
    with np.errstate(invalid="ignore", divide="ignore"):
        slope = (work[:, None, :] - work[:, :, None]) / (cost[:, :, None] - cost[:, None, :])
    candidates = np.unique(slope[np.isfinite(slope) & (slope > 0)])
    lo, hi = 0, candidates.size - 1  # find the first candidate whose minimisers fit
    if hi < 0 or not fits(best := minimisers(float(candidates[hi]))):
        return 0.0, dual_bound(loss, np.where(allowed, cost, 0.0)[None], np.zeros(1)), None
    while lo < hi:
        mid = (lo + hi) // 2
        trial = minimisers(float(candidates[mid]))
        if fits(trial):
            hi, best = mid, trial
        else:
            lo = mid + 1
    lam = float(candidates[hi])  # `best` holds the minimisers at candidates[hi]
    return lam, dual_bound(loss, np.where(allowed, cost, 0.0)[None], np.array([lam])), best
