"""compare_solvers and frontier."""
from __future__ import annotations

import pytest

from allocator import compare_solvers, frontier
from allocator.examples import deit_tiny_synthetic
from allocator_helpers import tiny_profile
from solvers import available_solvers
from solvers.backends import is_exact


def test_compare_rows_gaps_and_errors_in_cells(capsys):
    solvers = available_solvers() + ["nonexistent"]
    rows = compare_solvers(tiny_profile(), [3.0, "W4A8", 1.0], solvers=solvers, verbose=True)
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
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:4] == ["budget", "solver", "objective", "gap"]
    assert len(out) == 2 + len(rows)
    col = out[0].index("solver")  # columns are aligned: each row's solver starts under the header
    for line, r in zip(out[2:], rows):
        assert line[col:].startswith(r["solver"])


def test_compare_quiet_prints_nothing(capsys):
    compare_solvers(tiny_profile(), [4.0], solvers=["auto"], verbose=False)
    assert capsys.readouterr().out == ""


def test_frontier_objective_falls_as_budget_grows():
    p = deit_tiny_synthetic()
    plans = frontier(p, [2.5, 3.0, 4.0, 6.0])
    assert [pl.budget for pl in plans] == ["W2.5A2.5", "W3A3", "W4A4", "W6A6"]
    objs = [pl.objective for pl in plans]
    assert all(a >= b - 1e-12 for a, b in zip(objs, objs[1:]))
    assert all(pl.budget_satisfied for pl in plans)
    assert [pl.avg_w_bits <= b + 1e-12 for pl, b in zip(plans, [2.5, 3.0, 4.0, 6.0])] == [True] * 4
