"""The k best distinct plans of a multiple-choice knapsack, or every plan within a gap of the optimum.

Why: the allocator's objective adds up damages measured one layer at a time. It separates good
plans from bad ones but cannot rank near-optimal plans against each other (issue 14), so a
second, joint score should choose among them. That needs the near-optimal plans themselves,
exactly and in order: not a heuristic neighbourhood of the optimum.

How (Lawler's k-best scheme as Murty applied it to assignment; here on top of any exact
backend of `solvers`, unchanged): every subproblem is the original `Problem` with some units
(tied groups, or single layers) *fixed* to one option and some options *forbidden* (their loss
set to ``np.inf``, the same mechanism the allocator already uses for options a layer may not
take). After a subproblem's optimum ``x`` is emitted, the rest of that subproblem's plans are
split into disjoint children: child ``i`` fixes free units ``u_1 .. u_{i-1}`` to ``x``'s options
and forbids ``x``'s option on unit ``u_i``. Every plan other than ``x`` lies in exactly one child,
so solving each child exactly and always emitting the best pending optimum yields plans in
non-decreasing objective, each once. Tied groups are units: fixing or forbidding an option acts
on all members at once, so every plan keeps its ties.

What is proven, given an exact backend (each sub-solve is checked to report "optimal"): the
returned list is the k best plans (ties in objective broken arbitrarily but consistently), and
with ``gap`` and ``complete=True`` it is *every* feasible plan whose objective is within the
gap. Cost: one exact solve per child, at most (free units) children per emitted plan.
"""
from __future__ import annotations

import heapq
import itertools
import warnings
from dataclasses import dataclass

import numpy as np

from solvers import InfeasibleError, Problem, Solution, solve_problem

__all__ = ["KBest", "k_best", "units_of"]

# relative slack when comparing an objective with the gap's threshold (float sums of losses)
_GAP_RTOL = 1e-12


@dataclass(frozen=True)
class KBest:
    """Plans of one problem in non-decreasing objective.

    Attributes:
        solutions: the plans found, best first; ``solutions[0]`` is the proven optimum.
        threshold: objective limit of a gap enumeration (None without a gap).
        complete: True when the enumeration proved that no further plan exists (within the
            gap, if one was given); False when ``k`` or ``max_plans`` stopped it first.
        solves: exact sub-solves run (a measure of the cost).
    """

    solutions: list[Solution]
    threshold: float | None
    complete: bool
    solves: int

    @property
    def choices(self) -> list[np.ndarray]:
        return [s.choice for s in self.solutions]

    @property
    def objectives(self) -> list[float]:
        return [s.objective for s in self.solutions]


def units_of(problem: Problem) -> list[np.ndarray]:
    """Tied groups plus every untied layer on its own: the units that choose one option."""
    tied = {layer for group in problem.tied for layer in group}
    units = [np.array(sorted(group), dtype=np.int64) for group in problem.tied]
    units += [np.array([layer], dtype=np.int64) for layer in range(problem.n_layers) if layer not in tied]
    units.sort(key=lambda members: int(members[0]))
    return units


def _with_loss(problem: Problem, loss: np.ndarray) -> Problem:
    return Problem(loss=loss, costs=problem.costs, limits=problem.limits, tied=problem.tied)


def _solve_exact(problem: Problem, loss: np.ndarray, solver: str) -> Solution | None:
    """Optimum of the subproblem with ``loss``; None when it has no feasible plan."""
    if np.isinf(loss).all(axis=1).any():
        return None
    try:
        with warnings.catch_warnings():  # a fixed subproblem often leaves a limit slack: expected
            warnings.simplefilter("ignore", UserWarning)
            sol = solve_problem(_with_loss(problem, loss), solver=solver)
    except InfeasibleError:
        return None
    if sol.status != "optimal":
        raise RuntimeError(f"solver {solver!r} returned status {sol.status!r}; k-best needs an exact backend "
                           "that proves each sub-solve optimal (e.g. 'exact', 'scipy', 'pulp')")
    return sol  # its objective is the original one: a child only turns losses into +inf


def _children(loss: np.ndarray, choice: np.ndarray, units: list[np.ndarray]):
    """Loss tables of the children partitioning a subproblem's plans minus ``choice``."""
    fixed = loss.copy()
    for members in units:
        option = int(choice[members[0]])
        free = np.isfinite(fixed[members]).all(axis=0)
        if free.sum() > 1:
            child = fixed.copy()
            child[members, option] = np.inf
            yield child
        keep = fixed[members, option].copy()
        fixed[members] = np.inf
        fixed[members, option] = keep


def _check_args(k: int | None, gap: float | None, max_plans: int) -> None:
    if k is None and gap is None:
        raise ValueError("k_best needs k (how many plans) or gap (every plan within it), or both")
    if k is not None and (isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1):
        raise ValueError(f"k must be a positive integer, got {k!r}")
    if gap is not None and (isinstance(gap, bool) or not isinstance(gap, (int, float)) or not 0 <= gap < np.inf):
        raise ValueError(f"gap must be a finite number >= 0 (relative to the optimum), got {gap!r}")
    if isinstance(max_plans, bool) or not isinstance(max_plans, (int, np.integer)) or max_plans < 1:
        raise ValueError(f"max_plans must be a positive integer, got {max_plans!r}")


def k_best(problem: Problem, k: int | None = None, gap: float | None = None, solver: str = "auto",
           max_plans: int = 10_000) -> KBest:
    """The ``k`` best distinct feasible plans of ``problem``, or all within ``gap``, best first.

    Args:
        problem: a `solvers.Problem` (ties, forbidden options and limits respected).
        k: stop after this many plans (None: no count limit, ``gap`` must be given).
        gap: relative gap: only plans with objective <= optimum + gap * |optimum| are listed,
            and all of them unless ``k`` or ``max_plans`` stops the enumeration first.
        solver: an exact backend ("auto" is the exact one).
        max_plans: safety cap on a gap enumeration (a generous gap can admit astronomically
            many plans); reaching it returns ``complete=False``.

    Raises:
        InfeasibleError: the problem itself has no feasible plan.
        ValueError: bad k / gap / max_plans.
        RuntimeError: the backend did not prove a sub-solve optimal.
    """
    _check_args(k, gap, max_plans)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        best = solve_problem(problem, solver=solver)  # raises InfeasibleError for the user
    if best.status != "optimal":
        raise RuntimeError(f"solver {solver!r} did not prove the optimum; k-best needs an exact backend")
    threshold = None if gap is None else best.objective + gap * abs(best.objective)
    limit = min(k if k is not None else max_plans, max_plans)
    units = units_of(problem)
    order = itertools.count()
    heap: list[tuple[float, int, Solution, np.ndarray]] = [(best.objective, next(order), best, np.array(problem.loss))]
    found: list[Solution] = []
    solves, complete = 1, False
    while True:
        if not heap or (threshold is not None and heap[0][0] > threshold + _GAP_RTOL * max(abs(threshold), 1.0)):
            complete = True  # nothing further qualifies: the list is every plan (within the gap)
            break
        _, _, sol, loss = heapq.heappop(heap)
        found.append(sol)
        if len(found) == limit:  # its children are not needed
            break
        for child in _children(loss, sol.choice, units):
            solves += 1
            child_sol = _solve_exact(problem, child, solver)
            if child_sol is not None:
                heapq.heappush(heap, (child_sol.objective, next(order), child_sol, child))
    return KBest(found, threshold, bool(complete), solves)
