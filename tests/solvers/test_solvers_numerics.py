"""Losses the way careless callers hand them over: huge constants, overflowing rows.

A constant added to one layer's losses changes no choice of a multiple-choice problem; before
`solvers.prepare` shifted every row by its least entry, a 1e12 row inflated the objective that
the relative optimality tolerances are measured against and so changed other layers' choices
while still reporting "optimal". Losses whose plan objectives overflow float64 are refused with
the layers named.
"""
from __future__ import annotations

import functools
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mckp_bruteforce import brute_force
from mckp_strategies import problems
from solver_cases import BACKENDS, vit_like_problem
from solvers import GreedyFailedError, InfeasibleError, NonBindingLimitWarning, Problem, solve_problem

SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)


def solve_quietly(problem: Problem, solver: str):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NonBindingLimitWarning)
        return solve_problem(problem, solver=solver)


def with_constant(loss: np.ndarray, layer: int, constant: float) -> np.ndarray:
    out = loss.copy()
    out[layer] = np.where(np.isfinite(out[layer]), out[layer] + constant, np.inf)
    return out


@pytest.mark.parametrize("solver", BACKENDS)
@settings(max_examples=40, **SETTINGS)
@given(fields=problems(), layer=st.integers(0, 5), constant=st.sampled_from([1e12, -1e12, 2.0**40]))
def test_a_constant_added_to_one_layer_changes_no_choice(solver, fields, layer, constant):
    # losses on a 1/8 grid: x + 1e12 is exact, so the row differs from the original by the constant only
    fields = {**fields, "loss": np.round(fields["loss"] * 8) / 8}
    layer = layer % fields["loss"].shape[0]
    shifted = {**fields, "loss": with_constant(fields["loss"], layer, constant)}
    try:
        plain = solve_quietly(Problem(**fields), solver)
    except (InfeasibleError, GreedyFailedError) as error:
        with pytest.raises(type(error)):
            solve_quietly(Problem(**shifted), solver)
        return
    moved = solve_quietly(Problem(**shifted), solver)
    assert moved.choice.tolist() == plain.choice.tolist()
    assert moved.status == plain.status
    assert moved.objective == pytest.approx(plain.objective + constant, rel=1e-15, abs=1e-9)
    assert moved.bound <= moved.objective


@pytest.mark.parametrize("solver", [s for s in BACKENDS if s != "greedy"])
def test_constant_rows_change_no_choice_of_a_problem_that_needs_search(solver):
    """With the tolerance measured against the unshifted objective (2e12 here), the exact
    backend stopped at its local-search plan and called it optimal."""
    problem = vit_like_problem(loss_scale=1e4, grid=1 / 8)
    loss = problem.loss.copy()
    loss[[5, 20]] += 1e12
    plain = solve_quietly(problem, solver)
    moved = solve_quietly(Problem(loss=loss, costs=problem.costs, limits=problem.limits), solver)
    assert plain.status == moved.status == "optimal"
    assert moved.choice.tolist() == plain.choice.tolist()
    assert moved.objective == plain.objective + 2e12


@functools.lru_cache(maxsize=None)
def _huge_rows_case():
    """The issue's case, 10 layers x 4 options, with its brute-force answers computed once."""
    rng = np.random.default_rng(3)
    loss = rng.uniform(0, 1, (10, 4)) * 4.0 ** -np.arange(4)
    costs = {"size": np.tile(np.array([2.0, 3, 4, 8]), (10, 1)) * rng.integers(1, 5, (10, 1))}
    limits = {"size": float(costs["size"][:, 1].sum())}
    return loss, costs, limits, brute_force(loss, costs, limits).optimum


@pytest.mark.parametrize("solver", BACKENDS)
def test_huge_constant_rows_leave_the_other_layers_alone(solver):
    """The issue's case: two layers' rows of 1e12 (sensitivity tables of a broken profile)."""
    loss, costs, limits, optimum = _huge_rows_case()
    huge = loss.copy()
    huge[[2, 7]] = 1e12
    plain = solve_quietly(Problem(loss=loss, costs=costs, limits=limits), solver)
    moved = solve_quietly(Problem(loss=huge, costs=costs, limits=limits), solver)
    others = [l for l in range(len(loss)) if l not in (2, 7)]
    if solver != "greedy":
        assert plain.objective == pytest.approx(optimum, rel=1e-9)
    # layers 2 and 7 are now indifferent; the rest must still be optimal for the room they get
    room = limits["size"] - costs["size"][[2, 7], moved.choice[[2, 7]]].sum()
    sub = brute_force(loss[others], {"size": costs["size"][others]}, {"size": room})
    if solver != "greedy":
        assert loss[others, moved.choice[others]].sum() == pytest.approx(sub.optimum, rel=1e-9)
    assert moved.objective == pytest.approx(2e12 + loss[others, moved.choice[others]].sum(), rel=1e-15)
    assert np.isfinite(moved.objective) and moved.bound <= moved.objective


def test_a_row_of_1e308_is_handled_exactly():
    loss = np.array([[3.0, 1.0], [2.0, 0.5], [1e308, 1e308]])
    costs = {"size": np.array([[2.0, 4.0], [2.0, 4.0], [1.0, 1.0]])}
    for solver in BACKENDS:
        solution = solve_quietly(Problem(loss=loss, costs=costs, limits={"size": 7.0}), solver)
        assert solution.choice[:2].tolist() == [1, 0], solver  # as without the third layer
        assert solution.objective == 1e308


@pytest.mark.parametrize("rows, named", [
    ([[1e308, 1e308], [1e308, 1e308]], "layer 0 (|loss| up to 1e+308), layer 1"),
    ([[1.0, 2.0], [-1e308, 1e308]], "layer(s) [1] span more than float64 can hold"),
    ([[np.nan, 1.0], [1.0, 2.0]], "NaN at layer 0, option 0"),
    ([[1.0, 2.0], [np.inf, np.inf]], "layer(s) [1] have no allowed option"),
])
def test_non_finite_objectives_are_refused_naming_the_layer(rows, named):
    with pytest.raises(ValueError) as info:
        Problem(loss=np.array(rows), costs={"size": np.ones((2, 2))}, limits={"size": 2.0})
    assert named in str(info.value) and "Problem.loss" in str(info.value)
