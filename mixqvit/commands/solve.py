"""``mixqvit solve``: the bit allocation for one budget -> plan.json (torch-free)."""
from __future__ import annotations

import argparse

from .. import argtypes
from ..options import add_solver_args, load_profile, out_path, solver_options

HELP = "choose bits per layer under a budget -> plan.json"
DESCRIPTION = ("Solve the bit allocation for one budget and print the per-layer plan. Reads only the profile and "
               "runs no model (no torch, so no --device or --threads): a profile made on a GPU solves anywhere.")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("profile", help="profile JSON written by `mixqvit profile`")
    p.add_argument("--budget", nargs="+", required=True, metavar="B",
                   help="3 (avg weight bits <= 3 and BOPs <= uniform W3A3), W4A8, or limits such as "
                   "size_mb=1.5 bops=2e9 (also avg_bits=, latency=, bops_of=W4A8)")
    p.add_argument("--solver", default="auto", help="auto or a backend name (see `mixqvit compare --help`)")
    add_solver_args(p)
    p.add_argument("--out", default=None, help="plan JSON to write")


def run(args: argparse.Namespace) -> int:
    from allocator import solve

    budget = argtypes.parse_budget(args.budget)
    profile = load_profile(args.profile)
    out = out_path(args.out, "plan file")
    plan = solve(profile, budget=budget, solver=args.solver, **solver_options(args))
    if out is not None:  # the file first: a closed stdout (| head) must not lose it
        plan.save(out)
    print(plan.summary())
    print()
    print(plan.table())
    if out is not None:
        print(f"wrote {out}")
    return 0
