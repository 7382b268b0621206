"""Layer importance by Layer-wise Relevance Propagation (LRP), AttnLRP rules, one backward pass.

Why these rules (see docs/lrp.md for the longer argument):

* Implementation: *modified gradient x input*. Each rule is expressed as a change of the backward
  pass of one operation while the forward values stay exact; then ``relevance(t) = t * dF/dt``
  for every tensor ``t`` on the path, so a single backward pass from the target logit yields the
  relevance at every quantizable site (captured with tensor hooks). This is the "efficient"
  formulation of AttnLRP (Achtibat et al., ICML 2024, reference code: the lxt package), which is
  not installable here, so the rules are implemented in this module.
The rules themselves (recorder, autograd functions, patched module forwards) live in
`profiling._lrp_rules`; this module runs them over calibration data.

* Linear / conv: epsilon rule ``R_x = x * W^T (R_z / (z + eps*sign(z)))``, implemented as a
  gradient scaling of the output by ``z / (z + eps*sign(z))``; biases absorb their share of
  relevance. Default ``eps = 0`` (LRP-0): in explicit LRP eps guards the division by z, but the
  gradient formulation never divides by z, so eps -> 0 is numerically safe here and saves a
  backward element-wise pass per layer (the lxt "efficient" mode also leaves linear layers as plain
  gradient x input). ``epsilon > 0`` is available for the absorbing variant.
* LayerNorm: identity rule by treating the standard deviation as a constant (detached), which
  makes the layer linear (centre, scale by a constant, affine); relevance flows through the
  centring exactly and the LN bias absorbs its share. Chosen over zennit-style rules for norm
  layers because AttnLRP shows it is the variant that stays faithful in deep transformers.
* GELU: identity rule ``R_x = R_y`` (AttnLRP eq. 9). An element-wise function has one input, so
  there is nothing to redistribute; gradient x input would instead weigh by the local slope and
  break conservation. The "half" rule is for products of two inputs, not for GELU.
* Attention products q @ k^T and attn @ v: uniform ("half") rule -- each operand receives half of
  the product's relevance (gradient halved on both operands). A bilinear product is homogeneous of
  degree 2, so gradient x input would double-count; halving restores conservation exactly.
* Softmax: AttnLRP's rule ``R_x_i = x_i (R_i - s_i sum_j R_j)``, which is exactly gradient x input
  through the unchanged softmax. It lets relevance reach q, k (so ``matmul_qk`` and the q/k part of
  ``qkv`` get importance); the price is that softmax's implicit bias absorbs part of the relevance
  of the attention-weight branch (conservation is approximate there, measured by
  `lrp_conservation`). The CP-LRP alternative (Ali et al. 2022; Chefer et al. 2021 also only route
  through the value path) treats attention as a constant: exactly conservative but gives
  ``matmul_qk`` zero relevance, useless for ranking that site.

Per-layer importance: for each site, ``sum |R|`` over the elements of the site's output (the
product's output for a matmul site), per image; averaged over the calibration images, then
normalised to sum 1. The relevance source is the logit of the predicted class (``target="pred"``)
or of the label (``target="true"``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn as nn

from quant import dist
from quant.device import model_device
from quant.progress import Progress

from ._data import DEFAULT_BATCH_SIZE, as_calib_set
from ._heap import trim_heap
from ._lrp_rules import DEFAULT_EPSILON, _Recorder, lrp_mode
from ._sites import Site, discover_sites
from .errors import LRPUnsupportedError

__all__ = [
    "LRPResult",
    "ConservationReport",
    "lrp_importance",
    "lrp_conservation",
    "lrp_mode",
    "DEFAULT_EPSILON",
]


# --------------------------------------------------------------------------------------------
# Public API.
# --------------------------------------------------------------------------------------------
@dataclass
class LRPResult:
    """Relevance at each site, per image, and the importance derived from it."""

    names: list[str]
    per_image: np.ndarray        # (N, L): sum |R| at each site's output, per image
    importance: np.ndarray       # (L,): per_image averaged over images, normalised to sum 1
    target_logits: np.ndarray    # (N,): value of the explained logit (total relevance)
    input_relevance: np.ndarray  # (N,): signed sum of the relevance reaching the input pixels
    targets: np.ndarray          # (N,): explained class per image


def _targets(logits: torch.Tensor, target: Any, labels: torch.Tensor | None) -> torch.Tensor:
    if isinstance(target, str):
        if target == "pred":
            return logits.argmax(dim=1)
        if target == "true":
            if labels is None:
                raise ValueError("target='true' needs labels; give (images, labels) batches")
            return labels.to(logits.device)
    elif isinstance(target, int) and 0 <= target < logits.shape[1]:
        return torch.full((logits.shape[0],), target, dtype=torch.long, device=logits.device)
    raise ValueError(
        f"target={target!r}; expected 'pred' (predicted class), 'true' (labels) or a class index "
        f"in [0, {logits.shape[1]})"
    )


def _explain_batch(model: nn.Module, sites: Sequence[Site], x: torch.Tensor, target: Any,
                   labels: torch.Tensor | None, epsilon: float,
                   param_grads: bool = False, softmax: bool = False) -> tuple[_Recorder, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One LRP pass over batch x. Returns (recorder, target logits, input relevance, targets)."""
    rec = _Recorder(batch=int(x.shape[0]), softmax=softmax)
    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        for p, _ in flags:
            p.requires_grad_(param_grads)
        x = x.detach().clone().requires_grad_(True)
        with torch.enable_grad(), lrp_mode(model, sites, rec, epsilon):
            logits = model(x)
            if not isinstance(logits, torch.Tensor) or logits.dim() != 2:
                raise LRPUnsupportedError(
                    f"{type(model).__name__} returned {type(logits).__name__}; LRP needs a logits "
                    "tensor (N, classes) -- put the model in eval mode"
                )
            tgt = _targets(logits.detach(), target, labels)
            chosen = logits.gather(1, tgt[:, None]).squeeze(1)
            chosen.sum().backward()
        rel_in = (x.detach() * x.grad).reshape(x.shape[0], -1).sum(1)
        return rec, chosen.detach(), rel_in, tgt
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


