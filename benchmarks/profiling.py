"""Cost of profiling real-sized models: forward-equivalents, peak memory, and 2 processes vs 1.

    python -m benchmarks.profiling [--images 2] [--models deit_s swin_t vit_b] [--sites 8 | all]
                                   [--bits 2 3 4 5 6 8] [--no-naive] [--memory] [--dist] [--fakequant]

Models: random-init timm ``deit_small_patch16_224``, ``swin_tiny_patch4_window7_224`` and
``vit_base_patch16_224`` (the cost does not depend on the weights), 224x224 inputs, one torch
thread; times are process CPU times, each the best of several runs (the machine may be shared).

* Cost (default): unit = one float forward pass of the unmodified model over the same images
  (timm's fused attention, no_grad). LRP, plain autograd forward+backward, and the sensitivity
  of every (layer, bits) pair -- ``--sites all`` measures the full matrix (setup included, nothing
  extrapolated); ``--sites N`` measures the sites outside the transformer units (patch embedding,
  heads) in full and evenly spaced whole units holding >= N sites, standing for all units
  (`sample_strata`).
  ``--anchor-bits A`` adds the opt-in anchored approximation's cost on the same sites (only bit
  A through the whole suffix, `profiling._anchored`; its agreement with the exact matrix is
  measured by ``benchmarks/sensitivity_approx.py``).
* ``--memory``: peak resident memory (``ru_maxrss`` of a fresh subprocess per measurement; torch
  CPU tensors are invisible to tracemalloc) with 32 and 256 calibration images, through
  ``profile_model(model, one_big_tensor)`` and through ``mixqvit profile`` on an ImageFolder.
  Flat means within 10%. Full-size DeiT-S for the API run with LRP and the sensitivity of three
  sites (first, middle, last: the memory of a pair does not depend on how many pairs follow); the
  CLI run profiles every site of a 2-block DeiT-S at 4 bits (the whole command, data loading
  included; the ImageFolder is read batch by batch, never held whole) so that it finishes in
  minutes on a CPU. ``cli-glibc`` runs that command with profiling's heap bound switched off
  (`profiling._heap`: glibc's own mmap threshold, which rises as large tensors are freed and lets
  the heap fragment over LRP's batches), the reference for what the bound saves and costs; the
  kinds run side by side for each number of images.
* ``--dist``: wall time of ``profile_model`` in 2 gloo processes (one thread each) against 1
  process (one thread), on a 4-block DeiT-S, 4 images in 2 batches (so LRP splits too); the
  profiles must be identical. On a machine busy with other work the wall ratio says little, so
  the busiest process's CPU time over the single process's is reported beside it.
* ``--fakequant``: W4A4 fake-quantized DeiT-S forwards (GPTQ and round-to-nearest weights)
  against the float forward, timed alternately in one run, and the costliest ops of each.

Writes benchmarks/results/profiling.json (the parts run).
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import re  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

torch.set_num_threads(1)

from quant import QuantConfig, calibrate, dist, prepare, quant_sites, quantize  # noqa: E402

from profiling import lrp_importance, measure_sensitivity, profile_model  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "profiling.json"
# Round-to-nearest weights: the cost measured is the sweep's; GPTQ rounding (a QuantConfig option)
# adds its own solve per (layer, bits) on top.
CONFIG = QuantConfig(weight_rounding="nearest")
TIMM_NAMES = {"deit_s": "deit_small_patch16_224", "swin_t": "swin_tiny_patch4_window7_224",
              "vit_b": "vit_base_patch16_224"}


def build(name: str, **kwargs) -> torch.nn.Module:
    import timm

    if name not in TIMM_NAMES:
        raise ValueError(f"unknown model {name!r}; expected one of {sorted(TIMM_NAMES)}")
    torch.manual_seed(0)
    return timm.create_model(TIMM_NAMES[name], pretrained=False, **kwargs).eval()


def images(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, 224, 224, generator=torch.Generator().manual_seed(seed))


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


def flop_counter():
    """torch's FLOP counter, also counting the CPU flash-attention kernel timm's attention uses."""
    from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

    def cpu_flash(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs):
        return sdpa_flop_count(query_shape, key_shape, value_shape)

    return FlopCounterMode(display=False, custom_mapping={
        torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: cpu_flash})


# The transformer units whose sites share one cached input (as profiling's unit chain cuts them).
UNIT_NAME = re.compile(r"^(blocks\.\d+|layers\.\d+\.(?:blocks\.\d+|downsample))\.")


def sample_strata(q: torch.nn.Module, names: list[str], n_sites: int | None) -> list[tuple[list[str], float]]:
    """Sites to measure, as strata ``(sites, weight)``: the matrix's cost is estimated as the sum
    of each stratum's cost times its weight. None: every site once (the full matrix itself).
    Otherwise the sites outside the transformer units (patch embedding: a whole forward per pair;
    heads: almost nothing) are measured in full, and whole units, evenly spaced, holding at least
    `n_sites` sites, stand for all units (weight: all unit pairs over the sampled ones). Whole
    units, because a unit's layers share its input and prefix work, as in the full matrix; and
    sampling edges and units together would let the patch embedding, 1 of ~75 sites, weigh like
    1 of 10."""
    if n_sites is None:
        return [(names, 1.0)]
    unit_of = {n: m.group(1) for n in names if (m := UNIT_NAME.match(n))}
    units = list(dict.fromkeys(unit_of.values()))  # in forward order
    if not units:
        raise ValueError("--sites N needs a ViT/DeiT/Swin with transformer units; use --sites all")
    members = [[n for n in names if unit_of.get(n) == u] for u in units]
    edges = [n for n in names if n not in unit_of]
    for n_units in range(1, len(units) + 1):
        picked = [members[int((i + 0.5) * len(units) / n_units)] for i in range(n_units)]
        if sum(map(len, picked)) >= n_sites:
            break
    pairs = lambda sites: sum(1 if "matmul" in n else 2 for n in sites)  # noqa: E731
    sample = [n for unit in picked for n in unit]
    return [(edges, 1.0), (sample, pairs([n for unit in members for n in unit]) / pairs(sample))]


def matrix_cost(q: torch.nn.Module, x: torch.Tensor, strata: list[tuple[list[str], float]], kw: dict) -> dict:
    """CPU seconds and counted FLOPs of the sensitivity matrix over `strata` (`sample_strata`):
    measured (the pairs run), and for the full matrix (each stratum times its weight; the setup --
    baseline pass, unit chain check -- once, in CPU time; in FLOPs it is inside each stratum's
    count, which only overstates the estimate)."""
    out = {"pairs": 0, "cpu_measured": 0.0, "setup_cpu": 0.0, "cpu_full": 0.0, "flops_full": 0.0}
    for sites, weight in strata:
        if not sites:
            continue
        with flop_counter() as flops:
            r = measure_sensitivity(q, x, cache=True, sites=None if weight == 1.0 and len(strata) == 1 else sites,
                                    **kw)
        out["pairs"] += r.pairs
        out["cpu_measured"] += r.cpu_seconds - r.setup_cpu_seconds
        out["setup_cpu"] = max(out["setup_cpu"], r.setup_cpu_seconds)
        out["cpu_full"] += weight * (r.cpu_seconds - r.setup_cpu_seconds)
        out["flops_full"] += weight * flops.get_total_flops()
    out["cpu_full"] += out["setup_cpu"]
    return out


# ------------------------------------------------------------------------------------------------
# Cost in forward-equivalents.
# ------------------------------------------------------------------------------------------------
def bench_cost(name: str, n_images: int, n_sites: int | None, bits: tuple[int, ...], naive: bool,
               anchor_bits: int | None = None) -> dict:
    model = build(name)
    x = images(n_images)

    def forward() -> None:
        with torch.no_grad():
            model(x)

    forward()  # warm-up
    # The unit is timed before, between and after everything else; the best of all runs is used,
    # so a burst of load on a shared machine cannot shrink the ratios.
    fwd_times = [timed(forward, repeat=3)]
    t_grad = timed(lambda: input_gradient(model, x), repeat=2)
    t_lrp = timed(lambda: lrp_importance(model, x), repeat=2)
    fwd_times.append(timed(forward, repeat=2))
    q = prepare(model, CONFIG)
    calibrate(q, x)
    names = list(quant_sites(q))
    strata = sample_strata(q, names, n_sites)
    kw = dict(bits=bits, verbose=False)
    subset = None if n_sites is None else [n for sites, _ in strata for n in sites]
    naive_r = measure_sensitivity(q, x, cache=False, sites=subset, **kw) if naive else None
    cached = matrix_cost(q, x, strata, kw)
    anchored = None if anchor_bits is None else matrix_cost(q, x, strata, {**kw, "anchor_bits": anchor_bits})
    with flop_counter() as fwd_flops:
        forward()
    with flop_counter() as lrp_flops:
        lrp_importance(model, x)
    fwd_times.append(timed(forward, repeat=3))
    t_fwd = min(fwd_times)
    f_fwd = fwd_flops.get_total_flops()
    full_pairs = sum(len(bits) * (2 if "matmul" not in n else 1) for n in names)
    row = {
        "model": TIMM_NAMES[name], "images": n_images, "sites_total": len(names),
        "sites_measured": "all" if subset is None else subset, "bits": list(bits),
        "pairs_measured": cached["pairs"], "pairs_full_matrix": full_pairs,
        "float_forward_s": round(t_fwd, 4),
        "autograd_input_grad_fwd_equiv": round(t_grad / t_fwd, 3),
        "lrp_fwd_equiv": round(t_lrp / t_fwd, 3),
        "cached_fwd_equiv_per_pair": round(cached["cpu_measured"] / t_fwd / cached["pairs"], 3),
        "cached_setup_fwd_equiv": round(cached["setup_cpu"] / t_fwd, 3),
    }
    key = "full_matrix_fwd_equiv" if subset is None else "full_matrix_fwd_equiv_est"  # est: stratified
    row[key] = round(cached["cpu_full"] / t_fwd, 1)
    row["full_matrix_fwd_equiv_per_pair"] = round(cached["cpu_full"] / t_fwd / full_pairs, 3)
    # The same in FLOPs (matmuls, convolutions, attention): immune to other load on the machine.
    row["flop_fwd_equiv_per_pair"] = round(cached["flops_full"] / f_fwd / full_pairs, 3)
    row["flop_lrp_fwd_equiv"] = round(lrp_flops.get_total_flops() / f_fwd, 3)
    if naive_r is not None:
        row["naive_fwd_equiv_per_pair"] = round((naive_r.cpu_seconds - naive_r.setup_cpu_seconds) / t_fwd
                                                / naive_r.pairs, 3)
    if anchored is not None:
        row["anchor_bits"] = anchor_bits
        row["anchored_fwd_equiv_per_pair"] = round(anchored["cpu_full"] / t_fwd / full_pairs, 3)
        row["anchored_flop_fwd_equiv_per_pair"] = round(anchored["flops_full"] / f_fwd / full_pairs, 3)
    return row


# ------------------------------------------------------------------------------------------------
# Peak memory, each measurement in a fresh subprocess.
# ------------------------------------------------------------------------------------------------
MEMORY_KINDS = ("api", "cli", "cli-glibc")


def _peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def memory_child(kind: str, n: int, folder: str | None) -> None:
    """Run one measurement and print its peak RSS (called in a fresh interpreter)."""
    if kind not in MEMORY_KINDS:
        raise ValueError(f"unknown memory measurement {kind!r}")
    if kind == "api":
        from profiling import bounded_heap

        model, x = build("deit_s"), images(n)
        lrp_importance(model, x, batch_size=32)
        q = prepare(model, CONFIG)
        with bounded_heap():  # as profile_model calibrates
            calibrate(q, x)
        names = list(quant_sites(q))
        measure_sensitivity(q, x, bits=(4,), sites=[names[0], names[len(names) // 2], names[-1]], verbose=False,
                            batch_size=32)
    else:
        from mixqvit.cli import main

        out = Path(tempfile.mkdtemp()) / "p.json"
        rc = main(["profile", "--model", TIMM_NAMES["deit_s"], "--model-kwargs", '{"depth": 2}', "--data", folder,
                   "--calib", str(n), "--bits", "4", "--batch-size", "32", "--threads", "1", "--quiet",
                   "--out", str(out)])
        assert rc == 0
    import resource

    use = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({"peak_rss_mb": round(_peak_rss_mb(), 1), "cpu_s": round(use.ru_utime + use.ru_stime, 1)}))


def write_folder(root: Path, n: int) -> Path:
    """`n` random 224x224 PNGs in 4 class folders."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(n):
        d = root / f"class{i % 4}"
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray((rng.random((224, 224, 3)) * 255).astype(np.uint8)).save(d / f"{i}.png")
    return root


