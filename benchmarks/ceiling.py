"""How well can anything rank plans by measured top-1? The test set's reliability ceiling.

    python -m benchmarks.ceiling [--files ranking_fmnist_vit.json ranking_fmnist_swin.json]
                                 [--splits 20] [--seed 0]

Near-optimal plans differ in top-1 by a few tenths of a point, so their top-1 on 10,000 test
images is itself a noisy measurement of how good they are. This reads the per-image correctness
that `benchmarks.ranking` stores with every plan (no model is run) and measures:

* split-half reliability: the test set is split at random into two disjoint halves of 5,000
  images (``--splits`` seeded splits); the pooled within-budget Kendall tau between the plans'
  top-1 on one half and on the other, over all same-budget plans and over the near-optimal ones
  (additive objective within 10% of the optimum), exactly as `benchmarks.ranking` pools;
* each predictor (additive objective, joint calibration KL, and any other numeric plan field
  given with ``--predictors``) against the same halves, so predictor and half-set are compared
  on equal footing (both judged against 5,000 held-out images);
* the oracle ceiling on all 10,000 images: for any predictor fixed before the test set is seen,
  the expected pooled Kendall with the measured top-1 is at most the mean over pairs of
  ``2 * Phi(|delta| / sigma) - 1`` (the truth's own expected agreement; delta the true top-1
  difference, sigma the paired standard error of the measured one). It is estimated by plugging
  in the measured difference with its noise removed (``delta^2 = max(d^2 - sigma^2, 0)``), a
  normal-approximation estimate; its 5,000-image twin predicts the split-half value, which checks
  the model against the measurement.

Writes benchmarks/results/ceiling.json and prints a table.
"""
from __future__ import annotations

import argparse
import base64
import json
from itertools import combinations

import numpy as np
from scipy.stats import norm

from allocator.atomic import write_json

from .planbench import RESULTS_DIR, unpack_correct
from .ranking import pooled_kendall

PREDICTORS = ("additive", "joint_kl")


def _groups(plans: list[dict], near: bool) -> dict[str, list[int]]:
    """Plan indices per budget (W6A6 excluded, as in the ranking benchmark)."""
    out: dict[str, list[int]] = {}
    for i, p in enumerate(plans):
        if p["budget"] != "W6A6" and (p["near_optimal"] or not near):
            out.setdefault(p["budget"], []).append(i)
    return {b: idx for b, idx in out.items() if len(idx) >= 3}


def _pooled(groups: dict[str, list[int]], x: np.ndarray, y: np.ndarray) -> float:
    return pooled_kendall([(x[idx], y[idx]) for idx in groups.values()])[0]


def oracle_terms(correct: np.ndarray, groups: dict[str, list[int]], n_images: int) -> np.ndarray:
    """Per within-budget pair: the estimated expected sign agreement ``2 Phi(|delta| / sigma) - 1`` of
    the true top-1 difference with one measured on ``n_images`` images, from the paired per-image
    correctness ``correct`` (plans x images) with the noise of its own estimate removed."""
    n = correct.shape[1]
    terms = []
    for idx in groups.values():
        for i, j in combinations(idx, 2):
            z = correct[i].astype(np.int8) - correct[j].astype(np.int8)
            d, var = z.mean(), z.var()
            if var == 0:  # the two plans agree on every image: no noise, no difference
                terms.append(0.0)
                continue
            delta = np.sqrt(max(d * d - var / n, 0.0))
            terms.append(2 * norm.cdf(delta / np.sqrt(var / n_images)) - 1)
    return np.array(terms)


