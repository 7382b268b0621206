"""Backend "pulp": PuLP with CBC run as a command-line subprocess.

CBC comes from a system install when there is one (`COIN_CMD`: a `cbc` on PATH, e.g. Debian's
`coinor-cbc` or `pip install pulp[cbc]`), otherwise from the binary bundled with PuLP
(`PULP_CBC_CMD`, deprecated by PuLP 3 and to be removed in PuLP 4; its deprecation warning is
silenced here because the fallback is deliberate). One thread, relative and absolute gap 0.
PuLP's command-line interface does not report CBC's bound when a time limit stops it, so the
dispatcher falls back to the LP relaxation bound then.
"""
from __future__ import annotations

import warnings
from typing import Any

from ..prepare import PreparedProblem
from ._pulp_model import pulp, solve_with_pulp
from .base import BackendResult

EXACT = True


def _cbc(**options: Any) -> "pulp.LpSolver | None":
    """The first working CBC: system COIN_CMD, then PuLP's bundled binary; None if neither runs."""
    try:
        system = pulp.COIN_CMD(**options)
        if system.available():
            return system
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            bundled = pulp.PULP_CBC_CMD(**options)
        return bundled if bundled.available() else None
    except Exception:  # a broken install must read as unavailable, not crash the registry
        return None


def available() -> bool:
    return pulp is not None and _cbc(msg=False) is not None


def solve(problem: PreparedProblem, time_limit: float | None) -> BackendResult:
    solver = _cbc(msg=False, timeLimit=time_limit, gapRel=0.0, gapAbs=0.0, threads=1)
    return solve_with_pulp(problem, solver)
