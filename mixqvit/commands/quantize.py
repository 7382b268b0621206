"""``mixqvit quantize``: apply a plan (or W4A4) with PTQ calibration; optionally evaluate and save."""
from __future__ import annotations

import argparse

from .. import argtypes
from ..options import (add_data_args, add_model_args, add_plan_arg, add_quiet_arg, check_data_path, out_path,
                       read_plan)

HELP = "apply a plan (or W4A4) with PTQ calibration; optionally evaluate"
DESCRIPTION = ("Quantize a model with a plan JSON or a uniform setting such as W4A4, calibrate on a calibration "
               "subset, and optionally print top-1 accuracy.")


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model_args(p)
    add_plan_arg(p, "W4A4")
    add_data_args(p, calib_default=256)
    p.add_argument("--eval", action="store_true", help="evaluate top-1 on the test data")
    p.add_argument("--float", action="store_true", help="with --eval, also evaluate the float model")
    p.add_argument("--test-limit", type=argtypes.positive_int, default=None, metavar="N",
                   help="evaluate on N test images only")
    p.add_argument("--batch-size", type=argtypes.positive_int, default=250, help="evaluation batch size (default 250)")
    p.add_argument("--out", default=None, help="file for the quantized model (torch.save of the whole module)")
    add_quiet_arg(p)


def run(args: argparse.Namespace) -> int:
    from quant import quantize

    from ..datasets import load_calibration, load_test
    from ..evaluation import evaluate_top1
    from ..loading import load_model, save_quantized
    from ..timing import Timer

    plan = read_plan(args.plan)
    out = out_path(args.out, "quantized model file")
    check_data_path(args.data)
    loaded = load_model(args.model, args.pretrained, args.model_kwargs, args.weights)
    calib = load_calibration(loaded, args.data, args.calib, args.seed)
    test = load_test(loaded, args.data, args.test_limit, args.seed) if args.eval else None
    with Timer() as t:
        qmodel = quantize(loaded.model, plan, calib[0], verbose=not args.quiet)
    label = plan if isinstance(plan, str) else (plan.budget or "plan")
    print(f"quantized {loaded.name} ({label}) with {len(calib[0])} calibration images in {t.seconds:.1f} s")
    if test is not None:
        verbose = not args.quiet
        acc_q = evaluate_top1(qmodel, test, batch_size=args.batch_size, verbose=verbose, desc="quantized")
        line = f"top-1 on {test.description}: quantized {acc_q:.4f}"
        if args.float:
            acc_f = evaluate_top1(loaded.model, test, batch_size=args.batch_size, verbose=verbose, desc="float")
            line += f", float {acc_f:.4f}"
        print(line)
    if out is not None:
        save_quantized(qmodel, out)
        print(f"wrote {out}")
    return 0
