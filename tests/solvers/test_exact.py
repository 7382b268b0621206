"""Backend "exact" (`solvers.exact`): brute-force agreement, infeasibility proofs, time limits.

The shared backend suite (test_solvers_backends.py, test_solvers_properties.py) already runs
"exact" through `solve_problem`; this file adds what is particular to it: more random cases
(float costs included, up to 7 layers), the internal pieces (Pareto merge, LP bound), proofs
of joint infeasibility the preprocessing cannot see, and the time-limit contract.
"""
from __future__ import annotations

import itertools
import time
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mckp_bruteforce import brute_force
from mckp_strategies import problems
from solver_cases import vit_like_problem
from solvers import InfeasibleError, NonBindingLimitWarning, Problem, SolverTimeoutError, solve_problem
from solvers.exact import solve_arrays
from solvers.exact import mckp
from solvers.exact.lagrange import dual_bound, solve_lp, solve_lp_one
from solvers.exact.pareto import best_within, merge, pareto_indices

SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)


def solve_quietly(problem: Problem, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NonBindingLimitWarning)
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


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_one_limit_lp_matches_highs_hull_lp_and_its_greedy_plan_fits(seed):
    from scipy.optimize import linprog
    from scipy.sparse import eye, kron

    rng = np.random.default_rng(seed)
    loss = rng.lognormal(0, 1, (25, 6))
    loss[rng.random((25, 6)) < 0.2] = np.inf
    loss[:, 0] = rng.lognormal(0, 1, 25)
    cost = rng.uniform(0, 1, (25, 6)) ** 2
    cost /= np.where(np.isfinite(loss), cost, 0).mean(axis=1).sum()
    lam, bound, greedy = solve_lp_one(loss, cost)
    allowed = np.isfinite(loss).ravel()
    reference = linprog(np.where(allowed, loss.ravel(), 0), A_ub=cost.reshape(1, -1), b_ub=[1.0],
                        A_eq=kron(eye(25), np.ones((1, 6))), b_eq=np.ones(25),
                        bounds=[(0, None if ok else 0) for ok in allowed], method="highs")
    assert lam >= 0 and bound == dual_bound(loss, np.where(np.isfinite(loss), cost, 0)[None], np.array([lam]))
    assert bound == pytest.approx(reference.fun, rel=1e-9)
    rows = np.arange(25)
    assert np.isfinite(loss[rows, greedy]).all() and cost[rows, greedy].sum() <= 1.0
    assert loss[rows, greedy].sum() >= bound


def test_one_limit_lp_when_the_least_loss_plan_fits_or_nothing_fits():
    loss = np.array([[1.0, 2.0], [1.0, 3.0]])
    cost = np.array([[0.2, 0.1], [0.3, 0.1]])
    lam, bound, greedy = solve_lp_one(loss, cost)
    assert (lam, bound, greedy.tolist()) == (0.0, 2.0, [0, 0])
    assert solve_lp_one(loss, cost * 10)[2] is None


def test_best_within_prunes_against_the_incumbent():
    rng = np.random.default_rng(5)
    loss, cost = rng.lognormal(0, 1, (8, 3)), rng.uniform(0, 1, (8, 3))
    cap = float(cost.min(axis=1).sum() + 0.5 * (cost.max(axis=1).sum() - cost.min(axis=1).sum()))
    choice = best_within(loss, cost, cap, 10_000)
    rows = np.arange(8)
    optimum = loss[rows, choice].sum()
    # any slope is a valid Lagrangian prune; an incumbent just above the optimum keeps it
    for slope in (0.0, 0.7, 5.0):
        assert loss[rows, best_within(loss, cost, cap, 10_000, optimum * (1 + 1e-9), slope)].sum() == optimum
        assert best_within(loss, cost, cap, 10_000, optimum, slope) is None  # nothing strictly better


