"""Cost of profiling in forward-equivalents: sensitivity (naive vs suffix-cached) and LRP.

    python -m benchmarks.profiling [--images 8] [--sites 6 | --sites all] [--bits 2 4]
                                   [--models deit_tiny swin_tiny] [--no-naive]

Unit: one float forward pass of the unmodified model over the same calibration images
(timm's fused attention, no_grad). For each model, the sensitivity of an evenly spaced subset
of sites (from the patch embedding to the head, so the average suffix length is
representative) -- or, with ``--sites all``, of every site (the full matrix, measured, nothing
extrapolated) -- is measured with full re-evaluation (naive, skipped with ``--no-naive``) and
with the suffix cache, both weights and activations; the cost per (site, bits) pair is reported
in forward-equivalents. Also reported: LRP, plain autograd forward+backward (input gradient
only, for reference) and a forward of the prepared model with every quantizer off.
Targets: cached <= 0.6 forward-equivalents per pair (full matrix: setup included),
LRP <= 3 forward-equivalents. Random-init models (the cost does not depend on the weights).
Torch runs on one thread; times are process CPU times, each the best of several runs (the
machine may be shared: the minimum is the run least disturbed). Writes benchmarks/results/profiling.json.
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
from profiling import as_calib_set  # noqa: E402

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


def input_gradient(model: torch.nn.Module, x: torch.Tensor) -> None:
    """Plain autograd forward + backward of the top logits to the input (weights frozen): the
    cost LRP's modified backward is compared with."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        for p, _ in flags:
            p.requires_grad_(False)
        model(x.clone().requires_grad_(True)).max(dim=1).values.sum().backward()
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


