"""Post-training quantization engine for timm vision transformers (Mix-QViT).

Public API::

    from quant import find_quantizable_layers, quantize, prepare, calibrate, quant_sites, QuantConfig

* :func:`find_quantizable_layers` - the shared definition of quantizable layers (FQN-keyed).
* :func:`prepare` / :func:`calibrate` / :func:`quant_sites` - build a fake-quant copy,
  gather bit-independent statistics once, then set any site's bits at will (profiling).
* :func:`quantize` - one call: plan (``allocator.Plan`` or ``"W4A4"``) + data -> quantized model.
* :class:`PlanSwitcher` - calibrate once, then switch the bits from plan to plan.
* :func:`export` / :func:`load_packed` - deployable files: bit-packed safetensors, ONNX QDQ.
* :func:`qat` - quantization-aware training of a plan from its PTQ model (LSQ/LSQ+ quantizers,
  distillation from the float model, resumable checkpoints).
"""
from .api import measured_config, quantize, resolve_plan
from .config import QuantConfig
from .data_utils import iter_batches, iter_images
from .distill import qat_loss, teacher_logits
from .discovery import LayerSite, PostLNGroup, find_post_ln_groups, find_quantizable_layers
from .engine import calibrate, is_prepared, prepare, quant_sites
from .errors import CheckpointMismatchError, NotCalibratedError, PlanMismatchError, QuantError, UnsupportedModelError
from .deploy import ExportError, PackedFormatError, export, load_packed
from .lsq import LearnedQuantizers, make_quantizers_learnable
from .outliers import plant_outliers
from .modules import QuantAttention, QuantConv2d, QuantLinear, QuantMatMul, QuantSite, QuantWindowAttention
from .device import check_device, model_device
from .qat_train import qat
from .qat_config import QATConfig
from .switch import PlanSwitcher
from .act_quantizers import ActObserver, ActQuantizer
from .quantizers import LogQuantizer, UniformQuantizer, WeightQuantizer

__all__ = [
    "QuantConfig",
    "LayerSite",
    "PostLNGroup",
    "find_quantizable_layers",
    "find_post_ln_groups",
    "prepare",
    "calibrate",
    "quant_sites",
    "is_prepared",
    "quantize",
    "measured_config",
    "plant_outliers",
    "PlanSwitcher",
    "resolve_plan",
    "iter_images",
    "iter_batches",
    "qat",
    "QATConfig",
    "check_device",
    "model_device",
    "qat_loss",
    "teacher_logits",
    "make_quantizers_learnable",
    "LearnedQuantizers",
    "QuantSite",
    "QuantLinear",
    "QuantConv2d",
    "QuantMatMul",
    "QuantAttention",
    "QuantWindowAttention",
    "UniformQuantizer",
    "LogQuantizer",
    "WeightQuantizer",
    "ActObserver",
    "ActQuantizer",
    "QuantError",
    "UnsupportedModelError",
    "PlanMismatchError",
    "NotCalibratedError",
    "CheckpointMismatchError",
    "export",
    "load_packed",
    "ExportError",
    "PackedFormatError",
]
