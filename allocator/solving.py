"""`solve`: Profile + Budget -> multiple-choice knapsack (`solvers.Problem`) -> `Plan`.

The mapping is deterministic and documented in `allocator.options` (what the options are),
`allocator.objective` (the loss of each option) and `allocator.budget` (the limits). Before the
solver runs, every limit is checked against the smallest and largest total any plan can reach:
a limit below the smallest raises `BudgetInfeasibleError` naming it and the smallest feasible
value in the user's units; a limit that cannot bind gives a `NonBindingLimitWarning` (see
`_check_limits`).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Mapping

import numpy as np

from solvers import InfeasibleError, NonBindingLimitWarning, Problem, Solution, available_solvers, solve_problem

from .budget import Budget, Limit
from .errors import BudgetInfeasibleError, ObjectiveError, UnknownSolverError
from .objective import DEFAULT_ALPHA, Objective, check_alpha, loss_table
from .options import OptionGrid, build_options
from .plan import Plan, recorded_quantizer
from .profile import Profile

__all__ = ["solve", "solve_posed", "pose", "Posed", "decode", "joint_infeasibility", "check_solver_name", "usage_range"]

# Relative slack when judging whether a plan meets a limit (MIP feasibility tolerances).
_RTOL = 1e-9


@dataclass(frozen=True)
class Posed:
    """A profile and budget turned into a solver problem, with what is needed to decode it."""

    profile: Profile
    budget: Budget
    grid: OptionGrid
    limits: list[Limit]
    problem: Problem
    objective_name: str


def check_solver_name(solver: str) -> str:
    """Return ``solver`` if it is "auto" or an available backend, else raise UnknownSolverError."""
    names = available_solvers()
    if solver != "auto" and solver not in names:
        raise UnknownSolverError(f"unknown solver {solver!r}; available: {['auto', *names]}")
    return solver


def _units(n_layers: int, tied: list[list[int]]) -> list[list[int]]:
    """Tied groups plus every untied layer on its own: the units that choose an option."""
    in_group = {i for g in tied for i in g}
    return [list(g) for g in tied] + [[i] for i in range(n_layers) if i not in in_group]


def usage_range(cost: np.ndarray, allowed: np.ndarray, tied: list[list[int]]) -> tuple[float, float]:
    """Smallest and largest total of ``cost`` over all plans (options allowed, ties kept)."""
    lo = hi = 0.0
    for unit in _units(cost.shape[0], tied):
        ok = allowed[unit[0]]
        total = cost[unit].sum(axis=0)[ok]
        lo += float(total.min())
        hi += float(total.max())
    return lo, hi


def lowest_loss_usage(cost: np.ndarray, loss: np.ndarray, tied: list[list[int]]) -> float:
    """Total of ``cost`` when every unit takes its lowest-loss option (cheapest among equals)."""
    total = 0.0
    for unit in _units(cost.shape[0], tied):
        unit_loss = loss[unit].sum(axis=0)
        best = unit_loss == unit_loss.min()
        total += float(cost[unit].sum(axis=0)[best].min())
    return total


def pose(profile: Profile, budget: Budget | float | str | Mapping, *, objective: Objective = "mixqvit",
         alpha: float = DEFAULT_ALPHA, tie_wa: bool = False, pinned: Mapping[str, int | None] | None = None) -> Posed:
    """Build the solver problem for ``profile`` under ``budget`` (checks limits; may warn/raise)."""
    if not isinstance(profile, Profile):
        raise TypeError(f"profile must be an allocator.Profile, got {type(profile).__name__}")
    check_alpha(alpha)
    budget = Budget.parse(budget)
    grid = build_options(profile, tie_wa=tie_wa, pinned=pinned)
    loss = loss_table(profile, grid.w_bits, grid.a_bits, objective, alpha).copy()
    for l in grid.pins:  # pinned outside the measured bits: constant loss, taken as 0
        loss[l] = np.where(np.isnan(loss[l]), 0.0, loss[l])
    if np.isnan(loss[grid.allowed]).any():  # only a table without a column for allowed bits could do this
        raise ObjectiveError("the objective has no value for some allowed option (NaN); check the profile's tables")
    loss[~grid.allowed] = np.inf
    limits, costs = budget.resolve(profile, grid)
    _check_limits(limits, costs, grid, budget, loss)
    problem = Problem(loss=loss, costs=costs, limits={lim.key: lim.value for lim in limits}, tied=grid.tied)
    name = objective if isinstance(objective, str) else getattr(objective, "__name__", "custom")
    if name == "mixqvit" and profile.importance is None:
        name = "sensitivity"
    return Posed(profile, budget, grid, limits, problem, name)


def _check_limits(limits: list[Limit], costs: dict[str, np.ndarray], grid: OptionGrid, budget: Budget,
                  loss: np.ndarray) -> None:
    """Raise for limits below any plan's total; warn for limits that cannot bind.

    A limit warns when no plan exceeds it, or when the lowest-loss plan meets every limit (then
    none binds). A limit the lowest-loss plan meets while another limit forces a change may still
    bind, and may be part of a joint infeasibility, so it does not warn.
    """
    below: dict[str, tuple[float, float]] = {}
    texts, never, free = [], [], {}
    for lim in limits:
        lo, hi = usage_range(costs[lim.key], grid.allowed, grid.tied)
        if lo > lim.value * (1 + _RTOL):
            below[lim.key] = (lim.user(lim.value), lim.user(lo))
            texts.append(f"{lim.key} ({lim.description}) <= {lim.text(lim.value)} is below the smallest "
                         f"achievable {lim.text(lo)}")
        elif hi <= lim.value:
            never.append((lim.key, f"{lim.key} ({lim.description}) <= {lim.text(lim.value)} does not bind; "
                         f"the largest possible is {lim.text(hi)}"))
        else:
            free[lim.key] = lowest_loss_usage(costs[lim.key], loss, grid.tied)
    if below:
        raise BudgetInfeasibleError(
            f"budget {budget} is infeasible: " + "; ".join(texts)
            + ". Pinned layers count at their fixed bits; raise the limit(s) to at least the value(s) named.",
            below,
        )
    if all(free[lim.key] <= lim.value for lim in limits if lim.key in free):
        never += [(lim.key, f"{lim.key} ({lim.description}) <= {lim.text(lim.value)} does not bind; the "
                   f"lowest-loss plan already uses only {lim.text(free[lim.key])}") for lim in limits if lim.key in free]
    for key, text in never:
        warnings.warn(NonBindingLimitWarning(f"budget {budget}: {text}", key), stacklevel=4)


def decode(posed: Posed, sol: Solution) -> Plan:
    """The `Plan` of a solver's solution: bits per layer, totals, provenance, budget check."""
    profile, grid = posed.profile, posed.grid
    rows = np.arange(len(profile.layers))
    w = grid.w_bits[rows, sol.choice]
    a = grid.a_bits[rows, sol.choice]
    plan = Plan(
        layer_info=list(profile.layers),
        w_bits={layer.name: int(w[i]) for i, layer in enumerate(profile.layers)},
        a_bits={layer.name: int(a[i]) for i, layer in enumerate(profile.layers)},
        objective=float(sol.objective), bound=float(sol.bound), objective_name=posed.objective_name,
        solver=sol.solver, status=sol.status, solve_time_s=float(sol.time_s), budget=str(posed.budget),
        pinned=[profile.layers[i].name for i in sorted(grid.pins)], measured_with=recorded_quantizer(profile),
    )
    plan.costs = plan.custom_costs(profile)
    usage = posed.problem.usage_of(sol.choice)
    plan.budget_satisfied = all(usage[lim.key] <= lim.value * (1 + _RTOL) for lim in posed.limits)
    return plan


