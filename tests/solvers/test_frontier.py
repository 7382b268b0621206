"""`solvers.frontier.exact_frontier`: every step of the optimum-versus-limit curve, checked by enumeration.

Both methods are covered: the direct Pareto merge (only the swept resource limited) and the
sweep of exact solves (other limits held).
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

from mckp_bruteforce import brute_force, enumerate_choices
from mckp_strategies import problems
from solvers import InfeasibleError, NonBindingLimitWarning, Problem, SolverTimeoutError
from solvers.frontier import exact_frontier

SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)


def brute_force_steps(kwargs, resource: str):
    """(costs, objectives) of the Pareto-optimal plans meeting every other limit."""
    loss = kwargs["loss"]
    choices = enumerate_choices(*loss.shape, [list(g) for g in kwargs["tied"]])
    rows = np.arange(loss.shape[0])
    objective = loss[rows, choices].sum(axis=1)
    ok = np.isfinite(objective)
    for name, limit in kwargs["limits"].items():
        if name != resource:
            ok &= kwargs["costs"][name][rows, choices].sum(axis=1) <= limit
    cost, objective = kwargs["costs"][resource][rows, choices].sum(axis=1)[ok], objective[ok]
    order = np.lexsort((objective, cost))
    cost, objective = cost[order], objective[order]
    keep = np.ones(cost.size, dtype=bool)
    keep[1:] = objective[1:] < np.minimum.accumulate(objective)[:-1]
    return cost[keep], objective[keep]


def frontier_quietly(problem: Problem, resource: str):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NonBindingLimitWarning)
        return exact_frontier(problem, resource)


@settings(max_examples=300, **SETTINGS)
@given(problems(max_layers=6, max_options=4, min_limits=1))
def test_frontier_is_complete_and_each_point_optimal(kwargs):
    problem = Problem(**kwargs)
    costs, objectives = brute_force_steps(kwargs, "size")
    if costs.size == 0:
        with pytest.raises(InfeasibleError):
            frontier_quietly(problem, "size")
        return
    frontier = frontier_quietly(problem, "size")
    assert frontier.method == ("pareto" if list(kwargs["limits"]) == ["size"] else "sweep")
    # complete: every brute-force step present, nothing else
    np.testing.assert_allclose(frontier.costs, costs)
    np.testing.assert_allclose(frontier.objectives, objectives)
    rows = np.arange(problem.n_layers)
    for cost, objective, choice in zip(frontier.costs, frontier.objectives, frontier.choices):
        # each point is optimal for the limit equal to its own cost
        limits = {**kwargs["limits"], "size": float(cost)}
        reference = brute_force(kwargs["loss"], kwargs["costs"], limits, kwargs["tied"])
        assert objective == pytest.approx(reference.optimum)
        assert problem.loss[rows, choice].sum() == pytest.approx(objective)
        assert problem.costs["size"][rows, choice].sum() == pytest.approx(cost)
        assert Problem(**{**kwargs, "limits": limits}).violations_of(choice) == []


def test_optimum_at_reads_the_step_for_any_limit():
    loss = np.array([[4.0, 2.0, 1.0], [3.0, 1.0, 0.0]])
    size = np.array([[1.0, 2.0, 4.0], [1.0, 3.0, 5.0]])
    frontier = exact_frontier(Problem(loss=loss, costs={"size": size}), "size")
    # plans (cost, loss): (2,7) (3,5) (4,5) (5,3) (5,4) (6,4) (7,2) (7,2) (9,1); the steps:
    assert frontier.costs.tolist() == [2.0, 3.0, 5.0, 7.0, 9.0]
    assert frontier.objectives.tolist() == [7.0, 5.0, 3.0, 2.0, 1.0]
    assert frontier.optimum_at(4.5)[0] == 5.0
    assert frontier.optimum_at(5.0)[1].tolist() == [1, 1]
    assert frontier.optimum_at(100.0)[0] == 1.0
    with pytest.raises(InfeasibleError, match="size"):
        frontier.optimum_at(1.5)


def test_unknown_resource_is_named():
    problem = Problem(loss=np.ones((2, 2)), costs={"size": np.ones((2, 2))})
    with pytest.raises(ValueError, match="'bops' is not a cost"):
        exact_frontier(problem, "bops")


def test_a_sweep_stopped_by_its_time_limit_raises_the_timeout_error():
    """A sweep solve that cannot prove its step in time raises `SolverTimeoutError` (not an
    unproven step, and not `InfeasibleError`)."""
    rng = np.random.default_rng(2)
    loss = rng.uniform(0, 1, (60, 6)) * 4.0 ** -np.arange(6)
    costs = {"size": np.tile(np.arange(2.0, 8.0), (60, 1)) * rng.integers(1, 9, (60, 1)),
             "bops": np.tile(np.arange(2.0, 8.0) ** 2, (60, 1)) * rng.integers(1, 9, (60, 1))}
    limits = {"bops": float(costs["bops"][:, 2].sum())}
    with pytest.raises(SolverTimeoutError, match="frontier sweep.*time limit"):
        exact_frontier(Problem(loss=loss, costs=costs, limits=limits), "size", time_limit=1e-9)
