"""The dispatcher's guarantees on any backend, checked with stand-in backends."""
from __future__ import annotations

import sys
import types

import numpy as np
import pytest

import solvers.backends as backends
from solvers import InfeasibleError, Problem, SolverError, available_solvers, solve_problem
from solvers.backends import BackendResult

PROBLEM = Problem(loss=[[3.0, 1.0], [2.0, 0.5]], costs={"size": [[2, 4], [2, 4]]}, limits={"size": 6})


def register(monkeypatch, answer, exact=True, name="fake"):
    """Register a backend module that returns `answer(prepared)`."""
    module = types.ModuleType(f"fake_backend_{name}")
    module.EXACT = exact
    module.available = lambda: True
    module.solve = lambda prepared, time_limit: answer(prepared)
    monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setitem(backends.REGISTRY, name, module.__name__)


def test_feasible_without_bound_gets_the_lp_bound(monkeypatch):
    register(monkeypatch, lambda p: BackendResult(np.array([0, 0]), "feasible", None))
    solution = solve_problem(PROBLEM, solver="fake")
    assert solution.status == "feasible" and solution.objective == 5.0
    # LP relaxation: layer 0 upgraded, layer 1 half-way: 1 + 2 - 1.5 * 0 ... = 3.0 (integral here)
    assert solution.bound == pytest.approx(3.0, abs=1e-5) and solution.bound <= 3.0


def test_bound_never_exceeds_objective(monkeypatch):
    register(monkeypatch, lambda p: BackendResult(np.array([1, 0]), "feasible", 99.0))
    assert solve_problem(PROBLEM, solver="fake").bound == 3.0


def test_plan_breaking_a_limit_is_rejected(monkeypatch):
    register(monkeypatch, lambda p: BackendResult(np.array([1, 1]), "optimal"))
    with pytest.raises(SolverError, match="size total 8.0 exceeds its limit 6.0"):
        solve_problem(PROBLEM, solver="fake")


def test_heuristic_may_not_declare_infeasibility(monkeypatch):
    register(monkeypatch, lambda p: BackendResult(None, "infeasible"), exact=False)
    with pytest.raises(SolverError, match="not exact"):
        solve_problem(PROBLEM, solver="fake")


def test_exact_infeasible_becomes_infeasible_error(monkeypatch):
    register(monkeypatch, lambda p: BackendResult(None, "infeasible"))
    with pytest.raises(InfeasibleError, match="reachable alone but not all together"):
        solve_problem(PROBLEM, solver="fake")


def test_registered_but_missing_module_is_unavailable(monkeypatch):
    monkeypatch.setitem(backends.REGISTRY, "missing", "solvers.backends.no_such_backend")
    assert "missing" not in available_solvers()
    with pytest.raises(ValueError, match="'missing' is not installed or not usable here"):
        solve_problem(PROBLEM, solver="missing")


def test_broken_backend_import_is_loud(monkeypatch):
    module = types.ModuleType("fake_backend_broken")
    monkeypatch.setitem(backends.REGISTRY, "broken", "fake_backend_broken_importer")
    monkeypatch.setitem(sys.modules, module.__name__, module)

    def failing_import(name):
        raise ModuleNotFoundError("No module named 'some_dependency'", name="some_dependency")

    monkeypatch.setattr(backends.importlib, "import_module", failing_import)
    with pytest.raises(ModuleNotFoundError, match="some_dependency"):
        backends.is_available("broken")
