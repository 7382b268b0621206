"""``mixqvit profile``: costs, LRP importance and per-bit sensitivity of every layer -> profile.json."""
from __future__ import annotations

import argparse

from .. import argtypes
from ..options import add_data_args, add_model_args, add_quiet_arg, check_data_path, out_path
from ..ptq import add_preset_arg, preset_config
from ..runtime import add_runtime_args, setup

HELP = "measure layer costs, importance and sensitivity -> profile.json"
DESCRIPTION = ("Measure each quantizable layer (costs, LRP importance, sensitivity at each candidate bit-width) "
               "on a calibration subset and write a profile JSON.")
DEFAULT_BITS = (2, 3, 4, 6, 8)


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model_args(p)
    add_data_args(p, calib_default=256)
    p.add_argument("--bits", type=argtypes.parse_bits, default=DEFAULT_BITS, help="candidate bit-widths (default 2,3,4,6,8)")
    p.add_argument("--metric", default="kl", choices=["kl", "loss", "top1"],
                   help="sensitivity damage measure: KL of the logits to float (default), loss increase, top-1 drop")
    p.add_argument("--no-importance", action="store_true", help="skip LRP importance (sensitivity-only objective)")
    p.add_argument("--out", default="profile.json", help="profile JSON to write (default profile.json)")
    p.add_argument("--batch-size", type=argtypes.positive_int, default=32, metavar="N",
                   help="images per forward pass of LRP and sensitivity: sets the peak memory, not the result "
                   "(default 32)")
    p.add_argument("--checkpoint", default=None, metavar="PATH",
                   help="sensitivity checkpoint, rewritten after every layer; rerunning the same command resumes "
                   "from it (a checkpoint of other options is refused)")
    approx = p.add_mutually_exclusive_group()
    approx.add_argument("--anchor-bits", type=argtypes.positive_int, default=None, metavar="B",
                        help="faster, approximate sensitivity: only bit-width B (one of --bits; the lowest is usual) "
                        "runs the whole network, the others are scaled from the error at the output of the layer's "
                        "own transformer block (recorded in the profile; see docs/benchmarks.md, 'Profiling')")
    approx.add_argument("--early-stop", action="store_true",
                        help="approximate sensitivity: stop each (layer, bits) pair once its mean is known to 5%% "
                        "or is negligible next to the layer's lowest-bit damage (images used recorded in the profile)")
    add_preset_arg(p, "default", "default; the profile records it, and `solve` passes it on in the plan file, which "
                   "`quantize` and `export` then apply")
    add_runtime_args(p, workers=False)
    add_quiet_arg(p)


def run(args: argparse.Namespace) -> int:
    from profiling import EarlyStop

    from ..datasets import load_calibration
    from ..evaluation import profile_loaded
    from ..loading import load_model
    from ..timing import Timer

    runtime = setup(args)
    config = preset_config(args.preset)
    out = out_path(args.out, "profile file")
    ckpt = out_path(args.checkpoint, "checkpoint file")
    check_data_path(args.data)
    loaded = load_model(args.model, args.pretrained, args.model_kwargs, args.weights)
    loaded.model.to(runtime.device)
    calib = load_calibration(loaded, args.data, args.calib, args.seed, lazy=True)  # read batch by batch
    if ckpt is not None and ckpt.exists() and runtime.main:
        print(f"checkpoint {ckpt} exists: resuming from it", flush=True)
    with Timer() as t:
        profile = profile_loaded(loaded, calib, bits=args.bits, verbose=not args.quiet, metric=args.metric,
                                 importance=not args.no_importance, seed=args.seed, batch_size=args.batch_size,
                                 checkpoint=None if ckpt is None else str(ckpt), anchor_bits=args.anchor_bits,
                                 early_stop=EarlyStop() if args.early_stop else None, config=config)
    if runtime.main:
        profile.save(out)
        procs = f" x {runtime.world_size} processes" if runtime.world_size > 1 else ""
        n = profile.metadata["calibration_size"]
        print(f"profiled {len(profile.layers)} layers of {loaded.name} at bits {list(profile.bits)} on "
              f"{n} images with preset {args.preset!r} in {t.seconds:.1f} s on {runtime.device}{procs}; wrote {out}")
    return 0
