"""The shared suite: every hand case runs against every backend in `available_solvers()`.

A new backend registered in `solvers.backends.REGISTRY` joins every test here (and the property
tests) without any edit; exact backends are also held to the optimum.
"""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from solvers import (GreedyFailedError, InfeasibleError, NonBindingLimitWarning, Problem, SolverError,
                     SolverTimeoutError, solve_problem)
from solvers.backends import is_exact
from solver_cases import BACKENDS, EXACT_BACKENDS, HEURISTIC_BACKENDS

pytestmark = pytest.mark.filterwarnings("ignore::solvers.NonBindingLimitWarning")


def assert_valid(problem: Problem, solution, solver: str, time_limited: bool = False) -> None:
    """Checks every solution must pass, computed here from the raw arrays. Under a time limit an
    exact backend may stop with a "feasible" plan (then only its bound is checked)."""
    choice = np.asarray(solution.choice)
    assert choice.shape == (problem.n_layers,) and choice.dtype.kind == "i"
    rows = np.arange(problem.n_layers)
    assert np.isfinite(problem.loss[rows, choice]).all(), "a forbidden option was chosen"
    for group in problem.tied:
        assert len(set(choice[list(group)].tolist())) == 1, f"tie {group} broken: {choice}"
    for name, limit in problem.limits.items():
        assert problem.costs[name][rows, choice].sum() <= limit * (1 + 1e-9), name
    assert solution.usage == pytest.approx({n: problem.costs[n][rows, choice].sum() for n in problem.costs})
    assert solution.objective == pytest.approx(problem.loss[rows, choice].sum(), rel=1e-12)
    assert solution.solver == solver
    assert solution.time_s >= 0
    assert solution.bound <= solution.objective + 1e-9 * max(1.0, abs(solution.objective))
    if is_exact(solver) and not (time_limited and solution.status == "feasible"):
        assert solution.status == "optimal"
        assert solution.bound == solution.objective
    else:
        assert solution.status == "feasible"


def check(problem: Problem, solver: str, optimum: float, expected_choice=None):
    solution = solve_problem(problem, solver=solver)
    assert_valid(problem, solution, solver)
    if is_exact(solver):
        assert solution.objective == pytest.approx(optimum, rel=1e-9, abs=1e-12)
        if expected_choice is not None:
            assert solution.choice.tolist() == expected_choice
    else:
        assert solution.objective >= optimum - 1e-9
    return solution


@pytest.mark.parametrize("solver", BACKENDS)
def test_single_limit(solver):
    # two layers, low loss costs more; size 6 allows one upgrade, the one that saves more loss
    p = Problem(loss=[[3.0, 1.0], [2.0, 0.5]], costs={"size": [[2, 4], [2, 4]]}, limits={"size": 6})
    check(p, solver, optimum=3.0, expected_choice=[1, 0])


@pytest.mark.parametrize("solver", BACKENDS)
def test_no_limits_takes_lowest_loss(solver):
    p = Problem(loss=[[3.0, 1.0, 2.0], [0.5, 2.0, 0.7]], costs={"size": [[1, 2, 3], [1, 2, 3]]})
    solution = check(p, solver, optimum=1.5, expected_choice=[1, 0])
    assert solution.usage == {"size": 3.0}


@pytest.mark.parametrize("solver", BACKENDS)
def test_tied_layers_share_an_option(solver):
    # untied, layer 0 wants option 0 and layer 2 option 1; tied, option 1 is the best compromise
    loss = [[0.0, 1.0, 9.0], [5.0, 5.0, 0.0], [3.0, 0.0, 9.0]]
    p = Problem(loss=loss, costs={"size": np.ones((3, 3))}, limits={"size": 3}, tied=[[0, 2]])
    solution = check(p, solver, optimum=1.0 + 0.0 + 0.0, expected_choice=[1, 2, 1])
    assert solution.choice[0] == solution.choice[2]


