"""Budget: the shorthand semantics of DESIGN.md, parsing and printing, and resolution errors."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from allocator import Budget, BudgetError, LayerInfo, Profile, solve
from allocator.options import build_options
from allocator_helpers import SETTINGS, quiet, tiny_profile


def test_float_means_avg_bits_and_uniform_bops():
    b = Budget.parse(3.0)
    assert b.avg_bits == 3.0 and b.bops_of == (3.0, 3.0) and b.bops is None
    assert Budget.parse(3) == b and Budget.parse("3.0") == b and Budget.parse("W3A3") == b


def test_wa_string():
    b = Budget.parse("W4A8")
    assert b.avg_bits == 4.0 and b.bops_of == (4.0, 8.0)
    assert Budget.parse("w4a8") == b and Budget.parse(" W4 A8 ") == b
    assert Budget.parse("W4.5A8") == Budget(avg_bits=4.5, bops_of=(4.5, 8))


def test_weight_only_string():
    assert Budget.parse("W4") == Budget(avg_bits=4)


def test_keyword_string_and_dict():
    b = Budget.parse("avg_bits=3.5, size_mb=1.25, latency=2, bops_of=W4A8")
    assert b == Budget(avg_bits=3.5, size_mb=1.25, latency=2, bops_of=(4, 8))
    assert Budget.parse({"avg_bits": 3.5, "size_mb": 1.25, "latency": 2, "bops_of": [4, 8]}) == b


def test_extra_custom_limits():
    b = Budget(energy=5.0, latency=1.0)
    assert b.extra == {"energy": 5.0, "latency": 1.0} and b.latency == 1.0


@pytest.mark.parametrize("spec", [
    Budget(avg_bits=3),
    Budget(avg_bits=4, bops_of=(4, 8)),
    Budget(avg_bits=2.75, size_mb=1.5, bops=1e9, latency=0.3, energy=2, bops_of=(3, 5)),
    Budget(bops=123456789.0),
])
def test_str_round_trip(spec):
    assert Budget.parse(str(spec)) == spec
    assert Budget.from_dict(spec.to_dict()) == spec


positive = st.floats(min_value=1e-3, max_value=1e12, allow_nan=False, allow_infinity=False)


@settings(max_examples=200, **SETTINGS)
@given(avg=st.none() | positive, size=st.none() | positive, bops=st.none() | positive,
       lat=st.none() | positive, wa=st.none() | st.tuples(positive, positive))
def test_parse_round_trip_property(avg, size, bops, lat, wa):
    if all(v is None for v in (avg, size, bops, lat, wa)):
        avg = 4.0
    b = Budget(avg_bits=avg, size_mb=size, bops=bops, latency=lat, bops_of=wa)
    assert Budget.parse(str(b)) == b
    assert Budget.parse(b.to_dict()) == b
    assert hash(Budget.parse(str(b))) == hash(b)


@pytest.mark.parametrize("bad", ["", "four", "W", "W4A", "A8", "avg_bits=three", "avg_bits=3,avg_bits=4",
                                 True, None, [3.0]])
def test_unreadable_budget(bad):
    with pytest.raises(BudgetError):
        Budget.parse(bad)


@pytest.mark.parametrize("bad", [0, -1.0, math.nan, math.inf, "-3", "0", "nan"])
def test_non_positive_or_non_finite_budget(bad):
    with pytest.raises(BudgetError, match="positive"):
        Budget.parse(bad)


def test_empty_budget():
    with pytest.raises(BudgetError, match="at least one limit"):
        Budget()


def test_uniform_bops_reference_counts_pinned_layers_and_matmul_as_a_squared():
    p = tiny_profile()  # embed/head pinned at 8, one matmul
    grid = build_options(p)
    limits, _ = Budget.parse("W4A8").resolve(p, grid)
    by_key = {lim.key: lim for lim in limits}
    expected = sum(layer.macs * (4 * 8 if layer.kind != "matmul" else 8 * 8) for layer in p.layers)
    assert by_key["bops_of"].user(by_key["bops_of"].value) == expected
    assert by_key["avg_bits"].user(by_key["avg_bits"].value) == 4.0


def test_resolved_limits_are_in_natural_units():
    """Limits come back as plain counts (bits, BOPs) with the factor to the user's units; any
    conditioning for the MIP solvers is left to `solvers`."""
    p = tiny_profile()
    grid = build_options(p)
    limits, costs = Budget(avg_bits=3, bops=1e12, size_mb=0.001).resolve(p, grid)
    expected = {"avg_bits": (3 * p.total_params, p.total_params), "bops": (1e12, 1.0), "size_mb": (8000.0, 8e6)}
    assert {lim.key: (lim.value, lim.scale) for lim in limits} == expected
    assert np.array_equal(costs["avg_bits"], costs["size_mb"])


def test_uniform_plan_meets_its_own_budget_exactly():
    """Awkward parameter counts: the only plan (all 3-bit) must meet avg_bits <= 3 despite rounding."""
    layers = [LayerInfo(f"l{i}", "linear", params, 7919 * (i + 1)) for i, params in enumerate([7, 13, 999983, 31337])]
    p = Profile(layers, (3,), weight_sensitivity=np.ones((4, 1)), act_sensitivity=np.ones((4, 1)))
    plan = quiet(solve, p, 3.0, objective="sensitivity")
    assert plan.avg_w_bits == 3.0 and plan.budget_satisfied


def test_float_budget_has_no_bops_limit_without_activation_choices():
    p = tiny_profile(act=False)
    limits, _ = Budget.parse(3.0).resolve(p, build_options(p))
    assert [lim.key for lim in limits] == ["avg_bits"]


def test_different_w_and_a_refused_without_activation_choices():
    p = tiny_profile(act=False)
    with pytest.raises(BudgetError, match="activations follow the weights"):
        solve(p, "W4A8")


def test_unknown_cost_table():
    with pytest.raises(BudgetError, match="no cost table of that name"):
        solve(tiny_profile(), Budget(latency=1.0))


def test_cost_table_without_column_for_pinned_bits():
    base = tiny_profile(bits=(2, 4))  # embed/head pinned at 8, outside the table
    p = Profile(base.layers, base.bits, weight_sensitivity=base.weight_sensitivity,
                cost_tables={"latency": np.ones((5, 2))})
    with pytest.raises(BudgetError, match="no column for the pinned bits of layer"):
        solve(p, Budget(latency=10.0), objective="sensitivity")
    # without that limit the same profile solves
    assert quiet(solve, p, Budget(avg_bits=4.0), objective="sensitivity").w_bits["embed"] == 8
