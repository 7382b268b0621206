"""Exceptions of the allocator package.

Every message says what was given, what was expected and, where there is one, how to fix it.
All are ``ValueError`` subclasses so that callers who only care about "bad input" can catch one
class; the more specific ones let tests and the CLI tell the cases apart.
"""
from __future__ import annotations

from solvers import InfeasibleError

__all__ = [
    "ProfileError",
    "BudgetError",
    "PlanError",
    "ObjectiveError",
    "UnknownSolverError",
    "BudgetInfeasibleError",
]


class ProfileError(ValueError):
    """A profile (in memory or on disk) is malformed; the message lists every defect found."""

    def __init__(self, defects: list[str] | str, source: str | None = None):
        self.defects = [defects] if isinstance(defects, str) else list(defects)
        where = f" in {source}" if source else ""
        if len(self.defects) == 1:
            msg = f"invalid profile{where}: {self.defects[0]}"
        else:
            lines = "\n".join(f"  - {d}" for d in self.defects)
            msg = f"invalid profile{where}: {len(self.defects)} defects:\n{lines}"
        super().__init__(msg)


class BudgetError(ValueError):
    """A budget cannot be understood or does not fit the profile it is applied to."""


class PlanError(ValueError):
    """A plan is malformed or does not match the profile it is used with."""


class ObjectiveError(ValueError):
    """An objective is unknown, or the profile lacks the tables the objective needs."""


class UnknownSolverError(ValueError):
    """A solver name that is neither "auto" nor one of ``solvers.available_solvers()``."""


class BudgetInfeasibleError(InfeasibleError):
    """No plan meets the budget: at least one limit is below the smallest achievable value.

    ``violations`` maps the budget's own names (``"avg_bits"``, ``"size_mb"``, ``"bops"``,
    ``"latency"``, ...) to ``(limit, smallest_achievable)`` in the user's units (bits, MB,
    BOPs, the cost table's unit), so a caller can retry with a feasible value. ``jointly`` is
    True when every limit is reachable alone but not all of them together.
    """

    def __init__(self, message: str, violations: dict[str, tuple[float, float]], jointly: bool = False):
        super().__init__(message, violations, jointly)