def bench_memory(kinds: tuple[str, ...] = ("api", "cli"), sizes: tuple[int, ...] = (32, 256)) -> dict:
    rows: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = write_folder(Path(tmp) / "imgs", max(sizes))
        for n in sizes:  # kinds side by side at each size, so their CPU times see the same machine load
            for kind in kinds:
                t0 = time.perf_counter()
                env = {**os.environ, "MIXQVIT_HEAP_BOUND": "0"} if kind == "cli-glibc" else None  # the bound off
                out = subprocess.run([sys.executable, "-m", "benchmarks.profiling", "--memory-child", kind, str(n),
                                      str(folder)], capture_output=True, text=True, check=True, env=env)
                child = json.loads(out.stdout.strip().splitlines()[-1])
                peak = child["peak_rss_mb"]
                rows.setdefault(kind, {})[n] = {**child, "wall_s": round(time.perf_counter() - t0, 1)}
                print(f"memory {kind} N={n}: peak RSS {peak:.0f} MB, {child['cpu_s']} s CPU", flush=True)
    for kind, r in rows.items():
        lo, hi = r[min(sizes)]["peak_rss_mb"], r[max(sizes)]["peak_rss_mb"]
        r["growth"] = round(hi / lo - 1, 3)
        r["flat_within_10pct"] = bool(hi <= 1.1 * lo)
    return rows


