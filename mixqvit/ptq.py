"""Post-training quantization as the ``quantize`` and ``export`` commands apply it.

Both commands start from a float model, a plan and calibration images and may choose a
``QuantConfig`` preset and the optional reconstruction stage; this module is the one place
that turns those options into a quantized model, so the two commands cannot drift apart.
"""
from __future__ import annotations

import argparse
from typing import Any

from . import argtypes
from .errors import OptionError

__all__ = ["add_preset_arg", "add_ptq_args", "ptq_config", "plan_config", "preset_config", "quantize_from_args",
           "quantize_plan", "load_check_images", "DEFAULT_ROUNDING_STEPS"]

#: Adam steps per unit of learned rounding that the README and the demo recommend and measure.
DEFAULT_ROUNDING_STEPS = 200


def add_preset_arg(p: argparse.ArgumentParser, default: str | None, default_text: str) -> None:
    """``--preset NAME``: the ``QuantConfig`` preset (read by :func:`preset_config`)."""
    p.add_argument("--preset", default=default, metavar="NAME",
                   help=f"QuantConfig preset: default, repq (RepQ-ViT re-implemented), seq, v1 (default: {default_text})")


def add_ptq_args(p: argparse.ArgumentParser) -> None:
    """``--preset`` (a ``QuantConfig`` preset; by default the plan's own), ``--reconstruct STEPS`` and
    ``--reconstruct-rounding STEPS`` with its ``--rounding-loss`` and ``--rounding-drop``."""
    add_preset_arg(p, None, "the quantizer the plan file's profile was measured with, else default")
    p.add_argument("--reconstruct", type=argtypes.positive_int, default=None, metavar="STEPS",
                   help="after calibration, fit every quantizer scale to the float model's outputs on the "
                   "calibration images for STEPS Adam steps (quant.reconstruct; ~0.1-0.2 s of CPU per step "
                   "for the shipped models, 300 recommended)")
    p.add_argument("--reconstruct-rounding", type=argtypes.positive_int, default=None, metavar="STEPS",
                   help="after calibration (and before --reconstruct's scale fitting), learn each weight's rounding "
                   "up or down unit by unit (AdaRound/BRECQ, quant.reconstruct rounding_steps): STEPS Adam steps per "
                   "transformer block, patch embedding, patch merging and head against the float unit's output, then "
                   "hardened to integer codes on the same grid (~25-35 s of CPU at 200 steps for the shipped models, "
                   f"{DEFAULT_ROUNDING_STEPS} recommended)")
    p.add_argument("--rounding-loss", default=None, metavar="LOSS",
                   help="with --reconstruct-rounding, how each unit's output error is measured: mse (every element "
                   "alike), fisher (weighted per image by the squared gradient of the output KL, BRECQ) or fisher-mean "
                   "(those weights averaged over the calibration images) (default: quant.reconstruct's)")
    p.add_argument("--rounding-drop", type=argtypes.below_one, default=None, metavar="P",
                   help="with --reconstruct-rounding, QDrop: while each unit is fitted, each of its quantized "
                   "activations stays float with probability P (0.5 measured; about 1.5x the fitting time) "
                   "(default: 0, none)")
    p.add_argument("--reconstruct-check", type=argtypes.positive_int, default=None, metavar="N",
                   help="with --reconstruct or --reconstruct-rounding, keep the reconstruction only if it lowers the KL "
                   "divergence from the float model on N more images of the calibration pool that it was not fitted "
                   "on (seeded like --calib, none of them a calibration image), else keep the calibrated model "
                   "(quant.reconstruct check_data; a guard of fidelity to the float model, not of top-1: with 256 images "
                   "it moved the shipped models' top-1 by -0.61 to +0.28 per fit, -0.04 on average over 54 fits, "
                   "benchmarks.check_fidelity) (default: no check)")


def preset_config(name: str) -> Any:
    """``QuantConfig.preset(name)``; an unknown name is an :class:`OptionError` listing the known ones."""
    from quant import QuantConfig

    try:
        return QuantConfig.preset(name)
    except ValueError as exc:
        raise OptionError(f"--preset: {exc}") from None


def ptq_config(args: argparse.Namespace) -> Any:
    """The ``QuantConfig`` named by ``--preset``, None without it (:func:`plan_config` then takes
    the plan's); checked before any model is loaded, as are the rounding options."""
    from quant.reconstruct import LOSSES

    if args.rounding_loss is not None and args.rounding_loss not in LOSSES:
        raise OptionError(f"--rounding-loss: expected one of {', '.join(LOSSES)}, got {args.rounding_loss!r}")
    if args.reconstruct_check is not None and not (args.reconstruct or args.reconstruct_rounding):
        raise OptionError("--reconstruct-check only applies with a reconstruction: add --reconstruct-rounding STEPS "
                          f"(e.g. {DEFAULT_ROUNDING_STEPS}) or --reconstruct STEPS, or drop --reconstruct-check")
    rounding_only = [flag for flag, value in (("--rounding-loss", args.rounding_loss),
                                              ("--rounding-drop", args.rounding_drop)) if value is not None]
    if rounding_only and not args.reconstruct_rounding:
        named = " and ".join(rounding_only)
        raise OptionError(f"{named} only appl{'y' if len(rounding_only) > 1 else 'ies'} with learned rounding: add "
                          f"--reconstruct-rounding STEPS (e.g. {DEFAULT_ROUNDING_STEPS}) or drop {named}")
    return None if args.preset is None else preset_config(args.preset)


