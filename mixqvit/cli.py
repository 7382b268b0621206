"""The ``mixqvit`` command line: one subcommand per pipeline step, JSON files in between.

    mixqvit profile  --model fmnist_vit --calib 256 --out profile.json
    mixqvit solve    profile.json --budget W4A4 --out plan.json
    mixqvit compare  profile.json --budgets 2,3,4 --solvers pulp,scipy,greedy
    mixqvit quantize --model fmnist_vit --plan plan.json --eval --out qmodel.pt
    mixqvit qat      --model fmnist_vit --plan W2A2 --epochs 1 --eval --out qat.pt
    mixqvit train    fmnist_vit --out-dir models
    mixqvit demo     [--all] [--test-limit 500] [--out report]

Each command is a module of :mod:`mixqvit.commands` (``add_arguments``/``run``); this module
builds the parser from them and is the single error boundary: every mistake a user can make (a
wrong path, an unknown model, a budget that does not parse or cannot be met, a corrupt file, an
unwritable output) ends with one line on stderr and exit status 2 instead of a traceback
(``--debug`` or ``MIXQVIT_DEBUG=1`` shows the traceback). Outputs are checked before the work and
written atomically, so a failed command leaves no partial file. ``solve`` and ``compare``
import no torch: they run anywhere the allocator does.
"""
from __future__ import annotations

import argparse
import os
import sys
import warnings
import zlib
from importlib import import_module
from typing import Sequence

from .commands import COMMANDS
from .errors import MixQViTError

__all__ = ["main", "build_parser", "user_error_types"]

PROG = "mixqvit"
DEBUG_ENV = "MIXQVIT_DEBUG"


class _Parser(argparse.ArgumentParser):
    """ArgumentParser whose errors are one line (plus where to get help), exit status 2."""

    def error(self, message: str) -> None:  # noqa: D401 - argparse API
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    """The full parser (exposed for tests and documentation)."""
    parser = _Parser(prog=PROG, description="Mixed-precision quantization of vision transformers (Mix-QViT): "
                     "profile layers, solve a bit allocation under a budget, quantize, evaluate.")
    parser.add_argument("--debug", action="store_true", help=f"show tracebacks (also {DEBUG_ENV}=1)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for name in COMMANDS:
        command = import_module(f".commands.{name}", __package__)
        p = sub.add_parser(name, help=command.HELP, description=command.DESCRIPTION)
        command.add_arguments(p)
        p.set_defaults(func=command.run)
    return parser


def user_error_types() -> tuple[type[BaseException], ...]:
    """Exceptions whose message is the whole story for a user (no traceback needed).

    The library raises ``ValueError`` subclasses for bad input everywhere (budgets, profiles,
    plans, configs) and the OS raises ``OSError`` for paths and files (PIL's unreadable image and
    gzip's bad file are ``OSError`` too); a truncated ``.gz`` ends in ``EOFError`` or
    ``zlib.error``; a JSON document nested beyond Python's limit in ``RecursionError``.
    """
    import solvers

    return (MixQViTError, solvers.SolverError, ValueError, OSError, EOFError, zlib.error, RecursionError,
            *_torch_side_errors())


def _torch_side_errors() -> list[type[BaseException]]:
    """The torch packages' user errors, when a command imported them (solve/compare stay torch-free)."""
    types: list[type[BaseException]] = []
    if "quant.errors" in sys.modules:
        types.append(sys.modules["quant.errors"].QuantError)
    if "profiling.errors" in sys.modules:
        types.append(sys.modules["profiling.errors"].ProfilingError)
    return types


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, RecursionError):
        return "an input is nested too deeply to read (a JSON file of nested lists or objects?)"
    text = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
    if isinstance(exc, OSError) and exc.filename and str(exc.filename) not in text:
        text = f"{exc.filename}: {text}"
    return text or type(exc).__name__


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``mixqvit`` console script; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    debug = args.debug or os.environ.get(DEBUG_ENV, "") not in ("", "0")
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("default", category=UserWarning)
            return args.func(args)
    except KeyboardInterrupt:
        print(f"{PROG} {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # stdout closed early (e.g. `| head`); outputs are already written
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except BaseException as exc:
        if debug or isinstance(exc, SystemExit) or not isinstance(exc, user_error_types()):
            raise
        print(f"{PROG} {args.command}: error: {_one_line(exc)}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
