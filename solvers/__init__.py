"""Bit allocation as a multiple-choice knapsack: `Problem` in, `Solution` out. Torch-free.

>>> import numpy as np
>>> from solvers import Problem, solve_problem
>>> p = Problem(loss=np.array([[3.0, 1.0], [2.0, 0.5]]),
...             costs={"size": np.array([[2.0, 4.0], [2.0, 4.0]])}, limits={"size": 6.0})
>>> solve_problem(p, solver="scipy").choice.tolist()  # one upgrade fits; layer 0's saves more
[1, 0]

Validation happens once when a `Problem` is built (`solvers.validation`); preprocessing (ties,
infeasibility proofs, pruning) once for every backend (`solvers.prepare`); each backend is one
module under `solvers.backends` (interface documented there).
"""
from .api import AUTO_SOLVER, available_solvers, solve_problem
from .errors import GreedyFailedError, InfeasibleError, NonBindingLimitWarning, SolverError, SolverTimeoutError
from .problem import Problem, Solution

__all__ = [
    "AUTO_SOLVER",
    "GreedyFailedError",
    "InfeasibleError",
    "NonBindingLimitWarning",
    "Problem",
    "Solution",
    "SolverError",
    "SolverTimeoutError",
    "available_solvers",
    "solve_problem",
]
