"""Backend "pulp-highs": PuLP with HiGHS through its Python binding (highspy), in process.

Relative and absolute gap 0, one thread. The bound comes from HiGHS's `mip_dual_bound`.

HiGHS keeps one thread scheduler per process, sized by the first solve that runs; a later solve
asking for another thread count fails ("Option 'threads' is set to 1 but the scheduler has
already been initialized to use 2 threads") and PuLP reports "Not Solved". Other in-process
highspy users (the "exact" backend's LPs run with HiGHS's default thread count) size it first,
so each solve here resets the scheduler, which the next run then sizes from `threads=1`.
"""
from __future__ import annotations

import math

try:
    import highspy
except ImportError:  # pulp.HiGHS then reports itself unavailable
    highspy = None

from ..prepare import PreparedProblem
from ..quiet import stdout_silenced
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
    highspy.Highs.resetThreadScheduler(True)  # blocking: wait until the old workers have stopped
    solver = pulp.HiGHS(msg=False, timeLimit=time_limit, gapRel=0.0, gapAbs=0.0, threads=1)

    def run(model: "pulp.LpProblem") -> None:
        with stdout_silenced():  # HiGHS's banner and C++ output
            model.solve(solver)

    return solve_with_pulp(problem, "HiGHS", run, time_limit, _bound)