def plan_config(chosen: Any, plan: Any, say: Any = None) -> Any:
    """The quantizer to apply ``plan`` with: ``chosen`` (from ``--preset``) when given, else the one
    the plan's profile measured its sensitivities with (``Plan.measured_with``), else the default.

    A plan is the optimum for the damage its profile measured, so applying it with another
    quantizer is allowed (e.g. to compare quantizers on one plan) but said, with the fields that
    differ and how to get a plan optimised for the quantizer chosen (``say``, by default a
    line on stderr, as the CLI's other warnings; once under torchrun).
    """
    from quant import QuantConfig, measured_config

    from .errors import InputFileError

    try:
        recorded = measured_config(plan)
    except ValueError as exc:
        raise InputFileError(f"{exc}; pass --preset NAME to choose one") from None
    if chosen is None:
        return recorded if recorded is not None else QuantConfig()
    if recorded is not None and recorded != chosen:
        differ = [k for k, v in chosen.to_dict().items() if getattr(recorded, k) != v]
        (say or _warn)(f"warning: the plan was solved on sensitivities measured with {_config_name(recorded)}; --preset applies "
            f"{_config_name(chosen)}, which differs in {', '.join(differ)}, so the plan is not optimised for it "
            f"(for one that is, run `mixqvit profile --preset NAME` and solve again)")
    return chosen


def _warn(line: str) -> None:
    import sys

    from quant.dist import is_main

    if is_main():
        print(line, file=sys.stderr, flush=True)


def _config_name(config: Any) -> str:
    """``preset "NAME"`` for a configuration that is a preset, else ``a custom quantizer``."""
    from quant import QuantConfig
    from quant.config import PRESETS

    names = [name for name in PRESETS if QuantConfig.preset(name) == config]
    return f'preset "{names[0]}"' if names else "a custom quantizer"


def load_check_images(args: argparse.Namespace, loaded: Any) -> Any:
    """The images ``--reconstruct-check N`` asks for (an error if the pool outside the calibration
    set has fewer), or None without it."""
    from .datasets import load_check

    if args.reconstruct_check is None:
        return None
    return load_check(loaded, args.data, args.reconstruct_check, args.calib, args.seed)[0]


def _describe_check(report: list) -> str | None:
    """One line on the held-out check of a reconstruction (the last record of ``report``), or None."""
    from quant.reconstruct import HeldOutCheck

    verdict = report[-1] if report and isinstance(report[-1], HeldOutCheck) else None
    if verdict is None:
        return None
    kl = f"KL from the float model on {verdict.images} held-out images {verdict.kl_before:.4f} -> {verdict.kl_after:.4f}"
    return (f"reconstruction kept ({kl})" if verdict.kept
            else f"reconstruction put back, the calibrated model is kept ({kl})")


def quantize_from_args(args: argparse.Namespace, config: Any, model: Any, plan: Any, calib: Any, verbose: bool,
                       check: Any = None) -> Any:
    """:func:`quantize_plan` with the options of :func:`add_ptq_args` (``config`` from :func:`ptq_config`,
    ``check`` from :func:`load_check_images`); says how the check went when ``verbose``."""
    report: list = []
    qmodel = quantize_plan(model, plan, calib, config, reconstruct_steps=args.reconstruct or 0,
                           rounding_steps=args.reconstruct_rounding or 0, rounding_loss=args.rounding_loss,
                           rounding_drop=args.rounding_drop, seed=args.seed, verbose=verbose, check=check,
                           report=report)
    line = _describe_check(report)
    if verbose and line:
        print(line, flush=True)
    return qmodel


def quantize_plan(model: Any, plan: Any, calib: Any, config: Any, *, reconstruct_steps: int = 0,
                  rounding_steps: int = 0, rounding_loss: str | None = None, rounding_drop: float | None = None,
                  seed: int = 0, verbose: bool = False, check: Any = None, report: list | None = None) -> Any:
    """``quant.quantize`` with ``config``, then reconstruction when asked (learned rounding first,
    with ``rounding_loss`` and ``rounding_drop`` when given, else ``quant.reconstruct``'s
    defaults; then the scales), kept only if it does better on the ``check`` images when given
    (``quant.reconstruct``'s ``check_data``; its records go to ``report``). The demo's rounded
    rows come from here too, so ``mixqvit quantize|export --reconstruct-rounding N`` with the
    demo's seed and calibration images rebuilds them."""
    from quant import quantize
    from quant.reconstruct import reconstruct

    qmodel = quantize(model, plan, calib, config=config, verbose=verbose)
    if reconstruct_steps or rounding_steps:
        given = {k: v for k, v in (("rounding_loss", rounding_loss), ("rounding_drop", rounding_drop)) if v is not None}
        reconstruct(qmodel, model, calib, steps=reconstruct_steps, rounding_steps=rounding_steps, seed=seed,
                    verbose=verbose, check_data=check, report=report, **given)
    return qmodel
