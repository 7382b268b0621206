"""allocator: turn a per-layer `Profile` and a `Budget` into a mixed-precision `Plan`.

Torch-free on purpose: a profile measured on a GPU box can be solved anywhere.

    from allocator import Profile, solve
    plan = solve(Profile.load("profile.json"), budget="W4A8")
    print(plan.table())

The pieces: `Profile`/`LayerInfo` (what was measured), `Budget` (limits), the objective
(`allocator.objective`), the option grid (`allocator.options`), `solve`/`frontier`/
`compare_solvers` (in the modules `solving`, `frontiers`, `compare`, named apart from the
functions so neither shadows the other) and the resulting `Plan`.
"""
from solvers import NonBindingLimitWarning, SolverTimeoutError

from .budget import Budget
from .compare import compare_solvers, format_compare_rows
from .errors import (
    BudgetError,
    BudgetInfeasibleError,
    ObjectiveError,
    PlanError,
    ProfileError,
    UnknownSolverError,
)
from .frontiers import frontier
from .joint import JointChoice, solve_joint
from .kbest import k_best
from .objective import DEFAULT_ALPHA, OBJECTIVES, loss_table
from .plan import Plan
from .profile import FORMAT_VERSION, KINDS, LayerInfo, Profile
from .solving import check_solver_name, solve

__all__ = [
    "Profile",
    "LayerInfo",
    "Budget",
    "Plan",
    "solve",
    "solve_joint",
    "JointChoice",
    "k_best",
    "frontier",
    "compare_solvers",
    "format_compare_rows",
    "check_solver_name",
    "loss_table",
    "OBJECTIVES",
    "DEFAULT_ALPHA",
    "KINDS",
    "FORMAT_VERSION",
    "ProfileError",
    "BudgetError",
    "PlanError",
    "ObjectiveError",
    "UnknownSolverError",
    "BudgetInfeasibleError",
    "NonBindingLimitWarning",
    "SolverTimeoutError",
]
