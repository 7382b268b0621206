"""Backend "exact" (`solvers.exact`): brute-force agreement, infeasibility proofs, time limits.

The shared backend suite (test_solvers_backends.py, test_solvers_properties.py) already runs
"exact" through `solve_problem`; this file adds what is particular to it: more random cases
(float costs included, up to 7 layers), the internal pieces (Pareto merge, LP bound), proofs
of joint infeasibility the preprocessing cannot see, and the time-limit contract.
"""
from __future__ import annotations

import itertools
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mckp_bruteforce import brute_force
from mckp_strategies import problems
from solvers import InfeasibleError, Problem, solve_problem
from solvers.exact import solve_arrays
from solvers.exact.lagrange import dual_bound, solve_lp
from solvers.exact.pareto import merge, pareto_indices

SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)


def solve_quietly(problem: Problem, **kwargs):
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="limit on .* does not bind", category=UserWarning)
        return solve_problem(problem, solver="exact", **kwargs)


@settings(max_examples=600, **SETTINGS)
@given(problems(max_layers=7, max_options=4, min_limits=1))
def test_exact_matches_brute_force(kwargs):
    reference = brute_force(kwargs["loss"], kwargs["costs"], kwargs["limits"], kwargs["tied"])
    problem = Problem(**kwargs)
    if reference.optimum is None:
        with pytest.raises(InfeasibleError):
            solve_quietly(problem)
        return
    solution = solve_quietly(problem)
    assert solution.status == "optimal"
    assert solution.objective == pytest.approx(reference.optimum, rel=1e-9, abs=1e-12)
    assert solution.bound == solution.objective
    assert problem.violations_of(solution.choice) == []


@st.composite
def float_arrays(draw):
    """Raw arrays with float costs (no preprocessing in front of the solver)."""
    n_layers, n_opt, n_res = draw(st.integers(1, 6)), draw(st.integers(1, 4)), draw(st.integers(1, 3))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    loss = rng.lognormal(0.0, 1.0, (n_layers, n_opt))
    loss[rng.random((n_layers, n_opt)) < 0.2] = np.inf
    loss[np.arange(n_layers), rng.integers(0, n_opt, n_layers)] = rng.lognormal(0.0, 1.0, n_layers)
    costs = rng.uniform(0.0, 1.0, (n_res, n_layers, n_opt)) ** 2
    low, high = costs.min(axis=2).sum(axis=1), costs.max(axis=2).sum(axis=1)
    limits = low + rng.uniform(-0.05, 1.0, n_res) * (high - low)
    return loss, costs, np.maximum(limits, 0.0)


@settings(max_examples=400, **SETTINGS)
@given(float_arrays())
def test_solve_arrays_matches_enumeration_with_float_costs(arrays):
    loss, costs, limits = arrays
    n_layers, n_opt = loss.shape
    choices = np.array(list(itertools.product(range(n_opt), repeat=n_layers)))
    rows = np.arange(n_layers)
    objective = loss[rows, choices].sum(axis=1)
    feasible = np.isfinite(objective) & (costs[:, rows, choices].sum(axis=2) <= limits[:, None]).all(axis=0)
    result = solve_arrays(loss, costs, limits)
    if not feasible.any():
        assert result.status == "infeasible" and result.choice is None
        return
    assert result.status == "optimal"
    assert result.objective == pytest.approx(objective[feasible].min(), rel=1e-9)
    assert (costs[:, rows, result.choice].sum(axis=1) <= limits * (1 + 1e-12)).all()


@settings(max_examples=100, **SETTINGS)
@given(st.integers(0, 2**32 - 1), st.integers(1, 5), st.integers(1, 5))
def test_merge_keeps_exactly_the_pareto_combinations(seed, n_front, n_opt):
    rng = np.random.default_rng(seed)
    cost, value = rng.integers(0, 5, n_front).astype(float), rng.integers(0, 5, n_front).astype(float)
    keep = pareto_indices(cost, value)
    cost, value = cost[keep], value[keep]
    opt_cost, opt_value = rng.integers(0, 5, n_opt).astype(float), rng.integers(0, 5, n_opt).astype(float)
    new_cost, new_value, parent, option = merge(cost, value, opt_cost, opt_value)
    assert np.array_equal(new_cost, cost[parent] + opt_cost[option])
    assert np.array_equal(new_value, value[parent] + opt_value[option])
    sums = [(c + oc, v + ov) for c, v in zip(cost, value) for oc, ov in zip(opt_cost, opt_value)]
    pareto = sorted({(c, v) for c, v in sums if not any(c2 <= c and v2 <= v and (c2, v2) != (c, v) for c2, v2 in sums)})
    assert list(zip(new_cost.tolist(), new_value.tolist())) == pareto


