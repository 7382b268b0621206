"""Backend "pulp": PuLP's model solved by CBC run as a command-line subprocess.

CBC comes from a system install when there is one (`COIN_CMD`: a `cbc` on PATH, e.g. Debian's
`coinor-cbc` or `pip install pulp[cbc]`), otherwise from the binary bundled with PuLP
(`PULP_CBC_CMD`, deprecated by PuLP 3 and to be removed in PuLP 4; its deprecation warning is
silenced here because the fallback is deliberate). One thread, relative and absolute gap 0.
PuLP's command-line interface does not report CBC's bound when a time limit stops it, so the
dispatcher falls back to the LP relaxation bound then.

The subprocess is started here rather than by PuLP's `COIN_CMD.actualSolve`, because an
interrupt (Ctrl-C) inside PuLP's `wait()` leaves CBC running (re-parented to init) and its
`.mps`/`.sol` files in the temporary directory. Here CBC runs in its own session (a terminal's
Ctrl-C reaches only Python) in a private temporary directory; whatever ends the solve, a
`finally` kills CBC if it still runs and removes the directory. PuLP still writes the MPS file
and reads CBC's solution file (`LpProblem.writeMPS`, `COIN_CMD.readsol_MPS`), so the model and
its statuses are PuLP's.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import warnings
from typing import Any

from ..errors import SolverError
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


def _run_cbc(model: "pulp.LpProblem", cbc: "pulp.LpSolver", time_limit: float | None) -> None:
    """Solve `model` with the CBC binary of `cbc`; no process or file outlives the call."""
    workdir = tempfile.mkdtemp(prefix="mixqvit-cbc-")
    try:
        mps, solution = os.path.join(workdir, "model.mps"), os.path.join(workdir, "model.sol")
        variables, variable_names, constraint_names, _ = model.writeMPS(mps, rename=1)
        args = [cbc.path, mps]
        if time_limit is not None:
            args += ["-sec", repr(time_limit)]
        args += ["-ratio", "0", "-allow", "0", "-threads", "1", "-solve", "-printingOptions", "all",
                 "-solution", solution]
        process = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            code = process.wait()
        finally:
            if process.poll() is None:  # interrupted while CBC runs: end it before leaving
                process.kill()
                process.wait()
        if code != 0 or not os.path.exists(solution):
            raise SolverError(f"CBC ({cbc.path}) failed with exit status {code} and wrote no solution")
        status, values, _, _, _, solution_status = cbc.readsol_MPS(
            solution, model, variables, variable_names, constraint_names)
        model.assignVarsVals(values)
        model.assignStatus(status, solution_status)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def solve(problem: PreparedProblem, time_limit: float | None) -> BackendResult:
    cbc = _cbc(msg=False)
    return solve_with_pulp(problem, "CBC", lambda model: _run_cbc(model, cbc, time_limit), time_limit)
