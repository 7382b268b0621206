"""k-best and within-gap enumeration (`allocator.kbest`) against brute force.

The reference enumerates every tie-respecting choice of a small random problem, keeps the
feasible ones and sorts them by objective; k-best must return exactly its first k objectives,
in order, as distinct feasible choices, and a gap enumeration exactly the set within the gap.
"""
from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from allocator.kbest import k_best
from solvers import InfeasibleError, Problem

SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)


@st.composite
def small_problems(draw):
    """Problems of 1-5 layers x 1-4 options, integer costs, forbidden options, maybe one tie."""
    n_layers, n_options = draw(st.integers(1, 5)), draw(st.integers(1, 4))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    loss = np.round(rng.uniform(0, 5, (n_layers, n_options)), draw(st.sampled_from([0, 1, 6])))
    loss[rng.random(loss.shape) < 0.2] = np.inf
    tied = []
    if n_layers >= 2 and draw(st.booleans()):
        tied = [sorted(rng.choice(n_layers, size=2, replace=False).tolist())]
        loss[tied[0], int(rng.integers(n_options))] = 1.0
    for layer in np.flatnonzero(np.isinf(loss).all(axis=1)):
        loss[layer, 0] = 2.0
    costs = {"size": rng.integers(0, 6, loss.shape).astype(float), "bops": rng.integers(0, 6, loss.shape).astype(float)}
    limits = {}
    for name in draw(st.sampled_from([(), ("size",), ("size", "bops")])):
        low, high = costs[name].min(axis=1).sum(), costs[name].max(axis=1).sum()
        limits[name] = float(np.floor(low + draw(st.sampled_from([0.0, 0.3, 0.6, 1.0])) * (high - low)))
    return Problem(loss=loss, costs=costs, limits=limits, tied=tied)


def feasible_sorted(problem: Problem) -> list[tuple[float, tuple[int, ...]]]:
    """(objective, choice) of every feasible choice, best first (plain loops, no library code)."""
    out = []
    for choice in itertools.product(range(problem.n_options), repeat=problem.n_layers):
        if any(len({choice[i] for i in group}) > 1 for group in problem.tied):
            continue
        objective = sum(problem.loss[l, k] for l, k in enumerate(choice))
        if not np.isfinite(objective):
            continue
        if any(sum(problem.costs[r][l, k] for l, k in enumerate(choice)) > lim for r, lim in problem.limits.items()):
            continue
        out.append((float(objective), choice))
    return sorted(out)


@settings(max_examples=80, **SETTINGS)
@given(small_problems(), st.integers(1, 12))
def test_k_best_equals_brute_force(problem, k):
    reference = feasible_sorted(problem)
    if not reference:
        with pytest.raises(InfeasibleError):
            k_best(problem, k=k)
        return
    result = k_best(problem, k=k)
    got = [tuple(int(c) for c in choice) for choice in result.choices]
    assert len(got) == min(k, len(reference))
    assert len(set(got)) == len(got)  # distinct
    assert np.allclose(result.objectives, [obj for obj, _ in reference[:len(got)]], rtol=0, atol=1e-9)
    assert (np.diff(result.objectives) >= -1e-9).all()  # non-decreasing (float sums may differ in the last bit)
    for choice, sol in zip(got, result.solutions):
        assert problem.violations_of(np.array(choice)) == []
        assert sol.objective == pytest.approx(problem.objective_of(np.array(choice)), abs=1e-12)
    assert result.complete == (k > len(reference))


@settings(max_examples=80, **SETTINGS)
@given(small_problems(), st.sampled_from([0.0, 0.05, 0.2, 1.0]))
def test_gap_enumeration_is_exactly_the_brute_force_set(problem, gap):
    reference = feasible_sorted(problem)
    if not reference:
        return
    best = reference[0][0]
    threshold = best + gap * abs(best)
    expected = {choice for obj, choice in reference if obj <= threshold + 1e-12 * max(abs(threshold), 1.0)}
    result = k_best(problem, gap=gap)
    assert result.complete
    got = [tuple(int(c) for c in choice) for choice in result.choices]
    assert set(got) == expected and len(got) == len(expected)
    assert result.threshold == pytest.approx(threshold)


def test_gap_stops_at_max_plans_and_says_incomplete():
    problem = Problem(loss=np.zeros((4, 3)))  # 81 plans, all optimal
    result = k_best(problem, gap=0.0, max_plans=10)
    assert len(result.solutions) == 10 and not result.complete
    assert len({tuple(c) for c in result.choices}) == 10


def test_ties_are_kept_in_every_plan():
    loss = np.array([[0.0, 1.0, 2.0], [5.0, 0.0, 1.0], [0.0, 0.5, 3.0]])
    problem = Problem(loss=loss, tied=[[0, 2]])
    result = k_best(problem, k=20)
    assert len(result.solutions) == 9 and result.complete  # 3 group options x 3 for layer 1
    assert all(c[0] == c[2] for c in result.choices)


@pytest.mark.parametrize("kwargs, match", [
    ({}, "needs k"), ({"k": 0}, "positive"), ({"k": 2.5}, "positive"), ({"gap": -0.1}, "gap"),
    ({"gap": float("inf")}, "gap"), ({"k": 3, "max_plans": 0}, "max_plans"),
])
def test_bad_arguments_say_what_is_wrong(kwargs, match):
    with pytest.raises(ValueError, match=match):
        k_best(Problem(loss=np.zeros((2, 2))), **kwargs)


def test_a_heuristic_backend_is_refused():
    loss = np.array([[0.0, 1.0], [0.0, 2.0]])
    problem = Problem(loss=loss, costs={"size": np.array([[2.0, 1.0], [2.0, 1.0]])}, limits={"size": 3.0})
    with pytest.raises(RuntimeError, match="exact"):
        k_best(problem, k=3, solver="greedy")
