"""Solving a saved profile: no torch, no model, just the allocator (runs on any laptop).

    python examples/solve_a_profile.py [profile.json]

Without an argument it uses the synthetic DeiT-Tiny profile shipped with the allocator.
Prints the W4A4 plan, a budget sweep (the accuracy-proxy frontier) and a solver comparison.
"""
import sys
from importlib.resources import files

from allocator import Profile, compare_solvers, format_compare_rows, frontier, solve

path = sys.argv[1] if len(sys.argv) > 1 else files("allocator.examples") / "deit_tiny_synthetic.json"
profile = Profile.load(path)

plan = solve(profile, budget="W4A4")  # avg weight bits <= 4 and BOPs <= uniform W4A4
print(plan.summary(), end="\n\n")
print(plan.table(), end="\n\n")

for p in frontier(profile, [3, 4, 5, 6]):
    print(f"budget {p.budget:6s}: objective {p.objective:.4g}, avg W bits {p.avg_w_bits:.2f}, "
          f"{p.size_bytes / 1e6:.3f} MB, {p.bops / 1e9:.2f} GBOPs")
print()
print(format_compare_rows(compare_solvers(profile, [3, 4], solvers=["scipy", "pulp", "greedy"])))