def pick_sites(names: list[str], n_sites: int | None) -> list[str] | None:
    """`n_sites` evenly spaced sites from first to last (None: all, the full matrix)."""
    if n_sites is None or n_sites >= len(names):
        return None
    step = max(1, (len(names) - 1) // max(1, n_sites - 1))
    return sorted(set(names[::step][: n_sites - 1] + [names[-1]]))


def bench(name: str, n_images: int, n_sites: int | None, bits: tuple[int, ...], naive: bool = True) -> dict:
    model = build(name)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n_images, 3, 224, 224, generator=g)
    calib = as_calib_set(x)

    def forward() -> None:
        with torch.no_grad():
            model(x)

    forward()  # warm-up
    # The unit is timed before, between and after everything else; the best of all those runs
    # is used, so a burst of load on a shared machine cannot shrink the ratios.
    fwd_times = [timed(forward, repeat=5)]
    t_grad = timed(lambda: input_gradient(model, x), repeat=3)
    t_lrp = timed(lambda: lrp_importance(model, calib), repeat=3)
    fwd_times.append(timed(forward, repeat=3))
    q = prepare(model)
    calibrate(q, x)
    from quant import quant_sites

    def prepared_forward() -> None:
        with torch.no_grad():
            q(x)

    prepared_forward()
    t_prepared = timed(prepared_forward, repeat=5)
    names = list(quant_sites(q))
    subset = pick_sites(names, n_sites)
    kw = dict(bits=bits, verbose=False, sites=subset)
    naive_r = measure_sensitivity(q, calib, cache=False, **kw) if naive else None
    cached = measure_sensitivity(q, calib, cache=True, **kw)
    fwd_times.append(timed(forward, repeat=5))
    t_fwd = min(fwd_times)
    full_pairs = sum(len(bits) * (2 if "matmul" not in n else 1) for n in names)
    per_pair = lambda r: (r.cpu_seconds - r.setup_cpu_seconds) / t_fwd / r.pairs  # noqa: E731
    setup = lambda r: r.setup_cpu_seconds / t_fwd  # noqa: E731
    row = {
        "model": name,
        "images": n_images,
        "sites_total": len(names),
        "sites_measured": "all" if subset is None else subset,
        "bits": list(bits),
        "pairs_measured": cached.pairs,
        "pairs_full_matrix": full_pairs,
        "float_forward_s": round(t_fwd, 4),
        "autograd_input_grad_fwd_equiv": round(t_grad / t_fwd, 3),
        "lrp_s": round(t_lrp, 4),
        "lrp_fwd_equiv": round(t_lrp / t_fwd, 3),
        "prepared_all_off_fwd_equiv": round(t_prepared / t_fwd, 3),
        "cached_cpu_s": round(cached.cpu_seconds, 3),
        "cached_fwd_equiv_per_pair": round(per_pair(cached), 3),
        "cached_setup_fwd_equiv": round(setup(cached), 3),
        "target_cached_full_matrix_fwd_equiv": round(0.6 * full_pairs, 1),
    }
    if subset is None:  # the full matrix itself, setup included
        row["cached_full_matrix_fwd_equiv"] = round(cached.cpu_seconds / t_fwd, 1)
        row["cached_full_matrix_fwd_equiv_per_pair"] = round(cached.cpu_seconds / t_fwd / full_pairs, 3)
    else:
        row["cached_full_matrix_fwd_equiv_est"] = round(setup(cached) + per_pair(cached) * full_pairs, 1)
    if naive_r is not None:
        row["naive_cpu_s"] = round(naive_r.cpu_seconds, 3)
        row["naive_fwd_equiv_per_pair"] = round(per_pair(naive_r), 3)
        row["speedup_per_pair"] = round(per_pair(naive_r) / per_pair(cached), 3)
        if subset is None:
            row["naive_full_matrix_fwd_equiv"] = round(naive_r.cpu_seconds / t_fwd, 1)
        else:
            row["naive_full_matrix_fwd_equiv_est"] = round(per_pair(naive_r) * full_pairs, 1)
    return row


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=8)
    ap.add_argument("--sites", default="6",
                    help="number of evenly spaced sites measured per model, or 'all' (full matrix)")
    ap.add_argument("--bits", type=int, nargs="+", default=[2, 4])
    ap.add_argument("--models", nargs="+", default=["deit_tiny", "swin_tiny"])
    ap.add_argument("--no-naive", action="store_true", help="skip the full re-evaluation reference")
    args = ap.parse_args(argv)
    if args.sites == "all":
        n_sites = None
    elif args.sites.isdigit() and int(args.sites) >= 1:
        n_sites = int(args.sites)
    else:
        ap.error(f"--sites {args.sites!r}: expected a positive integer or 'all'")
    rows = [bench(m, args.images, n_sites, tuple(args.bits), naive=not args.no_naive) for m in args.models]
    head = (f"{'model':10s} {'fwd cpu s':>9s} {'LRP fe':>7s} {'grad fe':>7s} {'off fe':>7s} {'naive fe/pair':>14s} "
            f"{'cached fe/pair':>15s} {'full matrix fe (cached)':>24s} {'target':>7s}")
    print(head)
    for r in rows:
        full = r.get("cached_full_matrix_fwd_equiv", r.get("cached_full_matrix_fwd_equiv_est"))
        kind = "" if "cached_full_matrix_fwd_equiv" in r else " (est)"
        print(f"{r['model']:10s} {r['float_forward_s']:9.3f} {r['lrp_fwd_equiv']:7.2f} "
              f"{r['autograd_input_grad_fwd_equiv']:7.2f} {r['prepared_all_off_fwd_equiv']:7.2f} "
              f"{r.get('naive_fwd_equiv_per_pair', float('nan')):14.3f} {r['cached_fwd_equiv_per_pair']:15.3f} "
              f"{full:18.1f}{kind:6s} {r['target_cached_full_matrix_fwd_equiv']:7.1f}")
    print("fe = forward-equivalents (one float forward over the calibration images); grad = plain "
          "autograd fwd+bwd to the input; off = prepared model, all quantizers off; "
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
