"""QuantConfig: the small, serialisable description of *how* to quantize.

*Which* bit-width each layer gets is the plan's business (``allocator.Plan`` or "W4A4");
the config says how ranges are calibrated and which quantizer each kind of tensor uses.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

from allocator.bits import bits_defect

__all__ = ["QuantConfig", "RANGE_METHODS", "POST_LN_MODES", "SOFTMAX_QUANTIZERS", "WEIGHT_ROUNDINGS", "POST_LN_RANGES", "CALIB_DTYPES",
           "PRESETS", "VALUES_BEFORE_FIELD"]

RANGE_METHODS = ("minmax", "percentile", "mse", "search")
WEIGHT_ROUNDINGS = ("nearest", "gptq")
POST_LN_MODES = ("clipped", "channel", "tensor")
POST_LN_RANGES = ("fixed", "channel_search", "search")
SOFTMAX_QUANTIZERS = ("log", "log2", "logsqrt2", "uniform")
CALIB_DTYPES = ("float64", "model")


@dataclass(frozen=True)
class QuantConfig:
    """How to quantize. All fields have defaults that work for timm ViT/DeiT/Swin.

    post_ln:
        Quantizer for activations that leave a LayerNorm and enter a linear layer (inputs of
        qkv, fc1, Swin's patch-merging reduction, the classifier head). These have a few
        channels with ranges far wider than the rest, which wrecks a per-tensor quantizer.

        * ``"clipped"`` (Mix-QViT): per-channel ranges from calibration, the widest
          channels' ranges capped at the ``clip_percentile``-th percentile of the per-channel
          range widths, then folded into the LayerNorm affine and the next linear layer so
          inference uses one per-tensor quantizer. Capping keeps the folded weight columns
          (multiplied by the channel's range ratio) from blowing up the weight quantizer's
          range and clips the rare extreme activations of outlier channels.
        * ``"channel"`` (default): the same fold with no capping (RepQ-ViT-style); with
          ``post_ln_range="search"`` the folded quantizer's range search does the clipping.
        * ``"tensor"``: a plain per-tensor quantizer calibrated with ``act_method``.
    post_ln_range:
        Range of the folded per-tensor quantizer (``"clipped"``/``"channel"``): ``"fixed"``,
        the image of the per-channel ranges; ``"channel_search"`` (RepQ-ViT), per-channel
        ranges narrowed by ``act_method`` at the plan's activation bits before the fold, then
        fixed; ``"search"``, calibrated by ``act_method`` from the statistics re-expressed in
        the folded coordinates, at any bit-width (one clipping factor relative to every
        channel's own width).
    clip_percentile:
        Percentile (0-100] of the distribution of per-channel range widths at which the
        ``"clipped"`` mode caps a channel's width. 100 means no clipping.
    weight_method, act_method:
        Range calibration: ``"minmax"``, ``"percentile"`` (``percentile`` and
        ``100 - percentile``), ``"mse"`` (grid search over ``mse_grid`` shrink factors of
        the min-max range minimising squared quantization error) or ``"search"`` (RepQ-ViT:
        the quantile range ``[q(1-p), q(p)]``, p in 99.9/99.99/99.999, with the smallest
        squared error). Weights use the tensor itself (data-free); activations use the
        calibration statistics.
    weight_per_channel:
        Per-output-channel weight scales (True) or one scale per tensor (False).
    weight_symmetric, act_symmetric:
        Symmetric (zero point 0; unsigned when the data is non-negative) or asymmetric
        (integer zero point).
    softmax:
        Quantizer for attention probabilities entering ``attn @ v``: ``"log2"`` (levels
        s*2^-k), ``"logsqrt2"`` (levels s*2^(-k/2), finer near 1 but half as deep), ``"log"``
        (whichever of the two has the smaller squared error on the calibration sample, chosen
        per site and bit-width: at 3 bits sqrt(2) steps zero every probability below 2^-3 of
        the scale) or ``"uniform"``.
    percentile:
        Upper percentile used by the ``"percentile"`` method.
    mse_grid:
        Number of candidate shrink factors in the ``"mse"`` search.
    calib_samples:
        Number of activation values each activation quantizer keeps (random subsample)
        for percentile/MSE calibration at any bit-width.
    weight_rounding:
        ``"nearest"`` rounds each weight to its nearest level; ``"gptq"`` (GPTQ) rounds the
        input columns of each linear/conv weight one at a time and spreads each rounding
        error over the not-yet-rounded columns through the inverse Hessian ``X^T X`` of the
        layer's calibration inputs, on the same per-channel grid. Bit-independent: the
        Hessians are gathered once, the rounding is computed (and cached) per bit-width.
    gptq_damp:
        GPTQ's dampening, as a fraction of the Hessian's mean diagonal.
    gptq_act_order:
        GPTQ rounds the input columns in decreasing order of the Hessian's diagonal (the
        inputs with the most energy first) instead of in storage order.
    sequential:
        After the float calibration pass, one more pass with the plan's bits on in which
        every activation quantizer re-calibrates on what it receives from the already
        quantized layers before it (and GPTQ's Hessians are taken from those inputs). Needs
        the bits at calibration time (``quantize`` sets them first); calibrating with every
        site float skips it.
    edge_bits:
        With a string plan ("W4A4"), bits of the first layer (patch embedding) and last
        layers (classifier heads); ``None`` applies the string to them as well.
    seed:
        Seed of the subsampling, making calibration deterministic.
    calib_dtype:
        What the calibration passes compute in. ``"float64"`` (default): the model and images
        are cast to float64 for the passes and back afterwards (the model is unchanged), so
        statistics, Hessians and hence ranges and GPTQ codes are the same on every CPU
        (:mod:`quant.precision`); about twice a float32 pass on a CPU, slow on GPUs without
        fast float64. ``"model"``: the model's own dtype (float32, or a half-precision model).
    """

    post_ln: Literal["clipped", "channel", "tensor"] = "channel"
    post_ln_range: Literal["fixed", "channel_search", "search"] = "search"
    clip_percentile: float = 99.0
    weight_method: Literal["minmax", "percentile", "mse", "search"] = "search"
    act_method: Literal["minmax", "percentile", "mse", "search"] = "search"
    weight_per_channel: bool = True
    weight_symmetric: bool = False
    act_symmetric: bool = False
    softmax: Literal["log", "log2", "logsqrt2", "uniform"] = "log"
    percentile: float = 99.99
    mse_grid: int = 40
    calib_samples: int = 16384
    weight_rounding: Literal["nearest", "gptq"] = "gptq"
    gptq_damp: float = 0.01
    gptq_act_order: bool = False
    sequential: bool = False
    edge_bits: int | None = 8
    seed: int = 0
    calib_dtype: Literal["float64", "model"] = "float64"

    def __post_init__(self) -> None:
        def choice(field: str, value: Any, options: tuple[str, ...]) -> None:
            if value not in options:
                raise ValueError(f"QuantConfig.{field}={value!r}; expected one of {options}")

        choice("post_ln", self.post_ln, POST_LN_MODES)
        choice("weight_method", self.weight_method, RANGE_METHODS)
        choice("act_method", self.act_method, RANGE_METHODS)
        choice("softmax", self.softmax, SOFTMAX_QUANTIZERS)
        choice("weight_rounding", self.weight_rounding, WEIGHT_ROUNDINGS)
        choice("post_ln_range", self.post_ln_range, POST_LN_RANGES)
        choice("calib_dtype", self.calib_dtype, CALIB_DTYPES)
        if not 0.0 <= self.gptq_damp <= 1.0:
            raise ValueError(f"QuantConfig.gptq_damp={self.gptq_damp}; expected 0 <= damp <= 1")
        if not 0.0 < self.clip_percentile <= 100.0:
            raise ValueError(f"QuantConfig.clip_percentile={self.clip_percentile}; expected 0 < p <= 100")
        if not 50.0 < self.percentile <= 100.0:
            raise ValueError(f"QuantConfig.percentile={self.percentile}; expected 50 < p <= 100")
        if self.mse_grid < 1:
            raise ValueError(f"QuantConfig.mse_grid={self.mse_grid}; expected >= 1")
        if self.calib_samples < 16:
            raise ValueError(f"QuantConfig.calib_samples={self.calib_samples}; expected >= 16")
        if self.edge_bits is not None and bits_defect(self.edge_bits, "QuantConfig.edge_bits"):
            raise ValueError(f"{bits_defect(self.edge_bits, 'QuantConfig.edge_bits')}, or None")

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> "QuantConfig":
        """A named configuration (:data:`PRESETS`), with ``overrides`` of any field.

        ``"repq"`` re-implements RepQ-ViT (Li et al., ICCV 2023) from its paper: percentile-
        searched asymmetric ranges on whole activation tensors, per-channel post-LayerNorm
        ranges folded into LayerNorm and the next linear (weights re-calibrated after the
        fold), a log-sqrt2 softmax quantizer with a searched scale, and sequential
        calibration. ``"default"`` is ``QuantConfig()``; see :data:`PRESETS` for the others.
        """
        if name not in PRESETS:
            raise ValueError(f"unknown QuantConfig preset {name!r}; expected one of {sorted(PRESETS)}")
        return cls(**{**PRESETS[name], **overrides})

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (JSON-serialisable) of all fields."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "QuantConfig":
        """Inverse of :meth:`to_dict`; unknown keys raise ``ValueError`` naming them."""
        unknown = sorted(set(data) - set(cls.__dataclass_fields__))
        if unknown:
            raise ValueError(f"QuantConfig.from_dict: unknown fields {unknown}; known: {sorted(cls.__dataclass_fields__)}")
        return cls(**data)

    @classmethod
    def from_record(cls, data: dict[str, Any]) -> "QuantConfig":
        """The configuration a record written by an earlier version (a profile's
        ``metadata["quant_config"]``) was quantized with.

        A field the record lacks did not exist yet, and what the quantizer did then is
        :data:`VALUES_BEFORE_FIELD`'s value, not today's default: a profile recorded before
        ``calib_dtype`` was calibrated in float32, not float64. Reading it with
        :meth:`from_dict` would call it today's configuration and hide that its sensitivities
        were measured with another quantizer. Unknown keys raise ``ValueError`` as there.
        """
        return cls.from_dict({**VALUES_BEFORE_FIELD, **data})


#: What each field added after the first recorded configurations meant before it existed
#: (:meth:`QuantConfig.from_record`): the folded post-LN range was the image of the channel
#: ranges, weights were rounded to nearest, calibration was one pass in the model's dtype.
VALUES_BEFORE_FIELD: dict[str, Any] = {
    "post_ln_range": "fixed", "weight_rounding": "nearest", "gptq_damp": 0.01, "gptq_act_order": False,
    "sequential": False, "calib_dtype": "model",
}


#: Named configurations for :meth:`QuantConfig.preset` (field -> value over the defaults).
#: The default is bit-independent: calibrated once, any bits give what ``quantize`` gives at them
#: (profiling measures what the plan gets). "seq" calibrates for the plan's bits (RepQ-ViT's
#: per-channel post-LN search at those bits, sequential calibration): its sensitivity profile
#: would be measured with other ranges than the ones it applies. "v1" is the default before
#: issue 16, calibrated in the model's dtype as it then was.
PRESETS: dict[str, dict[str, Any]] = {
    "default": {},
    "seq": dict(post_ln_range="channel_search", sequential=True),
    "v1": dict(post_ln="clipped", post_ln_range="fixed", weight_method="mse", act_method="mse",
               weight_symmetric=True, softmax="log2", weight_rounding="nearest", calib_dtype="model"),
    "repq": dict(post_ln="channel", post_ln_range="channel_search", weight_method="search", act_method="search",
                 weight_symmetric=False, act_symmetric=False, softmax="logsqrt2", calib_samples=2**22, sequential=True,
                 weight_rounding="nearest"),
}
