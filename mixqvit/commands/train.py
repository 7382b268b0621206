"""``mixqvit train``: retrain a shipped demo model on Fashion-MNIST, reproducibly (``--device``
cuda trains on a GPU: same recipe, not the same bits as the CPU run the shipped weights came from).

The weights go to ``--out-dir`` (default ``models/`` in the current directory), never into the
installed package unless that directory is named explicitly, and an existing checkpoint there is
replaced only with ``--force``: a retrained model is a new file, not a silent edit of the one
every other command loads.
"""
from __future__ import annotations

import argparse

from .. import argtypes
from ..errors import OptionError
from ..options import out_directory
from ..runtime import add_runtime_args, setup

HELP = "train a shipped demo model on Fashion-MNIST"
DESCRIPTION = ("Train a demo model on Fashion-MNIST and write its weights (.safetensors) and record (.json) to "
               "--out-dir; load the result with --model OUT_DIR/NAME.safetensors.")
#: The trainable demo models (``mixqvit.recipes.RECIPES``; kept here so `--help` needs no torch).
TRAINABLE = ("fmnist_vit", "fmnist_deit", "fmnist_swin")
DEFAULT_OUT_DIR = "models"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", choices=TRAINABLE, help="demo model to train")
    p.add_argument("--data", default=None, help="Fashion-MNIST IDX directory (default /usr/share/datasets/fashion-mnist)")
    p.add_argument("--epochs", type=argtypes.positive_int, default=None, help="epochs (default: the recipe's)")
    p.add_argument("--seed", type=argtypes.seed, default=0)
    p.add_argument("--batch-size", type=argtypes.positive_int, default=None, metavar="N",
                   help="training batch size (default: the recipe's, 64); the learning rate is not rescaled")
    add_runtime_args(p, workers=False, threads=1, distributed=False)
    p.add_argument("--out-dir", default=DEFAULT_OUT_DIR,
                   help=f"where to write <model>.safetensors/.json (default {DEFAULT_OUT_DIR}/)")
    p.add_argument("--force", action="store_true", help="replace an existing checkpoint in --out-dir")
    p.add_argument("--teacher", default=None, help="teacher model name for distilled recipes (default: the recipe's)")
    p.add_argument("--monitor", action="store_true", help="measure test accuracy after every epoch")
    p.add_argument("--quiet", action="store_true", help="no progress output")


def run(args: argparse.Namespace) -> int:
    from ..errors import DataLoadError
    from ..train import CheckpointExistsError, train_model

    runtime = setup(args, distributed=False)  # --device checked, like --out-dir, before any training
    out_directory(args.out_dir, "--out-dir")  # writable, checked before an hour of training
    overrides = {"batch_size": args.batch_size} if args.batch_size is not None else None
    try:
        train_model(args.model, out_dir=args.out_dir, force=args.force, data_root=args.data, epochs=args.epochs,
                    seed=args.seed, threads=args.threads, teacher=args.teacher, verbose=not args.quiet,
                    monitor=args.monitor, device=runtime.device, overrides=overrides)
    except CheckpointExistsError as exc:
        raise OptionError(str(exc).replace("force=True (`mixqvit train --force`)", "--force")) from None
    except FileNotFoundError as exc:  # missing data or teacher: the message names the fix
        raise DataLoadError(str(exc)) from None
    return 0