@pytest.mark.parametrize("solver", BACKENDS)
def test_tie_with_limit_sums_costs(solver):
    # the tied pair's upgrade costs 2 x 3 = 6 which does not fit; layer 1's costs 3 and fits
    p = Problem(
        loss=[[4.0, 0.0], [4.0, 1.0], [4.0, 0.0]],
        costs={"size": [[1, 4], [1, 4], [1, 4]]},
        limits={"size": 6},
        tied=[[0, 2]],
    )
    check(p, solver, optimum=9.0, expected_choice=[0, 1, 0])


@pytest.mark.parametrize("solver", BACKENDS)
def test_forbidden_options_never_chosen(solver):
    # option 0 is free and best for layer 1, but forbidden there
    p = Problem(
        loss=[[1.0, 2.0, 3.0], [np.inf, 5.0, 6.0]],
        costs={"size": [[0, 1, 2], [0, 1, 2]]},
        limits={"size": 1},
    )
    check(p, solver, optimum=6.0, expected_choice=[0, 1])


@pytest.mark.parametrize("solver", BACKENDS)
def test_several_limits(solver):
    # option 1 is cheap in size, option 2 cheap in bops; both limits bind
    loss = [[10.0, 4.0, 4.0, 0.0]] * 3
    size = [[1, 1, 5, 5]] * 3
    bops = [[1, 5, 1, 5]] * 3
    p = Problem(loss=loss, costs={"size": size, "bops": bops}, limits={"size": 7, "bops": 7})
    # options (1, 2, 0)-like mixes: one layer at 1, one at 2, one at 0 -> size 7, bops 7, loss 18
    # or one layer at 3 and two at 0: size 7, bops 7, loss 20
    solution = check(p, solver, optimum=18.0)
    if is_exact(solver):
        assert sorted(solution.choice.tolist()) == [0, 1, 2]


@pytest.mark.parametrize("solver", BACKENDS)
def test_limit_exactly_reached(solver):
    p = Problem(loss=[[2.0, 1.0, 0.0]] * 4, costs={"size": [[2, 3, 4]] * 4}, limits={"size": 16})
    solution = check(p, solver, optimum=0.0, expected_choice=[2, 2, 2, 2])
    assert solution.usage["size"] == 16


@pytest.mark.parametrize("solver", BACKENDS)
def test_zero_limit_with_free_options(solver):
    p = Problem(loss=[[1.0, 0.0], [3.0, 0.0]], costs={"size": [[0, 1], [0, 2]]}, limits={"size": 0})
    check(p, solver, optimum=4.0, expected_choice=[0, 0])


@pytest.mark.parametrize("solver", BACKENDS)
def test_single_layer_single_option(solver):
    p = Problem(loss=[[2.5]], costs={"size": [[1.0]]}, limits={"size": 1.0})
    check(p, solver, optimum=2.5, expected_choice=[0])


@pytest.mark.parametrize("solver", BACKENDS)
def test_negative_losses_and_float_costs(solver):
    rng = np.random.default_rng(7)
    loss = rng.normal(size=(6, 3))
    size = rng.uniform(0.5, 2.0, (6, 3))
    limit = float(size.mean(axis=1).sum())
    p = Problem(loss=loss, costs={"size": size}, limits={"size": limit})
    reference = solve_problem(p, solver=EXACT_BACKENDS[0])
    check(p, solver, optimum=reference.objective)


