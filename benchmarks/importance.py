"""What does LRP importance buy? The objective's alpha, measured on the shipped models.

    python -m benchmarks.importance [--models fmnist_vit fmnist_swin fmnist_deit] [--budgets 2 3 4 6]
                                    [--alphas 0 0.25 0.5 0.75 1] [--threads 1] [--shuffle]

For each shipped model and demo budget (size and BOPs of uniform WbAb, patch embedding and
head free, as in the demo) the additive optimum is solved with the "mixqvit" objective at each
alpha (loss = ((1 - alpha) + alpha * normalised importance) * sensitivity; alpha 0 ignores
importance), with importance only (objective="importance": importance x quantization-noise
power, no sensitivity) and, with ``--shuffle``, as a control at alpha 0.5 with the importance
vector shuffled across layers (seeded). Every plan is evaluated on all 10,000 test images; each is compared
with alpha 0 by an exact McNemar test on the paired predictions. Writes
benchmarks/results/importance_<model>.json.
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from allocator import solve  # noqa: E402
from allocator.atomic import write_json  # noqa: E402

from .planbench import (MODELS, QUANT_PRESET, RESULTS_DIR, ModelBench, demo_budget, mcnemar_exact, plan_key, quiet,  # noqa: E402
                        suffix)

ALPHAS = (0.0, 0.25, 0.5, 0.75, 1.0)


def _copy_with_importance(profile, importance):
    from allocator import Profile

    return Profile(list(profile.layers), profile.bits, importance=importance,
                   weight_sensitivity=profile.weight_sensitivity, act_sensitivity=profile.act_sensitivity,
                   metric=profile.metric, baseline_bits=profile.baseline_bits, metadata=dict(profile.metadata),
                   cost_tables=dict(profile.cost_tables))


def run_model(mb: ModelBench, budgets: list[int], alphas: list[float], shuffle: bool = False) -> dict:
    name, profile = mb.name, mb.profile
    shuffled = _copy_with_importance(profile, profile.importance[np.random.default_rng(0).permutation(
        len(profile.importance))])
    out = {"model": name, "preset": mb.preset, "float_top1": mb.top1("float"), "budgets": {}}
    for b in sorted(budgets, reverse=True):
        t0 = time.perf_counter()
        uniform, budget, free = demo_budget(profile, b)
        settings = [(f"alpha {a:g}", profile, {"alpha": a}) for a in alphas]
        settings.append(("importance only", profile, {"objective": "importance"}))
        if shuffle:
            settings.append(("alpha 0.5, shuffled importance", shuffled, {"alpha": 0.5}))
        plans = {label: quiet(solve, prof, budget=budget, pinned=free, **kw) for label, prof, kw in settings}
        plans["uniform"] = uniform
        base = mb.correct(plans["alpha 0"])
        rows = {}
        for label, plan in plans.items():
            correct = mb.correct(plan)
            n01, n10, p = mcnemar_exact(correct, base)
            rows[label] = {"top1": float(correct.mean()), "joint_kl": mb.joint_kl([plan])[0],
                           "avg_w_bits": plan.avg_w_bits, "gbops": plan.bops / 1e9,
                           "same_plan_as_alpha0": plan_key(plan) == plan_key(plans["alpha 0"]),
                           "vs_alpha0": {"better_only": n01, "worse_only": n10, "mcnemar_p": p}}
        out["budgets"][f"W{b}A{b}"] = rows
        print(f"[{name}] W{b}A{b} ({time.perf_counter() - t0:.0f} s): " + ", ".join(
            f"{k} {100 * v['top1']:.2f}" for k, v in rows.items()), flush=True)
    return out


def _print(results: list[dict]) -> None:
    labels = list(next(iter(results[0]["budgets"].values())))
    print("\n| model | budget | " + " | ".join(labels) + " |")
    print("|---|---|" + "---|" * len(labels))
    for res in results:
        for budget, rows in res["budgets"].items():
            cells = []
            for label in labels:
                r = rows[label]
                d = 100 * (r["top1"] - rows["alpha 0"]["top1"])
                mark = "" if label == "alpha 0" else (" =" if r["same_plan_as_alpha0"] else
                                                      f" ({d:+.2f}, p={r['vs_alpha0']['mcnemar_p']:.2g})")
                cells.append(f"{100 * r['top1']:.2f}{mark}")
            print(f"| {res['model']} | {budget} | " + " | ".join(cells) + " |")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--budgets", nargs="+", type=int, default=[2, 3, 4, 6])
    parser.add_argument("--alphas", nargs="+", type=float, default=list(ALPHAS))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--preset", default=QUANT_PRESET, help="quantizer: QuantConfig.preset name (see benchmarks.planbench)")
    parser.add_argument("--shuffle", action="store_true", help="add the shuffled-importance control")
    args = parser.parse_args(argv)
    results = [run_model(ModelBench(m, threads=args.threads, preset=args.preset), args.budgets, args.alphas, args.shuffle) for m in args.models]
    for res in results:
        save(res, args.threads)
    _print(results)


def save(result: dict, threads: int) -> None:
    write_json(RESULTS_DIR / f"importance_{result['model']}{suffix(result['preset'], '')}.json",
               result | {"machine": {"platform": platform.platform(), "threads": threads}})


if __name__ == "__main__":
    main()
