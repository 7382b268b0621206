"""The exact loss-versus-limit curve of one resource: every limit at which the optimum changes.

For a resource r, the optimum as a function of r's limit is a step function. Its steps are the
plans no other plan beats in both r's total and loss (the Pareto set of (cost, loss)). This
module returns every step, each with an optimal plan, so a caller can read the exact optimum for
any limit (the last point whose cost fits) and plot the whole trade-off from one call.

- Only `resource` is limited (other limits of the problem absent): the Pareto set is built
  directly by merging per-layer Pareto sets with min-plus convolution and pruning
  (Nemhauser-Ullmann, `solvers.exact.pareto`). Exact with float costs; no solver calls.
- Other limits present: a sweep of exact solves (`solvers.exact.solve_arrays`) from the loosest
  limit down, each limit just below the previous optimum's cost, each solve warm-started from
  the previous plan (repaired to the new limit). Two plans whose costs differ by less than
  `SWEEP_RTOL` (relative) count as one step.

Ties, forbidden options and the other limits' feasibility are handled by `solvers.prepare`, as
for `solve_problem`.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, replace

import numpy as np

from .errors import InfeasibleError, SolverError, SolverTimeoutError
from .exact import solve_arrays
from .exact.pareto import merge
from .prepare import PreparedProblem, prepare
from .problem import Problem

__all__ = ["Frontier", "exact_frontier", "SWEEP_RTOL"]

# must exceed the solver's own limit slack (`solvers.exact.mckp.LIMIT_RTOL`), or a step could repeat
SWEEP_RTOL = 1e-9


@dataclass(frozen=True)
class Frontier:
    """Steps of the optimum versus the limit on `resource`, by increasing cost.

    Attributes:
        resource: the swept resource.
        costs: (n,) total of `resource` of each step's plan, increasing.
        objectives: (n,) loss of each step's plan, decreasing: the optimum for any limit in
            [costs[i], costs[i+1]).
        choices: (n, L) the plans (option per layer).
        method: "pareto" (direct merge) or "sweep" (exact solves).
        time_s: wall time.
    """

    resource: str
    costs: np.ndarray
    objectives: np.ndarray
    choices: np.ndarray
    method: str
    time_s: float

    def __len__(self) -> int:
        return int(self.costs.size)

    def optimum_at(self, limit: float) -> tuple[float, np.ndarray]:
        """(optimal loss, plan) for a limit on `resource`; InfeasibleError below the cheapest step."""
        i = int(np.searchsorted(self.costs, limit, side="right")) - 1
        if i < 0:
            raise InfeasibleError.below_minimum({self.resource: (float(limit), float(self.costs[0]))})
        return float(self.objectives[i]), self.choices[i]


def _prepared(problem: Problem, resource: str) -> PreparedProblem:
    """Preprocess with `resource` limited at its largest total, so pruning keeps every option it needs."""
    if resource not in problem.costs:
        raise ValueError(f"resource: {resource!r} is not a cost of the problem; costs are {sorted(problem.costs)}")
    allowed = np.isfinite(problem.loss)
    loosest = float(np.where(allowed, problem.costs[resource], 0.0).max(axis=1).sum())
    limits = {**problem.limits, resource: loosest}
    return prepare(replace(problem, limits=limits))  # its non-binding notes are not warned: by design


def _pareto(prepared: PreparedProblem, r: int) -> np.ndarray:
    """(n, G) group choices of every Pareto-optimal (cost, loss) combination, by increasing cost."""
    cost, value = np.zeros(1), np.zeros(1)
    steps = []
    for g in range(prepared.n_groups):
        options = np.flatnonzero(np.isfinite(prepared.loss[g]))
        cost, value, parent, option = merge(cost, value, prepared.costs[r, g, options], prepared.loss[g, options])
        steps.append((parent, options[option]))
    index = np.arange(cost.size)
    choices = np.empty((cost.size, prepared.n_groups), dtype=np.int64)
    for g in range(prepared.n_groups - 1, -1, -1):
        parent, option = steps[g]
        choices[:, g] = option[index]
        index = parent[index]
    return choices


def _sweep(prepared: PreparedProblem, r: int, time_limit: float | None) -> np.ndarray:
    limits = prepared.limits.copy()
    found, previous, last_cost = [], None, np.inf
    while True:
        result = solve_arrays(prepared.loss, prepared.costs, limits, time_limit, incumbent=previous)
        if result.status == "infeasible":
            break
        if result.status != "optimal":
            raise SolverTimeoutError(
                f"frontier sweep: a solve at {prepared.resources[r]} <= {limits[r]:.10g} hit the time "
                f"limit ({time_limit} s) before proving optimality; allow more time per solve", time_limit
            )
        cost = float(prepared.group_usage(result.choice)[r])
        if found and cost >= last_cost:
            raise SolverError(f"frontier sweep did not progress: a plan of cost {cost!r} came back under a "
                              f"limit below the previous step's {last_cost!r}")
        found.append(result.choice)
        previous, last_cost = result.choice, cost
        limits[r] = cost - max(SWEEP_RTOL * abs(cost), np.finfo(float).tiny)
        if limits[r] < 0:
            break
    return np.array(found[::-1], dtype=np.int64).reshape(-1, prepared.n_groups)


def exact_frontier(problem: Problem, resource: str, time_limit: float | None = None) -> Frontier:
    """Every step of the exact optimum-versus-limit curve of `resource`.

    The problem's own limit on `resource`, if any, is ignored (it is the swept quantity); its
    other limits hold at every point.

    Args:
        problem: a `Problem`.
        resource: a key of `problem.costs`.
        time_limit: seconds per exact solve of a sweep (unused by the direct Pareto merge).

    Raises:
        ValueError: unknown resource.
        InfeasibleError: the other limits admit no plan.
        SolverTimeoutError: a sweep solve hit `time_limit`.
    """
    start = time.perf_counter()
    if not isinstance(problem, Problem):
        raise TypeError(f"problem: expected a solvers.Problem, got {type(problem).__name__}")
    prepared = _prepared(problem, resource)
    r = prepared.resources.index(resource)
    if len(prepared.resources) == 1:
        group_choices, method = _pareto(prepared, r), "pareto"
    else:
        group_choices, method = _sweep(prepared, r, time_limit), "sweep"
    if group_choices.shape[0] == 0:
        raise InfeasibleError.not_together(prepared.alone_minima)
    choices = np.stack([prepared.expand(c) for c in group_choices])
    rows = np.arange(problem.n_layers)
    costs = problem.costs[resource][rows, choices].sum(axis=1)
    objectives = problem.loss[rows, choices].sum(axis=1)
    choices.setflags(write=False)
    return Frontier(resource, costs, objectives, choices, method, time.perf_counter() - start)
