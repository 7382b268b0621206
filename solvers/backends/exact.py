"""Backend "exact": the library's own multiple-choice knapsack solver (`solvers.exact`). Exact.

Torch-free and MIP-solver-free: an LP relaxation by column generation (HiGHS for the small
master LPs), reduced-cost fixing against a rounded-and-repaired incumbent, then a bounded,
dominance-pruned search whose bounds keep one resource as an exact knapsack (1-D Pareto fronts)
and price the others with the LP multipliers. One limit skips HiGHS: the hull LP by bisection,
a greedy incumbent, fixing, and a Pareto merge of the free layers pruned against the incumbent.
It proves optimality (objective within 1e-10 relative of its bound) and infeasibility (a Farkas certificate of the LP, or an exhausted search),
and under a time limit returns its best plan with a proven bound.
"""
from __future__ import annotations

import numpy as np

from ..errors import SolverTimeoutError
from ..exact import solve_arrays
from ..prepare import PreparedProblem
from .base import BackendResult

EXACT = True


def available() -> bool:
    try:
        import highspy  # noqa: F401
    except ImportError:
        return False
    return True


def solve(problem: PreparedProblem, time_limit: float | None) -> BackendResult:
    result = solve_arrays(problem.loss, problem.costs, problem.limits, time_limit)
    if result.status == "infeasible":
        return BackendResult(None, "infeasible")
    if result.status == "timeout":
        raise SolverTimeoutError(
            f"exact solver reached its time limit ({time_limit} s) before finding any plan "
            f"(proven lower bound {result.bound:.10g}); allow more time", time_limit, float(result.bound)
        )
    return BackendResult(np.asarray(result.choice, dtype=np.int64), result.status, float(result.bound))