def test_lp_bound_is_below_the_optimum_and_matches_highs_lp():
    from scipy.optimize import linprog
    from scipy.sparse import kron, eye

    rng = np.random.default_rng(3)
    loss = rng.lognormal(0, 1, (30, 8))
    costs = rng.uniform(0, 1, (3, 30, 8))
    rows = np.arange(30)
    scaled = costs / costs.mean(axis=2).sum(axis=1)[:, None, None]
    lp = solve_lp(loss, scaled)
    reference = linprog(loss.ravel(), A_ub=scaled.reshape(3, -1), b_ub=np.ones(3),
                        A_eq=kron(eye(30), np.ones((1, 8))), b_eq=np.ones(30), method="highs")
    assert lp.bound == pytest.approx(reference.fun, rel=1e-8)
    assert dual_bound(loss, scaled, lp.lam) == lp.bound
    exact = solve_arrays(loss, scaled, np.ones(3))
    assert exact.status == "optimal" and lp.bound <= exact.objective + 1e-12
    assert (scaled[:, rows, exact.choice].sum(axis=1) <= 1).all()


def two_way_problem(n_layers: int, limit: float) -> Problem:
    """Each layer is cheap in one resource and dear in the other; limits reachable alone."""
    loss = np.tile([1.0, 2.0], (n_layers, 1))
    costs = {"size": np.tile([1.0, 0.0], (n_layers, 1)), "bops": np.tile([0.0, 1.0], (n_layers, 1))}
    return Problem(loss=loss, costs=costs, limits={"size": limit, "bops": limit})


@pytest.mark.parametrize("limit", [1.0, 1.5])  # 1.0: even the LP is infeasible; 1.5: only integers are
def test_proves_limits_infeasible_together(limit):
    problem = two_way_problem(3, limit)
    with pytest.raises(InfeasibleError) as caught:
        solve_quietly(problem)
    assert caught.value.jointly
    assert set(caught.value.violations) == {"size", "bops"}


def test_feasible_neighbour_of_the_infeasible_case():
    solution = solve_quietly(two_way_problem(3, 2.0))
    assert solution.status == "optimal" and solution.objective == 4.0


def hard_problem() -> Problem:
    """A ViT-like (w, a) problem with three lumpy limits: the LP gap needs a real search."""
    rng = np.random.default_rng(7)
    bits = np.array([2, 3, 4, 5, 6, 8], dtype=float)
    w, a = (b.ravel() for b in np.meshgrid(bits, bits, indexing="ij"))
    n = 40
    params = rng.choice([0.6e6, 1.8e6, 2.4e6], n)
    macs = params * 197
    loss = rng.lognormal(0, 1, (n, 1)) * 4.0 ** -w + rng.lognormal(0, 1, (n, 1)) * 4.0 ** -a
    costs = {"size": params[:, None] * w, "bops": macs[:, None] * w * a,
             "latency": macs[:, None] * (0.2 + np.maximum(w, a) / 8) * rng.uniform(0.9, 1.1, (n, 1))}
    limits = {k: float(v.min(axis=1).sum() + 0.5 * (v.max(axis=1).sum() - v.min(axis=1).sum())) for k, v in costs.items()}
    return Problem(loss=loss, costs=costs, limits=limits)


def test_matches_highs_on_a_problem_that_needs_search():
    problem = hard_problem()
    ours = solve_quietly(problem)
    highs = solve_problem(problem, solver="scipy")
    assert ours.status == "optimal"
    assert ours.objective <= highs.objective * (1 + 1e-9)
    assert ours.objective >= highs.bound * (1 - 1e-9)


def test_time_limit_returns_feasible_plan_with_proven_bound():
    problem = hard_problem()
    optimum = solve_quietly(problem).objective
    limited = solve_quietly(problem, time_limit=1e-6)
    assert limited.status in ("feasible", "optimal")
    assert problem.violations_of(limited.choice) == []
    assert limited.bound <= optimum * (1 + 1e-12) <= limited.objective * (1 + 1e-12)
    if limited.status == "feasible":
        assert limited.bound < limited.objective


def test_time_limit_result_of_solve_arrays_is_not_complete():
    problem = hard_problem()
    names = list(problem.limits)
    arrays = (problem.loss, np.stack([problem.costs[k] for k in names]), np.array([problem.limits[k] for k in names]))
    full = solve_arrays(*arrays)
    limited = solve_arrays(*arrays, time_limit=0.0)
    assert full.status == "optimal" and full.nodes > 0  # the case does need the search
    assert limited.status == "feasible"
    assert limited.bound <= full.objective * (1 + 1e-12) <= limited.objective * (1 + 1e-12)
