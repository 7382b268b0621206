"""Mixed against uniform with learned rounding on both, over several fits of the rounding.

    python -m benchmarks.mixed_rounding [--models fmnist_vit fmnist_deit fmnist_swin] [--budgets 3]
                                        [--fit-seeds 3] [--steps 200] [--drop 0] [--check N] [--threads 1]
                                        [--tag T]

The demo quantizes its uniform and mixed plans once more with learned rounding, one fit each
(seed 0). The fit is chaotic: its own seed moves a cell by up to 0.3 points of top-1, as much as
the mixed-minus-uniform differences of the demo's "top-1 + rounding" column. This benchmark takes
the demo's plans (uniform WbAb with the edge layers at 8 bits, and the joint choice under its
size and BOPs, from the same profile and 256 calibration images: ``benchmarks.planbench``, default
quantizer), fits each plan ``--fit-seeds`` times (rounding seeds 0, 1000, 2000, ...: seed 0 is the
demo's fit) and evaluates every fit on all 10,000 test images. With ``--check N`` each fit is kept only if it
lowers the KL from the float model on N training images outside the calibration set
(``quant.reconstruct``'s ``check_data``, drawn as ``mixqvit quantize --reconstruct-check N``
draws them), else the calibrated model is scored; without it (as the demo) every fit is scored
as it ends. It prints per plan the mean and
range over the fits, and mixed minus uniform paired by seed with a t-test over the seeds.
Writes benchmarks/results/mixed_rounding[_<tag>].json after every fit (a rerun starts over).
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
from scipy import stats  # noqa: E402

from allocator.atomic import write_json  # noqa: E402
from allocator.joint import solve_joint  # noqa: E402

from .planbench import MODELS, RESULTS_DIR, ModelBench, demo_budget, quiet  # noqa: E402

SEED_STEP = 1000


def paired(mixed: list[float], uniform: list[float]) -> dict:
    """Mixed minus uniform paired by fit seed: mean difference and a t-test over the seeds."""
    diff = np.subtract(mixed, uniform)
    out = {"mean_diff": float(diff.mean()), "diffs": diff.tolist()}
    if len(diff) > 1 and np.ptp(diff) > 0:
        t = stats.ttest_rel(mixed, uniform)
        out |= {"t": float(t.statistic), "p": float(t.pvalue)}
    return out


def run_budget(mb: ModelBench, b: int, seeds: list[int], steps: int, drop: float, check, record: dict,
               save) -> None:
    from mixqvit.ptq import quantize_plan
    from profiling import joint_damage

    uniform, budget, free = demo_budget(mb.profile, b)
    score = lambda plans: joint_damage(mb.switcher, plans, mb.calib, mb.calib_logits)  # noqa: E731
    choice = quiet(solve_joint, mb.profile, budget=budget, score=score, extra=[uniform], pinned=free)
    cell = record.setdefault(f"W{b}A{b}", {"mixed_source": choice.source})
    for name, plan in (("uniform", uniform), ("mixed", choice.plan)):
        row = cell.setdefault(name, {"avg_w_bits": plan.avg_w_bits, "gbops": plan.bops / 1e9,
                                     "top1_calibrated": mb.top1(plan), "rounded": [], "fit_cpu_s": [],
                                     "check": []})
        for seed in seeds:
            cpu, report = time.process_time(), []
            model = quantize_plan(mb.model, plan, mb.calib, mb.config, rounding_steps=steps,
                                  rounding_drop=drop or None, seed=seed, check=check, report=report)
            row["fit_cpu_s"].append(time.process_time() - cpu)
            row["rounded"].append(float(mb.correct_of(model).mean()))
            verdict = report[-1] if check is not None else None
            row["check"].append(None if verdict is None else dataclasses.asdict(verdict))
            del model
            kept = "" if verdict is None else f", {'kept' if verdict.kept else 'put back'} (held-out KL " \
                f"{verdict.kl_before:.4f} -> {verdict.kl_after:.4f})"
            print(f"[{mb.name}] W{b}A{b} {name} seed {seed}: {100 * row['rounded'][-1]:.2f} "
                  f"({row['fit_cpu_s'][-1]:.0f} s CPU{kept})", flush=True)
            save()
        row["mean"] = float(np.mean(row["rounded"]))
    cell["mixed_minus_uniform"] = paired(cell["mixed"]["rounded"], cell["uniform"]["rounded"])
    save()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", default=list(MODELS))
    ap.add_argument("--budgets", nargs="+", type=int, default=[3])
    ap.add_argument("--fit-seeds", type=int, default=3, help="rounding fits per plan (seeds 0, 1000, ...)")
    ap.add_argument("--steps", type=int, default=200, help="Adam steps per unit")
    ap.add_argument("--drop", type=float, default=0.0, help="QDrop probability in the fit (0: none)")
    ap.add_argument("--check", type=int, default=0,
                    help="held-out images each fit must improve on to be kept (default 0: no check)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--tag", default="")
    args = ap.parse_args()
    if args.fit_seeds < 1 or args.steps < 1 or args.check < 0 or not 0.0 <= args.drop < 1.0:
        raise SystemExit("--fit-seeds and --steps must be positive, --check >= 0 and --drop in [0, 1)")
    seeds = [SEED_STEP * k for k in range(args.fit_seeds)]
    out_path = RESULTS_DIR / f"mixed_rounding{'_' + args.tag if args.tag else ''}.json"
    result = {"steps": args.steps, "drop": args.drop, "check": args.check, "fit_seeds": seeds, "models": {},
              "machine": {"platform": platform.platform(), "threads": args.threads}}
    save = lambda: write_json(out_path, result)  # noqa: E731
    for name in args.models:
        mb = ModelBench(name, threads=args.threads, preset="default")
        check = mb.check_images(args.check) if args.check else None
        record = result["models"].setdefault(name, {"float_top1": mb.top1("float")})
        for b in args.budgets:
            run_budget(mb, b, seeds, args.steps, args.drop, check, record, save)
    print(f"\n| model | budget | uniform: calibrated / rounded mean [range] | mixed (joint choice): calibrated / "
          f"rounded mean [range] | mixed - uniform, rounded (t-test over {len(seeds)} fits) |")
    print("|---|---|---|---|---|")
    for name, record in result["models"].items():
        for budget, cell in record.items():
            if budget == "float_top1":
                continue
            u, m, d = cell["uniform"], cell["mixed"], cell["mixed_minus_uniform"]
            span = lambda r: f"{100 * min(r['rounded']):.2f}-{100 * max(r['rounded']):.2f}"  # noqa: E731
            test = f" (p={d['p']:.2g})" if "p" in d else ""
            print(f"| {name} | {budget} | {100 * u['top1_calibrated']:.2f} / {100 * u['mean']:.2f} [{span(u)}] | "
                  f"{100 * m['top1_calibrated']:.2f} / {100 * m['mean']:.2f} [{span(m)}] ({cell['mixed_source']}) | "
                  f"{100 * d['mean_diff']:+.2f}{test} |")
    print(f"wrote {out_path}")


if __name__ == "__main__":
    main()
