"""prepare / quant_sites / calibrate: turning a float model into a calibrated fake-quant model.

Lifecycle::

    qmodel = prepare(model, config)      # deep copy; sites replaced; all quantizers off (float)
    calibrate(qmodel, calib_data)        # one float pass: observers record bit-independent stats;
                                         # post-LN ranges folded into LayerNorm + next linear
    quant_sites(qmodel)["blocks.0.attn.qkv"].set_bits(4, 8)   # any bits, any time, no new data
"""
from __future__ import annotations

import copy

import torch
from torch import nn
from tqdm.auto import tqdm

from .config import QuantConfig
from .data_utils import iter_images
from .discovery import find_post_ln_groups, find_quantizable_layers
from .fold import ChannelTransform, channel_transform, fold_layernorm
from .passes import recording_hessians, sequential_pass
from .precision import calibration_dtype, computing_in
from .modules import (
    QuantAttention,
    QuantConv2d,
    QuantLinear,
    QuantSite,
    QuantWindowAttention,
    make_act_quantizer,
    make_matmuls,
    make_weight_quantizer,
)
from .act_quantizers import ActQuantizer
from .quantizers import WeightQuantizer
from .ranges import estimate_range

__all__ = ["prepare", "quant_sites", "calibrate", "is_prepared"]


