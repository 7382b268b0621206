"""Benchmark every solver backend: median time and gap to the optimum.

    python -m benchmarks.solvers            # full grid, 3 repeats
    python -m benchmarks.solvers --quick    # smaller grid, 1 repeat

Cases:
- synthetic, seeded: L = 50, 200, 1000 layers; K = 6 options (bits 2,3,4,5,6,8, activations at
  the weight bits) or 36 ((w, a) pairs); 1-3 limits (size at an average of 4 weight bits, BOPs
  at W4A5, a measured-latency-like float table at 60% of its range); first and last layer
  pinned to 8 bits; every 12th layer tied to the next (like q/k/v projections).
- published, when their tables are in tests/data/: HAWQ-V3 (Yao, Dong et al., ICML 2021,
  repository Zhen-Dong/HAWQ, MIT) ResNet-18/50, 9 limits each; LIMPQ (Tang et al., ECCV 2022,
  repository 1hunters/LIMPQ, MIT) ResNet-50, W3A4 BitOps + compression ratio 12.2. The
  published objective is reported next to ours. More cases: append a loader (a function
  returning a list of `Case`) to `CASE_LOADERS`.

Columns: solved (plans returned / solves), optimal (solves proven optimal; the rest hit the
time limit or are heuristic), median s (median `Solution.time_s` over problems and repeats), max
gap ((objective - best proven optimum) / |optimum|, worst over the case's solves).
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import itertools
import json
import pathlib
import statistics
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from solvers import Problem, SolverError, available_solvers, solve_problem
from solvers.backends import is_exact

ROOT = pathlib.Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"
RESULTS = ROOT / "benchmarks" / "results" / "solvers.json"
BITS = np.array([2, 3, 4, 5, 6, 8])
BITS_8 = np.array([2, 3, 4, 5, 6, 7, 8, 16])  # K = 8: the scale rows of benchmarks.exact


@dataclass
class Case:
    """A named set of problems solved by every backend; `published` objectives when known."""

    name: str
    problems: list[Problem]
    published: list[float | None] = field(default_factory=list)


def synthetic_problem(n_layers: int, n_options: int, n_limits: int, seed: int) -> Problem:
    """A seeded problem shaped like a ViT bit allocation (loss falls and costs rise with bits)."""
    rng = np.random.default_rng(seed)
    if n_options == 6:
        w_bits = a_bits = BITS
    elif n_options == 8:
        w_bits = a_bits = BITS_8
    elif n_options == 36:
        w_bits, a_bits = (np.array(v) for v in zip(*itertools.product(BITS, BITS)))
    else:
        raise ValueError(f"n_options must be 6, 8 or 36, got {n_options}")
    params = rng.integers(10_000, 2_000_000, n_layers)
    macs = params * rng.integers(16, 400, n_layers)
    weight_sens, act_sens = rng.lognormal(0.0, 1.5, (2, n_layers))
    noise = rng.uniform(0.7, 1.3, (2, n_layers, n_options))
    loss = weight_sens[:, None] * 4.0 ** -w_bits[None] * noise[0] + act_sens[:, None] * 4.0 ** -a_bits[None] * noise[1]
    pinned = (w_bits == 8) & (a_bits == 8)
    loss[[0, -1]] = np.where(pinned, loss[[0, -1]], np.inf)
    costs = {
        "size": (params[:, None] * w_bits[None]).astype(float),
        "bops": (macs[:, None] * w_bits[None] * a_bits[None]).astype(float),
        "latency": macs[:, None] * 1e-9 * (w_bits * a_bits)[None] ** 0.8 * rng.uniform(0.9, 1.1, (n_layers, n_options)),
    }
    latency_range = costs["latency"].min(axis=1).sum(), costs["latency"].max(axis=1).sum()
    limits = {
        "size": float(params.sum() * 4),
        "bops": float(macs.sum() * 4 * (5 if n_options == 36 else 4.5)),
        "latency": float(latency_range[0] + 0.6 * (latency_range[1] - latency_range[0])),
    }
    tied = [[layer, layer + 1] for layer in range(1, n_layers - 2, 12)]
    return Problem(loss=loss, costs=costs, limits=dict(list(limits.items())[:n_limits]), tied=tied)


def synthetic_cases(quick: bool) -> list[Case]:
    sizes = (50, 200) if quick else (50, 200, 1000)
    limit_counts = (1, 3) if quick else (1, 2, 3)
    return [
        Case(f"synthetic L={n} K={k} limits={r}", [synthetic_problem(n, k, r, seed=1000 * n + 10 * k + r)])
        for n in sizes for k in (6, 36) for r in limit_counts
    ]


def hawq_cases() -> list[Case]:
    """HAWQ-V3's 4/8-bit ILP: one case per network, 9 problems (size/bops/latency x 0.25/0.5/0.75)."""
    path = DATA / "hawq_v3_resnet.json"
    if not path.exists():
        return []
    cases = []
    for network, table in json.loads(path.read_text())["networks"].items():
        trace = np.array(table["hutchinson_trace"])
        loss = np.stack([trace * np.array(table["delta_w_4bit_sq"]), trace * np.array(table["delta_w_8bit_sq"])], axis=1)
        params, bops = np.array(table["parameters"]), np.array(table["bops_fp32"])
        costs = {
            "size": np.stack([params * 4, params * 8], axis=1),
            "bops": np.stack([bops / 64, bops / 16], axis=1),
            "latency": np.stack([table["latency_int4"], table["latency_int8"]], axis=1),
        }
        problems, published = [], []
        for key, bits in table["published_bits"].items():
            resource, fraction = key.rsplit("_", 1)
            low, high = costs[resource][:, 0].sum(), costs[resource][:, 1].sum()
            limit = float(low + float(fraction) * (high - low))
            problems.append(Problem(loss=loss, costs=costs, limits={resource: limit}, tied=table["tied"]))
            published.append(float(loss[np.arange(len(bits)), (np.array(bits) == 8).astype(int)].sum()))
        cases.append(Case(f"HAWQ-V3 {network} (9 limits)", problems, published))
    return cases


