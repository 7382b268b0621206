"""`frontier`: plans along the loss-versus-budget trade-off of a profile.

Two ways to ask:

* ``frontier(profile, [2.5, 3, 3.5])``: one `solve` per budget, in the order given. Good for a
  few chosen budgets, with any backend.
* ``frontier(profile, resource="avg_bits")``: the whole exact trade-off for one resource, one
  plan per breakpoint, by increasing cost. The optimum as a function of the limit on a resource
  is a step function; its steps are the plans no other plan beats in both that resource and
  loss (`solvers.frontier.exact_frontier`). Plan i is optimal for every limit in
  [cost_i, cost_{i+1}), so nothing between two points is missed, and a caller can read the
  exact optimum for any limit from the list (the last plan whose cost fits). ``hold`` keeps
  other limits fixed along the sweep (e.g. sweep average bits under BOPs <= uniform W4A4).

A step's budget is written in the user's units (``plan.budget``, e.g. ``"avg_bits=3.25,
bops_of=W4A4"``), so ``solve(profile, plan.budget)`` reproduces the step's optimum.
"""
from __future__ import annotations

import numbers
import warnings
from dataclasses import replace
from typing import Iterable, Mapping

import numpy as np

from solvers import InfeasibleError, NonBindingLimitWarning, Solution
from solvers.frontier import exact_frontier

from .budget import Budget
from .errors import BudgetError
from .objective import DEFAULT_ALPHA, Objective
from .options import build_options
from .plan import Plan
from .profile import Profile
from .solving import Posed, check_solver_name, decode, joint_infeasibility, pose, solve_posed, usage_range

__all__ = ["frontier", "sweepable_resources", "FRONTIER_SOLVER"]

# `Plan.solver` of a plan read off the exact frontier
FRONTIER_SOLVER = "exact-frontier"
_BUILTIN_RESOURCES = ("avg_bits", "size_mb", "bops")

BudgetLike = Budget | float | str | Mapping


def sweepable_resources(profile: Profile) -> list[str]:
    """Resources `frontier` can sweep for ``profile``: the built-in ones and its cost tables."""
    return [*_BUILTIN_RESOURCES, *sorted(profile.cost_tables)]


def frontier(profile: Profile, budgets: Iterable[BudgetLike] | None = None, *, solver: str = "auto",
             objective: Objective = "mixqvit", alpha: float = DEFAULT_ALPHA, tie_wa: bool = False,
             pinned: Mapping[str, int | None] | None = None, time_limit: float | None = None,
             resource: str | None = None, hold: BudgetLike | None = None) -> list[Plan]:
    """Plans along the trade-off: one per given budget, or one per breakpoint of the exact frontier.

    Args:
        profile: per-layer measurements.
        budgets: budgets to solve one by one (as `solve` reads them), in the order given; an
            infeasible one raises `BudgetInfeasibleError` naming it. Leave out to sweep ``resource``.
        solver: backend for ``budgets``; the exact frontier takes "auto" or "exact" only.
        objective, alpha, tie_wa, pinned: as for `solve`.
        time_limit: seconds per solve (for the exact frontier with ``hold``: per solve of the
            sweep, which raises `SolverTimeoutError` on expiry rather than return an unproven step).
        resource: "avg_bits", "size_mb", "bops" or a name in ``profile.cost_tables``: return the
            plan at every breakpoint of the exact optimum-versus-limit curve of that resource.
        hold: a budget (or anything `Budget.parse` reads) whose limits hold at every breakpoint;
            it must not limit ``resource`` itself.

    Returns:
        With ``budgets``: one plan per budget. With ``resource``: every breakpoint by increasing
        cost and strictly decreasing objective; each plan has status "optimal", solver
        "exact-frontier", ``budget`` = the hold plus ``resource`` at the plan's own total (user
        units), and ``solve_time_s`` = the frontier's time divided by its number of points.

    Raises:
        ValueError: both or neither of ``budgets`` and ``resource``; ``hold`` without ``resource``.
        BudgetError: unknown ``resource`` (the message lists the valid ones), or a bad ``hold``.
        BudgetInfeasibleError: a budget, or the held limits, admit no plan.
        UnknownSolverError: unknown ``solver``.
    """
    check_solver_name(solver)
    if budgets is not None:
        if resource is not None or hold is not None:
            raise ValueError(
                "frontier: give either budgets (one plan per budget) or resource=... with an optional "
                f"hold (every breakpoint), not both; got budgets and resource={resource!r}, hold={hold!r}"
            )
        if isinstance(budgets, (str, Budget, Mapping, numbers.Real)):
            raise TypeError(
                f"frontier: budgets must be a list of budgets, got the single budget {budgets!r}; "
                "use [budget] or solve(profile, budget)"
            )
        with warnings.catch_warnings():
            # a sweep commonly runs past the largest useful budget; do not warn once per point
            warnings.simplefilter("ignore", NonBindingLimitWarning)
            options = dict(objective=objective, alpha=alpha, tie_wa=tie_wa, pinned=pinned)
            return [solve_posed(pose(profile, b, **options), solver, time_limit) for b in budgets]
    if resource is None:
        raise ValueError(
            "frontier: give budgets (e.g. frontier(profile, [3, 4])) or a resource to sweep "
            f"(e.g. frontier(profile, resource='avg_bits')); resources of this profile: {sweepable_resources(profile)}"
        )
    if solver not in ("auto", "exact"):
        raise ValueError(
            f"frontier: the exact frontier is computed by the exact backend; solver must be 'auto' or "
            f"'exact', got {solver!r} (pass budgets to use another backend per budget)"
        )
    return _exact_frontier(profile, resource, hold, objective, alpha, tie_wa, pinned, time_limit)


