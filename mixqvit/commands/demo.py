"""``mixqvit demo``: uniform against mixed precision on the shipped models, one table plus plots."""
from __future__ import annotations

import argparse

from .. import argtypes
from ..options import out_directory
from ..runtime import add_runtime_args, setup
from ..ptq import DEFAULT_ROUNDING_STEPS
from .profile import DEFAULT_BITS

HELP = "end-to-end demo: uniform vs mixed at 2/3/4/6 bits, table + plots"
DESCRIPTION = ("Profile a shipped model, solve for budgets W2A2..W6A6, quantize uniform and mixed at each, evaluate "
               "on the test set; print one table and write report/ (JSON, Markdown, PNG plots).")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="fmnist_vit", help="shipped model (fmnist_vit, fmnist_deit, fmnist_swin)")
    p.add_argument("--all", action="store_true", help="all three shipped models")
    p.add_argument("--data", default=None, help="Fashion-MNIST IDX directory (default /usr/share/datasets/fashion-mnist)")
    p.add_argument("--calib", type=argtypes.positive_int, default=256, metavar="N", help="calibration images (default 256)")
    p.add_argument("--test-limit", type=argtypes.positive_int, default=None, metavar="N",
                   help="evaluate on the first N test images (default: all 10,000)")
    p.add_argument("--bits", type=argtypes.parse_bits, default=DEFAULT_BITS, help="candidate bit-widths (default 2,3,4,6,8)")
    p.add_argument("--budgets", type=argtypes.parse_bits, default=(2, 3, 4, 6), help="uniform WbAb budgets (default 2,3,4,6)")
    p.add_argument("--solver", default="auto", help="solver backend (default auto)")
    p.add_argument("--seed", type=argtypes.seed, default=0)
    p.add_argument("--reconstruct-rounding", type=argtypes.non_negative_int, default=DEFAULT_ROUNDING_STEPS,
                   metavar="STEPS", help="also quantize every plan with learned rounding, STEPS Adam steps per unit, "
                   f"and report it as 'top-1 + rounding' (~30-40 s of CPU per plan; 0 skips it; default "
                   f"{DEFAULT_ROUNDING_STEPS})")
    p.add_argument("--reconstruct-check", type=argtypes.non_negative_int, default=0, metavar="N",
                   help="keep each learned rounding only if it lowers the KL from the float model on N images of the "
                   "calibration pool outside the calibration set, as mixqvit quantize --reconstruct-check N does "
                   "(default 0: no check)")
    p.add_argument("--out", default="report", help="report directory (default report)")
    add_runtime_args(p, workers=False)
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    from ..demo import run_demo

    runtime = setup(args)
    out_directory(args.out, "report directory")
    run_demo(device=runtime.device, models=None if args.all else [args.model], calib=args.calib, test_limit=args.test_limit,
             out_dir=args.out, data=args.data, bits=args.bits, budgets=args.budgets, solver=args.solver,
             seed=args.seed, verbose=not args.quiet, rounding_steps=args.reconstruct_rounding,
             check_images=args.reconstruct_check)
    return 0
