"""``mixqvit compare``: solvers x budgets table (torch-free)."""
from __future__ import annotations

import argparse

from .. import argtypes
from ..options import add_solver_args, load_profile, out_path, solver_options

HELP = "solvers x budgets table"
DESCRIPTION = ("Solve several budgets with several solvers and print objective, gap to the best proven bound, "
               "status and time. Reads only the profile and runs no model (no torch, so no --device or --threads).")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("profile", help="profile JSON written by `mixqvit profile`")
    p.add_argument("--budgets", nargs="+", default=["2,3,4"], metavar="B",
                   help="budgets, comma-separated (default 2,3,4); a keyword budget (size_mb=1,bops=2e9) is one argument")
    p.add_argument("--solvers", type=argtypes.comma_list, default=None,
                   help="comma-separated backends (default: all installed, e.g. exact,pulp,pulp-highs,ortools,scipy,greedy)")
    add_solver_args(p)
    p.add_argument("--out", default=None, help="table JSON to write (a Markdown copy goes beside it)")


def run(args: argparse.Namespace) -> int:
    from allocator import check_solver_name, compare_solvers, format_compare_rows

    from ..report import compare_table

    budgets = argtypes.parse_budget_list(args.budgets)
    for name in args.solvers or []:
        check_solver_name(name)
    profile = load_profile(args.profile)
    out = out_path(args.out, "table file")
    rows = compare_solvers(profile, budgets, solvers=args.solvers, **solver_options(args))
    written = ()
    if out is not None:
        written = compare_table(rows, title=f"Solvers x budgets on {args.profile}").write(
            out.parent, out.stem if out.suffix == ".json" else out.name)
    print(format_compare_rows(rows))
    if written:
        print(f"wrote {written[0]} and {written[1]}")
    return 0
