"""``mixqvit qat``: quantization-aware training of a plan (or W2A2) from its PTQ model.

    mixqvit qat --model fmnist_vit --plan plan.json --epochs 1 --eval --out qat.pt
    mixqvit qat --model fmnist_vit --plan W2A2 --train 60000 --epochs 3 --checkpoint qat.ckpt

The training images are a class-balanced, seeded subset of the training split (Fashion-MNIST)
or of the ImageFolder, held in memory; the calibration images of the PTQ starting point are
drawn the same way. The float model is the distillation teacher unless ``--teacher`` names
another model, or ``--kd-weight 0`` turns distillation off. With ``--checkpoint`` an
interrupted run started again with the same options resumes where it stopped.

"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..argtypes import positive_float, positive_int, unit_interval
from ..options import add_quantize_inputs, add_quiet_arg, check_data_path, out_path, read_plan
from ..runtime import add_runtime_args, setup

HELP = "quantization-aware training of a plan (or W2A2) from its PTQ model"
DESCRIPTION = ("Quantize with a plan (PTQ), then train weights and quantizer step sizes (LSQ/LSQ+) with "
               "distillation from the float model; optionally evaluate and save.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``qat`` options (model and data options as in ``mixqvit quantize``)."""
    add_quantize_inputs(parser, "W2A2")
    parser.add_argument("--train", type=positive_int, default=10000, metavar="N",
                        help="training images, class-balanced and seeded, held in memory (default 10000; "
                        "60000 is all of Fashion-MNIST)")
    parser.add_argument("--epochs", type=positive_int, default=1, help="passes over the training images (default 1)")
    parser.add_argument("--max-steps", type=positive_int, default=None, metavar="N",
                        help="stop after N optimiser steps (the learning-rate schedule spans them)")
    parser.add_argument("--batch-size", type=positive_int, default=64, help="training batch size (default 64)")
    parser.add_argument("--lr", type=positive_float, default=5e-4,
                        help="peak AdamW learning rate of the weights, cosine decay (default 5e-4); step sizes "
                        "get the LSQ-equivalent rates derived from it")
    parser.add_argument("--kd-weight", type=unit_interval, default=0.5,
                        help="weight alpha of distillation in (1-alpha)*CE + alpha*KD (default 0.5; 0 = labels only)")
    parser.add_argument("--kd-temperature", type=positive_float, default=2.0, help="distillation temperature (default 2)")
    parser.add_argument("--teacher", default=None,
                        help="distillation teacher, named like --model (default: the float model itself)")
    parser.add_argument("--checkpoint", default=None, metavar="PATH",
                        help="checkpoint file: written every epoch (and --checkpoint-every steps); resumed from "
                        "when it exists and belongs to the same run")
    parser.add_argument("--checkpoint-every", type=positive_int, default=None, metavar="N",
                        help="also checkpoint every N steps")
    parser.add_argument("--eval", action="store_true", help="evaluate top-1 of the trained model on the test data")
    parser.add_argument("--float", action="store_true", help="with --eval, also evaluate the float model")
    parser.add_argument("--test-limit", type=positive_int, default=None, metavar="N", help="evaluate on N test images only")
    parser.add_argument("--eval-batch-size", type=positive_int, default=250)
    parser.add_argument("--history", default=None, metavar="JSON", help="write the per-epoch history to this JSON file")
    parser.add_argument("--out", default=None, help="file for the trained quantized model (torch.save of the whole module)")
    add_runtime_args(parser)
    add_quiet_arg(parser)


def run(args: argparse.Namespace) -> int:
    """Run ``mixqvit qat`` with parsed ``args``; returns the exit status (0).

    A checkpoint of another run is reported as an :class:`~mixqvit.errors.InputFileError`
    (one line, exit status 2 in the CLI).
    """
    from allocator.atomic import write_json
    from quant import CheckpointMismatchError, QATConfig, qat

    from ..datasets import load_calibration, load_test
    from ..errors import InputFileError
    from ..evaluation import evaluate_top1, warn_if_classes_differ
    from ..checkpoints import save_quantized
    from ..loading import load_model
    from ..report import json_safe
    from ..timing import Timer

    runtime = setup(args)
    plan = read_plan(args.plan)
    out, history_out = out_path(args.out, "model file"), out_path(args.history, "history file")
    check_data_path(args.data)
    loaded = load_model(args.model, args.pretrained, args.model_kwargs, args.weights)
    loaded.model.to(runtime.device)
    say = print if runtime.main else (lambda *a, **k: None)
    teacher = None
    if args.teacher is not None and args.kd_weight > 0:
        teacher = load_model(args.teacher, args.pretrained, args.model_kwargs).model.to(runtime.device)
    train = load_calibration(loaded, args.data, args.train, args.seed)
    calib = load_calibration(loaded, args.data, args.calib, args.seed)
    label = plan if isinstance(plan, str) else (plan.budget or "plan")
    if args.checkpoint is not None and Path(args.checkpoint).exists():
        say(f"checkpoint {args.checkpoint} exists: resuming from it", flush=True)
    with Timer() as t:
        try:
            config = QATConfig(epochs=args.epochs, lr=args.lr, batch_size=args.batch_size,
                               kd_temperature=args.kd_temperature, kd_weight=args.kd_weight, seed=args.seed,
                               max_steps=args.max_steps, checkpoint_every=args.checkpoint_every)
            qmodel, history = qat(loaded.model, plan, train, config=config, calib_data=calib[0], teacher=teacher,
                                  checkpoint=args.checkpoint, device=runtime.device, verbose=not args.quiet)
        except CheckpointMismatchError as exc:
            raise InputFileError(str(exc)) from None
    last = history[-1] if history else {}
    say(f"QAT of {loaded.name} ({label}) on {len(train[0])} images: {sum(r['steps'] for r in history)} steps, "
          f"final epoch loss {last.get('loss', float('nan')):.4f}, train acc {last.get('train_acc', float('nan')):.4f} "
          f"({t.seconds:.1f} s)")
    result: dict[str, Any] = {"model": loaded.name, "plan": label, "history": history}
    if args.eval:
        test = load_test(loaded, args.data, args.test_limit, args.seed)
        if runtime.main:
            warn_if_classes_differ(loaded.model, test)
        acc = evaluate_top1(qmodel, test, batch_size=args.eval_batch_size, verbose=not args.quiet, desc="qat",
                            workers=runtime.workers)
        line = f"top-1 on {test.description}: QAT {acc:.4f}"
        result["top1"] = acc
        if args.float:
            acc_f = evaluate_top1(loaded.model, test, batch_size=args.eval_batch_size, verbose=not args.quiet,
                                  desc="float", workers=runtime.workers)
            line += f", float {acc_f:.4f}"
            result["top1_float"] = acc_f
        say(line)
    if history_out is not None and runtime.main:
        write_json(history_out, json_safe(result))
        say(f"wrote {history_out}")
    if out is not None and runtime.main:
        save_quantized(qmodel, out)
        say(f"wrote {out}")
    return 0

