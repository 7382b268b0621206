"""Property tests on random small problems, every backend against brute-force enumeration.

Sizes: L <= 6 layers, K <= 4 options, 0-3 costs with 0-3 limits, ties and forbidden options.
Example counts are sized so this file runs in well under a minute on one core.
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mckp_bruteforce import brute_force
from mckp_strategies import problems
from solver_cases import BACKENDS, EXACT_BACKENDS, HEURISTIC_BACKENDS
from solvers import GreedyFailedError, InfeasibleError, NonBindingLimitWarning, Problem, SolverTimeoutError, solve_problem

SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)


def solve_quietly(problem: Problem, solver: str, time_limit: float | None = None):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NonBindingLimitWarning)
        return solve_problem(problem, solver=solver, time_limit=time_limit)


def assert_feasible(problem: Problem, choice: np.ndarray) -> None:
    rows = np.arange(problem.n_layers)
    assert np.isfinite(problem.loss[rows, choice]).all()
    for group in problem.tied:
        assert len(set(choice[list(group)].tolist())) == 1
    for name, limit in problem.limits.items():
        assert problem.costs[name][rows, choice].sum() <= limit


def assert_infeasibility_report(error: InfeasibleError, fields: dict, reference) -> None:
    """The error's numbers are the true minima and its verdict matches them."""
    limits = fields["limits"]
    if error.jointly:
        # every limit some plan exceeds (the others are no part of a conflict) is reachable
        # alone, and the message gives each alone-minimum
        assert set(error.violations) == {n for n, v in limits.items() if reference.maxima[n] > v}
        for name, (limit, minimum) in error.violations.items():
            assert limit == limits[name] and minimum == pytest.approx(reference.minima[name])
            assert reference.minima[name] <= limit
        assert "reachable alone but not all together" in str(error)
    else:
        assert error.violations
        for name, limit in limits.items():
            violated = limit < reference.minima[name]
            assert (name in error.violations) == violated, name
            if violated:
                assert error.violations[name] == (limit, pytest.approx(reference.minima[name]))
                assert name in str(error)


@pytest.mark.parametrize("solver", EXACT_BACKENDS)
@settings(max_examples=150, **SETTINGS)
@given(fields=problems())
def test_exact_backend_matches_brute_force(solver, fields):
    problem = Problem(**fields)
    reference = brute_force(**fields)
    if reference.optimum is None:
        with pytest.raises(InfeasibleError) as info:
            solve_quietly(problem, solver)
        assert_infeasibility_report(info.value, fields, reference)
        return
    solution = solve_quietly(problem, solver)
    assert_feasible(problem, solution.choice)
    assert solution.status == "optimal"
    assert solution.objective == pytest.approx(reference.optimum, rel=1e-9, abs=1e-12)
    assert solution.bound == solution.objective


