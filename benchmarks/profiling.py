"""Cost of profiling in forward-equivalents: sensitivity (naive vs suffix-cached) and LRP.

    python -m benchmarks.profiling [--images 8] [--sites 6] [--bits 2 4] [--models deit_tiny swin_tiny]

Unit: one float forward pass of the unmodified model over the same calibration images
(timm's fused attention, no_grad). For each model, the sensitivity of an evenly spaced subset
of sites (from the patch embedding to the head, so the average suffix length is
representative) is measured with full re-evaluation (naive) and with the suffix cache, both
weights and activations; the cost per (site, bits) pair is reported in forward-equivalents
and extrapolated to the full matrix. Targets: cached <= 0.6 forward-equivalents per pair,
LRP <= 3 forward-equivalents. Random-init models (the cost does not depend on the weights).
Torch runs on one thread; times are process CPU times (the machine may be shared). Writes benchmarks/results/profiling.json.
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

torch.set_num_threads(1)

from quant import calibrate, prepare  # noqa: E402
from timm.models.deit import VisionTransformerDistilled  # noqa: E402
from timm.models.swin_transformer import SwinTransformer  # noqa: E402

from profiling import lrp_importance, measure_sensitivity  # noqa: E402
from profiling._data import as_calib_set  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "profiling.json"


def build(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    if name == "deit_tiny":
        return VisionTransformerDistilled(img_size=224, patch_size=16, embed_dim=192, depth=12,
                                          num_heads=3, num_classes=1000).eval()
    if name == "swin_tiny":
        return SwinTransformer(img_size=224, patch_size=4, window_size=7, embed_dim=96,
                               depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24), num_classes=1000).eval()
    raise ValueError(f"unknown model {name!r}; expected deit_tiny or swin_tiny")


def timed(fn, repeat: int = 1) -> float:
    """Best process CPU time of `repeat` calls (one torch thread: robust to other load)."""
    best = float("inf")
    for _ in range(repeat):
        t = time.process_time()
        fn()
        best = min(best, time.process_time() - t)
    return best


def bench(name: str, n_images: int, n_sites: int, bits: tuple[int, ...]) -> dict:
    model = build(name)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n_images, 3, 224, 224, generator=g)
    calib = as_calib_set(x)

    def forward() -> None:
        with torch.no_grad():
            model(x)

    forward()  # warm-up
    t_fwd = timed(forward, repeat=2)
    t_lrp = timed(lambda: lrp_importance(model, calib))
    q = prepare(model)
    calibrate(q, x)
    from quant import quant_sites

    names = list(quant_sites(q))
    step = max(1, (len(names) - 1) // max(1, n_sites - 1))
    subset = sorted(set(names[::step][: n_sites - 1] + [names[-1]]))
    kw = dict(bits=bits, verbose=False, sites=subset)
    naive = measure_sensitivity(q, calib, cache=False, **kw)
    cached = measure_sensitivity(q, calib, cache=True, **kw)
    full_pairs = sum(len(bits) * (2 if "matmul" not in n else 1) for n in names)
    per_pair = lambda r: (r.cpu_seconds - r.setup_cpu_seconds) / t_fwd / r.pairs  # noqa: E731
    setup = lambda r: r.setup_cpu_seconds / t_fwd  # noqa: E731
    return {
        "model": name,
        "images": n_images,
        "sites_total": len(names),
        "sites_measured": subset,
        "bits": list(bits),
        "pairs_measured": cached.pairs,
        "pairs_full_matrix": full_pairs,
        "float_forward_s": round(t_fwd, 4),
        "lrp_s": round(t_lrp, 4),
        "lrp_fwd_equiv": round(t_lrp / t_fwd, 3),
        "naive_cpu_s": round(naive.cpu_seconds, 3),
        "cached_cpu_s": round(cached.cpu_seconds, 3),
        "naive_fwd_equiv_per_pair": round(per_pair(naive), 3),
        "cached_fwd_equiv_per_pair": round(per_pair(cached), 3),
        "cached_setup_fwd_equiv": round(setup(cached), 3),
        "speedup_per_pair": round(per_pair(naive) / per_pair(cached), 3),
        "cached_full_matrix_fwd_equiv_est": round(setup(cached) + per_pair(cached) * full_pairs, 1),
        "naive_full_matrix_fwd_equiv_est": round(per_pair(naive) * full_pairs, 1),
        "target_cached_full_matrix_fwd_equiv": round(0.6 * full_pairs, 1),
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=8)
    ap.add_argument("--sites", type=int, default=6, help="evenly spaced sites measured per model")
    ap.add_argument("--bits", type=int, nargs="+", default=[2, 4])
    ap.add_argument("--models", nargs="+", default=["deit_tiny", "swin_tiny"])
    args = ap.parse_args(argv)
    rows = [bench(m, args.images, args.sites, tuple(args.bits)) for m in args.models]
    head = f"{'model':10s} {'fwd cpu s':>9s} {'LRP fe':>7s} {'naive fe/pair':>14s} {'cached fe/pair':>15s} {'speedup':>8s} {'full matrix fe (cached)':>24s}"
    print(head)
    for r in rows:
        print(f"{r['model']:10s} {r['float_forward_s']:9.3f} {r['lrp_fwd_equiv']:7.2f} "
              f"{r['naive_fwd_equiv_per_pair']:14.3f} {r['cached_fwd_equiv_per_pair']:15.3f} "
              f"{r['speedup_per_pair']:8.2f} {r['cached_full_matrix_fwd_equiv_est']:24.1f}")
    print("fe = forward-equivalents (one float forward over the calibration images); "
          "targets: cached <= 0.6 fe/pair, LRP <= 3 fe")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "command": "python -m benchmarks.profiling " + " ".join(sys.argv[1:] if argv is None else argv),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "machine": platform.machine(),
        "results": rows,
    }
    RESULTS.write_text(json.dumps(doc, indent=1))
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
