"""``export``: one entry point that writes a quantized model as a deployable file."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from torch import nn

from ..config import QuantConfig
from .arch import model_spec
from .errors import ExportError, PackedFormatError
from .packed import PackedLayout, save_packed
from .rebuild import check_layout, skeleton
from .state import ExportState, check_plan, collect_state

__all__ = ["EXPORT_FORMATS", "ExportResult", "export"]

EXPORT_FORMATS = ("packed", "onnx")


@dataclass(frozen=True)
class ExportResult:
    """What was written. ``size_bytes``: the weights at their widths (float ones at 32 bits), the
    figure ``allocator.Plan.size_bytes`` gives for the model's plan; ``layout``: the packed
    file's byte breakdown (``None`` for ONNX)."""

    format: str
    path: Path
    file_bytes: int
    size_bytes: float
    layout: PackedLayout | None = None


def _spec(qmodel: nn.Module, arch: str | None, model_kwargs: Mapping[str, Any] | None) -> dict[str, Any]:
    if arch is not None:
        return model_spec(arch, model_kwargs)
    spec = getattr(qmodel, "model_spec", None)  # a model loaded from a packed file knows its own
    if spec is None:
        raise ExportError(
            "format='packed' needs the architecture to rebuild the model from: pass arch= (a timm model "
            "name, or the timm class name such as 'VisionTransformer') and model_kwargs= (the keyword "
            "arguments the float model was built with)")
    return dict(spec)


def _check_rebuildable(state: ExportState, spec: dict[str, Any], qmodel: nn.Module) -> None:
    """Refuse at export time an architecture description that would not load back."""
    config = getattr(qmodel, "quant_config", QuantConfig())
    shapes = {k: tuple(v.shape) for k, v in state.floats.items()}
    shapes |= {p: tuple(w.codes.shape) for p, w in state.weights.items()}
    try:
        check_layout(skeleton(spec, config), {n: {"kind": k} for n, k in state.site_kinds.items()}, shapes)
    except PackedFormatError as exc:
        raise ExportError(f"arch={spec['arch']!r} with model_kwargs={spec['model_kwargs']} does not rebuild "
                          f"this model: {exc}") from None


def export(qmodel: nn.Module, path: str | os.PathLike, *, format: str = "packed", arch: str | None = None,
           model_kwargs: Mapping[str, Any] | None = None, plan: Any = None,
           input_shape: tuple[int, ...] | None = None) -> ExportResult:
    """Write the fake-quantized ``qmodel`` to ``path`` (atomically) as a deployable file.

    ``format="packed"``: a safetensors file with bit-packed integer weights and the calibrated
    quantizer parameters (:mod:`quant.deploy.packed`), reloaded by :func:`load_packed` to the same
    logits; needs ``arch``/``model_kwargs`` to rebuild the architecture (unless ``qmodel`` was
    itself loaded from a packed file). ``format="onnx"``: an ONNX model with
    QuantizeLinear/DequantizeLinear pairs that runs in onnxruntime (:mod:`quant.deploy.onnx_export`;
    ``input_shape`` ``(C, H, W)`` defaults to the patch embedding's, the batch is dynamic).

    ``plan`` (an ``allocator.Plan`` or ``"W4A4"``), when given, must be the bits the model was
    quantized with (:class:`~quant.errors.PlanMismatchError` otherwise). Refuses with
    :class:`ExportError` a model that is not quantized, a quantizer no format can express, or an
    architecture description that does not rebuild the model.
    """
    if format not in EXPORT_FORMATS:
        raise ExportError(f"format={format!r}; expected one of {EXPORT_FORMATS}")
    state = collect_state(qmodel)
    if plan is not None:
        check_plan(state, plan, qmodel)
    if format == "packed":
        spec = _spec(qmodel, arch, model_kwargs)
        _check_rebuildable(state, spec, qmodel)
        layout = save_packed(state, path, spec)
        return ExportResult("packed", Path(path), layout.file_bytes, state.size_bytes, layout)
    from .onnx_export import save_onnx

    file_bytes = save_onnx(qmodel, state, path, input_shape=input_shape)
    return ExportResult("onnx", Path(path), file_bytes, state.size_bytes)
