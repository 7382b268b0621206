"""Backend "pulp-highs": PuLP with HiGHS through its Python binding (highspy), in process.

Relative and absolute gap 0, one thread. The bound comes from HiGHS's `mip_dual_bound`.
"""
from __future__ import annotations

import math

from ..prepare import PreparedProblem
from ._pulp_model import pulp, solve_with_pulp
from .base import BackendResult

EXACT = True


def available() -> bool:
    if pulp is None:
        return False
    try:
        return bool(pulp.HiGHS(msg=False).available())
    except Exception:  # a broken install must read as unavailable, not crash the registry
        return False


def _bound(model: "pulp.LpProblem") -> float | None:
    value = model.solverModel.getInfo().mip_dual_bound
    return value if math.isfinite(value) else None


def solve(problem: PreparedProblem, time_limit: float | None) -> BackendResult:
    solver = pulp.HiGHS(msg=False, timeLimit=time_limit, gapRel=0.0, gapAbs=0.0, threads=1)
    return solve_with_pulp(problem, solver, _bound)