def lrp_importance(
    model: nn.Module,
    calib_data: torch.Tensor | Any,
    sites: Sequence[Any] | None = None,
    target: str | int = "pred",
    epsilon: float = DEFAULT_EPSILON,
    *,
    batch_size: int | None = DEFAULT_BATCH_SIZE,
    verbose: bool = False,
) -> LRPResult:
    """Per-site importance of `model` by AttnLRP relevance, averaged over `calib_data`.

    One forward and one backward pass per batch of at most `batch_size` images (None: the
    batches as given), on the model's device; only per-image sums are kept, and the heap's free pages
    are handed back to the system after each batch (`profiling._heap.trim_heap`), so memory does
    not grow with the calibration set. Under torchrun the batches are shared out between the
    processes and every process returns the whole result. The model is used in eval mode and
    restored afterwards; its parameters are not modified.
    """
    calib = as_calib_set(calib_data, batch_size)
    found = discover_sites(model, sites)
    device = model_device(model)
    was_training = model.training
    model.eval()
    mine = dist.shard(range(len(calib.images)))
    done: list[tuple[Any, ...]] = []  # (batch index, per-image rows, target logits, input relevance, targets)
    try:
        # trim_heap after each batch: without it glibc's heap fragments over the batches and the peak
        # grows with them (bounded_heap would stop that too, at +23% of LRP's CPU)
        with Progress(len(mine), "LRP", "batches", enabled=verbose) as progress:
            for i in mine:
                labels = calib.labels[i] if calib.labels is not None else None
                rec, chosen, rel_in, tgt = _explain_batch(model, found, calib.images[i].to(device), target, labels,
                                                          epsilon)
                missing = [s.name for s in found if s.name not in rec.abs_sum]
                if missing:
                    raise LRPUnsupportedError(
                        f"no relevance reached sites {missing}; they are not on the path from the "
                        "input to the logits in this model's forward pass"
                    )
                row = torch.stack([rec.abs_sum[s.name] for s in found], dim=1)
                done.append((i, *(t.detach().double().cpu().numpy() for t in (row, chosen, rel_in)),
                             tgt.cpu().numpy()))
                del rec, chosen, rel_in, tgt
                trim_heap()
                progress.update(1)
    finally:
        model.train(was_training)
    batches = sorted((b for part in dist.all_gather_objects(done) for b in part), key=lambda b: b[0])
    per_image = np.concatenate([b[1] for b in batches])
    mean = per_image.mean(axis=0)
    total = float(mean.sum())
    if not math.isfinite(total) or total <= 0:
        raise ValueError(
            f"total relevance is {total}; cannot normalise importance (are all target logits 0?)"
        )
    return LRPResult(
        names=[s.name for s in found],
        per_image=per_image,
        importance=mean / total,
        target_logits=np.concatenate([b[2] for b in batches]),
        input_relevance=np.concatenate([b[3] for b in batches]),
        targets=np.concatenate([b[4] for b in batches]),
    )


