"""Approximate sensitivity matrices against the exact one: rank agreement, plans, and cost.

    python -m benchmarks.sensitivity_approx [--models fmnist_vit fmnist_deit fmnist_swin deit_s]
                                            [--anchors 2 3 4] [--no-early-stop] [--images 256]

For each model the exact profile (every (layer, bits) pair through the whole network suffix) is
compared with the opt-in approximations of `profiling.measure_sensitivity`:

* ``anchor_bits=a`` (`profiling._anchored`): only bit-width ``a`` runs the whole suffix, the
  others run the layer's own transformer unit and are scaled by their unit-output error;
* ``early_stop=EarlyStop()`` (`profiling._early_stop`): a pair stops once its mean damage is
  known to 5% (standard error) or is negligible (<1%) next to the layer's lowest-bit damage;
* the yardstick: the exact matrix from the first half of the images (half the cost). The exact
  matrix's own sampling noise shows here: an approximation that does no worse than this costs
  no more plan quality than calibrating on half the images would.

Reported per approximation: Spearman rank correlation of all measured pairs' damage with the
exact run's; the plans `allocator.solve` picks from each profile at average-bit budgets 2.25, 3,
4, 5 and 6 (2 is below what the 8-bit pinned first/last layers allow), whether they equal the
exact profile's plans, and the exact objective of each approximate plan relative to the exact
plan's (0 = as good; the objective the allocator minimises, evaluated on the exact profile);
the CPU time and counted FLOPs of the whole `profile_model` call relative to the exact one's
(LRP and calibration, a few forward passes, are in both).

Also reported: how often the exact damage rises from one bit-width to the next (monotonicity in
bits, which skipping a bit-width "bounded by its neighbour" would need).

Shipped models: 256 class-balanced Fashion-MNIST training images (seed 0), bits 2,3,4,6,8, the
default `QuantConfig`, as ``mixqvit profile`` does. ``deit_s``: a random-init timm
``deit_small_patch16_224`` on ``--deit-images`` random 224x224 images (its ranks only: random
weights and inputs say nothing about plans, so none are solved). One torch thread.
Writes benchmarks/results/sensitivity_approx.json.
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)

from allocator import solve  # noqa: E402
from allocator.objective import loss_table  # noqa: E402

from profiling import EarlyStop, profile_model  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "sensitivity_approx.json"
BITS = (2, 3, 4, 6, 8)
BUDGETS = (2.25, 3.0, 4.0, 5.0, 6.0)


def measured_pairs(profile) -> np.ndarray:
    """Damage of every measured pair (weight rows of weighted layers, every act row), flattened."""
    has_w = np.array([layer.has_weights for layer in profile.layers])
    return np.concatenate([profile.weight_sensitivity[has_w].ravel(), profile.act_sensitivity.ravel()])


def monotonicity_violations(profile) -> dict[str, list[int]]:
    """Per table: [adjacent bit-width pairs where the damage rises with more bits, pairs checked]
    (whether a bit-width's damage could be bounded by its lower neighbour's)."""
    out = {}
    for table, tab in (("weight", profile.weight_sensitivity), ("act", profile.act_sensitivity)):
        rows = tab[np.abs(tab).sum(axis=1) > 0]
        out[table] = [int((np.diff(rows, axis=1) > 0).sum()), int(rows.shape[0] * (rows.shape[1] - 1))]
    return out


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(a, b).statistic)


def plan_objective(profile, plan) -> float:
    """The objective `solve` minimises, of `plan`'s bits, evaluated on `profile`."""
    w = np.array([[plan.w_bits[n]] for n in profile.names])
    a = np.array([[plan.a_bits[n]] for n in profile.names])
    return float(loss_table(profile, w, a).sum())


def compare_plans(exact, approx) -> list[dict]:
    rows = []
    for budget in BUDGETS:
        pe, pa = solve(exact, budget), solve(approx, budget)
        same = pe.w_bits == pa.w_bits and pe.a_bits == pa.a_bits
        gap = plan_objective(exact, pa) / plan_objective(exact, pe) - 1
        rows.append({"budget": budget, "same_plan": same, "objective_gap": round(gap, 5),
                     "layers_differing": sum(pe.w_bits[n] != pa.w_bits[n] or pe.a_bits[n] != pa.a_bits[n]
                                             for n in exact.names)})
    return rows