def _exact_frontier(profile: Profile, resource: str, hold: BudgetLike | None, objective: Objective,
                    alpha: float, tie_wa: bool, pinned: Mapping[str, int | None] | None,
                    time_limit: float | None) -> list[Plan]:
    valid = sweepable_resources(profile)
    if not isinstance(resource, str) or resource not in valid:
        raise BudgetError(
            f"frontier: cannot sweep resource {resource!r}; valid resources for this profile are {valid} "
            "(built-in ones, then the names in Profile.cost_tables)"
        )
    held = None if hold is None else Budget.parse(hold)
    if held is not None and resource in held.limits:
        raise BudgetError(
            f"frontier: hold {held} limits {resource!r}, the resource being swept; drop it from hold "
            "(the sweep covers every limit on it)"
        )
    posed = _pose_sweep(profile, resource, held, objective, alpha, tie_wa, pinned)
    swept = next(lim for lim in posed.limits if lim.key == resource)
    others = [lim for lim in posed.limits if lim.key != resource]
    try:
        front = exact_frontier(posed.problem, resource, time_limit=time_limit)
    except InfeasibleError as exc:  # the held limits are each reachable but not together
        raise joint_infeasibility(replace(posed, budget=held, limits=others), exc) from exc
    per_point = front.time_s / len(front)
    plans = []
    for cost, loss, choice in zip(front.costs, front.objectives, front.choices):
        point = replace(posed, budget=_step_budget(held, resource, swept.user(float(cost))),
                        limits=[*others, replace(swept, value=float(cost))])
        sol = Solution(choice=np.asarray(choice), objective=float(loss), status="optimal", bound=float(loss),
                       time_s=per_point, solver=FRONTIER_SOLVER, usage=posed.problem.usage_of(choice))
        plans.append(decode(point, sol))
    return plans


def _pose_sweep(profile: Profile, resource: str, held: Budget | None, objective: Objective, alpha: float,
                tie_wa: bool, pinned: Mapping[str, int | None] | None) -> Posed:
    """`pose` with the held limits plus ``resource`` limited at its largest total.

    The swept limit's value is irrelevant (`exact_frontier` ignores it); its largest total is
    always feasible, so only the held limits can make `pose` raise, and its "does not bind"
    warning is silenced.
    """
    grid = build_options(profile, tie_wa=tie_wa, pinned=pinned)
    (lim,), costs = Budget(**{resource: 1.0}).resolve(profile, grid)
    _, hi = usage_range(costs[resource], grid.allowed, grid.tied)
    loosest = max(lim.user(hi), 1.0)
    budget = _with_limit(held, resource, loosest)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", NonBindingLimitWarning)
        posed = pose(profile, budget, objective=objective, alpha=alpha, tie_wa=tie_wa, pinned=pinned)
    for w in caught:  # pass on every warning but the swept limit's own "does not bind"
        if not (issubclass(w.category, NonBindingLimitWarning) and w.message.limit == resource):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return posed


def _with_limit(held: Budget | None, resource: str, value: float) -> Budget:
    if held is None:
        return Budget(**{resource: value})
    return Budget(**held.limits, **{resource: value}, bops_of=held.bops_of)


def _step_budget(held: Budget | None, resource: str, value: float) -> Budget:
    """The budget of a step: the hold plus ``resource`` at the step's total.

    A budget limit must be positive, so a step of zero total (possible with a cost table that
    has zeros) is given the smallest positive float, which admits the same plans (no total lies
    strictly between the two unless the table holds subnormal numbers).
    """
    return _with_limit(held, resource, max(value, float(np.nextafter(0.0, 1.0))))