def _set_submodule(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def prepare(model: nn.Module, config: QuantConfig = QuantConfig()) -> nn.Module:
    """Deep copy of ``model`` with every quantizable site replaced by its quantized module.

    All quantizers start disabled, so the result computes exactly what ``model`` computes
    (up to fused-vs-explicit attention rounding). ``model`` is not modified. The config is
    recorded on the quantizers (and on ``qmodel.quant_config``), so :func:`calibrate` needs
    only data.
    """
    if not isinstance(config, QuantConfig):
        raise TypeError(f"config must be a QuantConfig, got {type(config).__name__}")
    sites = find_quantizable_layers(model)  # validates before copying
    post_ln = {c for g in find_post_ln_groups(model) for c in g.consumers}
    qmodel = copy.deepcopy(model)
    for site in sites:
        if site.kind == "linear":
            old = qmodel.get_submodule(site.name)
            act = make_act_quantizer(config, site.name, post_ln=site.name in post_ln)
            _set_submodule(qmodel, site.name, QuantLinear(old, act, make_weight_quantizer(config), site.name in post_ln))
        elif site.kind == "conv":
            old = qmodel.get_submodule(site.name)
            _set_submodule(qmodel, site.name, QuantConv2d(old, make_act_quantizer(config, site.name), make_weight_quantizer(config)))
    attn_names = sorted({s.name.rsplit(".", 1)[0] for s in sites if s.kind == "matmul"})
    for name in attn_names:
        old = qmodel.get_submodule(name)
        cls = QuantWindowAttention if hasattr(old, "relative_position_bias_table") else QuantAttention
        _set_submodule(qmodel, name, cls(old, *make_matmuls(config, name)))
    device = _model_device(model)
    for module in qmodel.modules():  # new quantizer buffers follow the model
        if isinstance(module, (ActQuantizer, WeightQuantizer)):
            module.to(device)
    qmodel.quant_config = config
    return qmodel


def is_prepared(model: nn.Module) -> bool:
    """True when every quantizable site of ``model`` is a quantized module."""
    return all(isinstance(s.module, QuantSite) for s in find_quantizable_layers(model))


def quant_sites(qmodel: nn.Module) -> dict[str, QuantSite]:
    """Site name -> quantized module (with ``set_bits``), in forward order.

    Raises ``TypeError`` if ``qmodel`` was not returned by :func:`prepare`.
    """
    out: dict[str, QuantSite] = {}
    for site in find_quantizable_layers(qmodel):
        if not isinstance(site.module, QuantSite):
            raise TypeError(
                f"quant_sites expects a model returned by quant.prepare(); site '{site.name}' is a "
                f"float {type(site.module).__name__}. Call prepare(model) first."
            )
        out[site.name] = site.module
    return out


def _model_device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def _channel_rows(observers: list) -> torch.Tensor:
    """The sampled values of post-LN inputs as per-channel rows ``(C, n)`` (equal counts per
    channel: the first ``n`` sampled values of each)."""
    values = torch.cat([o.sample for o in observers])
    chan = torch.cat([o.sample_channel for o in observers])
    n_ch = observers[0].ch_min.numel()
    counts = torch.bincount(chan, minlength=n_ch)
    order = torch.argsort(chan, stable=True)
    starts = torch.cumsum(counts, 0) - counts
    k = int(counts.min())
    if k == 0:
        raise ValueError("a post-LayerNorm channel has no sampled values; raise QuantConfig.calib_samples")
    return values[order][starts[:, None] + torch.arange(k, device=values.device)[None, :]]


def _fold_post_ln(qmodel: nn.Module, config: QuantConfig, a_bits: dict[str, int | None]) -> dict[nn.Module, ChannelTransform]:
    """Fold each post-LN group's calibrated per-channel ranges into LayerNorm + consumers;
    returns each folded consumer's input transform.

    ``post_ln_range``: ``"fixed"`` gives the folded quantizer the range the channel ranges map
    to; ``"channel_search"`` first narrows each channel's range by ``act_method`` at the
    consumers' activation bits (``a_bits``, known when calibrating for a plan; RepQ-ViT's
    per-channel search before its reparameterisation), then fixes it likewise; ``"search"``
    re-expresses the statistics in the folded coordinates and lets the per-tensor quantizer
    calibrate from them with ``act_method`` at any bit-width (one clipping factor shared by
    all channels, relative to each channel's width).
    """
    folded: dict[nn.Module, ChannelTransform] = {}
    if config.post_ln == "tensor":
        return folded
    clip = config.clip_percentile if config.post_ln == "clipped" else None
    for group in find_post_ln_groups(qmodel):
        consumers = [qmodel.get_submodule(c) for c in group.consumers]
        observers = [c.act_quant.observer for c in consumers if c.act_quant.observer.ch_min.numel()]
        if not observers:
            continue  # the LayerNorm output never reached a consumer during calibration
        lo = torch.stack([o.ch_min for o in observers]).amin(dim=0)
        hi = torch.stack([o.ch_max for o in observers]).amax(dim=0)
        bits = a_bits.get(group.consumers[0])
        if config.post_ln_range == "channel_search" and bits is not None and config.act_method != "minmax":
            lo, hi = estimate_range(_channel_rows(observers), config.act_method, bits, config.act_symmetric,
                                    config.percentile, config.mse_grid)
        transform = channel_transform(lo, hi, clip)
        fold_layernorm(qmodel.get_submodule(group.norm), consumers, transform)
        for c in consumers:
            folded[c] = transform
            if config.post_ln_range == "search":
                c.act_quant.observer.fold(transform.mid, transform.r)
                c.act_quant.invalidate()
            else:
                c.act_quant.set_fixed_range(-transform.ref_width / 2, transform.ref_width / 2)
    return folded


def calibrate(qmodel: nn.Module, calib_data, verbose: bool = False, batch_size: int = 64) -> nn.Module:
    """Run ``calib_data`` once through ``qmodel`` in float and record activation statistics.

    The passes compute in ``config.calib_dtype`` (float64 by default, so the result does not
    depend on the CPU's kernels; see :mod:`quant.precision`); the model keeps its dtype.
    Statistics are bit-independent (min/max, per-channel min/max, a seeded value subsample),
    so afterwards ``set_bits`` gives a calibrated quantizer at any bit-width without new data.
    With ``post_ln`` "clipped"/"channel" the per-channel ranges of LayerNorm outputs are then
    folded into the LayerNorm and the following linear layers (exact in float). Bits set
    before the call are restored. With ``weight_rounding="gptq"`` the same pass records each
    weighted layer's input Hessian (weights are then GPTQ-rounded at any bit-width). With
    ``sequential=True`` and bits set before the call, a final quantized pass re-calibrates
    every activation quantizer on its upstream-quantized input (see :mod:`quant.passes`).
    Returns ``qmodel`` (modified in place).
    """
    sites = quant_sites(qmodel)
    config = getattr(qmodel, "quant_config", QuantConfig())
    gptq = config.weight_rounding == "gptq"
    if config.sequential:  # two passes: iterate the data once
        calib_data = [b.cpu() for b in iter_images(calib_data, batch_size)]
    saved = {name: (s.w_bits, s.a_bits) for name, s in sites.items()}
    act_quants = [m for m in qmodel.modules() if isinstance(m, ActQuantizer)]
    device, was_training = _model_device(qmodel), qmodel.training
    for s in sites.values():
        s.set_bits(None, None)
    for aq in act_quants:
        aq.observer.reset()
        aq.observer.active = True
        aq.fixed_range = None
        aq.invalidate()
    qmodel.eval()
    n_images, dtype = 0, calibration_dtype(config.calib_dtype)
    try:
        with torch.no_grad(), computing_in(qmodel, dtype), recording_hessians(qmodel, gptq) as hessians:
            for batch in tqdm(iter_images(calib_data, batch_size), desc="calibrate", disable=None if verbose else True, leave=False):
                qmodel(batch.to(device, dtype or batch.dtype))
                n_images += batch.shape[0]
    finally:
        for aq in act_quants:
            aq.observer.finish()
        qmodel.train(was_training)
    if n_images == 0:
        raise ValueError("calib_data yielded no images; pass at least one batch (N, C, H, W)")
    for layer, transform in _fold_post_ln(qmodel, config, {name: a for name, (_, a) in saved.items()}).items():
        if layer in hessians:
            hessians[layer].fold(transform.mid, transform.r)
    for s in sites.values():
        if hasattr(s, "weight_quant"):
            s.weight_quant.set_hessian(hessians[s].hessian() if s in hessians and hessians[s].n else None)
    for name, (w, a) in saved.items():
        sites[name].set_bits(w, a)
    if config.sequential and any(bits != (None, None) for bits in saved.values()):
        images = torch.cat([b.to(device, dtype or b.dtype) for b in iter_images(calib_data, None)])
        with computing_in(qmodel, dtype):
            sequential_pass(qmodel, images, device, gptq)
    return qmodel