def load_shipped(name: str, n: int):
    from mixqvit.datasets import load_calibration
    from mixqvit.loading import load_model

    loaded = load_model(name, False, None, None)
    return loaded.model, load_calibration(loaded, None, n, 0)


def run_profile(model, data, **kw):
    from benchmarks.profiling import flop_counter

    with flop_counter() as flops:
        c0 = time.process_time()
        prof = profile_model(model, data, bits=BITS, verbose=False, importance=kw.pop("importance", True), **kw)
        cpu = time.process_time() - c0
    return prof, cpu, flops.get_total_flops()


def bench_model(name: str, n: int, anchors: tuple[int, ...], early_stop: bool, deit_images: int) -> dict:
    if name == "deit_s":
        from benchmarks.profiling import build, images

        model, data, plans = build("deit_s"), images(deit_images), False
    else:
        (model, data), plans = load_shipped(name, n), True
    variants = {f"anchor_bits={a}": {"anchor_bits": a} for a in anchors}
    if early_stop:
        variants["early_stop"] = {"early_stop": EarlyStop()}
    if plans:  # the yardstick: the exact matrix at half the cost, from half the images
        variants["exact, first half of the images"] = {"data": tuple(t[: len(t) // 2] for t in data)}
    exact, cpu_ex, flops_ex = run_profile(model, data, importance=plans)
    row = {"images": len(data[0]) if isinstance(data, tuple) else len(data), "bits": list(BITS),
           "exact_sensitivity_cpu_s": round(exact.metadata["timings_s"]["sensitivity_s"], 1),
           "monotonicity_violations": monotonicity_violations(exact), "variants": {}}
    print(f"{name}: exact profile {cpu_ex:.0f} s CPU; damage rising with bits at adjacent bit-widths "
          f"(violations / pairs): {row['monotonicity_violations']}", flush=True)
    for label, kw in variants.items():
        prof, cpu, flops = run_profile(model, kw.pop("data", data), importance=plans, **kw)
        v = {"spearman": round(spearman(measured_pairs(prof), measured_pairs(exact)), 4),
             "cpu_ratio": round(cpu / cpu_ex, 3), "flop_ratio": round(flops / flops_ex, 3)}
        if "sensitivity_images" in prof.metadata:
            used = np.concatenate([np.asarray(u).ravel() for u in prof.metadata["sensitivity_images"].values()])
            v["mean_images_used_fraction"] = round(float(used[used > 0].mean()) / row["images"], 3)
        if plans:
            v["plans"] = compare_plans(exact, prof)
        row["variants"][label] = v
        same = "" if not plans else " plans same at " + ",".join(
            str(p["budget"]) for p in v["plans"] if p["same_plan"]) + "; objective gaps " + " ".join(
            f"{p['objective_gap']:+.3f}" for p in v["plans"])
        print(f"  {label:32s} spearman {v['spearman']:.4f}  cost x{v['flop_ratio']:.2f} FLOPs, x{v['cpu_ratio']:.2f} "
              f"CPU{same}", flush=True)
    return row


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["fmnist_vit", "fmnist_deit", "fmnist_swin", "deit_s"])
    ap.add_argument("--anchors", type=int, nargs="*", default=[2, 3, 4])
    ap.add_argument("--no-early-stop", action="store_true")
    ap.add_argument("--images", type=int, default=256, help="calibration images of the shipped models")
    ap.add_argument("--deit-images", type=int, default=4, help="random 224x224 images for deit_s")
    args = ap.parse_args(argv)
    import json

    from allocator.atomic import write_json

    command = "python -m benchmarks.sensitivity_approx " + " ".join(sys.argv[1:] if argv is None else argv)
    doc = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    for name in args.models:
        doc[name] = {**bench_model(name, args.images, tuple(args.anchors), not args.no_early_stop, args.deit_images),
                     "command": command}
        write_json(RESULTS, doc)  # after each model: a long run keeps what it finished
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
