"""Backend "greedy": the classic ratio heuristic for the multiple-choice knapsack. Not exact.

Start from the cheapest plan: every group takes the option with the smallest cost relative to
the room the limits leave (with one limit, simply its cheapest option; with several, the
smallest sum over resources of extra cost / slack). Then repeatedly take the upgrade (a switch
of one group to a lower-loss option that still fits every limit) with the largest loss
reduction per unit of the binding resource, that is, per fraction of the remaining room it
uses in the resource it strains most. Upgrades that use no extra room go first. Stop when no
upgrade fits.

With one limit the start is feasible whenever any plan is (preprocessing has already proven
the limit reachable), so greedy always finds a plan. With several limits the start can break
one of them although a plan exists: greedy then raises `GreedyFailedError`, never
`InfeasibleError` (it proves nothing). Its bound is the LP relaxation bound the dispatcher adds.
"""
from __future__ import annotations

import time

import numpy as np

from ..errors import GreedyFailedError
from ..prepare import PreparedProblem
from .base import BackendResult

EXACT = False


def available() -> bool:
    return True


def _start(problem: PreparedProblem) -> np.ndarray:
    """Cheapest option per group: smallest summed extra cost / slack, ties broken by loss."""
    allowed = problem.allowed
    minima = np.where(allowed[None], problem.costs, np.inf).min(axis=2)  # (R, G)
    room = problem.limits - minima.sum(axis=1)  # (R,), >= 0 after preprocessing
    # a resource with no room left must weigh most: any extra cost in it breaks its limit
    weights = 1.0 / np.maximum(room, 1e-12 * np.maximum(1.0, np.abs(problem.limits)))
    score = np.einsum("r,rgk->gk", weights, problem.costs - minima[:, :, None])
    score = np.where(allowed, score, np.inf)
    best = score.min(axis=1, keepdims=True)
    # among the cheapest (up to rounding), the lowest loss
    cheapest = score <= best + 1e-12 * np.maximum(1.0, np.abs(best))
    return np.where(cheapest, problem.loss, np.inf).argmin(axis=1)


def _best_upgrade(problem: PreparedProblem, choice: np.ndarray, slack: np.ndarray) -> tuple[int, int] | None:
    rows = np.arange(problem.n_groups)
    gain = problem.loss[rows, choice][:, None] - problem.loss  # > 0: lower loss; -inf where forbidden
    extra = problem.costs - problem.costs[:, rows, choice][:, :, None]  # (R, G, K)
    fits = (gain > 0) & (extra <= slack[:, None, None]).all(axis=0)
    if not fits.any():
        return None
    with np.errstate(divide="ignore", invalid="ignore"):
        share = np.where(slack[:, None, None] > 0, extra / slack[:, None, None], np.where(extra > 0, np.inf, 0.0))
    price = share.max(axis=0) if share.shape[0] else np.zeros_like(gain)
    free = fits & (price <= 0)
    if free.any():
        score = np.where(free, gain, -np.inf)
    else:
        score = np.where(fits, gain / np.where(fits, price, 1.0), -np.inf)
    g, k = np.unravel_index(int(np.argmax(score)), score.shape)
    return int(g), int(k)


def solve(problem: PreparedProblem, time_limit: float | None) -> BackendResult:
    deadline = None if time_limit is None else time.perf_counter() + time_limit
    choice = _start(problem)
    usage = problem.group_usage(choice)
    if (usage > problem.limits).any():
        broken = [
            f"{name}: {usage[r]:.10g} > limit {problem.limits[r]:.10g}"
            for r, name in enumerate(problem.resources) if usage[r] > problem.limits[r]
        ]
        raise GreedyFailedError(
            "greedy found no plan meeting every limit at once (its cheapest start breaks "
            + "; ".join(broken)
            + "); this does not prove the limits infeasible: use an exact solver such as 'scipy'"
        )
    while deadline is None or time.perf_counter() < deadline:
        move = _best_upgrade(problem, choice, problem.limits - usage)
        if move is None:
            break
        g, k = move
        usage = usage + problem.costs[:, g, k] - problem.costs[:, g, choice[g]]
        choice[g] = k
    return BackendResult(choice, "feasible")
