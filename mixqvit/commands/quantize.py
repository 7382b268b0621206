"""``mixqvit quantize``: apply a plan (or W4A4) with PTQ calibration; optionally evaluate and save."""
from __future__ import annotations

import argparse

from .. import argtypes
from ..options import add_quantize_inputs, add_quiet_arg, check_data_path, out_path, read_plan
from ..ptq import add_ptq_args, load_check_images, plan_config, ptq_config, quantize_from_args
from ..runtime import add_runtime_args, setup

HELP = "apply a plan (or W4A4) with PTQ calibration; optionally evaluate"
DESCRIPTION = ("Quantize a model with a plan JSON or a uniform setting such as W4A4, calibrate on a calibration "
               "subset, and optionally print top-1 accuracy.")


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_quantize_inputs(p, "W4A4")
    add_ptq_args(p)
    p.add_argument("--eval", action="store_true", help="evaluate top-1 on the test data")
    p.add_argument("--float", action="store_true", help="with --eval, also evaluate the float model")
    p.add_argument("--test-limit", type=argtypes.positive_int, default=None, metavar="N",
                   help="evaluate on N test images only")
    p.add_argument("--batch-size", type=argtypes.positive_int, default=250, help="evaluation batch size (default 250)")
    p.add_argument("--out", default=None, help="file for the quantized model (torch.save of the whole module)")
    add_runtime_args(p)
    add_quiet_arg(p)


def run(args: argparse.Namespace) -> int:
    import torch

    from ..datasets import load_calibration, load_test
    from ..evaluation import evaluate_top1, warn_if_classes_differ
    from ..checkpoints import save_quantized
    from ..loading import load_model
    from ..timing import Timer

    runtime = setup(args)
    chosen = ptq_config(args)
    plan = read_plan(args.plan)
    config = plan_config(chosen, plan)
    out = out_path(args.out, "quantized model file")
    check_data_path(args.data)
    loaded = load_model(args.model, args.pretrained, args.model_kwargs, args.weights)
    loaded.model.to(runtime.device)
    calib = load_calibration(loaded, args.data, args.calib, args.seed)
    check = load_check_images(args, loaded)
    test = load_test(loaded, args.data, args.test_limit, args.seed) if args.eval else None
    if test is not None and runtime.main:
        warn_if_classes_differ(loaded.model, test)
    with Timer() as t:
        qmodel = quantize_from_args(args, config, loaded.model, plan, calib[0], verbose=not args.quiet and runtime.main,
                                    check=check)
        with torch.no_grad():  # the first forward derives any ranges left lazy: part of the cost
            qmodel(calib[0][:1].to(runtime.device))
    label = plan if isinstance(plan, str) else (plan.budget or "plan")
    say = print if runtime.main else (lambda *a, **k: None)
    say(f"quantized {loaded.name} ({label}) with {len(calib[0])} calibration images in {t.seconds:.1f} s "
        f"on {runtime.device}")
    if test is not None:
        verbose = not args.quiet
        kw = dict(batch_size=args.batch_size, verbose=verbose, workers=runtime.workers)
        acc_q = evaluate_top1(qmodel, test, desc="quantized", **kw)
        line = f"top-1 on {test.description}: quantized {acc_q:.4f}"
        if args.float:
            acc_f = evaluate_top1(loaded.model, test, desc="float", **kw)
            line += f", float {acc_f:.4f}"
        say(line)
    if out is not None and runtime.main:
        save_quantized(qmodel, out)
        say(f"wrote {out}")
    return 0