@pytest.mark.parametrize("solver", BACKENDS)
def test_medium_problem_all_backends_agree(solver):
    # realistic shape: loss falls and costs rise with bits, two limits, ties, one pinned layer
    rng = np.random.default_rng(2024)
    bits = np.array([2, 3, 4, 5, 6, 8])
    n = 40
    params = rng.integers(1_000, 100_000, n)
    macs = params * rng.integers(10, 200, n)
    sensitivity = rng.lognormal(0.0, 1.0, n)
    loss = sensitivity[:, None] * 4.0 ** (-bits[None]) * rng.uniform(0.8, 1.2, (n, len(bits)))
    loss[0, :-1] = np.inf  # pinned to 8 bits
    size = params[:, None] * bits[None]
    bops = macs[:, None] * bits[None] ** 2
    limits = {"size": float(params.sum() * 4), "bops": float(macs.sum() * 4.5**2)}
    p = Problem(loss=loss, costs={"size": size, "bops": bops}, limits=limits, tied=[[3, 7], [10, 11, 12]])
    reference = solve_problem(p, solver=EXACT_BACKENDS[0])
    solution = check(p, solver, optimum=reference.objective)
    assert solution.choice[0] == len(bits) - 1


@pytest.mark.parametrize("solver", BACKENDS)
def test_time_limit_accepted(solver):
    p = Problem(loss=[[3.0, 1.0], [2.0, 0.5]], costs={"size": [[2, 4], [2, 4]]}, limits={"size": 6})
    solution = solve_problem(p, solver=solver, time_limit=30.0)
    assert_valid(p, solution, solver)
    if is_exact(solver):
        assert solution.objective == pytest.approx(3.0)


@pytest.mark.parametrize("solver", BACKENDS)
def test_infeasible_limit_names_resource_limit_and_minimum(solver):
    p = Problem(
        loss=[[1.0, 0.0], [1.0, 0.0]],
        costs={"size": [[2, 3], [4, 5]], "bops": [[1, 1], [1, 1]]},
        limits={"size": 5, "bops": 10},
    )
    with pytest.raises(InfeasibleError) as info:
        solve_problem(p, solver=solver)
    assert info.value.violations == {"size": (5.0, 6.0)}
    assert not info.value.jointly
    message = str(info.value)
    assert "size" in message and "5" in message and "6" in message and "bops" not in message


@pytest.mark.parametrize("solver", BACKENDS)
def test_infeasible_names_every_violated_resource(solver):
    p = Problem(
        loss=[[1.0, 0.0]] * 3,
        costs={"size": [[2, 3]] * 3, "bops": [[4, 1]] * 3, "latency": [[1, 1]] * 3},
        limits={"size": 5, "bops": 2, "latency": 3},
        tied=[[0, 1]],
    )
    with pytest.raises(InfeasibleError) as info:
        solve_problem(p, solver=solver)
    assert info.value.violations == {"size": (5.0, 6.0), "bops": (2.0, 3.0)}
    assert "size" in str(info.value) and "bops" in str(info.value) and "latency" not in str(info.value)


@pytest.mark.parametrize("solver", BACKENDS)
def test_infeasible_through_forbidden_options_and_ties(solver):
    # the cheap option is forbidden for layer 1, and the tie drags layer 0 along
    p = Problem(loss=[[1.0, 0.0], [np.inf, 0.0]], costs={"size": [[1, 3], [1, 3]]}, limits={"size": 5},
                tied=[[0, 1]])
    with pytest.raises(InfeasibleError) as info:
        solve_problem(p, solver=solver)
    assert info.value.violations == {"size": (5.0, 6.0)}


def _alone_but_not_together(n_layers: int = 3) -> Problem:
    # each layer pays 1 of size (option 0) or 1 of bops (option 1); 3 layers, 1 + 1 allowed
    return Problem(
        loss=[[1.0, 2.0]] * n_layers,
        costs={"size": [[1, 0]] * n_layers, "bops": [[0, 1]] * n_layers},
        limits={"size": 1, "bops": 1},
    )


@pytest.mark.parametrize("solver", EXACT_BACKENDS)
def test_exact_reports_limits_reachable_alone_but_not_together(solver):
    # the lowest-loss plan meets "bops" alone, yet "bops" is half of the conflict: no warning for it
    with pytest.raises(InfeasibleError) as info, warnings.catch_warnings():
        warnings.simplefilter("error", NonBindingLimitWarning)
        solve_problem(_alone_but_not_together(), solver=solver)
    assert info.value.jointly
    assert info.value.violations == {"size": (1.0, 0.0), "bops": (1.0, 0.0)}
    message = str(info.value)
    assert "every limit is reachable alone but not all together" in message
    assert "size: limit 1, smallest achievable alone 0" in message
    assert "bops: limit 1, smallest achievable alone 0" in message


