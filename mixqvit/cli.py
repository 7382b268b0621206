"""The ``mixqvit`` command line: one subcommand per pipeline step, JSON files in between.

    mixqvit profile  --model fmnist_vit --calib 256 --out profile.json
    mixqvit solve    profile.json --budget W4A4 --out plan.json
    mixqvit compare  profile.json --budgets 2,3,4 --solvers pulp,scipy,greedy
    mixqvit quantize --model fmnist_vit --plan plan.json --eval --out qmodel.pt
    mixqvit qat      --model fmnist_vit --plan W2A2 --epochs 1 --eval --out qat.pt
    mixqvit train    fmnist_vit
    mixqvit demo     [--all] [--test-limit 500] [--out report]

Every mistake a user can make (a wrong path, an unknown model, a budget that does not parse or
cannot be met) ends with one line on stderr and exit status 2 instead of a traceback; outputs
are written atomically, so a failed command leaves no partial file.  ``solve`` and ``compare``
import no torch: they run anywhere the allocator does.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
import warnings
from pathlib import Path
from typing import Any, Callable, Sequence

from .errors import BudgetParseError, InputFileError, MixQViTError

__all__ = ["main", "build_parser", "parse_budget", "parse_budget_list", "parse_bits"]

DEFAULT_BITS = (2, 3, 4, 6, 8)
PROG = "mixqvit"


# -- argument parsing helpers ------------------------------------------------------------------
class _Parser(argparse.ArgumentParser):
    """ArgumentParser whose errors are one line (plus where to get help), exit status 2."""

    def error(self, message: str) -> None:  # noqa: D401 - argparse API
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def parse_budget(tokens: str | Sequence[str]):
    """Read a budget from CLI tokens: ``3``, ``W4A8``, ``size_mb=1.5 bops=2e9`` (or comma-joined).

    Keyword items may be given as separate arguments or in one string separated by spaces or
    commas; they are normalised to the allocator's ``key=value,key=value`` form.
    """
    from allocator import Budget, BudgetError

    parts = [tokens] if isinstance(tokens, str) else list(tokens)
    text = " ".join(p.strip() for p in parts).strip()
    if not text:
        raise BudgetParseError("empty budget; expected e.g. 3, W4A8 or size_mb=1.5 bops=2e9")
    if "=" in text:
        text = re.sub(r"\s*=\s*", "=", text)  # "size_mb = 1" -> "size_mb=1"
        text = ",".join(text.replace(",", " ").split())
    try:
        return Budget.parse(text)
    except BudgetError as exc:
        raise BudgetParseError(f"bad budget {' '.join(parts)!r}: {exc}") from None


def parse_budget_list(tokens: Sequence[str]) -> list:
    """``--budgets 2,3,4`` or ``--budgets 2 W4A8 size_mb=1,bops=2e9``: simple budgets split on
    commas, keyword budgets (containing '=') kept whole per argument."""
    budgets = []
    for token in tokens:
        if "=" in token:
            budgets.append(parse_budget(token))
        else:
            budgets += [parse_budget(t) for t in token.split(",") if t.strip()]
    if not budgets:
        raise BudgetParseError("no budgets given; expected e.g. --budgets 2,3,4")
    return budgets


def parse_bits(text: str) -> tuple[int, ...]:
    """``"2,3,4,6,8"`` -> (2, 3, 4, 6, 8); each an integer in 2..16 (what the quantizers support), no repeats."""
    try:
        bits = tuple(int(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"bits must be comma-separated integers such as 2,3,4,6,8, got {text!r}") from None
    if not bits or any(b < 2 or b > 16 for b in bits) or len(set(bits)) != len(bits):
        raise argparse.ArgumentTypeError(f"bits must be distinct integers in 2..16 such as 2,3,4,6,8, got {text!r}")
    return tuple(sorted(bits))


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not JSON ({exc.msg}): {text!r}; expected e.g. '{{\"num_classes\": 10}}'") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object such as '{{\"num_classes\": 10}}', got {text!r}")
    return value


def _checked_number(convert: Callable[[str], Any], valid: Callable[[Any], bool], expected: str):
    """An argparse ``type`` that converts a number and refuses invalid values with one message."""
    def parse(text: str):
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        if not valid(value):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {value}")
        return value
    return parse


_positive_int = _checked_number(int, lambda v: v >= 1, "a positive integer")
_positive_float = _checked_number(float, lambda v: v > 0 and math.isfinite(v), "a positive number")
_unit_interval = _checked_number(float, lambda v: 0.0 <= v <= 1.0, "a number in [0, 1]")


def _comma_list(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _existing_file(path: str, what: str) -> Path:
    p = Path(path)
    if not p.exists():
        raise InputFileError(f"{what} {p} does not exist")
    if not p.is_file():
        raise InputFileError(f"{what} {p} is not a file")
    return p


def _out_path(path: str | None) -> Path | None:
    if path is None:
        return None
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    return p


def _load_profile(path: str):
    from allocator import Profile

    return Profile.load(_existing_file(path, "profile file"))


# -- shared option groups ----------------------------------------------------------------------
def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="shipped demo model (fmnist_vit, fmnist_deit, fmnist_swin), "
                   "a checkpoint (.safetensors with .json beside it, or .pt/.pth), or a timm model name")
    p.add_argument("--pretrained", action="store_true", help="timm names: load the published weights (downloads them)")
    p.add_argument("--model-kwargs", type=_json_object, default=None, metavar="JSON",
                   help="timm names: constructor keywords as JSON, e.g. '{\"num_classes\": 10, \"img_size\": 32}'")


def _add_data_args(p: argparse.ArgumentParser, calib_default: int) -> None:
    p.add_argument("--data", default=None, help="Fashion-MNIST IDX directory or ImageFolder (one sub-directory per "
                   "class, e.g. ImageNet val); default for the shipped models: /usr/share/datasets/fashion-mnist")
    p.add_argument("--calib", type=_positive_int, default=calib_default, metavar="N",
                   help=f"calibration images, class-balanced and seeded (default {calib_default})")
    p.add_argument("--seed", type=int, default=0, help="seed of the calibration subset (default 0)")


def _add_solver_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--objective", default="mixqvit", choices=["mixqvit", "sensitivity", "importance"],
                   help="what the allocation minimises (default mixqvit: importance-weighted sensitivity)")
    p.add_argument("--alpha", type=float, default=None, help="importance weight of the mixqvit objective, in [0, 1]")
    p.add_argument("--tie-wa", action="store_true", help="force weight bits == activation bits per layer")
    p.add_argument("--time-limit", type=float, default=None, metavar="S", help="seconds per solve (best plan so far after)")


def _solver_options(args: argparse.Namespace) -> dict[str, Any]:
    opts: dict[str, Any] = {"objective": args.objective, "tie_wa": args.tie_wa, "time_limit": args.time_limit}
    if args.alpha is not None:
        opts["alpha"] = args.alpha
    return opts


# -- commands ----------------------------------------------------------------------------------
def cmd_profile(args: argparse.Namespace) -> int:
    from . import pipeline

    out = _out_path(args.out)
    loaded = pipeline.load_model(args.model, args.pretrained, args.model_kwargs)
    calib = pipeline.load_calibration(loaded, args.data, args.calib, args.seed)
    with pipeline.Timer() as t:
        profile = pipeline.profile_model(loaded, calib, args.bits, verbose=not args.quiet, metric=args.metric,
                                         importance=not args.no_importance, seed=args.seed)
    profile.save(out)
    print(f"profiled {len(profile.layers)} layers of {loaded.name} at bits {list(profile.bits)} on "
          f"{len(calib[0])} images in {t.seconds:.1f} s; wrote {out}")
    return 0


def cmd_solve(args: argparse.Namespace) -> int:
    from allocator import solve

    budget = parse_budget(args.budget)
    profile = _load_profile(args.profile)
    out = _out_path(args.out)
    plan = solve(profile, budget=budget, solver=args.solver, **_solver_options(args))
    if out is not None:  # the file first: a closed stdout (| head) must not lose it
        plan.save(out)
    print(plan.summary())
    print()
    print(plan.table())
    if out is not None:
        print(f"wrote {out}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from allocator import compare_solvers
    from allocator.compare import format_rows
    from allocator.solve import check_solver_name

    from .report import compare_table

    budgets = parse_budget_list(args.budgets)
    for name in args.solvers or []:
        check_solver_name(name)
    profile = _load_profile(args.profile)
    out = _out_path(args.out)
    rows = compare_solvers(profile, budgets, solvers=args.solvers, verbose=False, **_solver_options(args))
    written = ()
    if out is not None:
        written = compare_table(rows, title=f"Solvers x budgets on {args.profile}").write(
            out.parent, out.stem if out.suffix == ".json" else out.name)
    print(format_rows(rows))
    if written:
        print(f"wrote {written[0]} and {written[1]}")
    return 0


def cmd_quantize(args: argparse.Namespace) -> int:
    from . import pipeline

    plan = _read_plan(args.plan)
    out = _out_path(args.out)
    loaded = pipeline.load_model(args.model, args.pretrained, args.model_kwargs)
    calib = pipeline.load_calibration(loaded, args.data, args.calib, args.seed)
    with pipeline.Timer() as t:
        qmodel = pipeline.quantize_model(loaded.model, plan, calib[0], verbose=not args.quiet)
    label = plan if isinstance(plan, str) else (plan.budget or "plan")
    print(f"quantized {loaded.name} ({label}) with {len(calib[0])} calibration images in {t.seconds:.1f} s")
    if args.eval:
        test = pipeline.load_test(loaded, args.data, args.test_limit, args.seed)
        acc_q = pipeline.evaluate(qmodel, test, args.batch_size, verbose=not args.quiet, desc="quantized")
        line = f"top-1 on {test.description}: quantized {acc_q:.4f}"
        if args.float:
            acc_f = pipeline.evaluate(loaded.model, test, args.batch_size, verbose=not args.quiet, desc="float")
            line += f", float {acc_f:.4f}"
        print(line)
    if out is not None:
        pipeline.save_quantized(qmodel, out)
        print(f"wrote {out}")
    return 0


def _read_plan(spec: str):
    """A plan file, or a uniform shorthand such as "W4A4" handed to quant as is."""
    if re.fullmatch(r"[Ww]\d+[Aa]\d+", spec.strip()):
        return spec.strip().upper()
    from allocator import Plan

    return Plan.load(_existing_file(spec, "plan file (or a uniform plan such as W4A4)"))


def _train_parser() -> argparse.ArgumentParser:
    from .train import add_train_arguments

    return add_train_arguments(_Parser(prog=f"{PROG} train", description="Train a demo model on Fashion-MNIST "
                                       "and write its weights (.safetensors) and record (.json)."))


def cmd_train(args: argparse.Namespace) -> int:
    from .errors import DataLoadError
    from .train import run_train

    try:
        return run_train(args)
    except FileNotFoundError as exc:  # missing data or teacher: the message names the fix
        raise DataLoadError(str(exc)) from None


def _train_main(argv: Sequence[str]) -> int:
    args = _train_parser().parse_args(list(argv))
    args.command = "train"
    return _run_guarded(cmd_train, args)


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    run_demo(
        models=None if args.all else [args.model], calib=args.calib, test_limit=args.test_limit,
        out_dir=args.out, data=args.data, bits=args.bits, budgets=args.budgets, solver=args.solver,
        seed=args.seed, verbose=not args.quiet,
    )
    return 0


# -- parser ------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    """The full parser (exposed for tests and documentation)."""
    parser = _Parser(prog=PROG, description="Mixed-precision quantization of vision transformers (Mix-QViT): "
                     "profile layers, solve a bit allocation under a budget, quantize, evaluate.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    p = sub.add_parser("profile", help="measure layer costs, importance and sensitivity -> profile.json",
                       description="Measure each quantizable layer (costs, LRP importance, sensitivity at each "
                       "candidate bit-width) on a calibration subset and write a profile JSON.")
    _add_model_args(p)
    _add_data_args(p, calib_default=256)
    p.add_argument("--bits", type=parse_bits, default=DEFAULT_BITS, help="candidate bit-widths (default 2,3,4,6,8)")
    p.add_argument("--metric", default="kl", choices=["kl", "loss", "top1"],
                   help="sensitivity damage measure: KL of the logits to float (default), loss increase, top-1 drop")
    p.add_argument("--no-importance", action="store_true", help="skip LRP importance (sensitivity-only objective)")
    p.add_argument("--out", default="profile.json", help="profile JSON to write (default profile.json)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_profile)

    p = sub.add_parser("solve", help="choose bits per layer under a budget -> plan.json",
                       description="Solve the bit allocation for one budget and print the per-layer plan.")
    p.add_argument("profile", help="profile JSON written by `mixqvit profile`")
    p.add_argument("--budget", nargs="+", required=True, metavar="B",
                   help="3 (avg weight bits <= 3 and BOPs <= uniform W3A3), W4A8, or limits such as "
                   "size_mb=1.5 bops=2e9 (also avg_bits=, latency=, bops_of=W4A8)")
    p.add_argument("--solver", default="auto", help="auto or a backend name (see `mixqvit compare --help`)")
    _add_solver_args(p)
    p.add_argument("--out", default=None, help="plan JSON to write")
    p.set_defaults(func=cmd_solve)

    p = sub.add_parser("compare", help="solvers x budgets table",
                       description="Solve several budgets with several solvers and print objective, gap to "
                       "the best proven bound, status and time.")
    p.add_argument("profile", help="profile JSON written by `mixqvit profile`")
    p.add_argument("--budgets", nargs="+", default=["2,3,4"], metavar="B",
                   help="budgets, comma-separated (default 2,3,4); a keyword budget (size_mb=1,bops=2e9) is one argument")
    p.add_argument("--solvers", type=_comma_list, default=None,
                   help="comma-separated backends (default: all installed, e.g. exact,pulp,pulp-highs,ortools,scipy,greedy)")
    _add_solver_args(p)
    p.add_argument("--out", default=None, help="table JSON to write (a Markdown copy goes beside it)")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("quantize", help="apply a plan (or W4A4) with PTQ calibration; optionally evaluate",
                       description="Quantize a model with a plan JSON or a uniform setting such as W4A4, "
                       "calibrate on a calibration subset, and optionally print top-1 accuracy.")
    _add_model_args(p)
    p.add_argument("--plan", required=True, help="plan JSON from `mixqvit solve`, or a uniform setting such as W4A4")
    _add_data_args(p, calib_default=256)
    p.add_argument("--eval", action="store_true", help="evaluate top-1 on the test data")
    p.add_argument("--float", action="store_true", help="with --eval, also evaluate the float model")
    p.add_argument("--test-limit", type=_positive_int, default=None, metavar="N", help="evaluate on N test images only")
    p.add_argument("--batch-size", type=_positive_int, default=250)
    p.add_argument("--out", default=None, help="file for the quantized model (torch.save of the whole module)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_quantize)

    from .qat_command import add_qat_arguments, run_qat

    p = sub.add_parser("qat", help="quantization-aware training of a plan (or W2A2) from its PTQ model",
                       description="Quantize with a plan (PTQ), then train weights and quantizer step sizes "
                       "(LSQ/LSQ+) with distillation from the float model; optionally evaluate and save.")
    add_qat_arguments(p)
    p.set_defaults(func=run_qat)

    # listed here for `mixqvit --help`; its own parser (mixqvit.train) is built in _train_main so
    # that the torch-free commands never import torch
    sub.add_parser("train", help="train a shipped demo model on Fashion-MNIST (see `mixqvit train --help`)",
                   add_help=False)

    p = sub.add_parser("demo", help="end-to-end demo: uniform vs mixed at 2/3/4/6 bits, table + plots",
                       description="Profile a shipped model, solve for budgets W2A2..W6A6, quantize uniform and "
                       "mixed at each, evaluate on the test set; print one table and write report/ "
                       "(JSON, Markdown, PNG plots).")
    p.add_argument("--model", default="fmnist_vit", help="shipped model (fmnist_vit, fmnist_deit, fmnist_swin)")
    p.add_argument("--all", action="store_true", help="all three shipped models")
    p.add_argument("--data", default=None, help="Fashion-MNIST IDX directory (default /usr/share/datasets/fashion-mnist)")
    p.add_argument("--calib", type=_positive_int, default=256, metavar="N", help="calibration images (default 256)")
    p.add_argument("--test-limit", type=_positive_int, default=None, metavar="N",
                   help="evaluate on the first N test images (default: all 10,000)")
    p.add_argument("--bits", type=parse_bits, default=DEFAULT_BITS, help="candidate bit-widths (default 2,3,4,6,8)")
    p.add_argument("--budgets", type=parse_bits, default=(2, 3, 4, 6), help="uniform WbAb budgets (default 2,3,4,6)")
    p.add_argument("--solver", default="auto", help="solver backend (default auto)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="report", help="report directory (default report)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_demo)
    return parser


def _user_error_types() -> tuple[type[BaseException], ...]:
    """Exceptions whose message is the whole story for a user (no traceback needed)."""
    import allocator.errors as aerr
    import solvers

    types: list[type[BaseException]] = [
        MixQViTError, solvers.InfeasibleError, solvers.SolverError, aerr.ProfileError, aerr.BudgetError,
        aerr.PlanError, aerr.ObjectiveError, aerr.UnknownSolverError,
    ]
    # torch-side packages only when a command imported them (solve/compare stay torch-free)
    if "quant.errors" in sys.modules:
        qerr = sys.modules["quant.errors"]
        types += [qerr.UnsupportedModelError, qerr.PlanMismatchError, qerr.CheckpointMismatchError]
    if "profiling.errors" in sys.modules:
        types.append(sys.modules["profiling.errors"].ProfilingError)
    return tuple(types)


def _one_line(exc: BaseException) -> str:
    text = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
    return text or type(exc).__name__


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``mixqvit`` console script; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "train":
        return _train_main(argv[1:])
    args = build_parser().parse_args(argv)
    return _run_guarded(args.func, args)


def _run_guarded(run: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """Run a command; user errors become one line on stderr and exit status 2."""
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("default", category=UserWarning)
            return run(args)
    except KeyboardInterrupt:
        print(f"{PROG} {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # stdout closed early (e.g. `| head`); outputs are already written
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except BaseException as exc:
        if isinstance(exc, SystemExit) or not isinstance(exc, _user_error_types()):
            raise
        print(f"{PROG} {args.command}: error: {_one_line(exc)}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
