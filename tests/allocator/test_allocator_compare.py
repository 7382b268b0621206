"""compare_solvers and frontier."""
from __future__ import annotations

import pytest

import logging

from allocator import compare_solvers, format_compare_rows, frontier
from allocator.examples import deit_tiny_synthetic
from allocator_helpers import tiny_profile
from solvers import available_solvers
from solvers.backends import is_exact


def test_compare_rows_gaps_and_errors_in_cells(capsys, caplog):
    solvers = available_solvers() + ["nonexistent"]
    with caplog.at_level(logging.INFO, logger="allocator.compare"):
        rows = compare_solvers(tiny_profile(), [3.0, "W4A8", 1.0], solvers=solvers)
    assert capsys.readouterr().out == ""  # library code does not print
    failed = [r for r in rows if r["error"] is not None]
    assert failed and all(r["error"] in caplog.text for r in failed)  # logged instead
    assert len(rows) == 3 * len(solvers)
    by = {(r["budget"], r["solver"]): r for r in rows}
    for budget in ("W3A3", "W4A8"):
        for s in available_solvers():
            r = by[(budget, s)]
            assert r["error"] is None and r["objective"] is not None
            if is_exact(s):
                assert r["status"] == "optimal" and r["gap"] == pytest.approx(0.0, abs=1e-9)
            else:
                assert r["gap"] >= -1e-9
        assert "UnknownSolverError" in by[(budget, "nonexistent")]["error"]
    for s in solvers:  # the infeasible budget is reported in every cell, not raised
        assert "BudgetInfeasibleError" in by[("W1A1", s)]["error"] or s == "nonexistent"
    out = format_compare_rows(rows).splitlines()
    assert out[0].split()[:4] == ["budget", "solver", "objective", "gap"]
    assert len(out) == 2 + len(rows)
    col = out[0].index("solver")  # columns are aligned: each row's solver starts under the header
    for line, r in zip(out[2:], rows):
        assert line[col:].startswith(r["solver"])


def test_options_are_keyword_only_and_budget_is_required():
    profile = tiny_profile()
    with pytest.raises(TypeError):
        compare_solvers(profile, [4.0], ["auto"])  # solvers by position
    with pytest.raises(TypeError):
        frontier(profile, [4.0], "auto")
    from allocator import solve
    from allocator.solving import pose
    with pytest.raises(TypeError):
        solve(profile)  # no silent W3A3 default
    with pytest.raises(TypeError):
        solve(profile, 4.0, "auto")
    with pytest.raises(TypeError):
        pose(profile)


def test_functions_do_not_shadow_their_modules():
    import importlib

    import allocator
    for function, module in (("solve", "allocator.solving"), ("frontier", "allocator.frontiers"),
                             ("compare_solvers", "allocator.compare")):
        assert callable(getattr(allocator, function))
        assert getattr(importlib.import_module(module), function) is getattr(allocator, function)
    assert allocator.format_compare_rows is importlib.import_module("allocator.compare").format_compare_rows
    assert allocator.check_solver_name("auto") == "auto"


def test_frontier_objective_falls_as_budget_grows():
    p = deit_tiny_synthetic()
    plans = frontier(p, [2.5, 3.0, 4.0, 6.0])
    assert [pl.budget for pl in plans] == ["W2.5A2.5", "W3A3", "W4A4", "W6A6"]
    objs = [pl.objective for pl in plans]
    assert all(a >= b - 1e-12 for a, b in zip(objs, objs[1:]))
    assert all(pl.budget_satisfied for pl in plans)
    assert [pl.avg_w_bits <= b + 1e-12 for pl, b in zip(plans, [2.5, 3.0, 4.0, 6.0])] == [True] * 4
