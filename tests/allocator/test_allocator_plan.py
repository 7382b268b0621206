"""Plan: uniform baselines, totals, JSON round trip, presentation, malformed plans."""
from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from allocator import Plan, PlanError, solve
from allocator_helpers import profiles, quick, quiet, reference_totals, tiny_profile


@quick
@given(profiles(), st.sampled_from([2, 3, 4, 6, 8]), st.sampled_from([2, 4, 8, 16]))
def test_uniform_plan_totals(profile, w, a):
    plan = Plan.uniform(profile, w_bits=w, a_bits=a)
    for layer in profile.layers:
        got = (plan.w_bits[layer.name], plan.a_bits[layer.name])
        if layer.fixed_bits is not None:
            assert got == (layer.fixed_bits, layer.fixed_bits)
        elif layer.kind == "matmul":
            assert got == (a, a)
        else:
            assert got == (w, a)
    ref = reference_totals(profile, plan.w_bits, plan.a_bits)
    assert plan.totals == pytest.approx(ref, rel=1e-12)
    if all(layer.fixed_bits is None for layer in profile.layers):
        assert plan.avg_w_bits == w
        assert plan.bops == sum(x.macs * (w * a if x.kind != "matmul" else a * a) for x in profile.layers)


@quick
@given(profiles(cost_tables=False), st.floats(2.0, 8.0))
def test_solved_plans_round_trip_through_json(tmp_path_factory, profile, budget):
    try:
        plan = quiet(solve, profile, budget)
    except ValueError:  # infeasible budget for this random profile
        plan = Plan.uniform(profile, 8, 8)
    path = tmp_path_factory.mktemp("plan") / "plan.json"
    plan.save(path)
    again = Plan.load(path)
    assert again == plan
    assert again.to_dict() == plan.to_dict()


def test_uniform_plan_custom_costs():
    import numpy as np
    from allocator import Profile

    base = tiny_profile()
    lat = np.arange(15, dtype=float).reshape(5, 3)  # columns for bits 2, 4, 8
    p = Profile(base.layers, base.bits, weight_sensitivity=base.weight_sensitivity, cost_tables={"latency": lat})
    plan = Plan.uniform(p, 4, 4)
    # embed/head pinned at 8 -> column 2; others at 4 -> column 1
    assert plan.costs["latency"] == lat[0, 2] + lat[1, 1] + lat[2, 1] + lat[3, 1] + lat[4, 2]


def test_plan_fields_after_solve():
    p = tiny_profile()
    plan = solve(p, "W4A4")
    assert plan.solver in ("scipy", "exact", "pulp-highs", "ortools", "pulp")
    assert plan.status == "optimal" and plan.bound == pytest.approx(plan.objective)
    assert plan.budget == "W4A4" and plan.budget_satisfied is True
    assert plan.objective_name == "mixqvit" and plan.solve_time_s > 0


def test_table_lists_every_layer_with_bits():
    p = tiny_profile()
    plan = solve(p, "W4A4")
    text = plan.table()
    lines = text.splitlines()
    assert lines[0].split()[:6] == ["layer", "kind", "params", "MACs", "W", "A"]
    for layer in p.layers:
        row = next(line for line in lines if line.startswith(layer.name + " "))
        cells = row.split()
        assert cells[1] == layer.kind
        w_cell = "-" if layer.kind == "matmul" else str(plan.w_bits[layer.name])
        assert cells[4:6] == [w_cell, str(plan.a_bits[layer.name])]
    assert "pinned" in next(line for line in lines if line.startswith("embed "))
    assert f"avg weight bits {plan.avg_w_bits:.3f}" in lines[-1]


def test_summary_mentions_solver_budget_and_totals():
    plan = solve(tiny_profile(), "W4A4")
    s = plan.summary()
    assert plan.solver in s and "W4A4 (satisfied)" in s and f"{plan.avg_w_bits:.3f}" in s
    assert "objective (mixqvit)" in s and str(plan) == s


def _set_w_bits(data):
    data["layers"][1]["w_bits"] = 2  # edited by hand, totals not updated


def _set_version(data):
    data["format_version"] = 7


def _drop_a_bits(data):
    del data["layers"][0]["a_bits"]


@pytest.mark.parametrize("edit, expected", [
    (_set_w_bits, "avg_w_bits .* per-layer bits give"),
    (_set_version, "unknown plan format_version 7"),
    (_drop_a_bits, "malformed plan .*a_bits"),
])
def test_load_refuses_an_edited_file(edit, expected, tmp_path):
    data = Plan.uniform(tiny_profile(), 4, 4).to_dict()
    edit(data)
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(data))
    with pytest.raises(PlanError, match=expected):
        Plan.load(path)


def test_matmul_with_different_w_and_a_rejected():
    plan = Plan.uniform(tiny_profile(), 4, 4)
    w = dict(plan.w_bits, **{"blk.matmul_qk": 2})
    with pytest.raises(PlanError, match="matmul layer 'blk.matmul_qk' has no weights"):
        Plan(plan.layer_info, w, plan.a_bits)


def test_missing_layer_bits_rejected():
    plan = Plan.uniform(tiny_profile(), 4, 4)
    w = dict(plan.w_bits)
    del w["head"]
    with pytest.raises(PlanError, match=r"missing \['head'\]"):
        Plan(plan.layer_info, w, plan.a_bits)


@pytest.mark.parametrize("bad", [0, 64, 4.5])
def test_uniform_bad_bits(bad):
    with pytest.raises(PlanError, match="w_bits"):
        Plan.uniform(tiny_profile(), w_bits=bad)


def test_plan_profile_mismatch():
    plan = Plan.uniform(tiny_profile(), 4, 4)
    other = tiny_profile()
    other.layers = other.layers[:-1]
    with pytest.raises(PlanError, match=r"missing from plan: \[\], not in profile: \['head'\]"):
        plan.check_matches(other)
