"""mixqvit: the application layer of the Mix-QViT toolkit (CLI, end-to-end pipeline, demo).

    from mixqvit import load_model, load_calibration, load_test, profile_model, evaluate
    loaded = load_model("fmnist_vit")                  # or a timm name, or a checkpoint path
    calib = load_calibration(loaded, data=None, n=256)  # Fashion-MNIST by default
    profile = profile_model(loaded, calib, bits=(2, 3, 4, 6, 8))

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
    "load_model": "pipeline",
    "save_checkpoint": "pipeline",
    "load_calibration": "pipeline",
    "load_test": "pipeline",
    "evaluate": "pipeline",
    "profile_model": "pipeline",
    "solve_budgets": "pipeline",
    "quantize_model": "pipeline",
    "PlanSwitcher": "pipeline",
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
