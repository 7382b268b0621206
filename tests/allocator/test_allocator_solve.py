"""solve(): plans meet their budgets (checked independently), options are built as documented,
and every way a budget can be wrong is reported clearly."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from allocator import (Budget, BudgetInfeasibleError, LayerInfo, NonBindingLimitWarning, Plan, Profile, UnknownSolverError,
                       solve)
from allocator_helpers import (SETTINGS, brute_force, profiles, quiet, reference_loss, reference_totals,
                               tiny_profile)
from solvers import InfeasibleError, available_solvers
from solvers.backends import is_exact

EXACT = [s for s in available_solvers() if is_exact(s)]


def check_plan_structure(profile: Profile, plan: Plan, tie_wa: bool = False) -> None:
    """Pins, matmul w == a, ties and option kinds hold in the plan."""
    assert plan.names == profile.names
    for layer in profile.layers:
        w, a = plan.w_bits[layer.name], plan.a_bits[layer.name]
        if layer.fixed_bits is not None:
            assert (w, a) == (layer.fixed_bits, layer.fixed_bits)
        else:
            assert w in profile.bits and a in profile.bits
        if layer.kind == "matmul" or tie_wa or not profile.has_act_choices:
            assert w == a
    groups: dict = {}
    for layer in profile.layers:
        if layer.group:
            groups.setdefault(layer.group, set()).add((plan.w_bits[layer.name], plan.a_bits[layer.name]))
    assert all(len(v) == 1 for v in groups.values())


@settings(max_examples=40, **SETTINGS)
@given(profiles(max_layers=4, cost_tables=False), st.floats(-0.1, 1.1))
def test_plan_is_optimal_and_meets_budget_by_independent_check(profile, fraction):
    """Against brute-force enumeration with the documented loss and totals; the budget sweeps
    from a little below the smallest candidate bit-width to a little above the largest."""
    low, high = min(profile.bits), max(*profile.bits, 8)
    avg_bits = max(0.5, low + fraction * (high - low))
    ref = brute_force(profile, avg_bits)
    try:
        plan = quiet(solve, profile, avg_bits)
    except BudgetInfeasibleError:
        assert ref is None, "solve said infeasible but a feasible plan exists"
        return
    assert ref is not None, "solve returned a plan but none is feasible"
    check_plan_structure(profile, plan)
    t = reference_totals(profile, plan.w_bits, plan.a_bits)
    assert t["avg_w_bits"] * profile.total_params <= avg_bits * profile.total_params * (1 + 1e-12)
    if profile.has_act_choices:
        assert t["bops"] <= sum(layer.macs * avg_bits**2 for layer in profile.layers) * (1 + 1e-12)
    assert plan.budget_satisfied is True
    for key in ("avg_w_bits", "size_bytes", "bops"):
        assert plan.totals[key] == pytest.approx(t[key], rel=1e-12)
    assert plan.objective == pytest.approx(ref[0], rel=1e-7, abs=1e-12)


@settings(max_examples=30, **SETTINGS)
@given(profiles(max_layers=5, cost_tables=False, act=True), st.booleans())
def test_tie_wa_gives_equal_bits(profile, tie):
    plan = quiet(solve, profile, Budget(avg_bits=8.0), objective="sensitivity", tie_wa=tie)
    check_plan_structure(profile, plan, tie_wa=tie)


def test_deterministic():
    p = tiny_profile(seed=3)
    a, b = solve(p, "W4A4"), solve(p, "W4A4")
    assert (a.w_bits, a.a_bits, a.objective) == (b.w_bits, b.a_bits, b.objective)


@pytest.mark.parametrize("solver", EXACT)
def test_every_exact_backend_finds_the_same_optimum(solver):
    p = tiny_profile(seed=5)
    ref = brute_force(p, 4.0)
    plan = solve(p, 4.0, solver=solver)
    assert plan.solver == solver and plan.status == "optimal"
    assert plan.objective == pytest.approx(ref[0], rel=1e-9)


def test_objective_matches_independent_loss_sum():
    p = tiny_profile(seed=7)
    plan = solve(p, "W4A4", alpha=0.3)
    expected = sum(reference_loss(p, l, plan.w_bits[n], plan.a_bits[n], alpha=0.3) for l, n in enumerate(p.names))
    assert plan.objective == pytest.approx(expected, rel=1e-12)


def test_weight_only_profile_has_len_bits_options_and_a_follows_w():
    p = tiny_profile(act=False)
    plan = solve(p, 4.0)
    assert all(plan.w_bits[n] == plan.a_bits[n] for n in p.names)


def test_pinned_layers_keep_fixed_bits_and_count_in_totals():
    p = tiny_profile()
    plan = solve(p, 3.0)
    assert plan.w_bits["embed"] == plan.a_bits["embed"] == 8
    assert plan.pinned == ["embed", "head"]
    # pinned layers count: the remaining layers must compensate for the 8-bit ones
    assert plan.avg_w_bits <= 3.0
    assert plan.w_bits["blk.qkv"] < 3 or plan.w_bits["blk.fc"] < 3


def test_pinned_argument_overrides_and_adds_pins():
    p = tiny_profile()
    plan = quiet(solve, p, 6.0, pinned={"blk.fc": 2, "embed": 4})
    assert (plan.w_bits["blk.fc"], plan.a_bits["blk.fc"]) == (2, 2)
    assert plan.w_bits["embed"] == 4
    assert "blk.fc" in plan.pinned


def test_pinned_none_frees_a_profile_pin():
    p = tiny_profile()
    pinned_plan = solve(p, 3.0)
    free = solve(p, 3.0, pinned={"embed": None, "head": None})
    assert free.pinned == []
    assert free.avg_w_bits <= 3.0
    # freeing layers only widens the feasible set: the optimum cannot get worse
    assert free.objective <= pinned_plan.objective + 1e-12
    # and the freed layers really are chosen by the solver: the result is the brute-force optimum
    unpinned_twin = tiny_profile(pins=False)  # same tables, no pins
    assert free.objective == pytest.approx(brute_force(unpinned_twin, 3.0)[0], rel=1e-9)


def test_pinned_bits_outside_candidates():
    p = tiny_profile(bits=(2, 4))  # embed/head pinned at 8: no column for 8
    plan = quiet(solve, p, 4.0)
    assert plan.w_bits["head"] == 8
    others = sum(reference_loss(p, l, plan.w_bits[n], plan.a_bits[n]) for l, n in enumerate(p.names)
                 if n not in ("embed", "head"))
    assert plan.objective == pytest.approx(others, rel=1e-12)


def test_unknown_pinned_layer():
    with pytest.raises(ValueError, match="pinned: no layer named 'blk.fcc'.*did you mean"):
        solve(tiny_profile(), 4.0, pinned={"blk.fcc": 4})


def test_pinned_bits_invalid():
    with pytest.raises(ValueError, match=r"pinned\['blk.fc'\] must be between 2 and 16"):
        solve(tiny_profile(), 4.0, pinned={"blk.fc": 0})


def test_groups_are_tied_and_pinning_one_member_pins_the_group():
    layers = [LayerInfo("a", "linear", 100, 1000, group="g"), LayerInfo("b", "linear", 100, 1000, group="g"),
              LayerInfo("c", "linear", 100, 1000)]
    ws = np.array([[1.0, 0.1, 0.0], [0.0, 0.0, 0.0], [1.0, 0.1, 0.0]])  # a wants bits, b does not care
    p = Profile(layers, (2, 4, 8), weight_sensitivity=ws)
    plan = quiet(solve, p, Budget(avg_bits=4.0), objective="sensitivity")
    assert plan.w_bits["a"] == plan.w_bits["b"]
    pinned = quiet(solve, p, Budget(avg_bits=6.0), objective="sensitivity", pinned={"a": 2})
    assert pinned.w_bits["a"] == pinned.w_bits["b"] == 2


def test_matmul_layers_take_equal_w_and_a_and_no_size():
    p = tiny_profile()
    plan = solve(p, "W4A8")
    assert plan.w_bits["blk.matmul_qk"] == plan.a_bits["blk.matmul_qk"]
    weighted = [x for x in p.layers if x.kind != "matmul"]
    assert plan.size_bytes == sum(x.params * plan.w_bits[x.name] for x in weighted) / 8


# ---- budgets out of range -----------------------------------------------------------------

def test_avg_bits_below_minimum_names_limit_and_smallest_value():
    p = tiny_profile()  # bits 2..8; embed 300 and head 100 params pinned at 8
    smallest = (300 * 8 + 100 * 8 + (900 + 1200) * 2) / p.total_params
    with pytest.raises(BudgetInfeasibleError) as info:
        solve(p, Budget(avg_bits=2.0))
    err = info.value
    assert isinstance(err, InfeasibleError)
    assert err.violations["avg_bits"] == pytest.approx((2.0, smallest))
    assert "avg_bits (average weight bits) <= 2 bits" in str(err) and f"{smallest:.6g} bits" in str(err)


def test_size_below_minimum_reports_megabytes():
    p = tiny_profile()
    smallest_mb = (300 * 8 + 100 * 8 + (900 + 1200) * 2) / 8 / 1e6
    with pytest.raises(BudgetInfeasibleError) as info:
        solve(p, Budget(size_mb=0.0001))
    assert info.value.violations["size_mb"] == pytest.approx((0.0001, smallest_mb))
    assert f"{smallest_mb:.6g} MB" in str(info.value)


def test_bops_below_minimum_reports_gbops():
    p = tiny_profile()
    smallest = 300 * 64 + 100 * 64 + (9000 + 12000 + 2000) * 4
    with pytest.raises(BudgetInfeasibleError) as info:
        solve(p, Budget(bops=1000.0))
    assert info.value.violations["bops"] == pytest.approx((1000.0, smallest))
    assert "GBOPs" in str(info.value) and f"{smallest / 1e9:.6g} GBOPs" in str(info.value)


def test_float_budget_below_minimum_names_both_limits():
    with pytest.raises(BudgetInfeasibleError) as info:
        solve(tiny_profile(), 1.0)
    assert set(info.value.violations) == {"avg_bits", "bops_of"}
    assert "BOPs of uniform W1A1" in str(info.value)


def test_limits_reachable_alone_but_not_together():
    layers = [LayerInfo("a", "linear", 100, 1000), LayerInfo("b", "linear", 100, 1000)]
    # latency falls with bits here (hypothetical kernels), size rises: they pull apart
    p = Profile(layers, (2, 8), weight_sensitivity=np.array([[1.0, 0.0], [1.0, 0.0]]),
                cost_tables={"latency": np.array([[2.0, 1.0], [2.0, 1.0]])})
    # the lowest-loss plan (8 bits) meets the latency limit alone: no "does not bind" for it
    with pytest.raises(BudgetInfeasibleError) as info, warnings.catch_warnings():
        warnings.simplefilter("error", NonBindingLimitWarning)
        solve(p, Budget(avg_bits=2.0, latency=2.0), objective="sensitivity")
    assert info.value.jointly
    assert "not all together" in str(info.value)


def test_budget_above_maximum_warns_that_it_does_not_bind():
    p = tiny_profile()
    with pytest.warns(NonBindingLimitWarning, match=r"avg_bits \(average weight bits\) <= 9 bits does not bind; the largest possible is 8 bits"):
        plan = solve(p, Budget(avg_bits=9.0))
    assert all(plan.w_bits[n] == 8 for n in p.names if n != "blk.matmul_qk")


def test_binding_budget_does_not_warn():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        solve(tiny_profile(), "W4A4")


def test_unknown_solver_name():
    with pytest.raises(UnknownSolverError, match="unknown solver 'cplex'.*available.*'auto'"):
        solve(tiny_profile(), 4.0, solver="cplex")


def test_time_limit_is_passed_through():
    plan = solve(tiny_profile(), 4.0, time_limit=30.0)
    assert plan.status == "optimal"


def test_profile_type_checked():
    with pytest.raises(TypeError, match="allocator.Profile"):
        solve({"layers": []}, 4.0)