@pytest.mark.parametrize("solver", HEURISTIC_BACKENDS)
def test_heuristic_never_claims_infeasible_without_proof(solver):
    with pytest.raises(GreedyFailedError, match="does not prove"):
        solve_problem(_alone_but_not_together(), solver=solver)


def test_greedy_failed_is_a_solver_error_not_infeasible():
    assert issubclass(GreedyFailedError, SolverError)
    assert not issubclass(GreedyFailedError, ValueError)
    assert issubclass(InfeasibleError, ValueError)


@pytest.mark.parametrize("solver", BACKENDS)
def test_non_binding_limit_warns(solver):
    p = Problem(loss=[[3.0, 1.0], [2.0, 0.5]], costs={"size": [[2, 4], [2, 4]]}, limits={"size": 100})
    with pytest.warns(NonBindingLimitWarning, match="'size' does not bind.*8 <= limit 100") as caught:
        solution = solve_problem(p, solver=solver)
    assert solution.choice.tolist() == [1, 1]
    assert [w.message.limit for w in caught if w.category is NonBindingLimitWarning] == ["size"]


@pytest.mark.parametrize("solver", BACKENDS)
def test_infinite_limit_warns_and_is_ignored(solver):
    p = Problem(loss=[[3.0, 1.0], [2.0, 0.5]], costs={"size": [[2, 4], [2, 4]], "bops": [[1, 2], [1, 2]]},
                limits={"size": math.inf, "bops": 3})
    with pytest.warns(NonBindingLimitWarning, match="'size' does not bind"):
        solution = solve_problem(p, solver=solver)
    assert solution.usage["bops"] <= 3
    if is_exact(solver):
        assert solution.objective == pytest.approx(3.0)


def test_binding_limit_does_not_warn():
    p = Problem(loss=[[3.0, 1.0], [2.0, 0.5]], costs={"size": [[2, 4], [2, 4]]}, limits={"size": 7.99})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        solve_problem(p, solver=EXACT_BACKENDS[0])


@pytest.mark.parametrize("time_limit", [1e-6, 0.02, 0.05])
@pytest.mark.parametrize("solver", BACKENDS)
def test_tiny_time_limit_gives_a_plan_with_a_bound_or_a_timeout_error(solver, time_limit):
    """A feasible 120 x 36 three-limit problem under a limit too short to prove anything: either a
    valid plan with a bound <= its objective ("optimal" only if proven in time) or a
    `SolverTimeoutError`; never `InfeasibleError` (CBC's "Infeasible" when its clock runs out
    before any solution was believed once, and made this test flaky)."""
    rng = np.random.default_rng(5)
    loss = rng.random((120, 36))
    costs = {name: rng.integers(1, 100, (120, 36)).astype(float) for name in ("size", "bops", "latency")}
    limits = {name: float(table.mean(axis=1).sum() * 0.8) for name, table in costs.items()}
    problem = Problem(loss=loss, costs=costs, limits=limits)
    try:
        solution = solve_problem(problem, solver=solver, time_limit=time_limit)
    except GreedyFailedError:
        assert not is_exact(solver)
        return
    except SolverTimeoutError as error:
        assert "time limit" in str(error) and error.time_limit == time_limit
        return
    assert_valid(problem, solution, solver, time_limited=True)
    assert np.isfinite(solution.bound)


def test_timeout_error_is_a_solver_error_not_infeasible():
    assert issubclass(SolverTimeoutError, SolverError)
    assert not issubclass(SolverTimeoutError, (InfeasibleError, ValueError))