def joint_infeasibility(posed: Posed, exc: InfeasibleError) -> BudgetInfeasibleError:
    """Restate a solver's "not all limits together" error in the budget's names and user units.

    Only limits listed in ``posed.limits`` are named, so a caller can leave out a limit that is
    not the user's (e.g. the swept resource of a frontier).
    """
    by_key = {lim.key: lim for lim in posed.limits}
    violations = {k: (by_key[k].user(lim), by_key[k].user(lo)) for k, (lim, lo) in exc.violations.items()
                  if k in by_key}
    parts = [f"{k} <= {by_key[k].text(by_key[k].value)} (smallest achievable alone "
             f"{by_key[k].text(by_key[k].scale * v[1])})" for k, v in violations.items()]
    return BudgetInfeasibleError(
        f"budget {posed.budget} is infeasible: every limit is reachable alone but not all together: "
        + "; ".join(parts) + ". Relax at least one of them.",
        violations, jointly=True,
    )


def solve_posed(posed: Posed, solver: str, time_limit: float | None) -> Plan:
    """Run ``solver`` on a posed problem; a joint infeasibility is restated in the budget's terms."""
    try:
        with warnings.catch_warnings():
            # `pose` already warned about non-binding limits, in the user's units
            warnings.simplefilter("ignore", NonBindingLimitWarning)
            sol = solve_problem(posed.problem, solver=solver, time_limit=time_limit)
    except InfeasibleError as exc:
        if isinstance(exc, BudgetInfeasibleError):
            raise
        raise joint_infeasibility(posed, exc) from exc
    return decode(posed, sol)


def solve(profile: Profile, budget: Budget | float | str | Mapping, *, solver: str = "auto",
          objective: Objective = "mixqvit", alpha: float = DEFAULT_ALPHA, tie_wa: bool = False,
          pinned: Mapping[str, int | None] | None = None, time_limit: float | None = None) -> Plan:
    """Choose bits per layer minimising the objective under the budget.

    Args:
        profile: per-layer measurements (`Profile`).
        budget: a `Budget`, a number (3.0: average weight bits <= 3 and, with activation choices,
            BOPs <= uniform W3A3), a string ("W4A8", "avg_bits=3,size_mb=1.2") or a dict.
        solver: "auto" or a name from `solvers.available_solvers()`.
        objective: "mixqvit" (default), "sensitivity", "importance" or a callable (see
            `allocator.objective`).
        alpha: importance weight of the "mixqvit" objective, in [0, 1].
        tie_wa: force w_bits == a_bits per layer (K = len(bits) options instead of len(bits)**2).
        pinned: layer name -> bits, added to (and overriding) ``LayerInfo.fixed_bits``; a value
            of None frees a layer the profile pins.
        time_limit: seconds for the backend; on expiry the best plan found is returned with
            status "feasible" and its proven bound.

    Returns:
        A `Plan`; the same inputs and solver give the same plan.

    Raises:
        BudgetInfeasibleError: a limit is below what any plan reaches (names it and the minimum).
        UnknownSolverError, BudgetError, ObjectiveError, ValueError: bad arguments.
    """
    check_solver_name(solver)
    posed = pose(profile, budget, objective=objective, alpha=alpha, tie_wa=tie_wa, pinned=pinned)
    return solve_posed(posed, solver, time_limit)
