"""Backend "scipy": `scipy.optimize.milp`, i.e. HiGHS's branch-and-cut through SciPy.

Always available (SciPy is a dependency). `mip_rel_gap` is set to 0; SciPy does not expose
HiGHS's absolute gap (1e-6), which the objective scaling of `solvers.backends.milp` makes
negligible.
"""
from __future__ import annotations

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp

from ..errors import SolverError, SolverTimeoutError
from ..prepare import PreparedProblem
from ..quiet import stdout_silenced
from .base import BackendResult
from .milp import build_milp_form

EXACT = True

# scipy.optimize.milp status codes
_OPTIMAL, _LIMIT, _INFEASIBLE = 0, 1, 2


def available() -> bool:
    return True


def solve(problem: PreparedProblem, time_limit: float | None) -> BackendResult:
    form = build_milp_form(problem)
    constraints = [LinearConstraint(form.one_per_group(), 1, 1)]
    if form.A.shape[0]:
        constraints.append(LinearConstraint(form.A, -np.inf, form.b))
    options: dict[str, float | bool] = {"mip_rel_gap": 0.0, "presolve": True}
    if time_limit is not None:
        options["time_limit"] = time_limit
    with stdout_silenced():  # HiGHS's C++ output
        result = milp(form.c, integrality=np.ones(form.n_vars), bounds=Bounds(0, 1), constraints=constraints,
                      options=options)
    if result.status == _INFEASIBLE:
        return BackendResult(None, "infeasible")
    if result.x is None:
        if result.status == _LIMIT and time_limit is not None:
            raise SolverTimeoutError(
                f"scipy.optimize.milp found no plan within the time limit of {time_limit:g} s "
                f"({result.message}); allow more time", time_limit)
        raise SolverError(f"scipy.optimize.milp found no plan (status {result.status}: {result.message})")
    bound = getattr(result, "mip_dual_bound", None)
    bound = None if bound is None or not np.isfinite(bound) else form.to_loss(bound)
    status = "optimal" if result.status == _OPTIMAL else "feasible"
    return BackendResult(form.choice_from_x(result.x), status, bound)
