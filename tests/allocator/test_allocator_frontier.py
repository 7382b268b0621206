"""frontier(resource=...): every breakpoint of the exact optimum-versus-limit curve, as plans.

Each breakpoint is checked against an independent `solve` at its own budget (the same optimum),
between two neighbours (the lower one's optimum: no step missed) and below the first
(infeasible); on tiny profiles the whole list is compared with the Pareto set found by
enumerating every plan.
"""
from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from allocator import Budget, BudgetError, BudgetInfeasibleError, LayerInfo, Profile, UnknownSolverError, frontier, solve
from allocator.options import build_options
from allocator.solving import usage_range
from allocator_helpers import SETTINGS, profiles, quiet, reference_loss, reference_totals, tiny_profile
from solvers import InfeasibleError

TOL = 1e-9


def user_total(profile: Profile, plan, resource: str) -> float:
    """Total of ``resource`` in the user's units, from the documented definitions."""
    t = reference_totals(profile, plan.w_bits, plan.a_bits)
    if resource == "avg_bits":
        return t["avg_w_bits"]
    if resource == "size_mb":
        return t["size_bytes"] / 1e6
    if resource == "bops":
        return float(t["bops"])
    table, bits = profile.cost_tables[resource], list(profile.bits)
    B = len(bits)
    total = 0.0
    for l, layer in enumerate(profile.layers):
        i, j = bits.index(plan.w_bits[layer.name]), bits.index(plan.a_bits[layer.name])
        total += float(table[l, i] if table.shape[1] == B else table[l, i * B + j])
    return total


def with_limit(hold: dict | None, resource: str, value: float) -> Budget:
    return Budget(**{**(hold or {}), resource: value})


def close(a: float, b: float) -> bool:
    return abs(a - b) <= TOL * max(1.0, abs(a), abs(b))


def midpoint_hold(profile: Profile, resource: str) -> dict:
    """A limit halfway between the smallest and largest total of a resource other than ``resource``."""
    other = "avg_bits" if resource != "avg_bits" else "bops"
    grid = build_options(profile)
    (lim,), costs = Budget(**{other: 1.0}).resolve(profile, grid)
    lo, hi = usage_range(costs[other], grid.allowed, grid.tied)
    return {other: max(lim.user((lo + hi) / 2), 1e-6)}


def check_frontier(profile: Profile, resource: str, hold: dict | None) -> list:
    plans = quiet(frontier, profile, resource=resource, hold=hold)
    assert plans
    costs = [user_total(profile, pl, resource) for pl in plans]
    objs = [pl.objective for pl in plans]
    assert all(b > a for a, b in zip(costs, costs[1:])), costs
    assert all(b < a for a, b in zip(objs, objs[1:])), objs
    for i, plan in enumerate(plans):
        assert plan.status == "optimal" and plan.solver == "exact-frontier" and plan.budget_satisfied
        budget = Budget.parse(plan.budget)
        assert close(budget.limits[resource], max(costs[i], 5e-324)), (plan.budget, costs[i])
        for key, value in (hold or {}).items():
            assert budget.limits[key] == value
            assert user_total(profile, plan, key) <= value * (1 + TOL)
        # optimal at its own cost: an independent solve finds the same loss
        assert close(quiet(solve, profile, plan.budget, solver="exact").objective, plan.objective)
        if i > 0:  # complete: halfway to the previous step, the previous step is still the optimum
            mid = quiet(solve, profile, with_limit(hold, resource, (costs[i - 1] + costs[i]) / 2), solver="exact")
            assert close(mid.objective, objs[i - 1])
    if costs[0] > 0:  # nothing below the first step
        with pytest.raises(InfeasibleError):
            quiet(solve, profile, with_limit(hold, resource, costs[0] * (1 - 1e-6)), solver="exact")
    return plans


@settings(max_examples=25, **SETTINGS)
@given(profile=profiles(max_layers=4), pick=st.integers(0, 10), held=st.booleans())
def test_every_breakpoint_is_an_optimum_and_none_is_missed(profile, pick, held):
    resources = ["avg_bits", "size_mb", "bops", *sorted(profile.cost_tables)]
    resource = resources[pick % len(resources)]
    if resource not in ("avg_bits", "size_mb", "bops") and any(
            layer.fixed_bits is not None and layer.fixed_bits not in profile.bits for layer in profile.layers):
        with pytest.raises(BudgetError, match="no column for the pinned bits"):
            quiet(frontier, profile, resource=resource)
        return
    hold = midpoint_hold(profile, resource) if held else None
    check_frontier(profile, resource, hold)


def all_plans(profile: Profile):
    """Every plan of a profile (pins, matmul w == a, weight-only a == w), as (w_bits, a_bits)."""
    per_layer = []
    for layer in profile.layers:
        if layer.fixed_bits is not None:
            per_layer.append([(layer.fixed_bits, layer.fixed_bits)])
        elif layer.kind == "matmul" or profile.act_sensitivity is None:
            per_layer.append([(b, b) for b in profile.bits])
        else:
            per_layer.append([(w, a) for w in profile.bits for a in profile.bits])
    for combo in itertools.product(*per_layer):
        yield ({layer.name: c[0] for layer, c in zip(profile.layers, combo)},
               {layer.name: c[1] for layer, c in zip(profile.layers, combo)})


