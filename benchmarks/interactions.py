"""Do measured pairwise interactions choose better low-bit plans? The quadratic model, measured.

    python -m benchmarks.interactions [--models fmnist_vit fmnist_swin fmnist_deit] [--budgets 2 3]
                                      [--measure-bits 2] [--preset v1] [--m 3] [--threads 1]
                                      [--time-limit 10] [--anchored 0] [--tag NAME]

For each shipped model: the joint calibration KL of every layer alone and of every pair of
layers together at W{c}A{c}, c = ``--measure-bits`` (all others float; `profiling.pair_damage`, 256 calibration images,
one forward pass each), cached in ``benchmarks/results/interactions/<model>_<preset>_W<c>A<c>.json``.
Then at each demo budget (size and BOPs of uniform WbAb, pins freed) the plans compared on all
10,000 test images (exact McNemar against the additive optimum) are: uniform; the additive
optimum; the m best plans of the quadratic model (`allocator.quadratic`: additive objective plus
q_ij = D(i, j) - D(i) - D(j) measured at W{c}A{c}, scaled to other options by the relative
error size), solved exactly by HiGHS (time printed);
today's joint choice (`solve_joint`: 3 best + 8 perturbed + uniform, joint KL); and the joint
choice with the quadratic plans among its candidates. With ``--anchored R``: R rounds of a
first-order model measured in context (starting from the additive optimum, each option that can
fit the budget is applied to the current plan alone and its joint calibration KL measured; the
exact optimum of those differences under the budget is the next plan). Writes
benchmarks/results/interactions_<model>[_<preset>][_<tag>].json.
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402
from types import SimpleNamespace  # noqa: E402

import numpy as np  # noqa: E402

from allocator import solve  # noqa: E402
from allocator.atomic import write_json  # noqa: E402
from allocator.joint import choice_of, solve_joint  # noqa: E402
from allocator.quadratic import Interactions, quadratic_model, solve_quadratic, usable_options  # noqa: E402
from allocator.solving import decode, pose  # noqa: E402
from solvers import Solution  # noqa: E402

from .planbench import (MODELS, QUANT_PRESET, RESULTS_DIR, ModelBench, demo_budget, mcnemar_exact,  # noqa: E402
                        quiet, suffix)
from .ranking import JOINT  # noqa: E402

INTER_DIR = RESULTS_DIR / "interactions"


def interactions(mb: ModelBench, bits: int) -> Interactions:
    """The pairwise table of ``mb`` at W{bits}A{bits}, measured once and cached."""
    from profiling import pair_damage

    path = INTER_DIR / f"{mb.name}_{mb.preset}_W{bits}A{bits}.json"
    if path.is_file():
        table = Interactions.load(path)
        if table.names == tuple(mb.profile.names):
            return table
    t0 = time.perf_counter()
    single, pair = pair_damage(mb.switcher, mb.profile.names, mb.calib, mb.calib_logits, w_bits=bits, a_bits=bits)
    table = Interactions(tuple(mb.profile.names), bits, bits, single, pair)
    table.save(path)
    print(f"[{mb.name}] pair damage W{bits}A{bits}: {len(single)} layers, {time.perf_counter() - t0:.0f} s", flush=True)
    return table


def anchored(mb: ModelBench, posed, base, free: dict):
    """The exact optimum of the first-order model around ``base``: each option's loss is the joint
    KL of ``base`` with only that layer changed to it, minus base's (one forward pass per option
    that can fit the budget); the budget's other options are forbidden."""
    profile, grid = mb.profile, posed.grid
    usable = usable_options(posed.problem)
    moves, where = [], []
    for l, k in zip(*np.nonzero(usable)):
        name = profile.names[l]
        w, a = dict(base.w_bits), dict(base.a_bits)
        w[name], a[name] = int(grid.w_bits[l, k]), int(grid.a_bits[l, k])
        moves.append(SimpleNamespace(w_bits=w, a_bits=a))
        where.append((l, k))
    kl0, kls = mb.joint_kl([base])[0], mb.joint_kl(moves)
    table = np.full(usable.shape, np.inf)
    for (l, k), kl in zip(where, kls):
        table[l, k] = kl - kl0
    local = lambda _profile, w_bits, a_bits: table.copy()  # noqa: E731  (same grid: same pose)
    return quiet(solve, profile, budget=posed.budget, pinned=free, objective=local), len(moves)


