"""Deployable output of a fake-quantized model.

* :func:`export` ``(qmodel, path, format="packed" | "onnx", ...)``;
* :func:`load_packed` rebuilds the fake-quant model from a packed file (same logits);
* :func:`pack_codes` / :func:`unpack_codes`: the bit-packing of integer codes.

Every format reads the calibrated quantizer state from the model's quantizer modules
(:mod:`quant.deploy.state`); nothing is re-derived. ONNX needs the ``[export]`` extra
(``onnx``, ``onnxruntime``, ``onnxscript``), imported only when that format is asked for.

The package is ``quant.deploy`` so that ``quant.export``, the function, shadows no module.
"""
from .api import EXPORT_FORMATS, ExportResult, export
from .errors import ExportError, PackedFormatError
from .frozen import FrozenActQuantizer, FrozenWeightQuantizer
from .packed import PackedLayout, load_packed
from .packing import pack_codes, packed_nbytes, unpack_codes

__all__ = [
    "export",
    "load_packed",
    "EXPORT_FORMATS",
    "ExportResult",
    "PackedLayout",
    "ExportError",
    "PackedFormatError",
    "FrozenWeightQuantizer",
    "FrozenActQuantizer",
    "pack_codes",
    "unpack_codes",
    "packed_nbytes",
]
