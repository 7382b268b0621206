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
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["LPResult", "dual_bound", "solve_lp", "farkas_infeasible"]


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
    import highspy

    h = highspy.Highs()
    h.setOptionValue("output_flag", False)
    # One thread: HiGHS keeps one scheduler per process, and other backends (pulp-highs) run it at 1.
    h.setOptionValue("threads", 1)
    return h


def solve_lp(loss: np.ndarray, costs: np.ndarray, max_rounds: int = 100) -> LPResult:
    """LP relaxation by column generation. `loss` (L, K) with +inf for unavailable options, `costs` (R, L, K) scaled."""
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
    for _ in range(max_rounds):
        h.run()
        dual = np.asarray(h.getSolution().row_dual)
        mu, lam = dual[:n_layers], np.maximum(-dual[n_layers:], 0.0)
        reduced = loss + np.tensordot(lam, costs, axes=1) - mu[:, None]
        best = np.argmin(reduced, axis=1)
        negative = reduced[layers, best] < -1e-12 * (1.0 + np.abs(mu))
        if not negative.any():
            break
        add(layers[negative], best[negative])
    values = np.asarray(h.getSolution().col_value)
    slack = values[:n_res]
    weight = np.zeros((n_layers, n_opt))
    np.add.at(weight, (np.concatenate(col_layer), np.concatenate(col_opt)), values[n_res:])
    infeasible = bool((slack > 1e-9).any() and farkas_infeasible(costs, allowed, lam))
    return LPResult(lam=lam, bound=dual_bound(loss, costs, lam), choice_weight=weight, infeasible=infeasible)