def analyse(result: dict, splits: int, seed: int, predictors: tuple[str, ...]) -> dict:
    plans = [p for p in result["plans"] if "correct" in p]
    if len(plans) < len(result["plans"]):
        raise ValueError(f"{result['model']}: {len(result['plans']) - len(plans)} plans lack per-image correctness; "
                         "rerun benchmarks.ranking (it stores it) before measuring the ceiling")
    # files written before ranking recorded n_test hold all 10,000 test images, a multiple of 8,
    # so the packed length is the count
    n = result.get("n_test") or 8 * len(base64.b64decode(plans[0]["correct"]))
    correct = np.stack([unpack_correct(p["correct"], n) for p in plans])
    full = correct.mean(axis=1)
    preds = {name: -np.array([p[name] for p in plans], dtype=float) for name in predictors}  # higher better
    rng = np.random.default_rng(seed)
    out = {"model": result["model"], "preset": result.get("preset", "v1"), "n_plans": len(plans), "splits": splits}
    halves = [rng.permutation(n) for _ in range(splits)]
    for label, near in (("all", False), ("near_optimal", True)):
        groups = _groups(plans, near)
        row: dict = {"budgets": {b: len(idx) for b, idx in groups.items()},
                     "pairs": sum(len(idx) * (len(idx) - 1) // 2 for idx in groups.values())}
        split_tau, vs_half = [], {name: [] for name in preds}
        for perm in halves:
            a, b = correct[:, perm[: n // 2]].mean(axis=1), correct[:, perm[n // 2:]].mean(axis=1)
            split_tau.append(_pooled(groups, a, b))
            for name, x in preds.items():
                vs_half[name].append((_pooled(groups, x, a) + _pooled(groups, x, b)) / 2)
        row["split_half"] = _summary(split_tau)
        row["oracle_ceiling_full"] = float(oracle_terms(correct, groups, n).mean())
        row["model_split_half"] = float((oracle_terms(correct, groups, n // 2) ** 2).mean())
        row["predictors"] = {name: {"vs_full": _pooled(groups, x, full), "vs_half": _summary(vs_half[name])}
                             for name, x in preds.items()}
        out[label] = row
    return out


def _summary(values: list[float]) -> dict:
    v = np.array(values)
    return {"mean": float(v.mean()), "min": float(v.min()), "max": float(v.max())}


def _print(rows: list[dict], predictors: tuple[str, ...]) -> None:
    print("\n| model (preset) | plans | pairs | split-half 5k/5k mean [min, max] | model's split-half | oracle ceiling 10k | "
          + " | ".join(f"{p} vs half / vs 10k" for p in predictors) + " |")
    print("|---|---|---|---|---|---|" + "---|" * len(predictors))
    for r in rows:
        for label in ("all", "near_optimal"):
            x = r[label]
            s = x["split_half"]
            cells = [f"{x['predictors'][p]['vs_half']['mean']:.2f} / {x['predictors'][p]['vs_full']:.2f}" for p in predictors]
            print(f"| {r['model']} ({r['preset']}), {label} | {sum(x['budgets'].values())} | {x['pairs']} | "
                  f"{s['mean']:.2f} [{s['min']:.2f}, {s['max']:.2f}] | {x['model_split_half']:.2f} | "
                  f"{x['oracle_ceiling_full']:.2f} | " + " | ".join(cells) + " |")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", nargs="+", default=["ranking_fmnist_vit.json", "ranking_fmnist_swin.json"])
    parser.add_argument("--splits", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--predictors", nargs="+", default=list(PREDICTORS))
    parser.add_argument("--out", default="ceiling.json")
    args = parser.parse_args(argv)
    if args.splits < 1:
        parser.error("--splits must be >= 1")
    rows = []
    for name in args.files:
        path = RESULTS_DIR / name
        if not path.is_file():
            parser.error(f"{path} does not exist; run benchmarks.ranking first")
        rows.append(analyse(json.loads(path.read_text()), args.splits, args.seed, tuple(args.predictors)) | {"file": name})
    write_json(RESULTS_DIR / args.out, {"splits": args.splits, "seed": args.seed, "results": rows})
    _print(rows, tuple(args.predictors))


if __name__ == "__main__":
    main()
