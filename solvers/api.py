"""`solve_problem`: validate, preprocess, dispatch to a backend, check and expand its answer.

Everything that is the same for every backend happens here once: the solver name and time limit
are checked, the problem is prepared (`solvers.prepare`), the backend's group choice is expanded
to layers, its objective and usage are recomputed from the original tables, the plan is checked
against every limit, tie and forbidden option, and a bound is filled in.
"""
from __future__ import annotations

import time
import warnings

from .backends import REGISTRY, is_available, is_exact, load_backend
from .backends.milp import lp_relaxation_bound
from .errors import InfeasibleError, NonBindingLimitWarning, SolverError, SolverTimeoutError
from .prepare import prepare
from .problem import Problem, Solution
from .validation import time_limit_iv

__all__ = ["AUTO_SOLVER", "available_solvers", "solve_problem"]

# The backend "auto" means. On `python -m benchmarks.solvers --quick` (benchmarks/results/solvers.json)
# "exact" proved every case optimal and was the fastest exact backend on every one: 3-10x faster
# than scipy/HiGHS on synthetic problems, 30x on HAWQ-V3, 7x on LIMPQ, and it needs no MIP solver.
AUTO_SOLVER = "exact"


def available_solvers() -> list[str]:
    """Names of the backends installed and usable here, exact ones first."""
    return [name for name in REGISTRY if is_available(name)]


def _resolve(solver: str) -> str:
    if not isinstance(solver, str):
        raise TypeError(f"solver: expected a backend name (str), got {type(solver).__name__}")
    name = AUTO_SOLVER if solver == "auto" else solver
    if name not in REGISTRY or not is_available(name):
        available = available_solvers()
        why = "is not installed or not usable here" if name in REGISTRY else "is not a known solver"
        raise ValueError(f"solver {solver!r} {why}; available: {['auto', *available]}")
    return name


def solve_problem(problem: Problem, solver: str = "auto", time_limit: float | None = None) -> Solution:
    """Solve a multiple-choice knapsack `Problem` with the named backend.

    Args:
        problem: a validated `Problem`.
        solver: "auto" (the backend named by `AUTO_SOLVER`) or one of `available_solvers()`.
        time_limit: seconds for the whole call (preprocessing included), or None. A backend
            stopped by it returns status "feasible" with its proven bound, or raises
            `SolverTimeoutError` when it has no plan yet.

    Warns:
        NonBindingLimitWarning: a limit does not bind (see `solvers.prepare`), once a plan is found.

    Raises:
        InfeasibleError: no plan meets the limits (proven).
        GreedyFailedError: the greedy heuristic gave up with several limits (not a proof).
        SolverTimeoutError: the time limit passed before the backend found any plan (a
            `SolverError`, not an `InfeasibleError`: the problem may be feasible).
        SolverError: a backend failed.
        ValueError: unknown solver or bad time limit.
    """
    start = time.perf_counter()
    if not isinstance(problem, Problem):
        raise TypeError(f"problem: expected a solvers.Problem, got {type(problem).__name__}")
    name = _resolve(solver)
    time_limit = time_limit_iv(time_limit)
    prepared = prepare(problem)
    left = None if time_limit is None else time_limit - (time.perf_counter() - start)  # preprocessing counts
    if left is not None and left <= 0:
        raise SolverTimeoutError(
            f"the time limit of {time_limit:g} s passed during preprocessing, before backend {name!r} "
            "started; allow more time", time_limit)
    try:
        result = load_backend(name).solve(prepared, left)
    except SolverTimeoutError as exc:  # restated with the caller's limit (the backend saw what was left)
        raise SolverTimeoutError(f"backend {name!r}, time limit {time_limit:g} s: {exc}", time_limit, exc.bound) from exc

    if result.status == "infeasible":
        if not is_exact(name):
            raise SolverError(f"backend {name!r} is not exact and may not declare a problem infeasible")
        raise InfeasibleError.not_together(prepared.alone_minima)
    if result.status not in ("optimal", "feasible") or result.choice is None:
        raise SolverError(f"backend {name!r} returned status {result.status!r} without a plan")

    choice = prepared.expand(result.choice)
    broken = problem.violations_of(choice)
    if broken:
        raise SolverError(f"backend {name!r} returned a plan that breaks the problem: " + "; ".join(broken))
    objective = problem.objective_of(choice)
    if result.status == "optimal":
        bound = objective
    else:  # backends bound the shifted losses (`solvers.prepare`): back to the caller's units
        bound = result.bound if result.bound is not None else lp_relaxation_bound(prepared)
        bound = min(bound + prepared.offset, objective)
    choice.setflags(write=False)
    for limit, note in prepared.non_binding:  # only now: no warning precedes an infeasibility report
        warnings.warn(NonBindingLimitWarning(note, limit), stacklevel=2)
    return Solution(
        choice=choice,
        objective=objective,
        status=result.status,
        bound=float(bound),
        time_s=time.perf_counter() - start,
        solver=name,
        usage=problem.usage_of(choice),
    )
