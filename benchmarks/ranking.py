"""How well does each predictor rank plans by their real top-1? And what does joint selection buy?

    python -m benchmarks.ranking [--models fmnist_vit fmnist_swin fmnist_deit] [--budgets 2 3 4 6]
                                 [--light fmnist_deit] [--threads 1] [--k 3] [--perturbed 8]
                                 [--preset v1] [--tag NAME] [--with-importance]

For each shipped model and demo budget (size and BOPs of uniform WbAb, pins freed as in the
demo) the plans are: uniform WbAb; the 4 best plans of the additive objective (exact k-best);
12 near-optimal plans from re-weighted losses (`allocator.joint.candidate_plans`, kept when
within 10% of the optimum); the greedy heuristic's plan; 2 random feasible plans (optima of
wildly re-weighted losses, same limits). W6A6 (and ``--light`` models) evaluate only uniform,
the additive optimum and the joint choice.
Each gets its additive objective (default objective), its joint calibration KL (256 images)
and its top-1 on all 10,000 test images. The predictors' rank agreement with top-1 is reported
as within-budget Spearman and pooled within-budget Kendall tau (all plans, and the near-optimal
ones: additive objective within 10% of the optimum). The joint-aware allocator
(`allocator.joint.solve_joint`, k=3 best + 8 perturbed + uniform, scored by joint calibration KL) is
run per budget with a fresh score (timed: candidates + scoring), and its choice is compared with
the additive optimum and uniform (exact McNemar on the 10,000 paired predictions).

``--light`` models skip the ranking plans: only uniform, the additive optimum and the joint
choice are evaluated on the test set. Every plan's per-image correctness is stored with it
(base64 of the packed bits), so `benchmarks.ceiling` can split the test set without a model run.
The quantizer is ``QuantConfig.preset(--preset)`` (profiles cached per preset, see
`benchmarks.planbench`). Writes benchmarks/results/ranking_<model>[_<preset>][_<tag>].json (the
preset named unless it is "v1").
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
from scipy import stats  # noqa: E402

from allocator import solve  # noqa: E402
from allocator.atomic import write_json  # noqa: E402
from allocator.joint import candidate_plans, choice_of, solve_joint  # noqa: E402
from allocator.solving import pose  # noqa: E402

from .planbench import (MODELS, QUANT_PRESET, RESULTS_DIR, ModelBench, demo_budget, mcnemar_exact,  # noqa: E402
                        pack_correct, plan_key, quiet, suffix)

NEAR = 0.10
JOINT = dict(k=3, perturbed=8, sigma=0.3, gap=NEAR)


def _gather(mb: ModelBench, b: int, light: bool) -> tuple[list[dict], dict]:
    """Plans of one budget with their sources, and the joint-aware run."""
    from profiling import joint_damage

    profile = mb.profile
    uniform, budget, free = demo_budget(profile, b)
    fresh = lambda plans: joint_damage(mb.switcher, plans, mb.calib, mb.calib_logits)  # noqa: E731
    cpu = time.process_time()
    choice = quiet(solve_joint, profile, budget=budget, score=fresh, extra=[uniform], pinned=free, **JOINT)
    cpu = time.process_time() - cpu
    for cand, value in zip(choice.candidates, choice.scores):  # fill the cache: same numbers
        mb._kl[plan_key(cand.plan)] = value
    joint = {"source": choice.source, "n_candidates": len(choice.candidates),
             "candidates_time_s": choice.candidates_time_s, "score_time_s": choice.score_time_s,
             "total_time_s": choice.candidates_time_s + choice.score_time_s, "cpu_time_s": cpu, "plan": choice.plan}
    opt = choice.candidates[0].plan
    entries = [("uniform", uniform), ("k-best 1", opt), ("joint choice", choice.plan)]
    if not light:
        cands, _, _ = quiet(candidate_plans, profile, budget=budget, pinned=free, k=4, perturbed=12, sigma=0.3,
                            gap=NEAR)
        entries += [(c.source, c.plan) for c in cands]
        entries.append(("greedy", quiet(solve, profile, budget=budget, pinned=free, solver="greedy")))
        rand, _, _ = quiet(candidate_plans, profile, budget=budget, pinned=free, k=1, perturbed=2, sigma=4.0,
                           gap=1e9, seed=1000 + b)
        entries += [(f"random {i}", c.plan) for i, c in enumerate(rand[1:], 1)]
    posed = quiet(pose, profile, budget, pinned=free)
    rows, seen = [], {}
    for source, plan in entries:
        key = plan_key(plan)
        if key in seen:
            seen[key]["sources"].append(source)
            continue
        choice_idx = choice_of(plan, posed)
        row = {"budget": f"W{b}A{b}", "sources": [source], "additive": posed.problem.objective_of(choice_idx),
               "avg_w_bits": plan.avg_w_bits, "size_mb": plan.size_bytes / 1e6, "gbops": plan.bops / 1e9,
               "key": key}
        seen[key] = row
        rows.append(row)
    return rows, joint | {"optimum": choice.optimum}


def pooled_kendall(groups: list[tuple[np.ndarray, np.ndarray]]) -> tuple[float, int]:
    """Pooled within-group Kendall tau (concordant - discordant over all within-group pairs)."""
    c = d = pairs = 0
    for x, y in groups:
        for i in range(len(x)):
            for j in range(i + 1, len(x)):
                s = np.sign(x[i] - x[j]) * np.sign(y[i] - y[j])
                c += s > 0
                d += s < 0
                pairs += 1
    return ((c - d) / pairs if pairs else float("nan")), pairs


def _agreement(rows: list[dict], predictor: str) -> dict:
    """Rank agreement of -predictor (lower is better) with top-1, within budgets."""
    groups, per_budget = [], {}
    for budget in sorted({r["budget"] for r in rows}):
        sub = [r for r in rows if r["budget"] == budget]
        if len(sub) < 3:
            continue
        x = -np.array([r[predictor] for r in sub])
        y = np.array([r["top1"] for r in sub])
        groups.append((x, y))
        rho, p_rho = stats.spearmanr(x, y)
        tau, p_tau = stats.kendalltau(x, y)
        per_budget[budget] = {"n": len(sub), "spearman": float(rho), "spearman_p": float(p_rho),
                              "kendall": float(tau), "kendall_p": float(p_tau)}
    tau, pairs = pooled_kendall(groups)
    return {"pooled_kendall": tau, "pairs": pairs, "per_budget": per_budget}


def run_model(mb: ModelBench, budgets: list[int], light: bool) -> dict:
    name = mb.name
    out = {"model": name, "preset": mb.preset, "light": light, "float_top1": mb.top1("float"),
           "n_test": len(mb.test_y), "budgets": {}}
    all_rows = []
    for b in sorted(budgets, reverse=True):
        t0 = time.perf_counter()
        rows, joint = _gather(mb, b, light or b == 6)
        for row in rows:
            plan = _plan_of(mb, row)
            row["joint_kl"] = mb.joint_kl([plan])[0]
            row["top1"] = mb.top1(plan)
            row["correct"] = pack_correct(mb.correct(plan))  # per test image: split-half ceilings need no rerun
        optimum = joint["optimum"]
        for row in rows:
            row["near_optimal"] = bool(row["additive"] <= optimum + NEAR * abs(optimum) + 1e-12)
        by_source = {s: r for r in rows for s in r["sources"]}
        uni, opt, pick = by_source["uniform"], by_source["k-best 1"], by_source["joint choice"]
        a_pick, a_opt, a_uni = (mb.correct(_plan_of(mb, r)) for r in (pick, opt, uni))
        joint_plan = joint.pop("plan")
        out["budgets"][f"W{b}A{b}"] = {
            "joint": joint | {"w_bits": joint_plan.w_bits, "a_bits": joint_plan.a_bits},
            "top1": {"uniform": uni["top1"], "additive_optimum": opt["top1"], "joint_choice": pick["top1"]},
            "joint_kl": {"uniform": uni["joint_kl"], "additive_optimum": opt["joint_kl"], "joint_choice": pick["joint_kl"]},
            "mcnemar_joint_vs_optimum": mcnemar_exact(a_pick, a_opt),
            "mcnemar_joint_vs_uniform": mcnemar_exact(a_pick, a_uni),
            "n_plans": len(rows), "n_near_optimal": sum(r["near_optimal"] for r in rows),
            "wall_s": time.perf_counter() - t0,
        }
        print(f"[{name}] W{b}A{b}: {len(rows)} plans ({out['budgets'][f'W{b}A{b}']['n_near_optimal']} near-opt); "
              f"uniform {uni['top1']:.4f} optimum {opt['top1']:.4f} joint {pick['top1']:.4f} ({joint['source']}, "
              f"{joint['total_time_s']:.1f} s)", flush=True)
        all_rows += rows
    for row in all_rows:  # the plan itself, as (w, a) bits per layer in profile order
        row["bits"] = [list(wa) for wa in row.pop("key")]
    out["plans"] = all_rows
    if not light:
        ranked = [r for r in all_rows if r["budget"] != "W6A6"]
        near = [r for r in ranked if r["near_optimal"]]
        out["agreement"] = {
            "all": {p: _agreement(ranked, p) for p in ("additive", "joint_kl")},
            "near_optimal": {p: _agreement(near, p) for p in ("additive", "joint_kl")},
        }
    return out


def _plan_of(mb: ModelBench, row: dict):
    from allocator import Plan

    key = row["key"]
    layers = list(mb.profile.layers)
    return Plan(layer_info=layers, w_bits={l.name: w for l, (w, _) in zip(layers, key)},
                a_bits={l.name: a for l, (_, a) in zip(layers, key)})


def _print(results: list[dict]) -> None:
    print("\n| model | budget | uniform | additive optimum | joint choice | vs optimum (McNemar p) | joint time (s), CPU (s) |")
    print("|---|---|---|---|---|---|---|")
    for res in results:
        for budget, r in res["budgets"].items():
            t = r["top1"]
            p = r["mcnemar_joint_vs_optimum"][2]
            print(f"| {res['model']} | {budget} | {100 * t['uniform']:.2f} | {100 * t['additive_optimum']:.2f} | "
                  f"{100 * t['joint_choice']:.2f} ({r['joint']['source']}) | "
                  f"{100 * (t['joint_choice'] - t['additive_optimum']):+.2f} (p={p:.2g}) | {r['joint']['total_time_s']:.2f}, {r['joint'].get('cpu_time_s', float('nan')):.2f} |")
    print("\n| model | plans | predictor | pooled Kendall (all) | pooled Kendall (near-opt) | Spearman per budget (all) |")
    print("|---|---|---|---|---|---|")
    for res in results:
        if "agreement" not in res:
            continue
        for pred in ("additive", "joint_kl"):
            a, n = res["agreement"]["all"][pred], res["agreement"]["near_optimal"][pred]
            rho = ", ".join(f"{b} {v['spearman']:.2f}" for b, v in a["per_budget"].items())
            print(f"| {res['model']} | {len(res['plans'])} | {pred} | {a['pooled_kendall']:.3f} | "
                  f"{n['pooled_kendall']:.3f} | {rho} |")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--budgets", nargs="+", type=int, default=[2, 3, 4, 6])
    parser.add_argument("--light", nargs="*", default=["fmnist_deit"])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--k", type=int, default=JOINT["k"], help="k best additive plans among the joint candidates")
    parser.add_argument("--perturbed", type=int, default=JOINT["perturbed"],
                        help="near-optimal re-weighted plans among the joint candidates")
    parser.add_argument("--preset", default=QUANT_PRESET,
                        help="quantizer: QuantConfig.preset name (profiles cached per preset); not v1: files "
                             "ranking_<model>_<preset>[_<tag>].json")
    parser.add_argument("--tag", default="", help="suffix of the result files (ranking_<model>[_<tag>].json)")
    parser.add_argument("--with-importance", action="store_true",
                        help="also run benchmarks.importance on the same calibrated models (shares evaluations)")
    args = parser.parse_args(argv)
    JOINT.update(k=args.k, perturbed=args.perturbed)
    results = []
    for m in args.models:
        mb = ModelBench(m, threads=args.threads, preset=args.preset)
        res = run_model(mb, args.budgets, m in args.light)
        res["machine"] = {"platform": platform.platform(), "threads": args.threads}
        res["joint_options"] = dict(JOINT)
        write_json(RESULTS_DIR / f"ranking_{m}{suffix(args.preset, args.tag)}.json", res)
        results.append(res)
        if args.with_importance:
            from . import importance

            importance.save(importance.run_model(mb, args.budgets, list(importance.ALPHAS)), args.threads)
    _print(results)


if __name__ == "__main__":
    main()
