"""The public API is what the contract names, and the package stays torch-free."""
from __future__ import annotations

import subprocess
import sys

import allocator


def test_contract_names_are_exported():
    for name in ("Profile", "LayerInfo", "Budget", "Plan", "solve", "compare_solvers", "frontier",
                 "ProfileError", "BudgetInfeasibleError"):
        assert name in allocator.__all__ and hasattr(allocator, name)
    assert all(hasattr(allocator, name) for name in allocator.__all__)


def test_errors_are_value_errors_and_infeasible_is_the_solvers_one():
    from solvers import InfeasibleError

    assert issubclass(allocator.BudgetInfeasibleError, InfeasibleError)
    for cls in (allocator.ProfileError, allocator.BudgetError, allocator.PlanError, allocator.ObjectiveError,
                allocator.UnknownSolverError):
        assert issubclass(cls, ValueError)


def test_solving_never_imports_torch():
    code = ("import sys, allocator; from allocator.examples import deit_tiny_synthetic; "
            "allocator.solve(deit_tiny_synthetic(), 4.0); print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "False"