_BIAS_LIKE = ("bias", "pos_embed", "cls_token", "dist_token", "reg_token",
              "relative_position_bias_table")


@dataclass
class ConservationReport:
    """Where the relevance of one explained logit went (one image).

    ``logit == input + biases + softmax + residual``: ``input`` reaches the pixels, ``biases``
    is absorbed by additive parameters (linear/LN biases, position embeddings, class tokens,
    relative position biases), ``softmax`` is absorbed by the softmax rule, ``residual`` is what
    the epsilon stabiliser and floating point leave (tiny when the rules are implemented right).
    ``blocks`` maps each transformer block to (relevance entering its input, leaving its output).
    """

    logit: float
    input: float
    biases: float
    softmax: float
    residual: float
    blocks: dict[str, tuple[float, float]]


def lrp_conservation(
    model: nn.Module,
    image: torch.Tensor,
    blocks: Sequence[str] = (),
    sites: Sequence[Any] | None = None,
    target: str | int = "pred",
    epsilon: float = DEFAULT_EPSILON,
) -> ConservationReport:
    """Account for all relevance of one image's explained logit (a diagnostic, slow-ish).

    `blocks` names modules (e.g. ``blocks.0``) whose input and output relevance to report, for
    layer-by-layer conservation.
    """
    if image.dim() == 3:
        image = image[None]
    if image.shape[0] != 1:
        raise ValueError(f"lrp_conservation takes one image, got a batch of {image.shape[0]}")
    image = image.to(model_device(model))
    found = discover_sites(model, sites)
    modules = dict(model.named_modules())
    unknown = [b for b in blocks if b not in modules]
    if unknown:
        raise ValueError(f"blocks {unknown} name no module of {type(model).__name__}")
    flow: dict[str, list[float]] = {b: [0.0, 0.0] for b in blocks}
    handles = []

    def watch_io(name: str):
        def pre(mod: nn.Module, args: tuple) -> None:
            t = args[0]
            if t.requires_grad:
                v = t.detach()
                t.register_hook(lambda g: flow[name].__setitem__(0, float((v * g).sum())))

        def post(mod: nn.Module, args: tuple, out: torch.Tensor) -> None:
            if out.requires_grad:
                v = out.detach()
                out.register_hook(lambda g: flow[name].__setitem__(1, float((v * g).sum())))
        return pre, post

    was_training = model.training
    model.eval()
    # The parameter gradients of this pass are read and then dropped; the caller's own `.grad`
    # (e.g. mid-way through a training step) is put back untouched.
    saved_grads = [(p, p.grad) for p in model.parameters()]
    for p, _ in saved_grads:
        p.grad = None
    try:
        for b in blocks:
            pre, post = watch_io(b)
            handles.append(modules[b].register_forward_pre_hook(pre))
            handles.append(modules[b].register_forward_hook(post))
        rec, chosen, rel_in, _ = _explain_batch(model, found, image, target, None, epsilon,
                                                param_grads=True, softmax=True)
        biases = 0.0
        for name, p in model.named_parameters():
            if p.grad is not None and name.split(".")[-1] in _BIAS_LIKE:
                biases += float((p.detach() * p.grad).sum())
    finally:
        for h in handles:
            h.remove()
        for p, grad in saved_grads:
            p.grad = grad
        model.train(was_training)
    logit = float(chosen[0])
    inp = float(rel_in[0])
    soft = float(rec.softmax_absorbed[0]) if rec.softmax_absorbed is not None else 0.0
    return ConservationReport(
        logit=logit, input=inp, biases=biases, softmax=soft,
        residual=logit - inp - biases - soft,
        blocks={b: (v[0], v[1]) for b, v in flow.items()},
    )
