"""The integer program of a prepared problem, written once for every MIP backend.

One binary x[g, k] per allowed (group, option); exactly one option per group; one row per
limited resource. Backends translate this `MilpForm` into their modelling API, so the model is
defined in one place.

The objective is shifted and scaled before it reaches a solver: each group's smallest loss is
subtracted (a constant `offset`) and the result multiplied by `scale` so the largest remaining
coefficient is `OBJECTIVE_RANGE`. Solvers stop when the gap is below an *absolute* tolerance
(HiGHS's `mip_abs_gap` is 1e-6 and scipy's `milp` cannot change it); with the scaling that
tolerance is 1e-6 / OBJECTIVE_RANGE of the largest loss difference, far below the 1e-9 relative
exactness the package promises.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.optimize import linprog

from ..prepare import PreparedProblem

__all__ = ["MilpForm", "build_milp_form", "lp_relaxation_bound", "OBJECTIVE_RANGE"]

OBJECTIVE_RANGE = 1e6


@dataclass(frozen=True, eq=False)
class MilpForm:
    """min c @ x  s.t.  sum of x over each group = 1,  A @ x <= b,  x binary.

    Attributes:
        group: (n,) group of each variable.
        option: (n,) original option index of each variable.
        c: (n,) shifted, scaled objective coefficients (>= 0).
        A: (R, n) resource use of each variable.
        b: (R,) limits.
        offset, scale: loss = c_total / scale + offset.
        n_groups: number of groups (equality rows).
    """

    group: np.ndarray
    option: np.ndarray
    c: np.ndarray
    A: np.ndarray
    b: np.ndarray
    offset: float
    scale: float
    n_groups: int

    @property
    def n_vars(self) -> int:
        return self.c.shape[0]

    def one_per_group(self) -> sp.csr_array:
        """(G, n) 0/1 matrix whose rows sum each group's variables."""
        ones = np.ones(self.n_vars)
        return sp.csr_array((ones, (self.group, np.arange(self.n_vars))), shape=(self.n_groups, self.n_vars))

    def to_loss(self, value: float) -> float:
        """Convert a solver objective (or bound) back to loss units."""
        return float(value) / self.scale + self.offset

    def choice_from_x(self, x: np.ndarray) -> np.ndarray:
        """Option of each group: the variable with the largest value (robust to 1e-9 residue)."""
        x = np.asarray(x, dtype=np.float64)
        order = np.lexsort((-x, self.group))  # by group, then by decreasing value
        first = np.ones(self.n_vars, dtype=bool)
        first[1:] = self.group[order][1:] != self.group[order][:-1]
        chosen = order[first]
        choice = np.empty(self.n_groups, dtype=np.int64)
        choice[self.group[chosen]] = self.option[chosen]
        return choice


def build_milp_form(problem: PreparedProblem) -> MilpForm:
    group, option = np.nonzero(problem.allowed)
    group_min = problem.loss.min(axis=1)
    raw = problem.loss[group, option] - group_min[group]
    largest = float(raw.max()) if raw.size else 0.0
    scale = OBJECTIVE_RANGE / largest if largest > 0 else 1.0
    return MilpForm(
        group=group,
        option=option,
        c=raw * scale,
        A=problem.costs[:, group, option],
        b=problem.limits.copy(),
        offset=float(group_min.sum()),
        scale=scale,
        n_groups=problem.n_groups,
    )


def lp_relaxation_bound(problem: PreparedProblem) -> float:
    """Proven lower bound: the optimum of the LP relaxation (x in [0, 1]) solved by HiGHS.

    Used by backends that report no bound of their own (the greedy heuristic, CBC through
    PuLP's command-line interface). Falls back to the sum of per-group minimum losses, also a
    valid bound, if the LP solve fails.
    """
    form = build_milp_form(problem)
    trivial = form.offset
    if form.A.shape[0] == 0:
        return trivial
    result = linprog(
        form.c, A_ub=form.A, b_ub=form.b, A_eq=form.one_per_group(), b_eq=np.ones(form.n_groups),
        bounds=(0, 1), method="highs",
    )
    if result.status != 0:
        return trivial
    # HiGHS's LP optimum is accurate to its dual feasibility tolerance; subtract a margin so the
    # bound stays a bound
    return max(trivial, form.to_loss(result.fun - 1e-6 * max(1.0, abs(result.fun))))
