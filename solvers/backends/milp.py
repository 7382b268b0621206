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

Each limit row (its costs and its limit) is multiplied by a power of two, `row_scale`, chosen so
the limit lies in [2**20, 2**21) (`LIMIT_RANGE`). Why: the costs arrive in the user's units, and
some are huge (BOPs of a ResNet-18 layer are ~7e9, the limit ~7e10). Solvers mix absolute and
relative tolerances, so such rows are badly conditioned: CBC returned a plan 0.7% worse than the
optimum and marked it "optimal" on HAWQ-V3's ResNet-18 BOPs-0.5 case (objective 0.21722 instead of
0.21569, `tests/solvers/test_solvers_scaling.py`), and SCIP was seen to prune the true optimum of a
3-limit problem the same way. After scaling, a solver's usual absolute feasibility tolerance
(~1e-6 to 1e-7) is ~1e-12 of the limit, well inside the dispatcher's `FEASIBILITY_RTOL`, and the
row's coefficients are on the scale of the objective's (`OBJECTIVE_RANGE`). A power of two
changes only the exponent of each float, so the scaled rows describe exactly the same feasible
plans (a plan that meets a limit exactly still meets it exactly). A zero limit (every allowed
option then costs 0 after preprocessing, but the rule does not rely on it) is scaled so the row's
largest coefficient lies in [1, 2); an all-zero row is left as it is.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.optimize import linprog

from ..prepare import PreparedProblem
from ..quiet import stdout_silenced

__all__ = ["MilpForm", "build_milp_form", "lp_relaxation_bound", "row_scales", "OBJECTIVE_RANGE", "LIMIT_RANGE"]

OBJECTIVE_RANGE = 1e6
LIMIT_RANGE = (2.0**20, 2.0**21)  # every positive limit row is scaled into [low, high)


@dataclass(frozen=True, eq=False)
class MilpForm:
    """min c @ x  s.t.  sum of x over each group = 1,  A @ x <= b,  x binary.

    Attributes:
        group: (n,) group of each variable.
        option: (n,) original option index of each variable.
        c: (n,) shifted, scaled objective coefficients (>= 0).
        A: (R, n) resource use of each variable, each row multiplied by its `row_scale`.
        b: (R,) limits multiplied by `row_scale` (each positive one in `LIMIT_RANGE`).
        row_scale: (R,) power of two applied to each limit row (see the module docstring).
        offset, scale: loss = c_total / scale + offset.
        n_groups: number of groups (equality rows).
    """

    group: np.ndarray
    option: np.ndarray
    c: np.ndarray
    A: np.ndarray
    b: np.ndarray
    row_scale: np.ndarray
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


def _exponent(value: float) -> int:
    """e with 2**(e-1) <= value < 2**e, for a positive finite value (exact, unlike log2)."""
    return math.frexp(value)[1]


def row_scales(A: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(R,) power of two per limit row: puts a positive limit in `LIMIT_RANGE`, else the row's
    largest |coefficient| in [1, 2); 1 for an all-zero row with a zero limit."""
    target = _exponent(LIMIT_RANGE[0])  # the exponent of every number in LIMIT_RANGE
    scales = np.ones(len(b))
    for r, limit in enumerate(b.tolist()):
        if limit != 0:
            exponent = target - _exponent(abs(limit))
        elif A.shape[1] and (largest := float(np.abs(A[r]).max())) > 0:
            exponent = 1 - _exponent(largest)
        else:
            continue
        scales[r] = math.ldexp(1.0, min(exponent, 1023))  # a subnormal would need more: stay finite
    return scales


def build_milp_form(problem: PreparedProblem) -> MilpForm:
    """The scaled integer program of `problem` (objective and limit rows as the module docstring says)."""
    group, option = np.nonzero(problem.allowed)
    group_min = problem.loss.min(axis=1)
    raw = problem.loss[group, option] - group_min[group]
    largest = float(raw.max()) if raw.size else 0.0
    scale = OBJECTIVE_RANGE / largest if largest > 0 else 1.0
    A = problem.costs[:, group, option]
    row_scale = row_scales(A, problem.limits)
    return MilpForm(
        group=group,
        option=option,
        c=raw * scale,
        A=A * row_scale[:, None],
        b=problem.limits * row_scale,
        row_scale=row_scale,
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
    with stdout_silenced():  # HiGHS's C++ output
        result = linprog(
            form.c, A_ub=form.A, b_ub=form.b, A_eq=form.one_per_group(), b_eq=np.ones(form.n_groups),
            bounds=(0, 1), method="highs",
        )
    if result.status != 0:
        return trivial
    # HiGHS's LP optimum is accurate to its dual feasibility tolerance; subtract a margin so the
    # bound stays a bound
    return max(trivial, form.to_loss(result.fun - 1e-6 * max(1.0, abs(result.fun))))
