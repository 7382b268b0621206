"""The quadratic model (`allocator.quadratic`): its exact solve against brute force, its scaling.

The reference enumerates every tie-respecting feasible choice of a small random problem with
random interaction terms of both signs and computes the model cost with plain loops; the MILP
must return the same minimum, and with ``m`` the same m best costs in order, as distinct
feasible choices.
"""
from __future__ import annotations

import numpy as np
import pytest
from allocator_helpers import quiet, tiny_profile
from hypothesis import given, settings
from hypothesis import strategies as st
from test_allocator_kbest import SETTINGS, feasible_sorted, small_problems

from allocator import Budget
from allocator.quadratic import Interactions, QuadraticModel, quadratic_model, solve_quadratic
from allocator.solving import pose


def brute_cost(problem, scale, q, choice) -> float:
    total = sum(problem.loss[l, k] for l, k in enumerate(choice))
    for i in range(len(choice)):
        for j in range(i + 1, len(choice)):
            total += q[i, j] * scale[i, choice[i]] * scale[j, choice[j]]
    return float(total)


@st.composite
def models(draw):
    problem = draw(small_problems())
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    L, K = problem.loss.shape
    scale = rng.uniform(0, 2, (L, K)) * (rng.random((L, K)) < 0.8)
    q = rng.normal(0, draw(st.sampled_from([0.5, 3.0])), (L, L))
    q = np.triu(q, 1) + np.triu(q, 1).T
    return QuadraticModel(problem, scale, q)


@settings(max_examples=60, **SETTINGS)
@given(models(), st.integers(1, 5))
def test_quadratic_solve_equals_brute_force(model, m):
    p = model.problem
    reference = sorted((brute_cost(p, model.scale, model.q, c), c) for _, c in feasible_sorted(p))
    got = solve_quadratic(model, m=m, time_limit=60)
    assert len(got) == min(m, len(reference))
    choices = [tuple(int(c) for c in s.choice) for s in got]
    assert len(set(choices)) == len(choices)
    for s, (best, _) in zip(got, reference):
        assert s.status == "optimal"
        assert p.violations_of(s.choice) == []
        assert s.objective == pytest.approx(brute_cost(p, model.scale, model.q, s.choice), abs=1e-9)
        assert s.objective == pytest.approx(best, abs=1e-5)  # HiGHS proves optimality to 1e-6 absolute


def test_zero_interactions_give_the_additive_optimum():
    rng = np.random.default_rng(3)
    from solvers import Problem, solve_problem

    p = Problem(loss=rng.uniform(0, 1, (6, 4)), costs={"size": rng.integers(0, 5, (6, 4)).astype(float)},
                limits={"size": 10.0})
    got = solve_quadratic(QuadraticModel(p, rng.uniform(0, 1, (6, 4)), np.zeros((6, 6))))[0]
    assert got.objective == pytest.approx(quiet(solve_problem, p, solver="exact").objective, abs=1e-9)


def test_scale_is_relative_error_size_and_q_is_the_excess():
    profile = tiny_profile()
    names = profile.names
    L = len(names)
    single = np.linspace(1.0, 2.0, L)
    pair = single[:, None] + single[None, :] + 0.5
    np.fill_diagonal(pair, single)
    inter = Interactions(tuple(names), 2, 2, single, pair)
    assert np.allclose(inter.q, 0.5 * (1 - np.eye(L)))
    posed = quiet(pose, profile, Budget(avg_bits=4))
    model = quadratic_model(posed, inter)
    grid = posed.grid
    for l in range(L):
        for k in np.flatnonzero(grid.allowed[l]):
            w, a = grid.w_bits[l, k], grid.a_bits[l, k]
            if (w, a) == (2, 2) and l not in grid.pins:
                assert model.scale[l, k] == pytest.approx(1.0)
    assert (model.scale >= 0).all() and (model.scale[~grid.allowed] == 0).all()


def test_interactions_refuse_bad_tables(tmp_path):
    with pytest.raises(ValueError, match="symmetric"):
        Interactions(("a", "b"), 2, 2, np.zeros(2), np.array([[0.0, 1.0], [2.0, 0.0]]))
    with pytest.raises(ValueError, match="shape"):
        Interactions(("a", "b"), 2, 2, np.zeros(3), np.zeros((2, 2)))
    good = Interactions(("a", "b"), 2, 3, np.array([1.0, np.nan]), np.array([[1.0, np.nan], [np.nan, np.nan]]))
    good.save(tmp_path / "q.json")
    back = Interactions.load(tmp_path / "q.json")
    assert back.names == good.names and back.a_bits == 3
    assert np.array_equal(np.isnan(back.pair), np.isnan(good.pair)) and (back.q == 0).all()
    with pytest.raises(ValueError, match="other layers"):
        quadratic_model(quiet(pose, tiny_profile(), Budget(avg_bits=4)), good)
