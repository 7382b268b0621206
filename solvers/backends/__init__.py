"""Backends: one module per solver, found through `REGISTRY`.

Backend interface
-----------------
A backend is a module under `solvers.backends` that defines:

The module must import even when the solver it wraps is not installed (guard that import and
report it through `available()`).

``EXACT: bool``
    True if the backend proves optimality (returns "optimal" with a bound equal to its
    objective when it finishes within its time limit) and proves infeasibility (returns
    "infeasible"). Exact backends are checked against brute-force enumeration by the shared
    test suite; non-exact ones only for feasibility and `objective >= optimum`.

``available() -> bool``
    Whether its dependencies are installed and work here (e.g. the solver binary runs).
    Must be cheap and must not raise.

``solve(problem: PreparedProblem, time_limit: float | None) -> BackendResult``
    Solve the prepared problem (`solvers.prepare.PreparedProblem`: ties already merged into
    groups, forbidden and pruned options marked +inf in `problem.loss`, only limited resources
    in `problem.costs`, every single limit reachable). Return the option index of each group
    (original indices), the status and a proven lower bound (or None). An exact backend that
    stops at `time_limit` with a plan returns "feasible" and its best proven bound; with no
    plan it raises `SolverTimeoutError` (never "infeasible": nothing was proven). A heuristic that gives up raises `SolverError` (a subclass,
    such as `GreedyFailedError`); it never returns "infeasible".
    Exact MIP backends set the relative (and where the API allows it, absolute) gap to 0.

Backends never see `Problem` validation, expansion to layers, objective and usage arithmetic or
feasibility checks of the result: `solvers.api.solve_problem` does those once for all.

Adding a backend
----------------
Write the module, then add ``"name": "solvers.backends.module"`` to `REGISTRY`. It then shows
in `available_solvers()` when `available()` is true, and the shared suite in
`tests/solvers/test_solvers_backends.py` and the property tests of
`tests/solvers/test_solvers_properties.py` run every case against it. A registered module that is not
installed (the module file is absent) is simply unavailable; one that fails to import for any
other reason raises, so a broken backend is never silently skipped.
"""
from __future__ import annotations

import importlib
from types import ModuleType

from .base import BackendResult

__all__ = ["REGISTRY", "BackendResult", "load_backend", "is_available", "is_exact"]

# name -> module. The order is the order of `available_solvers()`: exact backends first, fastest first.
REGISTRY: dict[str, str] = {
    "exact": "solvers.backends.exact",
    "scipy": "solvers.backends.scipy_milp",
    "pulp-highs": "solvers.backends.pulp_highs",
    "ortools": "solvers.backends.ortools_mip",
    "pulp": "solvers.backends.pulp_cbc",
    "greedy": "solvers.backends.greedy",
}


def _import(name: str) -> ModuleType | None:
    module_name = REGISTRY[name]
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name == module_name:  # the backend's file is not there: not installed
            return None
        raise


def is_available(name: str) -> bool:
    """Whether the backend is registered, installed and reports itself usable."""
    module = _import(name) if name in REGISTRY else None
    return module is not None and bool(module.available())


def load_backend(name: str) -> ModuleType:
    """The backend module for `name` (which must be available)."""
    module = _import(name)
    if module is None:
        raise ModuleNotFoundError(f"backend {name!r} ({REGISTRY[name]}) is not installed")
    return module


def is_exact(name: str) -> bool:
    """Whether the backend proves optimality and infeasibility."""
    return bool(load_backend(name).EXACT)
