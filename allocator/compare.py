"""`compare_solvers`: the same allocation problems through several backends, side by side.

For each budget the problem is posed once and handed to every solver. Each row reports the
objective reached, the gap to the best proven lower bound any solver found for that budget
(0 for a proven optimum), status and time. A failure (infeasible budget, backend error, time
out without a plan, unknown solver name) is written into its row instead of being raised, so a
single bad cell does not hide the rest of the table.
"""
from __future__ import annotations

import logging
import math
import warnings
from typing import Any, Iterable, Mapping, Sequence

from solvers import NonBindingLimitWarning, available_solvers

from .budget import Budget
from .objective import DEFAULT_ALPHA, Objective
from .profile import Profile
from .solving import check_solver_name, pose, solve_posed

__all__ = ["compare_solvers", "format_compare_rows"]

_log = logging.getLogger(__name__)


def compare_solvers(profile: Profile, budgets: Iterable[Budget | float | str | Mapping], *,
                    solvers: Sequence[str] | None = None, objective: Objective = "mixqvit", alpha: float = DEFAULT_ALPHA, tie_wa: bool = False,
                    pinned: Mapping[str, int | None] | None = None,
                    time_limit: float | None = None) -> list[dict[str, Any]]:
    """Solve each budget with each solver (default: all available) and tabulate.

    Returns one dict per (budget, solver) with keys ``budget, solver, objective, bound, gap,
    status, time_s, avg_w_bits, bops, error`` (``error`` is None on success; the numeric
    fields are None on failure). ``gap = (objective - best_bound) / |best_bound|`` where
    ``best_bound`` is the largest proven lower bound among the solvers for that budget.
    Nothing is printed: `format_compare_rows(rows)` makes the text table; each failed cell is
    also logged (logger ``allocator.compare``, level INFO).
    """
    names = list(solvers) if solvers is not None else available_solvers()
    rows: list[dict[str, Any]] = []
    for spec in budgets:
        block: list[dict[str, Any]] = []
        label, posed, pose_error = str(spec), None, None
        try:
            budget = Budget.parse(spec)
            label = str(budget)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", NonBindingLimitWarning)
                posed = pose(profile, budget, objective=objective, alpha=alpha, tie_wa=tie_wa, pinned=pinned)
        except Exception as exc:  # noqa: BLE001 - reported in the row by design
            pose_error = f"{type(exc).__name__}: {exc}"
            _log.info("compare: budget %s: %s", label, pose_error)
        for name in names:
            row = _empty_row(label, name)
            try:
                check_solver_name(name)
                if pose_error is not None:
                    row["error"] = pose_error
                else:
                    plan = solve_posed(posed, name, time_limit)
                    t = plan.totals
                    row.update(objective=plan.objective, bound=plan.bound, status=plan.status,
                               time_s=plan.solve_time_s, avg_w_bits=t["avg_w_bits"], bops=t["bops"])
            except Exception as exc:  # noqa: BLE001 - reported in the row by design
                row["error"] = f"{type(exc).__name__}: {exc}"
                _log.info("compare: budget %s, solver %s: %s", label, name, row["error"])
            block.append(row)
        bounds = [r["bound"] for r in block if r["bound"] is not None and math.isfinite(r["bound"])]
        best = max(bounds) if bounds else None
        for r in block:
            if best is not None and r["objective"] is not None:
                r["gap"] = (r["objective"] - best) / max(abs(best), 1e-12)
        rows += block
    return rows


def _empty_row(budget: str, solver: str) -> dict[str, Any]:
    return {"budget": budget, "solver": solver, "objective": None, "bound": None, "gap": None,
            "status": None, "time_s": None, "avg_w_bits": None, "bops": None, "error": None}


def format_compare_rows(rows: Sequence[Mapping[str, Any]]) -> str:
    """The rows of `compare_solvers` as an aligned text table."""
    header = ["budget", "solver", "objective", "gap", "status", "time_s", "avg_w_bits", "GBOPs", "error"]

    def cell(r: Mapping[str, Any], key: str) -> str:
        v = r.get("bops" if key == "GBOPs" else key)
        if v is None:
            return "-" if key != "error" else ""
        if key == "gap":
            return f"{100 * v:.3f}%"
        if key == "GBOPs":
            return f"{v / 1e9:.4g}"
        if key == "error":
            text = str(v).splitlines()[0]
            return text if len(text) <= 70 else text[:67] + "..."
        if isinstance(v, float):
            return f"{v:.6g}" if key != "time_s" else f"{v:.3f}"
        return str(v)

    table = [header] + [[cell(r, k) for k in header] for r in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    text_cols = {0, 1, 4, 8}
    out = []
    for j, line in enumerate(table):
        out.append("  ".join(c.ljust(w) if i in text_cols else c.rjust(w)
                             for i, (c, w) in enumerate(zip(line, widths))).rstrip())
        if j == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)