def limpq_cases() -> list[Case]:
    """LIMPQ's joint (w, a) ILP for ResNet-50 with BitOps and compression-ratio limits."""
    path = DATA / "limpq_resnet50.json"
    if not path.exists():
        return []
    d = json.loads(path.read_text())
    bits = d["bits"]
    pairs = list(itertools.product(bits, bits))  # (w, a)

    def indicator(table: dict) -> np.ndarray:
        values = np.array([[table[layer][str(b)] for b in bits] for layer in d["layers"]])
        wired = np.zeros_like(values, dtype=bool)  # value at b-1 lower than at b: replaced by 1e8
        wired[:, :-1] = values[:, :-1] < values[:, 1:]
        return np.where(wired, 1e8, values)

    weight, act = indicator(d["weight_indicator"]), indicator(d["act_indicator"])
    w_index = np.array([bits.index(w) for w, _ in pairs])
    a_index = np.array([bits.index(a) for _, a in pairs])
    loss = act[:, a_index] + d["alpha"] * weight[:, w_index]
    macs, params = np.array(d["macs_limpq_counting"], dtype=float), np.array(d["params"], dtype=float)
    w = np.array([p[0] for p in pairs], dtype=float)
    a = np.array([p[1] for p in pairs], dtype=float)
    costs = {"bitops": macs[:, None] * (w * a)[None], "size": params[:, None] * w[None]}
    ref_w, ref_a = d["bitops_reference"]
    total_fp32 = 32 * (params.sum() + d["fc_params"] + d["stem_params"])
    limits = {
        "bitops": float(macs.sum() * ref_w * ref_a),
        "size": float(total_fp32 / d["compression_ratio"] - (d["fc_params"] + d["stem_params"]) * 8),
    }
    choice = [pairs.index((wb, ab)) for wb, ab in zip(d["published_w_bits"], d["published_a_bits"])]
    published = float(loss[np.arange(len(choice)), choice].sum())
    return [Case("LIMPQ resnet50 (2 limits)", [Problem(loss=loss, costs=costs, limits=limits)], [published])]


