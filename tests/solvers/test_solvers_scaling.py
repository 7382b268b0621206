"""Limit rows with huge coefficients: every exact backend must still reach the optimum.

MIP solvers mix absolute and relative tolerances, so a BOPs row (coefficients ~7e9, limit
~7e10) sent as it is makes them misjudge plans: CBC returned 0.21722 instead of 0.21569, marked
"optimal", on HAWQ-V3's ResNet-18 BOPs-0.5 case. `solvers.backends.milp` therefore scales each
limit row by a power of two (limit in [2**20, 2**21)). These tests pose such rows directly as a
`solvers.Problem`, with no help from the allocator.
"""
from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mckp_bruteforce import brute_force
from mckp_strategies import problems
from solver_cases import EXACT_BACKENDS
from solvers import InfeasibleError, NonBindingLimitWarning, Problem, solve_problem
from solvers.backends.milp import LIMIT_RANGE, row_scales

HAWQ = json.loads((Path(__file__).resolve().parents[1] / "data" / "hawq_v3_resnet.json").read_text())
SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)
HUGE = 1e9  # integer costs times 1e9 stay exact integers in float64, so feasibility is unchanged


def hawq_resnet18_bops(fraction: float) -> tuple[Problem, np.ndarray]:
    """HAWQ-V3 ResNet-18 with options (4, 8) bits, BOPs = MACs x b x b limited to `fraction` of the
    way from all-4-bit to all-8-bit, in raw BOPs; and the published choice (0 = 4 bits, 1 = 8)."""
    net = HAWQ["networks"]["resnet18"]
    trace = np.array(net["hutchinson_trace"])
    loss = np.stack([trace * np.array(net["delta_w_4bit_sq"]), trace * np.array(net["delta_w_8bit_sq"])], axis=1)
    macs = np.round(np.array(net["bops_fp32"]) * 1e6)
    bops = macs[:, None] * np.array([4.0 * 4.0, 8.0 * 8.0])
    low, high = bops[:, 0].sum(), bops[:, 1].sum()
    problem = Problem(loss=loss, costs={"bops": bops}, limits={"bops": float(low + fraction * (high - low))},
                      tied=net["tied"])
    published = np.array([(0 if b == 4 else 1) for b in net["published_bits"][f"bops_{fraction}"]])
    return problem, published


def solve_quietly(problem: Problem, solver: str):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NonBindingLimitWarning)
        return solve_problem(problem, solver=solver)


@pytest.mark.parametrize("solver", EXACT_BACKENDS)
def test_hawq_resnet18_bops_half_unscaled_reaches_the_published_optimum(solver):
    problem, published = hawq_resnet18_bops(0.5)
    assert problem.costs["bops"].max() > 7e9  # the badly scaled row this test is about
    expected = problem.objective_of(published)
    assert not problem.violations_of(published)
    solution = solve_problem(problem, solver=solver)
    assert solution.status == "optimal"
    assert solution.objective == pytest.approx(expected, rel=1e-9)
    assert solution.choice.tolist() == published.tolist()


@pytest.mark.parametrize("solver", EXACT_BACKENDS)
@settings(max_examples=30, **SETTINGS)
@given(fields=problems(max_layers=5, min_limits=1), which=st.integers(0, 2))
def test_multiplying_a_limit_row_by_a_huge_factor_keeps_the_optimum(solver, fields, which):
    name = list(fields["limits"])[which % len(fields["limits"])]
    scaled = dict(fields, costs={**fields["costs"], name: fields["costs"][name] * HUGE},
                  limits={**fields["limits"], name: fields["limits"][name] * HUGE})
    reference = brute_force(**fields)
    if reference.optimum is None:
        with pytest.raises(InfeasibleError):
            solve_quietly(Problem(**scaled), solver)
        return
    solution = solve_quietly(Problem(**scaled), solver)
    assert solution.status == "optimal"
    assert solution.objective == pytest.approx(reference.optimum, rel=1e-9, abs=1e-12)


@settings(max_examples=200, derandomize=True)
@given(limit=st.one_of(st.just(0.0), st.floats(1e-300, 1e300)),
       row=st.lists(st.floats(0.0, 1e300), min_size=1, max_size=4))
def test_row_scales_are_powers_of_two_putting_the_limit_in_range(limit, row):
    A, b = np.array([row]), np.array([limit])
    (scale,) = row_scales(A, b)
    mantissa, _ = math.frexp(scale)
    assert mantissa == 0.5  # a power of two: scaling is exact
    if limit > 0:
        assert LIMIT_RANGE[0] <= limit * scale < LIMIT_RANGE[1]
    elif max(row) > 0:
        assert 1.0 <= max(row) * scale < 2.0
    else:
        assert scale == 1.0
