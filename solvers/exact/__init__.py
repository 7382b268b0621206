"""The exact multiple-choice knapsack solver behind backend "exact" and `solvers.frontier`.

Pure numpy plus HiGHS for the root linear program; no torch, no MIP solver. Modules:

- `pareto`: 1-D Pareto fronts of (cost, value) sums and their min-plus merge (Nemhauser-Ullmann).
- `lagrange`: the LP relaxation / Lagrangian dual by column generation; Farkas infeasibility proofs.
- `heuristic`: incumbents: LP rounding, repair, 1- and 2-move local search.
- `search`: reduced-cost fixing and the bounded, dominance-pruned state search that proves optimality.
- `mckp`: `solve_arrays`, which ties them together on plain arrays.
"""
from .mckp import ExactResult, solve_arrays

__all__ = ["ExactResult", "solve_arrays"]