# ------------------------------------------------------------------------------------------------
# 2 processes vs 1.
# ------------------------------------------------------------------------------------------------
def dist_child(n_images: int, bits: tuple[int, ...], depth: int) -> dict:
    model, x = build("deit_s", depth=depth), images(n_images)
    dist.barrier()
    t0, c0 = time.perf_counter(), time.process_time()
    prof = profile_model(model, x, bits=bits, batch_size=max(1, n_images // 2), verbose=False, config=CONFIG)
    cpu = time.process_time() - c0
    dist.barrier()
    wall = time.perf_counter() - t0
    doc = prof.to_dict()
    phases = doc["metadata"].pop("timings_s")
    return {"wall_s": wall, "cpu_s": cpu, "phases_wall_s": phases, "profile": doc}


def _rounded(d: dict) -> dict:
    return {k: round(v, 2) for k, v in d.items()}


def bench_dist(n_images: int = 4, bits: tuple[int, ...] = (2, 4, 8), depth: int = 4) -> dict:
    one = dist.spawn(dist_child, 1, n_images, bits, depth, timeout_s=1800.0)[0]
    two = dist.spawn(dist_child, 2, n_images, bits, depth, timeout_s=1800.0)
    ratio = two[0]["wall_s"] / one["wall_s"]
    # On a machine whose cores are busy with other work the wall ratio says little; the busiest
    # process's CPU time against the single process's is what the wall ratio would be on two
    # otherwise idle cores (each process then owns one).
    cpu_ratio = max(t["cpu_s"] for t in two) / one["cpu_s"]
    row = {"model": f"deit_small_patch16_224 depth {depth}", "images": n_images, "bits": list(bits),
           "wall_1proc_s": round(one["wall_s"], 2), "wall_2proc_s": round(two[0]["wall_s"], 2),
           "ratio": round(ratio, 3), "cpu_1proc_s": round(one["cpu_s"], 2),
           "cpu_2proc_s": [round(t["cpu_s"], 2) for t in two], "cpu_ratio": round(cpu_ratio, 3), "target": 0.65,
           "identical": two[0]["profile"] == one["profile"] == two[1]["profile"],
           "phases_wall_s": {"1proc": _rounded(one["phases_wall_s"]),
                             "2proc": [_rounded(t["phases_wall_s"]) for t in two]}}
    print(f"2 processes vs 1: wall {row['wall_2proc_s']} s vs {row['wall_1proc_s']} s = {row['ratio']:.2f}; busiest "
          f"process's CPU time / 1 process's = {cpu_ratio:.2f} (target <= 0.65); identical profile: "
          f"{row['identical']}", flush=True)
    return row


# ------------------------------------------------------------------------------------------------
# Fake-quant inference.
# ------------------------------------------------------------------------------------------------
def op_breakdown(model: torch.nn.Module, x: torch.Tensor, top: int = 10) -> dict[str, float]:
    """Self CPU milliseconds of the `top` costliest aten ops in one no-grad forward (torch.profiler)."""
    from torch.profiler import ProfilerActivity, profile

    with torch.no_grad(), profile(activities=[ProfilerActivity.CPU]) as prof:
        model(x)
    ops = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)[:top]
    return {e.key: round(e.self_cpu_time_total / 1000, 2) for e in ops}


def bench_fakequant(batches: tuple[int, ...] = (1, 8), rounds: int = 5) -> dict:
    """W4A4 DeiT-S forward (GPTQ weights, the default, and round-to-nearest) against the float
    forward, side by side: each round times all three once, alternately, and the best round of
    each counts (process CPU time, one thread), so a burst of load on a shared machine hits them
    alike. Wall times of the same best rounds are reported beside them."""
    model = build("deit_s")
    calib = images(8, seed=1)
    models = {"float": model, "w4a4": quantize(model, "W4A4", calib),
              "w4a4_nearest": quantize(model, "W4A4", calib, config=CONFIG)}
    rows = []
    for b in batches:
        x = images(b)
        cpu = dict.fromkeys(models, float("inf"))
        wall = dict.fromkeys(models, float("inf"))
        with torch.no_grad():
            for m in models.values():
                m(x)  # warm-up; the quantizers' ranges are installed on the first call
            for _ in range(rounds):
                for name, m in models.items():
                    w0, c0 = time.perf_counter(), time.process_time()
                    m(x)
                    cpu[name] = min(cpu[name], time.process_time() - c0)
                    wall[name] = min(wall[name], time.perf_counter() - w0)
        row: dict = {"batch": b, "rounds": rounds}
        for name in models:
            row[f"{name}_cpu_s"], row[f"{name}_wall_s"] = round(cpu[name], 4), round(wall[name], 4)
        for name in ("w4a4", "w4a4_nearest"):
            row[f"{name}_ratio"] = round(cpu[name] / cpu["float"], 3)
            row[f"{name}_wall_ratio"] = round(wall[name] / wall["float"], 3)
        rows.append(row)
    x = images(max(batches))
    top_ops = {name: op_breakdown(models[name], x) for name in ("float", "w4a4")}
    print(f"{'batch':>5s} {'float CPU s':>11s} {'W4A4 CPU s':>10s} {'ratio':>6s} {'RTN CPU s':>9s} {'ratio':>6s} "
          f"{'wall ratio':>10s} {'RTN wall':>8s}")
    for r in rows:
        print(f"{r['batch']:5d} {r['float_cpu_s']:11.4f} {r['w4a4_cpu_s']:10.4f} {r['w4a4_ratio']:6.3f} "
              f"{r['w4a4_nearest_cpu_s']:9.4f} {r['w4a4_nearest_ratio']:6.3f} {r['w4a4_wall_ratio']:10.3f} "
              f"{r['w4a4_nearest_wall_ratio']:8.3f}")
    print("fake-quant W4A4 DeiT-S (GPTQ weights, the default; RTN: round to nearest) vs float, best of "
          f"{rounds} alternating rounds, one thread (target <= 1.5)")
    for name, ops in top_ops.items():
        print(f"  top ops, {name}, batch {max(batches)} (self CPU ms): "
              + ", ".join(f"{k.removeprefix('aten::')} {v:.0f}" for k, v in ops.items()))
    return {"rows": rows, f"top_ops_batch{max(batches)}_ms": top_ops}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=2)
    ap.add_argument("--sites", default="8", help="evenly spaced sites measured per model, or 'all' (full matrix)")
    ap.add_argument("--bits", type=int, nargs="+", default=[2, 3, 4, 5, 6, 8])
    ap.add_argument("--models", nargs="*", default=["deit_s", "swin_t", "vit_b"], choices=sorted(TIMM_NAMES))
    ap.add_argument("--no-naive", action="store_true", help="skip the full re-evaluation reference")
    ap.add_argument("--anchor-bits", type=int, default=None,
                    help="also measure the opt-in anchored approximation at this anchor bit-width")
    ap.add_argument("--memory", nargs="*", choices=MEMORY_KINDS, default=None,
                    help="peak RSS at 32 and 256 images through the API and/or the CLI (default both; "
                    "cli-glibc: the CLI with profiling's heap bound off)")
    ap.add_argument("--dist", action="store_true", help="2 gloo processes vs 1")
    ap.add_argument("--dist-depth", type=int, default=4, metavar="N",
                    help="blocks of the DeiT-S profiled by --dist (default 4; 12 is the full model)")
    ap.add_argument("--fakequant", action="store_true", help="W4A4 fake-quant forward vs float")
    ap.add_argument("--memory-child", nargs=3, metavar=("KIND", "N", "FOLDER"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.memory_child:
        kind, n, folder = args.memory_child
        memory_child(kind, int(n), folder)
        return
    if args.sites == "all":
        n_sites = None
    elif args.sites.isdigit() and int(args.sites) >= 1:
        n_sites = int(args.sites)
    else:
        ap.error(f"--sites {args.sites!r}: expected a positive integer or 'all'")
    doc: dict = {"cost": {}, "commands": {}}  # this run's parts, merged into the file at the end
    commands = doc["commands"]
    command = "python -m benchmarks.profiling " + " ".join(sys.argv[1:] if argv is None else argv)
    if args.models:
        rows = [bench_cost(m, args.images, n_sites, tuple(args.bits), naive=not args.no_naive,
                           anchor_bits=args.anchor_bits) for m in args.models]
        print(f"{'model':32s} {'fwd s':>7s} {'LRP fe':>7s} {'grad fe':>7s} {'fe/pair':>8s} {'matrix fe':>10s} "
              f"{'fe/pair (matrix)':>17s} {'FLOP fe/pair':>13s} {'FLOP LRP fe':>12s}")
        for r in rows:
            kind = "" if "full_matrix_fwd_equiv" in r else " est"
            full = r.get("full_matrix_fwd_equiv", r.get("full_matrix_fwd_equiv_est"))
            print(f"{r['model']:32s} {r['float_forward_s']:7.3f} {r['lrp_fwd_equiv']:7.2f} "
                  f"{r['autograd_input_grad_fwd_equiv']:7.2f} {r['cached_fwd_equiv_per_pair']:8.3f} "
                  f"{full:10.1f}{kind:4s} {r['full_matrix_fwd_equiv_per_pair']:13.3f} "
                  f"{r['flop_fwd_equiv_per_pair']:13.3f} {r['flop_lrp_fwd_equiv']:12.2f}")
        for r in rows:
            if "anchor_bits" in r:
                print(f"{r['model']:32s} anchored at {r['anchor_bits']} bits (opt-in approximation): "
                      f"{r['anchored_fwd_equiv_per_pair']:.3f} fe/pair, "
                      f"FLOP {r['anchored_flop_fwd_equiv_per_pair']:.3f}")
        print("fe = forward-equivalents (CPU time of one float forward over the same images; FLOP fe: the same "
              "in counted FLOPs); targets: LRP <= 3, full matrix <= 0.25 fe per (layer, bits) pair")
        for r in rows:  # rows of earlier runs for other models are kept
            doc["cost"][r["model"]] = {**r, "command": command}
    if args.memory is not None:
        kinds = tuple(args.memory) or ("api", "cli")
        for kind, row in bench_memory(kinds).items():
            doc[f"memory_{kind}"] = row
            commands[f"memory_{kind}"] = command
    if args.dist:
        doc["dist" if args.dist_depth == 4 else f"dist_depth{args.dist_depth}"] = bench_dist(depth=args.dist_depth)
        commands["dist" if args.dist_depth == 4 else f"dist_depth{args.dist_depth}"] = command
    if args.fakequant:
        doc["fakequant"] = bench_fakequant()
        commands["fakequant"] = command
    from allocator.atomic import write_json

    # Re-read just before writing, so runs of other parts that finished meanwhile are kept.
    old = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    old = old if "commands" in old else {}  # results of an older layout are replaced, not mixed
    merged = {**old, **{k: v for k, v in doc.items() if k not in ("cost", "commands")}}
    merged["cost"] = {**old.get("cost", {}), **doc["cost"]}
    merged["commands"] = {**old.get("commands", {}), **doc["commands"]}
    merged.update({"torch": torch.__version__, "machine": platform.machine(), "torch_threads": 1})
    write_json(RESULTS, merged)
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