CASE_LOADERS: list[Callable[[], list[Case]]] = [hawq_cases, limpq_cases]


def run_case(case: Case, backends: list[str], repeats: int, time_limit: float) -> list[dict]:
    runs: dict[str, list] = {}
    for name in backends:
        runs[name] = []
        for problem in case.problems:
            for _ in range(repeats):
                try:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore", UserWarning)
                        runs[name].append(solve_problem(problem, solver=name, time_limit=time_limit))
                except SolverError as error:
                    runs[name].append(error)
    optimum = []
    for i in range(len(case.problems)):
        proven = [
            sol.objective
            for name in backends if is_exact(name)
            for sol in runs[name][i * repeats:(i + 1) * repeats]
            if not isinstance(sol, Exception) and sol.status == "optimal"
        ]
        optimum.append(min(proven) if proven else None)
    rows = []
    for name in backends:
        solved = [s for s in runs[name] if not isinstance(s, Exception)]
        gaps = [
            (sol.objective - optimum[i // repeats]) / max(abs(optimum[i // repeats]), 1e-300)
            for i, sol in enumerate(runs[name])
            if not isinstance(sol, Exception) and optimum[i // repeats] is not None
        ]
        versus = [(opt - pub) / abs(pub) for opt, pub in zip(optimum, case.published) if opt is not None and pub]
        rows.append({
            "case": case.name,
            "solver": name,
            "problems": len(case.problems),
            "solved": len(solved),
            "failures": [str(s) for s in runs[name] if isinstance(s, Exception)][:1],
            "median_time_s": statistics.median(s.time_s for s in solved) if solved else None,
            "max_gap": max(gaps) if gaps else None,
            "optimal": sum(s.status == "optimal" for s in solved),
            "optimum_vs_published": {
                "equal": sum(abs(v) <= 1e-9 for v in versus),
                "lower": sum(v < -1e-9 for v in versus),
                "higher": sum(v > 1e-9 for v in versus),
                "largest_difference": max(versus, key=abs),
            } if versus else None,
        })
    return rows


def _fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def print_table(rows: list[dict]) -> None:
    header = f"{'case':34} {'solver':11} {'solved':>7} {'optimal':>7} {'median s':>9} {'max gap':>9}"
    print(header)
    print("-" * len(header))
    for row in rows:
        print(f"{row['case']:34} {row['solver']:11} {row['solved']:>3}/{row['problems'] * row['repeats']:<3} "
              f"{row['optimal']:>7} {_fmt(row['median_time_s'], '9.4f')} {_fmt(row['max_gap'], '9.2e')}")
    published = [r for r in rows if r["optimum_vs_published"] is not None and r["solver"] == rows[0]["solver"]]
    for row in published:
        v = row["optimum_vs_published"]
        print(f"{row['case']}: proven optimum vs published objective: {v['equal']} equal, {v['lower']} lower, "
              f"{v['higher']} higher (largest relative difference {v['largest_difference']:+.2e})")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller grid, one repeat")
    parser.add_argument("--time-limit", type=float, default=None, help="seconds per solve (default 30, quick 10)")
    parser.add_argument("--solvers", nargs="*", default=None, help="backends to run (default: all available)")
    args = parser.parse_args(argv)
    repeats = 1 if args.quick else 3
    time_limit = args.time_limit or (10.0 if args.quick else 30.0)
    backends = args.solvers or available_solvers()
    cases = synthetic_cases(args.quick) + [case for loader in CASE_LOADERS for case in loader()]
    rows = []
    for case in cases:
        for row in run_case(case, backends, repeats, time_limit):
            row["repeats"] = repeats
            rows.append(row)
    print_table(rows)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({
        "command": "python -m benchmarks.solvers" + (" --quick" if args.quick else ""),
        "repeats": repeats,
        "time_limit_s": time_limit,
        "solvers": backends,
        "rows": rows,
    }, indent=1))
    print(f"wrote {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
