"""Paired comparison of ``benchmarks.ptq_repq`` result files against one baseline method.

    python -m benchmarks.ptq_paired benchmarks/results/ptq_repq_f64_*.json
        benchmarks/results/ptq_repq_f64round_*.json [--baseline repq] [--behind-only]

No model runs: the rows of the given files are pooled. Every method is compared with the
baseline cell by cell (model, setting, bits), paired by calibration draw: a draw's calibration
images are the same for every method, so the draw-to-draw spread, the largest source of noise,
cancels. A method's top-1 of a draw is its mean over reconstruction seeds. Per cell the table
gives the mean difference over the draws, the paired t statistic and its two-sided p-value
(Student's t with draws - 1 degrees of freedom); with 3 draws only large differences reach
significance. Prints the table; writes nothing.
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
from collections import defaultdict
from pathlib import Path

from scipy import stats


def paired(rows: list[dict], baseline: str) -> list[dict]:
    """One entry per (model, setting, bits, method other than ``baseline``) measured on at least
    two draws that the baseline was also measured on."""
    top1: dict[tuple, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        top1[r["model"], r["setting"], r["bits"], r["method"]][r["calib_seed"]].append(100 * r["top1"])
    out = []
    for (model, setting, bits, method), draws in sorted(top1.items()):
        base = top1.get((model, setting, bits, baseline))
        if method == baseline or base is None:
            continue
        seeds = sorted(set(draws) & set(base))
        if len(seeds) < 2:
            continue
        diffs = [statistics.mean(draws[s]) - statistics.mean(base[s]) for s in seeds]
        mean, sd = statistics.mean(diffs), statistics.stdev(diffs)
        t = mean / (sd / math.sqrt(len(diffs))) if sd > 0 else math.copysign(math.inf, mean) if mean else 0.0
        p = 2 * stats.t.sf(abs(t), len(diffs) - 1) if math.isfinite(t) else 0.0
        out.append({"model": model, "setting": setting, "bits": bits, "method": method, "draws": len(seeds),
                    "difference": mean, "t": t, "p": p})
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", nargs="+", type=Path)
    ap.add_argument("--baseline", default="repq")
    ap.add_argument("--behind-only", action="store_true", help="only the cells where the method is behind")
    args = ap.parse_args(argv)
    rows = []
    for f in args.files:
        try:
            rows += json.loads(f.read_text())["rows"]
        except (OSError, ValueError, KeyError) as exc:
            raise SystemExit(f"{f}: not a readable ptq_repq result file ({exc})") from None
    entries = [e for e in paired(rows, args.baseline) if not args.behind_only or e["difference"] < 0]
    if not entries:
        raise SystemExit(f"no cell pairs any method with --baseline {args.baseline} on two or more draws")
    print(f"{'model':<12} {'setting':<7} {'bits':<5} {'method':<22} {'draws':>5} {'- ' + args.baseline:>9} "
          f"{'t':>7} {'p':>6}")
    for e in entries:
        print(f"{e['model']:<12} {e['setting']:<7} W{e['bits']}A{e['bits']} {e['method']:<22} {e['draws']:>5} "
              f"{e['difference']:>+9.2f} {e['t']:>7.2f} {e['p']:>6.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
