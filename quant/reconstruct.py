"""Optional output reconstruction of the quantizer scales after PTQ (BRECQ-style, network-wide).

After calibration each quantizer's range was chosen to minimise *its own* error; the errors
still add up through the network. This stage learns every step size and offset of the
quantized model (LSQ/LSQ+ parameters, :func:`quant.make_quantizers_learnable`; the log
softmax quantizer stays frozen) so that the quantized model's output features and logits
match the float model's on the calibration images. Weights, LayerNorms and biases stay
frozen: only a few thousand scale parameters are fitted, which 32 calibration images
constrain well (a token-level feature loss gives ``images x tokens x width`` targets).
Reconstruction the rounding itself is GPTQ's job (``QuantConfig.weight_rounding="gptq"``),
whose rounded weights become the frozen starting point here.

Cost: ``steps`` forward+backward passes of a calibration batch (tens of seconds on a CPU for
the shipped models); it is bit-specific, so it runs after :func:`quant.quantize` with the
plan's bits, not during profiling.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from .act_quantizers import ActQuantizer
from .data_utils import iter_images
from .lsq import make_quantizers_learnable, param_groups

__all__ = ["reconstruct"]


def _features(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(output features of the last norm, logits averaged over heads) of a timm model."""
    feats = model.forward_features(x)
    out = model.forward_head(feats)
    if isinstance(out, (tuple, list)):
        out = torch.stack(list(out)).mean(dim=0)
    return feats, out


def _dropping(p: float, gen: torch.Generator):
    """Forward hook: each element of an activation quantizer's output stays float with
    probability ``p`` (QDrop), so the scales are fitted for many upstream error patterns."""
    def hook(module: nn.Module, args: tuple, out: torch.Tensor) -> torch.Tensor:
        keep = torch.rand(out.shape, generator=gen) < p
        return torch.where(keep.to(out.device), args[0], out)
    return hook


def reconstruct(qmodel: nn.Module, model: nn.Module, calib_data, steps: int = 100, lr: float = 1e-3,
                batch_size: int = 32, seed: int = 0, verbose: bool = False,
                drop: float = 0.0) -> nn.Module:
    """Fit the quantizer scales of ``qmodel`` (from :func:`quant.quantize`) to the float
    ``model`` on ``calib_data``, in place; returns ``qmodel`` in eval mode.

    Loss per batch: mean squared error of the output features divided by their variance in
    the float model, plus the KL divergence of the logits. Adam over the LSQ parameter groups
    (:func:`quant.lsq.param_groups`), step sizes kept positive after each step. With ``drop``
    (QDrop, Wei et al., ICLR 2022) each activation quantizer's output element stays float
    with that probability during fitting, which fits scales that hold for many patterns of
    upstream error rather than the one of the fitting batches. Deterministic for a given
    ``seed``.
    """
    if steps < 1:
        raise ValueError(f"reconstruct: steps={steps}; expected >= 1")
    if not 0.0 <= drop < 1.0:
        raise ValueError(f"reconstruct: drop={drop}; expected 0 <= drop < 1 (the share of activations kept float while fitting)")
    images = torch.cat([b for b in iter_images(calib_data, None)])
    device = next(qmodel.parameters()).device
    images = images.to(device)
    model.eval()
    with torch.no_grad():
        target_feats, target_logits = zip(*(_features(model, images[i:i + batch_size])
                                             for i in range(0, len(images), batch_size)))
    learned = make_quantizers_learnable(qmodel)
    learnable = {id(p) for p in learned.parameters()}
    was_trainable = {p: p.requires_grad for p in qmodel.parameters()}
    for p in was_trainable:
        p.requires_grad_(id(p) in learnable)
    gen = torch.Generator().manual_seed(seed)
    hooks = [aq.register_forward_hook(_dropping(drop, gen)) for aq in qmodel.modules()
             if isinstance(aq, ActQuantizer)] if drop > 0 else []
    qmodel.eval()  # no dropout; quantizers train through their parameters only
    try:
        groups = [g for g in param_groups(qmodel, learned, lr) if not g["name"].startswith("weights")]
        opt = torch.optim.Adam(groups) if groups else None
        for _ in tqdm(range(steps if opt else 0), desc="reconstruct", disable=None if verbose else True, leave=False):
            k = int(torch.randint(len(target_feats), (1,), generator=gen))
            x = images[k * batch_size:(k + 1) * batch_size]
            feats, logits = _features(qmodel, x)
            tf, tl = target_feats[k], target_logits[k]
            loss = F.mse_loss(feats, tf) / tf.var().clamp(min=1e-12)
            loss = loss + F.kl_div(F.log_softmax(logits, -1), F.log_softmax(tl, -1), log_target=True, reduction="batchmean")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            learned.project_()
    finally:
        for h in hooks:
            h.remove()
        for p, flag in was_trainable.items():
            p.requires_grad_(flag)
    return qmodel.eval()
