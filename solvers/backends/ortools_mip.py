"""Backend "ortools": OR-Tools' linear-solver wrapper (pywraplp) driving SCIP.

Why a MIP solver and not CP-SAT: CP-SAT only accepts integer coefficients. The losses are
floats, so they would have to be scaled and rounded to integers, and the optimum of the rounded
problem need not be the optimum of the real one; exactness to 1e-9 would need huge scale
factors. SCIP (bundled with OR-Tools, as is CBC) takes float coefficients directly and proves
optimality to a gap we set to 0 (relative through MPSolverParameters, absolute through SCIP's
own `limits/absgap`). SCIP was chosen over the bundled CBC because the "pulp" backend already
covers CBC. One thread.

Numerics: the limit rows arrive scaled by `solvers.backends.milp` (each limit in [2**20, 2**21);
unscaled BOPs rows made SCIP prune the true optimum, see that module). SCIP's feasibility test is
relative (|activity - rhs| / max(1, |rhs|) <= feastol), so its default feastol of 1e-6 would
accept a plan breaking a limit by 1e-6 of it, which the dispatcher rejects (`FEASIBILITY_RTOL`);
the feasibility tolerance is therefore tightened to `FEASIBILITY_RTOL`.
"""
from __future__ import annotations

import math

import numpy as np

from ..errors import SolverError, SolverTimeoutError
from ..prepare import PreparedProblem
from ..problem import FEASIBILITY_RTOL
from .base import BackendResult
from .milp import build_milp_form

try:
    from ortools.linear_solver import pywraplp
except ImportError:  # reported through available()
    pywraplp = None

EXACT = True
_SOLVER_ID = "SCIP"


def available() -> bool:
    if pywraplp is None:
        return False
    try:
        return pywraplp.Solver.CreateSolver(_SOLVER_ID) is not None
    except Exception:  # a broken install must read as unavailable, not crash the registry
        return False


def solve(problem: PreparedProblem, time_limit: float | None) -> BackendResult:
    form = build_milp_form(problem)
    solver = pywraplp.Solver.CreateSolver(_SOLVER_ID)
    solver.SetNumThreads(1)
    settings = f"limits/gap = 0\nlimits/absgap = 0\nnumerics/feastol = {FEASIBILITY_RTOL:g}\n"
    if not solver.SetSolverSpecificParametersAsString(settings):
        raise SolverError(f"OR-Tools/{_SOLVER_ID} rejected the parameters {settings!r}")
    if time_limit is not None:
        solver.SetTimeLimit(max(1, int(math.ceil(time_limit * 1000))))
    x = [solver.BoolVar(f"x{i}") for i in range(form.n_vars)]
    rows = [solver.Constraint(1.0, 1.0) for _ in range(form.n_groups)]
    for var, g in zip(x, form.group.tolist()):
        rows[g].SetCoefficient(var, 1.0)
    for row, limit in zip(form.A, form.b):
        constraint = solver.Constraint(-solver.infinity(), float(limit))
        for i in np.flatnonzero(row).tolist():
            constraint.SetCoefficient(x[i], float(row[i]))
    objective = solver.Objective()
    for var, coefficient in zip(x, form.c.tolist()):
        objective.SetCoefficient(var, coefficient)
    objective.SetMinimization()

    params = pywraplp.MPSolverParameters()
    params.SetDoubleParam(pywraplp.MPSolverParameters.RELATIVE_MIP_GAP, 0.0)
    status = solver.Solve(params)
    if status == pywraplp.Solver.INFEASIBLE:
        return BackendResult(None, "infeasible")
    if status not in (pywraplp.Solver.OPTIMAL, pywraplp.Solver.FEASIBLE):
        if time_limit is not None and status == pywraplp.Solver.NOT_SOLVED:
            raise SolverTimeoutError(
                f"OR-Tools/{_SOLVER_ID} found no plan within the time limit of {time_limit:g} s; allow more time",
                time_limit)
        raise SolverError(f"OR-Tools/{_SOLVER_ID} found no plan (result status {status})")
    choice = form.choice_from_x(np.array([var.solution_value() for var in x]))
    if status == pywraplp.Solver.OPTIMAL:
        return BackendResult(choice, "optimal")
    bound = objective.BestBound()
    return BackendResult(choice, "feasible", form.to_loss(bound) if math.isfinite(bound) else None)