def test_one_limit_falls_back_to_the_general_path_when_fronts_grow(monkeypatch):
    # subset-sum-like: every layer trades its whole cost for a loss of about the same size, so
    # the LP bound fixes little and the pruned merge still needs fronts of several points
    rng = np.random.default_rng(11)
    size = rng.uniform(1, 2, 16)
    loss = np.stack([np.zeros(16), size * rng.uniform(1.0, 1.01, 16)], axis=1)
    cost = np.stack([size, np.zeros(16)], axis=1)[None]
    limit = np.array([size.sum() / 2])
    fast = solve_arrays(loss, cost, limit)
    lp_calls = []
    monkeypatch.setattr(mckp, "solve_lp", lambda *a, **k: lp_calls.append(1) or solve_lp(*a, **k))
    monkeypatch.setattr(mckp, "DIRECT_FRONT", 1)
    fallback = solve_arrays(loss, cost, limit)
    # the search took over, with the hull LP's multiplier: no LP solver was needed
    assert fallback.nodes > 0 and not lp_calls
    assert fast.status == fallback.status == "optimal" and fast.free_layers > 1
    assert fallback.objective == pytest.approx(fast.objective, rel=1e-10)
    assert fast.bound == fast.objective
    choices = np.array(list(itertools.product(range(2), repeat=16)))
    rows = np.arange(16)
    fits = cost[0, rows, choices].sum(axis=1) <= limit[0]
    assert fast.objective == pytest.approx(loss[rows, choices].sum(axis=1)[fits].min(), rel=1e-12)


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


def test_matches_highs_on_a_problem_that_needs_search():
    problem = vit_like_problem()
    ours = solve_quietly(problem)
    highs = solve_problem(problem, solver="scipy")
    assert ours.status == "optimal"
    assert ours.objective <= highs.objective * (1 + 1e-9)
    assert ours.objective >= highs.bound * (1 - 1e-9)


def test_time_limit_returns_feasible_plan_with_proven_bound():
    problem = vit_like_problem()
    optimum = solve_quietly(problem).objective
    try:
        limited = solve_quietly(problem, time_limit=1e-6)
    except SolverTimeoutError as error:  # the limit counts preprocessing too; it may end there
        assert error.time_limit == 1e-6
        return
    assert limited.status in ("feasible", "optimal")
    assert problem.violations_of(limited.choice) == []
    assert limited.bound <= optimum * (1 + 1e-12) <= limited.objective * (1 + 1e-12)
    if limited.status == "feasible":
        assert limited.bound < limited.objective


def test_time_limit_result_of_solve_arrays_is_not_complete():
    problem = vit_like_problem()
    names = list(problem.limits)
    arrays = (problem.loss, np.stack([problem.costs[k] for k in names]), np.array([problem.limits[k] for k in names]))
    full = solve_arrays(*arrays)
    limited = solve_arrays(*arrays, time_limit=0.0)
    assert full.status == "optimal" and full.nodes > 0  # the case does need the search
    # a deadline that has passed stops every phase, the LP's first round included: what is left
    # is a plan that needed no work (the LP rounding of nothing happens to fit here) or none
    assert limited.status in ("feasible", "timeout") and limited.nodes == 0
    assert limited.bound <= full.objective * (1 + 1e-12)
    if limited.status == "feasible":
        assert full.objective <= limited.objective * (1 + 1e-12)
    else:
        assert limited.choice is None


def test_time_limit_holds_on_a_large_problem():
    """10,000 layers x 8 options x 3 limits (like `benchmarks.solvers.synthetic_problem(10_000, 8, 3, 0)`,
    which needs ~11 s); with a 2 s limit the LP (HiGHS, given the
    time left), the local search and the search all stop, and a plan or a timeout comes back in time."""
    rng = np.random.default_rng(0)
    bits = np.array([2, 3, 4, 5, 6, 7, 8, 16], dtype=float)
    params = rng.integers(10_000, 2_000_000, 10_000).astype(float)
    macs = params * rng.integers(16, 400, 10_000)
    loss = rng.lognormal(0.0, 1.5, (10_000, 1)) * 4.0 ** -bits * rng.uniform(0.7, 1.3, (10_000, 8))
    costs = {"size": params[:, None] * bits, "bops": macs[:, None] * bits**2,
             "latency": macs[:, None] * 1e-9 * bits**1.6 * rng.uniform(0.9, 1.1, (10_000, 8))}
    limits = {"size": 4 * params.sum(), "bops": 18 * macs.sum(),
              "latency": float(costs["latency"].min(axis=1).sum() + costs["latency"].max(axis=1).sum()) / 2}
    problem = Problem(loss=loss, costs=costs, limits=limits)
    start = time.perf_counter()
    try:
        solution = solve_quietly(problem, time_limit=2.0)
    except SolverTimeoutError:
        solution = None
    elapsed = time.perf_counter() - start
    assert elapsed < 4.5, f"a 2 s limit took {elapsed:.2f} s"  # margin for a loaded machine; ~11 s unlimited
    if solution is not None:
        assert problem.violations_of(solution.choice) == [] and solution.bound <= solution.objective
