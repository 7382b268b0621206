"""Option groups and input/output checks shared by the ``mixqvit`` commands.

A command declares its model, data and solver options through these helpers, so the same
option means the same thing (and is checked the same way) in every command.  Input files are
checked when they are read and output paths *before* any work is done: a command that would
fail to write its result after an hour of profiling must fail in the first second instead.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from . import argtypes
from .errors import DataLoadError, InputFileError, OptionError

__all__ = ["add_model_args", "add_data_args", "add_plan_arg", "add_quantize_inputs", "add_solver_args", "add_quiet_arg", "solver_options",
           "existing_file", "check_data_path", "out_path", "out_directory", "load_profile", "read_plan"]


def add_model_args(p: argparse.ArgumentParser) -> None:
    """``--model``, ``--pretrained``, ``--model-kwargs``, ``--weights``: what :func:`mixqvit.loading.load_model` reads."""
    p.add_argument("--model", required=True, help="shipped demo model (fmnist_vit, fmnist_deit, fmnist_swin), "
                   "a checkpoint (.safetensors with .json beside it, or .pt/.pth), or a timm model name")
    p.add_argument("--pretrained", action="store_true", help="timm names: load the published weights (downloads them)")
    p.add_argument("--model-kwargs", type=argtypes.json_object, default=None, metavar="JSON",
                   help="timm names: constructor keywords as JSON, e.g. '{\"num_classes\": 10, \"img_size\": 32}'")
    p.add_argument("--weights", default=None, metavar="FILE",
                   help="timm names: a state_dict for the architecture (torch.save(model.state_dict()) .pth/.pt, "
                   "or .safetensors); without it or --pretrained the weights are random (a warning says so)")


def add_data_args(p: argparse.ArgumentParser, calib_default: int) -> None:
    """``--data``, ``--calib``, ``--seed``: where images come from and which calibration subset."""
    p.add_argument("--data", default=None, help="Fashion-MNIST IDX directory or ImageFolder (one sub-directory per "
                   "class, e.g. ImageNet val); default for the shipped models: /usr/share/datasets/fashion-mnist")
    p.add_argument("--calib", type=argtypes.positive_int, default=calib_default, metavar="N",
                   help=f"calibration images, class-balanced and seeded (default {calib_default})")
    p.add_argument("--seed", type=argtypes.seed, default=0, help="seed of the calibration subset (default 0)")


def add_plan_arg(p: argparse.ArgumentParser, example: str) -> None:
    """``--plan``: a plan JSON from ``mixqvit solve`` or a uniform shorthand (read by :func:`read_plan`)."""
    p.add_argument("--plan", required=True, help=f"plan JSON from `mixqvit solve`, or a uniform setting such as {example}")


def add_quantize_inputs(p: argparse.ArgumentParser, plan_example: str) -> None:
    """What ``quantize`` and ``qat`` both start from: a model, a plan and calibration data."""
    add_model_args(p)
    add_plan_arg(p, plan_example)
    add_data_args(p, calib_default=256)


def add_solver_args(p: argparse.ArgumentParser) -> None:
    """Objective and solver options shared by ``solve`` and ``compare``."""
    p.add_argument("--objective", default="mixqvit", choices=["mixqvit", "sensitivity", "importance"],
                   help="what the allocation minimises (default mixqvit: importance-weighted sensitivity)")
    p.add_argument("--alpha", type=argtypes.unit_interval, default=None,
                   help="importance weight of the mixqvit objective, in [0, 1]")
    p.add_argument("--tie-wa", action="store_true", help="force weight bits == activation bits per layer")
    p.add_argument("--time-limit", type=argtypes.positive_float, default=None, metavar="S",
                   help="seconds per solve (best plan so far after)")


def add_quiet_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def solver_options(args: argparse.Namespace) -> dict[str, Any]:
    """The allocator keywords named by :func:`add_solver_args`' options."""
    opts: dict[str, Any] = {"objective": args.objective, "tie_wa": args.tie_wa, "time_limit": args.time_limit}
    if args.alpha is not None:
        opts["alpha"] = args.alpha
    return opts


def existing_file(path: str | os.PathLike, what: str) -> Path:
    """``path`` as a Path when it is an existing regular file, else an :class:`InputFileError`."""
    p = Path(path)
    if not p.exists():
        raise InputFileError(f"{what} {p} does not exist")
    if not p.is_file():
        raise InputFileError(f"{what} {p} is not a file")
    return p


def out_path(path: str | os.PathLike | None, what: str = "output file") -> Path | None:
    """Check that ``path`` can be written (creating missing parent directories) before any work.

    Refused: an existing directory, a parent that is a file, a directory the user cannot write to.
    """
    if path is None:
        return None
    p = Path(path).expanduser()
    if p.is_dir():
        raise OptionError(f"{what} {p} is a directory; give a file name inside it, e.g. {p / 'out.json'}")
    parent = p.parent
    for ancestor in [parent, *parent.parents]:
        if ancestor.exists():
            if not ancestor.is_dir():
                raise OptionError(f"cannot write {what} {p}: {ancestor} is a file, not a directory")
            if not os.access(ancestor, os.W_OK | os.X_OK):
                raise OptionError(f"cannot write {what} {p}: no write permission in {ancestor}; choose another path")
            break
    if p.exists() and not os.access(p, os.W_OK):
        raise OptionError(f"cannot write {what} {p}: the file is read-only; choose another path")
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OptionError(f"cannot create the directory of {what} {p}: {exc.strerror or exc}") from None
    return p


def out_directory(path: str | os.PathLike, what: str = "output directory") -> Path:
    """Create ``path`` (a directory for several outputs) or refuse it before any work is done."""
    p = Path(path).expanduser()
    if p.exists() and not p.is_dir():
        raise OptionError(f"{what} {p} is a file; give a directory")
    out_path(p / ".mixqvit-write-check", what)  # the same checks as for a file inside it
    if not os.access(p, os.W_OK | os.X_OK):
        raise OptionError(f"cannot write into {what} {p}: no write permission; choose another directory")
    return p


def check_data_path(data: str | os.PathLike | None) -> None:
    """Refuse a ``--data`` path that does not exist or is a file, before a model is loaded."""
    if data is None:
        return
    root = Path(data).expanduser()
    if not root.exists():
        raise DataLoadError(f"data path {root} does not exist; expected a Fashion-MNIST IDX directory or an ImageFolder")
    if not root.is_dir():
        raise DataLoadError(f"data path {root} is a file; expected a directory (Fashion-MNIST IDX files or an ImageFolder)")


def load_profile(path: str | os.PathLike):
    """A profile JSON (``allocator.Profile.load`` validates it and explains any defect)."""
    from allocator import Profile

    return Profile.load(existing_file(path, "profile file"))


def read_plan(spec: str):
    """A plan file, or a uniform shorthand such as ``W4A4`` (checked here, handed to quant as is)."""
    from allocator.bits import is_uniform_spec, parse_uniform

    text = spec.strip()
    if is_uniform_spec(text):
        try:
            parse_uniform(text)
        except ValueError as exc:
            raise OptionError(f"--plan {text}: {exc}") from None
        return text.upper()
    from allocator import Plan

    return Plan.load(existing_file(spec, "plan file (or a uniform plan such as W4A4)"))
