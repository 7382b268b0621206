"""Benchmark of backend "exact" (`solvers.exact`) and of `solvers.frontier.exact_frontier`.

    python -m benchmarks.exact            # everything below; ~1-2 min on one core
    python -m benchmarks.exact --quick    # fewer repeats and seeds

Every comparison is measured in the same run, on the same machine, through `solve_problem`
(preprocessing included for every backend):
- LIMPQ ResNet-50 joint (w, a) bits, BitOps + size limits (Tang et al., ECCV 2022, repository
  1hunters/LIMPQ, MIT; tests/data/limpq_resnet50.json): "exact" vs PuLP-CBC ("pulp"); target
  >= 10x faster, same optimum.
- HAWQ-V3 ResNet-18/50, 18 problems (Yao, Dong et al., ICML 2021, repository Zhen-Dong/HAWQ,
  MIT; tests/data/hawq_v3_resnet.json): target < 2 ms each.
- ViT-B-like synthetic (`benchmarks.solvers.synthetic_problem`, 50 layers x 36 (w, a) options x
  3 limits), several seeds: target < 20 ms; optimum checked against HiGHS ("scipy").
- 1000 layers x 36 options x 3 limits: target proven optimal < 1 s.
- Scale: 1,000 / 3,000 / 10,000 layers x 8 options (bits 2-8 and 16, `synthetic_problem(L, 8, 1,
  0)`), one limit: growth with the number of layers; target 10,000 in < 5 s, proven optimal.
- Time limit: 10,000 x 8 x 3 limits with `time_limit=5`: target ends within 6 s.
- Frontier of the ViT-B-like problem over BOPs alone (direct Pareto merge) and with the other
  two limits held (sweep of exact solves; 10 layers, each limit halfway between its least and largest total): time per frontier point / one solve.
Writes benchmarks/results/exact.json.
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import json
import pathlib
import statistics
import time
import warnings
from dataclasses import replace

import numpy as np

from benchmarks.solvers import hawq_cases, limpq_cases, synthetic_problem
from solvers import NonBindingLimitWarning, Problem, SolverTimeoutError, solve_problem
from solvers.frontier import exact_frontier

RESULTS = pathlib.Path(__file__).resolve().parent / "results" / "exact.json"


def timed(problem: Problem, solver: str, repeats: int, time_limit: float | None = None):
    """(median seconds, last solution) over `repeats` solves."""
    times, solution = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        solution = solve_problem(problem, solver=solver, time_limit=time_limit)
        times.append(time.perf_counter() - start)
    return statistics.median(times), solution


def rel(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1e-300)


def limpq(repeats: int) -> list[dict]:
    rows = []
    for case in limpq_cases():
        for problem, published in zip(case.problems, case.published):
            t_exact, ours = timed(problem, "exact", repeats)
            t_cbc, cbc = timed(problem, "pulp", max(1, repeats // 3))
            rows.append(dict(section="LIMPQ vs CBC", case=case.name, exact_ms=t_exact * 1e3, other="pulp (CBC)",
                             other_ms=t_cbc * 1e3, speedup=t_cbc / t_exact, exact_status=ours.status,
                             objective=ours.objective, other_objective=cbc.objective,
                             objective_rel_diff=rel(ours.objective, cbc.objective), published=published,
                             target="speedup >= 10, same optimum",
                             met=bool(t_cbc / t_exact >= 10 and ours.status == "optimal"
                                      and ours.objective <= cbc.objective * (1 + 1e-9))))
    return rows


def hawq(repeats: int) -> list[dict]:
    rows = []
    for case in hawq_cases():
        times, diffs, statuses = [], [], []
        for problem in case.problems:
            t_exact, ours = timed(problem, "exact", repeats)
            reference = solve_problem(problem, solver="scipy")
            times.append(t_exact)
            diffs.append(rel(ours.objective, reference.objective))
            statuses.append(ours.status)
        rows.append(dict(section="HAWQ-V3", case=case.name, problems=len(times), exact_ms=max(times) * 1e3,
                         median_ms=statistics.median(times) * 1e3, max_rel_diff_vs_highs=max(diffs),
                         all_optimal=all(s == "optimal" for s in statuses), target="< 2 ms each",
                         met=bool(max(times) < 2e-3 and all(s == "optimal" for s in statuses))))
    return rows


def synthetic(n_layers: int, seeds: range, repeats: int, target_s: float, compare: bool) -> list[dict]:
    rows = []
    for seed in seeds:
        problem = synthetic_problem(n_layers, 36, 3, seed)
        t_exact, ours = timed(problem, "exact", repeats)
        row = dict(section=f"synthetic L={n_layers}", case=f"L={n_layers} K=36 limits=3 seed={seed}",
                   exact_ms=t_exact * 1e3, exact_status=ours.status, objective=ours.objective,
                   target=f"< {target_s * 1e3:g} ms, proven optimal")
        if compare:
            t_highs, highs = timed(problem, "scipy", 1)
            row.update(other="scipy (HiGHS)", other_ms=t_highs * 1e3, speedup=t_highs / t_exact,
                       other_objective=highs.objective, objective_rel_diff=rel(ours.objective, highs.objective))
        row["met"] = bool(t_exact < target_s and ours.status == "optimal")
        rows.append(row)
    return rows


def scale(repeats: int) -> list[dict]:
    """Growth with the number of layers (one limit), and a time limit that must hold at 10,000."""
    rows = []
    for n_layers in (1000, 3000, 10_000):
        t_exact, ours = timed(synthetic_problem(n_layers, 8, 1, 0), "exact", repeats)
        rows.append(dict(section="scale", case=f"L={n_layers} K=8 limits=1", exact_ms=t_exact * 1e3,
                         exact_status=ours.status, objective=ours.objective, target="10,000 in < 5 s, proven optimal",
                         met=bool(ours.status == "optimal" and (n_layers < 10_000 or t_exact < 5.0))))
    problem = synthetic_problem(10_000, 8, 3, 0)
    start = time.perf_counter()
    try:
        status = solve_problem(problem, solver="exact", time_limit=5.0).status
    except SolverTimeoutError:
        status = "timeout"
    elapsed = time.perf_counter() - start
    rows.append(dict(section="time limit", case="L=10000 K=8 limits=3, time_limit=5 s", exact_ms=elapsed * 1e3,
                     exact_status=status, target="ends within 6 s", met=bool(elapsed <= 6.0)))
    return rows


def frontiers(repeats: int) -> list[dict]:
    rows = []
    problem = synthetic_problem(50, 36, 3, 0)
    bops_only = replace(problem, limits={"bops": problem.limits["bops"]})
    t_one, _ = timed(bops_only, "exact", repeats)
    start = time.perf_counter()
    frontier = exact_frontier(bops_only, "bops")
    t_front = time.perf_counter() - start
    rows.append(dict(section="frontier", case="L=50 K=36, BOPs only (pareto merge)", points=len(frontier),
                     frontier_s=t_front, one_solve_ms=t_one * 1e3,
                     per_point_over_one_solve=t_front / len(frontier) / t_one, method=frontier.method))
    base = synthetic_problem(10, 36, 3, 0)
    allowed = np.isfinite(base.loss)
    span = {name: (np.where(allowed, table, np.inf).min(axis=1).sum(), np.where(allowed, table, 0).max(axis=1).sum())
            for name, table in base.costs.items()}
    small = replace(base, limits={name: float(low + 0.5 * (high - low)) for name, (low, high) in span.items()})
    t_one, _ = timed(small, "exact", repeats)
    start = time.perf_counter()
    frontier = exact_frontier(small, "bops")
    t_front = time.perf_counter() - start
    rows.append(dict(section="frontier", case="L=10 K=36, BOPs swept, size+latency held (sweep)",
                     points=len(frontier), frontier_s=t_front, one_solve_ms=t_one * 1e3,
                     per_point_over_one_solve=t_front / len(frontier) / t_one, method=frontier.method))
    return rows


def print_rows(rows: list[dict]) -> None:
    print(f"{'section':<18} {'case':<52} {'exact ms':>9} {'other ms':>9} {'ratio':>7} {'rel diff':>9} met")
    for row in rows:
        if row["section"] == "frontier":
            print(f"{'frontier':<18} {row['case']:<52} points={row['points']} total={row['frontier_s']:.3f}s "
                  f"one solve={row['one_solve_ms']:.1f}ms per point/one solve={row['per_point_over_one_solve']:.3f}")
            continue
        other = f"{row['other_ms']:.1f}" if "other_ms" in row else "-"
        ratio = f"{row['speedup']:.1f}x" if "speedup" in row else "-"
        diff = row.get("objective_rel_diff", row.get("max_rel_diff_vs_highs"))
        diff = f"{diff:.1e}" if diff is not None else "-"
        print(f"{row['section']:<18} {row['case']:<52} {row['exact_ms']:>9.2f} {other:>9} {ratio:>7} {diff:>9} "
              f"{'yes' if row['met'] else 'NO'} ({row['target']})")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats and seeds")
    args = parser.parse_args(argv)
    repeats = 3 if args.quick else 7
    warnings.simplefilter("ignore", NonBindingLimitWarning)
    solve_problem(synthetic_problem(20, 36, 3, 0), solver="exact")  # warm-up: imports, HiGHS start
    rows = limpq(repeats) + hawq(repeats)
    rows += synthetic(50, range(3 if args.quick else 5), repeats, 0.020, compare=True)
    rows += synthetic(1000, range(1 if args.quick else 3), 1, 1.0, compare=False)
    rows += scale(1 if args.quick else 3)
    rows += frontiers(repeats)
    print_rows(rows)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"command": "python -m benchmarks.exact" + (" --quick" if args.quick else ""),
                                   "rows": rows}, indent=2))
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
