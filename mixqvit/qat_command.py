"""``mixqvit qat``: quantization-aware training of a plan (or W2A2) from its PTQ model.

    mixqvit qat --model fmnist_vit --plan plan.json --epochs 1 --eval --out qat.pt
    mixqvit qat --model fmnist_vit --plan W2A2 --train 60000 --epochs 3 --checkpoint qat.ckpt

The training images are a class-balanced, seeded subset of the training split (Fashion-MNIST)
or of the ImageFolder, held in memory; the calibration images of the PTQ starting point are
drawn the same way. The float model is the distillation teacher unless ``--teacher`` names
another model, or ``--kd-weight 0`` turns distillation off. With ``--checkpoint`` an
interrupted run started again with the same options resumes where it stopped.

:func:`add_qat_arguments` fills a parser and :func:`run_qat` runs the parsed options; the
``mixqvit`` CLI wires them as its ``qat`` subcommand.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

__all__ = ["add_qat_arguments", "run_qat"]


def add_qat_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the ``qat`` options to ``parser`` (model and data options as in ``mixqvit quantize``)."""
    from .cli import _add_data_args, _add_model_args, _positive_float, _positive_int, _unit_interval

    _add_model_args(parser)
    parser.add_argument("--plan", required=True, help="plan JSON from `mixqvit solve`, or a uniform setting such as W2A2")
    _add_data_args(parser, calib_default=256)
    parser.add_argument("--train", type=_positive_int, default=10000, metavar="N",
                        help="training images, class-balanced and seeded, held in memory (default 10000; "
                        "60000 is all of Fashion-MNIST)")
    parser.add_argument("--epochs", type=_positive_int, default=1, help="passes over the training images (default 1)")
    parser.add_argument("--max-steps", type=_positive_int, default=None, metavar="N",
                        help="stop after N optimiser steps (the learning-rate schedule spans them)")
    parser.add_argument("--batch-size", type=_positive_int, default=64, help="training batch size (default 64)")
    parser.add_argument("--lr", type=_positive_float, default=5e-4,
                        help="peak AdamW learning rate of the weights, cosine decay (default 5e-4); step sizes "
                        "get the LSQ-equivalent rates derived from it")
    parser.add_argument("--kd-weight", type=_unit_interval, default=0.5,
                        help="weight alpha of distillation in (1-alpha)*CE + alpha*KD (default 0.5; 0 = labels only)")
    parser.add_argument("--kd-temperature", type=_positive_float, default=2.0, help="distillation temperature (default 2)")
    parser.add_argument("--teacher", default=None,
                        help="distillation teacher, named like --model (default: the float model itself)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default cpu)")
    parser.add_argument("--checkpoint", default=None, metavar="PATH",
                        help="checkpoint file: written every epoch (and --checkpoint-every steps); resumed from "
                        "when it exists and belongs to the same run")
    parser.add_argument("--checkpoint-every", type=_positive_int, default=None, metavar="N",
                        help="also checkpoint every N steps")
    parser.add_argument("--eval", action="store_true", help="evaluate top-1 of the trained model on the test data")
    parser.add_argument("--float", action="store_true", help="with --eval, also evaluate the float model")
    parser.add_argument("--test-limit", type=_positive_int, default=None, metavar="N", help="evaluate on N test images only")
    parser.add_argument("--eval-batch-size", type=_positive_int, default=250)
    parser.add_argument("--history", default=None, metavar="JSON", help="write the per-epoch history to this JSON file")
    parser.add_argument("--out", default=None, help="file for the trained quantized model (torch.save of the whole module)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def run_qat(args: argparse.Namespace) -> int:
    """Run ``mixqvit qat`` with parsed ``args``; returns the exit status (0).

    A checkpoint of another run is reported as an :class:`~mixqvit.errors.InputFileError`
    (one line, exit status 2 in the CLI).
    """
    from quant import CheckpointMismatchError, qat

    from . import pipeline
    from .atomic import write_json
    from .cli import _out_path, _read_plan
    from .errors import InputFileError
    from .report import json_safe

    plan = _read_plan(args.plan)
    out, history_out = _out_path(args.out), _out_path(args.history)
    loaded = pipeline.load_model(args.model, args.pretrained, args.model_kwargs)
    teacher = None
    if args.teacher is not None and args.kd_weight > 0:
        teacher = pipeline.load_model(args.teacher, args.pretrained, args.model_kwargs).model
    train = pipeline.load_calibration(loaded, args.data, args.train, args.seed)
    calib = pipeline.load_calibration(loaded, args.data, args.calib, args.seed)
    label = plan if isinstance(plan, str) else (plan.budget or "plan")
    if args.checkpoint is not None and Path(args.checkpoint).exists():
        print(f"checkpoint {args.checkpoint} exists: resuming from it", flush=True)
    with pipeline.Timer() as t:
        try:
            qmodel, history = qat(
                loaded.model, plan, train, epochs=args.epochs, calib_data=calib[0], teacher=teacher, lr=args.lr,
                kd_temperature=args.kd_temperature, kd_weight=args.kd_weight, seed=args.seed, device=args.device,
                checkpoint=args.checkpoint, verbose=not args.quiet, max_steps=args.max_steps,
                batch_size=args.batch_size, checkpoint_every=args.checkpoint_every,
            )
        except CheckpointMismatchError as exc:
            raise InputFileError(str(exc)) from None
    last = history[-1] if history else {}
    print(f"QAT of {loaded.name} ({label}) on {len(train[0])} images: {sum(r['steps'] for r in history)} steps, "
          f"final epoch loss {last.get('loss', float('nan')):.4f}, train acc {last.get('train_acc', float('nan')):.4f} "
          f"({t.seconds:.1f} s)")
    result: dict[str, Any] = {"model": loaded.name, "plan": label, "history": history}
    if args.eval:
        test = pipeline.load_test(loaded, args.data, args.test_limit, args.seed)
        acc = pipeline.evaluate(qmodel.cpu(), test, args.eval_batch_size, verbose=not args.quiet, desc="qat")
        line = f"top-1 on {test.description}: QAT {acc:.4f}"
        result["top1"] = acc
        if args.float:
            acc_f = pipeline.evaluate(loaded.model, test, args.eval_batch_size, verbose=not args.quiet, desc="float")
            line += f", float {acc_f:.4f}"
            result["top1_float"] = acc_f
        print(line)
    if history_out is not None:
        write_json(history_out, json_safe(result))
        print(f"wrote {history_out}")
    if out is not None:
        pipeline.save_quantized(qmodel, out)
        print(f"wrote {out}")
    return 0

