"""Exceptions of the `solvers` package, in one place.

`InfeasibleError` is a `ValueError` because an infeasible problem is a defect of the input (the
limits ask for something no plan can give); `SolverError` is a `RuntimeError` because it reports
a failure of the machinery (a backend crashed, ran out of time before finding any plan:
`SolverTimeoutError`, or a heuristic gave up: `GreedyFailedError`) on an input that may well be
fine. `NonBindingLimitWarning` is the one warning of the package.
"""
from __future__ import annotations

from collections.abc import Mapping

__all__ = ["InfeasibleError", "SolverError", "GreedyFailedError", "SolverTimeoutError", "NonBindingLimitWarning"]


def _limits(pairs: Mapping[str, tuple[float, float]], relation: str) -> str:
    """``"size: limit 3 < smallest achievable 4; bops: ..."`` (``relation`` joins limit and minimum)."""
    sep = "" if relation.startswith(",") else " "
    return "; ".join(f"{name}: limit {_fmt(limit)}{sep}{relation} {_fmt(minimum)}" for name, (limit, minimum) in pairs.items())


def _fmt(value: float) -> str:
    return f"{value:.10g}"


class InfeasibleError(ValueError):
    """No plan satisfies the limits.

    Attributes:
        violations: resource name -> (limit asked, smallest achievable total). When a single limit
            is below what any plan can reach, only those resources are listed (computed exactly
            from per-layer minima). When every limit is reachable alone but not all together,
            every limited resource is listed with the smallest total it reaches alone.
        jointly: True in the second case ("reachable alone but not together").
    """

    def __init__(self, message: str, violations: Mapping[str, tuple[float, float]], jointly: bool = False):
        super().__init__(message)
        self.violations: dict[str, tuple[float, float]] = dict(violations)
        self.jointly = jointly

    @classmethod
    def below_minimum(cls, violations: Mapping[str, tuple[float, float]]) -> "InfeasibleError":
        """Build the error for limits that lie below the smallest total any plan can reach."""
        listed = _limits(violations, "< smallest achievable")
        return cls(f"infeasible limits: {listed}. Every plan uses at least the smallest achievable total of each "
                   "resource (each layer at its cheapest allowed option); raise these limits to at least those "
                   "values.", violations, jointly=False)

    @classmethod
    def not_together(cls, alone_minima: Mapping[str, tuple[float, float]]) -> "InfeasibleError":
        """Build the error for limits that are each reachable alone but not all at once."""
        listed = _limits(alone_minima, ", smallest achievable alone")
        return cls(f"infeasible limits: every limit is reachable alone but not all together ({listed}). The "
                   "options that are cheap in one resource are expensive in another; relax at least one of "
                   "these limits.", alone_minima, jointly=True)


class SolverError(RuntimeError):
    """A backend failed to produce a plan (not a statement about the problem's feasibility)."""


class SolverTimeoutError(SolverError):
    """The time limit passed before the backend found any plan.

    Not an `InfeasibleError`: the problem may well be feasible (more time would tell). Every
    backend raises this, and only this, when its time limit stops it empty-handed.

    Attributes:
        time_limit: the limit in seconds that was given.
        bound: a proven lower bound on the optimum when the backend has one, else None.
    """

    def __init__(self, message: str, time_limit: float | None = None, bound: float | None = None):
        super().__init__(message)
        self.time_limit = time_limit
        self.bound = bound


class NonBindingLimitWarning(UserWarning):
    """A limit that does not change the optimum (the user probably meant a tighter budget).

    Raised by `solvers.solve_problem` and `allocator.solve`; filter it by class
    (``warnings.simplefilter("ignore", NonBindingLimitWarning)``), not by its text.

    Attributes:
        limit: the name of the limit (a resource, or a budget key), or None.
    """

    def __init__(self, message: str, limit: str | None = None):
        super().__init__(message)
        self.limit = limit


class GreedyFailedError(SolverError):
    """The greedy heuristic found no plan satisfying several limits at once.

    This is not a proof of infeasibility: an exact backend may still find a plan.
    """