def run_model(mb: ModelBench, budgets: list[int], m: int, time_limit: float, measure_bits: int,
              rounds: int = 0) -> dict:
    profile = mb.profile
    out = {"model": mb.name, "preset": mb.preset, "budgets": {}}
    table = interactions(mb, measure_bits)
    for b in sorted(budgets, reverse=True):
        uniform, budget, free = demo_budget(profile, b)
        posed = quiet(pose, profile, budget, pinned=free)
        model = quadratic_model(posed, table)
        t0, c0 = time.perf_counter(), time.process_time()
        sols = solve_quadratic(model, m=m, time_limit=time_limit)
        quad_s, quad_cpu = time.perf_counter() - t0, time.process_time() - c0
        plans = {"uniform": uniform, "additive optimum": quiet(solve, profile, budget=budget, pinned=free)}
        for i, sol in enumerate(sols, 1):
            plans[f"quadratic {i}"] = decode(posed, Solution(choice=sol.choice, objective=sol.objective, status=sol.status,
                                                             bound=sol.objective, time_s=sol.time_s, solver="highs-miqp",
                                                             usage=posed.problem.usage_of(sol.choice)))
        base = plans["additive optimum"]
        for r in range(1, rounds + 1):  # re-anchor around the previous round's plan
            t2 = time.perf_counter()
            base, n_moves = anchored(mb, posed, base, free)
            plans[f"anchored {r}"] = base
            print(f"[{mb.name}] W{b}A{b} anchored round {r}: {n_moves} options measured, {time.perf_counter() - t2:.0f} s",
                  flush=True)
        score = lambda ps: mb.joint_kl(ps)  # noqa: E731
        before = quiet(solve_joint, profile, budget=budget, score=score, extra=[uniform], pinned=free, **JOINT)
        t1 = time.perf_counter()
        after = quiet(solve_joint, profile, budget=budget, score=score, extra=[uniform], pinned=free,
                      interactions=table, quadratic=m, quadratic_time_limit=time_limit, **JOINT)
        after_s = time.perf_counter() - t1
        plans["joint choice"] = before.plan
        plans["joint + quadratic"] = after.plan
        base = mb.correct(plans["additive optimum"])
        rows = {}
        for label, plan in plans.items():
            correct = mb.correct(plan)
            n01, n10, p = mcnemar_exact(correct, base)
            idx = choice_of(plan, posed)
            rows[label] = {"top1": float(correct.mean()), "joint_kl": mb.joint_kl([plan])[0],
                           "additive": posed.problem.objective_of(idx), "quadratic_model": model.objective_of(idx),
                           "vs_additive_optimum": {"better_only": n01, "worse_only": n10, "mcnemar_p": p}}
        out["budgets"][f"W{b}A{b}"] = {
            "rows": rows, "quadratic_status": [s.status for s in sols], "quadratic_solve_s": quad_s,
            "quadratic_solve_cpu_s": quad_cpu,
            "joint_quadratic_source": after.source, "joint_quadratic_total_s": after_s,
            "joint_source": before.source, "interaction_bits": table.w_bits,
        }
        print(f"[{mb.name}] W{b}A{b}: " + ", ".join(f"{k} {100 * v['top1']:.2f}" for k, v in rows.items())
              + f"; quadratic solve {quad_s:.1f} s ({[s.status for s in sols]}), joint+quadratic picks {after.source} "
              f"({after_s:.1f} s)", flush=True)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--budgets", nargs="+", type=int, default=[2, 3])
    parser.add_argument("--preset", default=QUANT_PRESET)
    parser.add_argument("--measure-bits", type=int, default=2, help="bit-width c of the pair measurements (WcAc)")
    parser.add_argument("--m", type=int, default=3, help="best plans of the quadratic model to evaluate")
    parser.add_argument("--time-limit", type=float, default=10.0, help="seconds for each quadratic solve")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--tag", default="", help="suffix of the result files (interactions_<model>[_<preset>][_<tag>].json)")
    parser.add_argument("--anchored", type=int, default=0,
                        help="rounds of the first-order model re-measured around the last plan (0: none)")
    args = parser.parse_args(argv)
    results = []
    for name in args.models:
        res = run_model(ModelBench(name, threads=args.threads, preset=args.preset), args.budgets, args.m,
                        args.time_limit, args.measure_bits, args.anchored)
        res["machine"] = {"platform": platform.platform(), "threads": args.threads}
        write_json(RESULTS_DIR / f"interactions_{name}{suffix(args.preset, args.tag)}.json", res)
        results.append(res)
    _print(results)


def _print(results: list[dict]) -> None:
    print("\n| model | budget | uniform | additive optimum | quadratic 1 (status, solve wall/CPU s) | joint choice | "
          "joint + quadratic (source) | anchored rounds |")
    print("|---|---|---|---|---|---|---|---|")
    for res in results:
        for budget, r in res["budgets"].items():
            rows = r["rows"]
            top = {k: 100 * v["top1"] for k, v in rows.items()}
            quad = (f"{top['quadratic 1']:.2f} ({r['quadratic_status'][0]}, {r['quadratic_solve_s']:.1f}/"
                    f"{r.get('quadratic_solve_cpu_s', float('nan')):.1f})" if "quadratic 1" in top else "none found")
            print(f"| {res['model']} | {budget} | {top['uniform']:.2f} | {top['additive optimum']:.2f} | {quad} | "
                  f"{top['joint choice']:.2f} | {top['joint + quadratic']:.2f} ({r['joint_quadratic_source']}) | "
                  + " / ".join(f"{v:.2f}" for k, v in top.items() if k.startswith("anchored")) + " |")


if __name__ == "__main__":
    main()