@pytest.mark.parametrize("solver", BACKENDS)
@settings(max_examples=40, **SETTINGS)
@given(fields=problems(), time_limit=st.sampled_from([1e-6, 1e-4, 1e-3, 0.01]))
def test_tiny_time_limits_never_claim_a_feasible_problem_infeasible(solver, fields, time_limit):
    """Under a limit too short to finish, a backend returns a valid plan (no better than the
    optimum; "optimal" only when it is) or raises `SolverTimeoutError`, never `InfeasibleError`
    for a problem brute force solves."""
    problem = Problem(**fields)
    reference = brute_force(**fields)
    try:
        solution = solve_quietly(problem, solver, time_limit)
    except InfeasibleError as error:
        assert reference.optimum is None, "a feasible problem was called infeasible under a time limit"
        assert_infeasibility_report(error, fields, reference)
        return
    except SolverTimeoutError:
        return
    except GreedyFailedError:
        assert solver in HEURISTIC_BACKENDS and len(fields["limits"]) >= 2
        return
    assert reference.optimum is not None
    assert_feasible(problem, solution.choice)
    scale = 1e-9 * max(1.0, abs(reference.optimum))
    assert solution.objective >= reference.optimum - scale
    assert solution.bound <= reference.optimum + scale
    if solution.status == "optimal":
        assert solution.objective == pytest.approx(reference.optimum, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("solver", HEURISTIC_BACKENDS)
@settings(max_examples=300, **SETTINGS)
@given(fields=problems())
def test_heuristic_feasible_and_never_better_than_optimum(solver, fields):
    problem = Problem(**fields)
    reference = brute_force(**fields)
    n_limits = len(fields["limits"])
    try:
        solution = solve_quietly(problem, solver)
    except InfeasibleError as error:  # only with a proof
        assert reference.optimum is None
        assert_infeasibility_report(error, fields, reference)
        return
    except GreedyFailedError:
        assert n_limits >= 2, "with one limit greedy must find a plan whenever one exists"
        return
    assert reference.optimum is not None
    assert_feasible(problem, solution.choice)
    assert solution.status == "feasible"
    assert solution.objective >= reference.optimum - 1e-9 * max(1.0, abs(reference.optimum))
    assert solution.bound <= reference.optimum + 1e-9 * max(1.0, abs(reference.optimum))


@pytest.mark.parametrize("solver", HEURISTIC_BACKENDS)
@settings(max_examples=150, **SETTINGS)
@given(fields=problems(min_limits=1, max_limits=1))
def test_heuristic_with_one_limit_finds_a_plan_when_one_exists(solver, fields):
    problem = Problem(**fields)
    reference = brute_force(**fields)
    if reference.optimum is None:
        with pytest.raises(InfeasibleError):
            solve_quietly(problem, solver)
    else:
        assert_feasible(problem, solve_quietly(problem, solver).choice)


@pytest.mark.parametrize("solver", EXACT_BACKENDS)
@settings(max_examples=25, **SETTINGS)
@given(fields=problems(min_limits=1), steps=st.lists(st.integers(0, 6), min_size=2, max_size=4))
def test_optimum_does_not_increase_as_a_limit_grows(solver, fields, steps):
    name = next(iter(fields["limits"]))
    previous = np.inf
    limit = fields["limits"][name]
    for step in steps:
        limit += step
        problem = Problem(**{**fields, "limits": {**fields["limits"], name: limit}})
        try:
            objective = solve_quietly(problem, solver).objective
        except InfeasibleError:
            assert previous == np.inf, "became infeasible after a limit grew"
            continue
        assert objective <= previous + 1e-9 * max(1.0, abs(objective))
        previous = objective


@st.composite
def alone_but_not_together(draw):
    """Each layer pays `a` of one resource or `b` of another; the two limits cannot both hold.

    Either a per-layer tradeoff hidden in a wider option set (loss, costs random) plus limits
    whose sum is below what any layer mix needs.
    """
    n_layers = draw(st.integers(2, 6))
    unit = draw(st.integers(1, 5))
    loss = np.array(draw(st.lists(st.lists(st.floats(0, 10), min_size=2, max_size=2),
                                  min_size=n_layers, max_size=n_layers)))
    size = np.array([[unit, 0]] * n_layers, dtype=float)
    bops = np.array([[0, unit]] * n_layers, dtype=float)
    # every layer costs `unit` in total, so size + bops totals n_layers * unit; allow one less
    size_limit = draw(st.integers(0, n_layers - 1)) * unit
    bops_limit = (n_layers - 1) * unit - size_limit
    return {"loss": loss, "costs": {"size": size, "bops": bops},
            "limits": {"size": float(size_limit), "bops": float(bops_limit)}, "tied": []}


@pytest.mark.parametrize("solver", EXACT_BACKENDS)
@settings(max_examples=20, **SETTINGS)
@given(fields=alone_but_not_together())
def test_exact_says_reachable_alone_but_not_together(solver, fields):
    reference = brute_force(**fields)
    assert reference.optimum is None and all(m == 0 for m in reference.minima.values())
    with pytest.raises(InfeasibleError) as info:
        solve_quietly(Problem(**fields), solver)
    assert info.value.jointly
    assert "every limit is reachable alone but not all together" in str(info.value)
    assert info.value.violations == {n: (fields["limits"][n], 0.0) for n in ("size", "bops")}
