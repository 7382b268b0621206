"""The PuLP model of a `MilpForm`, shared by the "pulp" (CBC) and "pulp-highs" adapters.

Each adapter only supplies how to run its solver on the model and, if its solver reports one,
how to read the proven bound; building the model and reading the answer happen here once.
"""
from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from ..errors import SolverError, SolverTimeoutError
from ..prepare import PreparedProblem
from .base import BackendResult
from .milp import MilpForm, build_milp_form

try:
    import pulp
except ImportError:  # the adapters report themselves unavailable
    pulp = None

__all__ = ["pulp", "solve_with_pulp"]


def _build(form: MilpForm) -> tuple["pulp.LpProblem", list["pulp.LpVariable"]]:
    model = pulp.LpProblem("multiple_choice_knapsack", pulp.LpMinimize)
    if hasattr(model, "add_variable"):  # PuLP >= 3: variables belong to their model
        x = [model.add_variable(f"x{i}", cat=pulp.LpBinary) for i in range(form.n_vars)]
    else:
        x = [pulp.LpVariable(f"x{i}", cat=pulp.LpBinary) for i in range(form.n_vars)]
    model += pulp.LpAffineExpression(zip(x, form.c.tolist()))
    members: list[list[int]] = [[] for _ in range(form.n_groups)]
    for i, g in enumerate(form.group.tolist()):
        members[g].append(i)
    for g, indices in enumerate(members):
        model += pulp.LpAffineExpression([(x[i], 1.0) for i in indices]) == 1, f"one_option_{g}"
    for r, (row, limit) in enumerate(zip(form.A, form.b)):
        nonzero = np.flatnonzero(row)
        model += pulp.LpAffineExpression([(x[i], float(row[i])) for i in nonzero]) <= float(limit), f"limit_{r}"
    return model, x


def solve_with_pulp(
    problem: PreparedProblem,
    name: str,
    run: Callable[["pulp.LpProblem"], None],
    time_limit: float | None,
    read_bound: Callable[["pulp.LpProblem"], float | None] = lambda model: None,
) -> BackendResult:
    """Build the model, solve it with `run(model)`, and translate PuLP's statuses.

    `name` names the solver in messages; `read_bound(model)` returns the solver's proven bound in
    the (scaled) model units, or None.

    Under a time limit the *solution* status decides, not the model status: PuLP reports a CBC
    run stopped by its limit before any integer solution as "Not Solved" or even "Infeasible"
    (CBC's status line then reads "Infeasible" or "Integer infeasible" although nothing was
    proven). An infeasibility verdict is believed only when the solve ended before half its time
    limit (so the limit cannot have stopped it; CBC's clock starts after ours); otherwise no plan
    within the limit is a `SolverTimeoutError`.
    """
    form = build_milp_form(problem)
    model, x = _build(form)
    start = time.perf_counter()
    run(model)
    elapsed = time.perf_counter() - start
    if model.sol_status not in (pulp.LpSolutionOptimal, pulp.LpSolutionIntegerFeasible):
        said_infeasible = model.status == pulp.LpStatusInfeasible or model.sol_status == pulp.LpSolutionInfeasible
        if said_infeasible and (time_limit is None or elapsed < 0.5 * time_limit):
            return BackendResult(None, "infeasible")
        statuses = (f"PuLP status {pulp.LpStatus[model.status]}, "
                    f"solution status {pulp.LpSolution[model.sol_status]}")
        if time_limit is not None:
            raise SolverTimeoutError(
                f"{name} found no plan within the time limit of {time_limit:g} s ({statuses}); "
                "allow more time", time_limit)
        raise SolverError(f"{name} found no plan ({statuses})")
    values = np.array([var.varValue if var.varValue is not None else 0.0 for var in x])
    if model.sol_status == pulp.LpSolutionOptimal:
        return BackendResult(form.choice_from_x(values), "optimal")
    bound = read_bound(model)
    return BackendResult(form.choice_from_x(values), "feasible", None if bound is None else form.to_loss(bound))