def brute_pareto(profile: Profile, max_bops: float = np.inf) -> list[tuple[float, float]]:
    """(avg weight bits, loss) of every Pareto-optimal plan with BOPs <= max_bops, by enumeration."""
    points = []
    for w, a in all_plans(profile):
        t = reference_totals(profile, w, a)
        if t["bops"] > max_bops:
            continue
        loss = sum(reference_loss(profile, l, w[x.name], a[x.name]) for l, x in enumerate(profile.layers))
        points.append((t["avg_w_bits"], loss))
    points.sort()
    front: list[tuple[float, float]] = []
    for cost, loss in points:
        if front and loss >= front[-1][1] - TOL:
            continue  # dominated (or equalled) by a cheaper plan
        if front and cost <= front[-1][0] + TOL:
            front[-1] = (cost, loss)  # same cost, lower loss
        else:
            front.append((cost, loss))
    return front


@pytest.mark.parametrize("act", [True, False])
@pytest.mark.parametrize("seed", [0, 1])
def test_complete_against_enumeration(act, seed):
    profile = tiny_profile(act=act, seed=seed)
    plans = check_frontier(profile, "avg_bits", None)
    got = [(pl.avg_w_bits, pl.objective) for pl in plans]
    want = brute_pareto(profile)
    assert len(got) == len(want) and all(close(g[0], w[0]) and close(g[1], w[1]) for g, w in zip(got, want))


def test_hold_is_respected_and_changes_the_frontier():
    profile = tiny_profile(act=True, seed=3)
    w4a4 = sum(layer.macs * 16 for layer in profile.layers)  # BOPs of uniform W4A4, pinned layers too
    free = quiet(frontier, profile, resource="avg_bits")
    held = quiet(frontier, profile, resource="avg_bits", hold="bops_of=W4A4")
    assert any(pl.bops > w4a4 for pl in free)  # the hold binds somewhere, so this test can fail
    assert all(pl.bops <= w4a4 and pl.budget_satisfied for pl in held)
    assert all(pl.budget.endswith("bops_of=W4A4") for pl in held)
    got = [(pl.avg_w_bits, pl.objective) for pl in held]
    want = brute_pareto(profile, max_bops=w4a4)
    assert len(got) == len(want) and all(close(g[0], w[0]) and close(g[1], w[1]) for g, w in zip(got, want))
    for plan in held:
        assert close(quiet(solve, profile, plan.budget, solver="exact").objective, plan.objective)


def test_custom_cost_table_is_a_resource():
    base = tiny_profile(act=True, seed=5, pins=False)
    rng = np.random.default_rng(5)
    latency = np.round(rng.uniform(0.1, 2.0, (len(base.layers), len(base.bits) ** 2)), 6)
    profile = Profile(base.layers, base.bits, importance=base.importance, weight_sensitivity=base.weight_sensitivity,
                      act_sensitivity=base.act_sensitivity, cost_tables={"latency": latency})
    plans = check_frontier(profile, "latency", {"avg_bits": 4.0})
    assert all(close(pl.costs["latency"], Budget.parse(pl.budget).latency) for pl in plans)


def test_held_limits_infeasible_together():
    layers = [LayerInfo("a", "linear", 100, 1000), LayerInfo("b", "linear", 100, 1000)]
    # latency falls as bits rise: "avg_bits at its least" and "latency at its least" exclude each other
    profile = Profile(layers, (2, 8), weight_sensitivity=np.array([[1.0, 0.1], [1.0, 0.1]]),
                      cost_tables={"latency": np.array([[2.0, 1.0], [2.0, 1.0]])})
    with pytest.raises(BudgetInfeasibleError) as info:
        quiet(frontier, profile, resource="bops", hold={"avg_bits": 2, "latency": 2})
    assert info.value.jointly
    assert set(info.value.violations) == {"avg_bits", "latency"}  # the swept resource is not blamed


def test_argument_errors_name_the_fix():
    profile = Profile(tiny_profile().layers, (2, 4, 8), weight_sensitivity=tiny_profile().weight_sensitivity,
                      cost_tables={"latency": np.ones((5, 3))})
    with pytest.raises(BudgetError, match=r"cannot sweep resource 'speed'.*\['avg_bits', 'size_mb', 'bops', 'latency'\]"):
        frontier(profile, resource="speed")
    with pytest.raises(BudgetError, match="bops_of"):
        frontier(profile, resource="bops_of")
    with pytest.raises(BudgetError, match="limits 'avg_bits', the resource being swept"):
        frontier(profile, resource="avg_bits", hold="W4")
    with pytest.raises(ValueError, match="not both"):
        frontier(profile, [3.0], resource="avg_bits")
    with pytest.raises(ValueError, match="not both"):
        frontier(profile, [3.0], hold="W4")
    with pytest.raises(ValueError, match="give budgets .* or a resource"):
        frontier(profile)
    with pytest.raises(ValueError, match="solver must be 'auto' or 'exact'"):
        frontier(profile, resource="avg_bits", solver="greedy")
    with pytest.raises(UnknownSolverError):
        frontier(profile, resource="avg_bits", solver="nope")
    with pytest.raises(TypeError, match="single budget"):
        frontier(profile, 3.0)


def test_budget_list_call_is_unchanged():
    profile = tiny_profile(seed=2)
    plans = quiet(frontier, profile, [3, "W4A8", {"avg_bits": 5}])
    assert [pl.budget for pl in plans] == ["W3A3", "W4A8", "W5"]
    for plan, budget in zip(plans, [3, "W4A8", {"avg_bits": 5}]):
        assert plan.objective == quiet(solve, profile, budget).objective
        assert plan.solver != "exact-frontier"
