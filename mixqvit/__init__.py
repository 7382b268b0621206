"""mixqvit: the application layer of the Mix-QViT toolkit (CLI, end-to-end pipeline, demo).

    from mixqvit import load_model, load_calibration, load_test, profile_loaded, evaluate_top1
    loaded = load_model("fmnist_vit")                  # or a timm name, or a checkpoint path
    calib = load_calibration(loaded, data=None, n=256)  # Fashion-MNIST by default
    profile = profile_loaded(loaded, calib, bits=(2, 3, 4, 6, 8))
    top1 = evaluate_top1(loaded.model, load_test(loaded, data=None))

or from a shell: ``mixqvit demo``, ``mixqvit profile|solve|compare|quantize|qat|train --help``.

Importing the package loads no torch: the pipeline names below are resolved on first use, so
the allocation commands (``mixqvit solve``, ``mixqvit compare``) stay torch-free.
"""
from __future__ import annotations

from importlib import import_module
from typing import Any

from .errors import BudgetParseError, DataLoadError, InputFileError, MixQViTError, ModelLoadError, OptionError

try:  # one source of truth: the installed metadata (pyproject.toml)
    from importlib.metadata import PackageNotFoundError, version

    __version__ = version("mixqvit")
except PackageNotFoundError:  # pragma: no cover - running from a bare source tree
    __version__ = "0+unknown"

# public name -> submodule that defines it (imported lazily, see module docstring)
_LAZY = {
    "LoadedModel": "loading",
    "load_model": "loading",
    "save_checkpoint": "checkpoints",
    "save_quantized": "checkpoints",
    "EvalData": "datasets",
    "load_calibration": "datasets",
    "load_test": "datasets",
    "evaluate_top1": "evaluation",
    "profile_loaded": "evaluation",
    "run_demo": "demo",
    "Table": "report",
    "Column": "report",
    "main": "cli",
}

__all__ = [
    "__version__",
    "MixQViTError",
    "ModelLoadError",
    "DataLoadError",
    "BudgetParseError",
    "InputFileError",
    "OptionError",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'mixqvit' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
