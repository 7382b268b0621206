"""Optional output reconstruction after PTQ: learned weight rounding block by block (AdaRound /
BRECQ), then the quantizer scales network-wide.

After calibration each quantizer's range was chosen to minimise *its own* error, and each
weight's rounding (GPTQ, ``QuantConfig.weight_rounding="gptq"``) its own layer's; the errors
still add up through the network. Two stages, both fitted to the float model on the
calibration images:

1. ``rounding_steps > 0``: learned rounding (:mod:`quant.adaround`). Each unit in forward
   order -- a transformer block, or with ``rounding_units="all"`` (the default) the module
   around the quantized weights outside the blocks (patch embedding, Swin's patch merging, each
   head; :func:`quant.adaround.find_units`): the rounding of its weights (up or down from the
   GPTQ-compensated weights, starting at GPTQ's choice), optionally jointly with the unit's
   step sizes and offsets, is fitted so that the unit's output on the inputs the already-fitted
   quantized units produce matches the float model's output of that unit (BRECQ; for a head,
   its logits). One code path for every unit: a unit is any module called as ``unit(x)``. The
   weights are then hardened to integer codes on the same grid; a unit whose hardened output
   error ends above its starting error is put back as it started. A head (one output vector
   per image) with fewer calibration images than input features is not fitted: it would fit
   the calibration logits rather than the function (:func:`_too_few_images`).
2. ``steps > 0``: every step size and offset of the quantized model (LSQ/LSQ+ parameters,
   :func:`quant.make_quantizers_learnable`; the log softmax quantizer stays frozen) is fitted
   so that the model's output features and logits match the float model's. Weights (now on
   their grid), LayerNorms and biases stay frozen: a few thousand scale parameters, which 32
   calibration images constrain well (``images x tokens x width`` targets).

With ``check_data`` (images the stages do not fit, e.g. more training images than the
calibration set), the whole reconstruction is kept only if it lowers the KL divergence of the
quantized from the float model's class probabilities on them; otherwise the model is put back
as :func:`quant.quantize` left it. The put-back rule of stage 1 judges each unit on the
calibration images it was fitted on; a plan already close to float (the demo's mixed W3A3 on the
ViT: most of its blocks' weights at 2 bits, each put back, and one block whose fit lowered its
error on the calibration images) can still end worse on unseen images (held-out KL 0.0257 ->
0.029-0.032, test top-1 89.15 -> 88.84-89.10 over 3 fits), which only a check on other images
sees. The check guards fidelity to the float model, not top-1: over the 54 learned-rounding fits
of docs/benchmarks.md's RepQ-ViT table, test top-1 moved the way its verdict said in 34 (-0.04
on average with it), so nothing in the library checks unless asked (``--reconstruct-check N``).

Cost: stage 2 is ``steps`` forward+backward passes of a calibration batch through the model;
stage 1 ``rounding_steps`` passes through each unit (about ``rounding_steps`` model passes in
all: the units outside the blocks are small) plus one forward of the calibration set per unit.
Bit-specific, so it runs after :func:`quant.quantize` with the plan's bits, not during profiling.
"""
from __future__ import annotations

import copy
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from .act_quantizers import ActQuantizer
from .adaround import UNITS, attach_rounding, beta_schedule, find_units
from .data_utils import iter_images
from .lsq import LearnedQuantizers, make_quantizers_learnable, param_groups
from .settle import settle_constant_inputs

__all__ = ["reconstruct", "fit_rounding", "output_fisher", "BlockFit", "HeldOutCheck", "LOSSES"]

#: How a unit's output error is measured in learned rounding (:func:`fit_rounding`'s ``loss``).
LOSSES = ("mse", "fisher", "fisher-mean")


@dataclass
class BlockFit:
    """What stage 1 did to one unit (``block``: its module name; a transformer block or, outside
    the blocks, e.g. ``patch_embed`` or ``head``): its hardened output error on the calibration
    inputs before and after fitting (mean squared error over the float output's variance), the
    share of its weight codes that changed, whether it was put back as it started, and whether it
    was left unfitted (``skipped``: :func:`_too_few_images`)."""

    block: str
    start_error: float
    end_error: float
    flipped: float
    reverted: bool
    skipped: bool = False


@dataclass
class HeldOutCheck:
    """The model-level check of :func:`reconstruct` on ``check_data`` (``images`` of them): the KL
    divergence of the quantized from the float model's class probabilities (mean per image) before
    and after the reconstruction, and whether the reconstruction was kept (``kl_after <
    kl_before``) or the model put back as it was."""

    images: int
    kl_before: float
    kl_after: float
    kept: bool


@torch.no_grad()
def _logit_kl(qmodel: nn.Module, float_logits: list[torch.Tensor], images: torch.Tensor, batch_size: int) -> float:
    """Mean KL divergence of ``qmodel``'s class probabilities from ``float_logits`` (one tensor
    per batch of ``images``), summed in float64 so the comparison does not hinge on the order."""
    total = 0.0
    for k, target in enumerate(float_logits):
        logits = _features(qmodel, images[k * batch_size:(k + 1) * batch_size])[1]
        total += float(F.kl_div(F.log_softmax(logits.double(), -1), F.log_softmax(target.double(), -1),
                                log_target=True, reduction="sum"))
    return total / len(images)


def _take_over(target: nn.Module, source: nn.Module) -> None:
    """Make ``target`` the module ``source`` is, in place (its submodules, parameters, buffers,
    quantizer state): callers holding ``target`` see the restored model."""
    target.__dict__.update(source.__dict__)


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


@contextmanager
def _only_trainable(qmodel: nn.Module, learned: LearnedQuantizers | None) -> Iterator[None]:
    """While active, only the learned quantizer parameters (none when ``learned`` is None)
    require gradients; the caller's flags come back afterwards."""
    learnable = {id(p) for p in learned.parameters()} if learned is not None else set()
    was_trainable = {p: p.requires_grad for p in qmodel.parameters()}
    for p in was_trainable:
        p.requires_grad_(id(p) in learnable)
    try:
        yield
    finally:
        for p, flag in was_trainable.items():
            p.requires_grad_(flag)


class _Reached(Exception):
    """Raised by a pre-hook to stop a forward pass once the wanted input was recorded."""


@torch.no_grad()
def _at_block(net: nn.Module, block: nn.Module, images: torch.Tensor, batch_size: int, output: bool) -> torch.Tensor:
    """The input (or output) of ``block`` (any module of ``net`` called once per forward as
    ``block(x)``: a transformer block or another rounding unit) for every image; each forward
    stops there, so only one unit's tensors are held at a time."""
    seen: list[torch.Tensor] = []

    def record_input(module: nn.Module, args: tuple, kwargs: dict) -> None:
        if len(args) != 1 or any(v is not None for v in kwargs.values()):
            raise ValueError(f"fit_rounding: unit {type(module).__name__} is called with more than one input; "
                             "only modules called as module(x) can be reconstructed")
        seen.append(args[0].detach())
        raise _Reached

    def record_output(module: nn.Module, args: tuple, out: torch.Tensor) -> None:
        seen.append(out.detach())
        raise _Reached

    handle = (block.register_forward_hook(record_output) if output
              else block.register_forward_pre_hook(record_input, with_kwargs=True))
    try:
        for i in range(0, len(images), batch_size):
            try:
                net(images[i:i + batch_size])
            except _Reached:
                pass
    finally:
        handle.remove()
    if not seen:
        raise ValueError(f"fit_rounding: unit {type(block).__name__} is not called in the model's forward pass; "
                         "learned rounding needs every quantized weight inside a module called as module(x) "
                         "(pass rounding_units='blocks' to round only the transformer blocks)")
    return torch.cat(seen)


@torch.no_grad()
def _forward_order(net: nn.Module, names: list[str], x: torch.Tensor) -> list[str]:
    """``names`` sorted by when each module is first called in ``net(x)``: a unit must be fitted
    after every unit that feeds it (registration order is not forward order in general, e.g. a
    head registered before the blocks). A module that is never called goes last and is refused
    by :func:`_at_block`."""
    called: list[str] = []
    handles = [net.get_submodule(n).register_forward_pre_hook(lambda m, a, n=n: called.append(n)) for n in names]
    try:
        net(x)
    finally:
        for h in handles:
            h.remove()
    first = {n: i for i, n in reversed(list(enumerate(called)))}
    return sorted(names, key=lambda n: first.get(n, len(called)))


def _too_few_images(inputs: torch.Tensor, target: torch.Tensor) -> bool:
    """Whether a unit outputs one vector per image (no token or spatial axis: a classifier head)
    and has fewer calibration images than its input features. Its input vectors then span only
    part of its input space and its targets are just ``images x classes`` values, so the
    rounding and scales fit those logits rather than the function. Measured on the DeiT with 32
    images, W4A4 (draw 0): the head's logit error on the calibration images fell from 0.0148 to
    0.0074 while on 1,000 test images it rose from 0.0164 to 0.0205 (head_dist: 0.0114 ->
    0.0150; the Swin's head 0.0187 -> 0.0219). With 256 images both the heads' calibration and
    test errors fall (DeiT 0.0121 -> 0.0120, Swin 0.0113 -> 0.0111), and units with a token
    axis (patch embedding, patch merging) generalise at 32 images too (Swin's patch merging:
    test error 0.0278 -> 0.0196). Such a head keeps its rounding (GPTQ's, whose Hessian is
    damped)."""
    return target.dim() == 2 and target.shape[0] < inputs.shape[-1]


def _unit_loss(out: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    """Squared error of a unit's output, averaged over its elements; with ``weight`` (same shape,
    mean 1: :func:`output_fisher`) each element's error counts that much. Unweighted it is
    ``F.mse_loss`` itself: the fit amplifies any last-bit change of its loss into other roundings
    (``benchmarks.fit_divergence``), so the unweighted arithmetic stays what it was."""
    if weight is None:
        return F.mse_loss(out, target)
    return ((out - target).pow(2) * weight).mean()


def _check_loss(where: str, arg: str, loss: str) -> None:
    """Refuse an unknown unit loss before any work, naming the argument as the caller spells it."""
    if loss not in LOSSES:
        raise ValueError(f"{where}: {arg}={loss!r}; expected one of {LOSSES} ('mse': every output element alike; "
                         "'fisher': weighted by the squared output gradient per image; 'fisher-mean': by its mean "
                         "over the images)")


@torch.no_grad()
def _block_error(block: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, batch_size: int,
                 weight: torch.Tensor | None = None) -> float:
    """Mean squared error of the block's output (each element weighted by ``weight`` when given)
    over the targets' variance, on all inputs."""
    sq = 0.0
    for i in range(0, len(inputs), batch_size):
        err = (block(inputs[i:i + batch_size]) - targets[i:i + batch_size]).pow(2)
        sq += float((err if weight is None else err * weight[i:i + batch_size]).sum())
    return sq / targets.numel() / max(float(targets.var()), 1e-12)


def output_fisher(qmodel: nn.Module, model: nn.Module, images: torch.Tensor, names: list[str],
                  batch_size: int = 32) -> dict[str, torch.Tensor]:
    """Per unit (module names ``names`` of ``qmodel``, each called once per forward as
    ``unit(x)``), the squared gradient of the quantized model's output loss with respect to each
    element of the unit's output, for every image, scaled to mean 1 per unit: the diagonal
    Fisher approximation with which BRECQ (Li et al. 2021) weights a block's output error, so the
    fit spends its freedom where an output error changes the prediction.

    The loss is the KL divergence of the quantized model's class probabilities from the float
    model's, summed over images (each image's gradient is its own): at the float model itself
    every such gradient is zero, so it is taken at ``qmodel`` as calibrated (fake quantization
    passes gradients straight through). For a unit whose output is the logits, the gradient of
    an image is ``softmax(q) - softmax(f)``. A unit whose gradients are all zero gets weight 1.
    """
    grads: dict[str, list[torch.Tensor]] = {n: [] for n in names}

    def keep_grad(name: str):
        def hook(module: nn.Module, args: tuple, out: torch.Tensor) -> None:
            out.register_hook(lambda g: grads[name].append(g.detach().pow(2)))
        return hook

    handles = [qmodel.get_submodule(n).register_forward_hook(keep_grad(n)) for n in names]
    try:
        with torch.enable_grad(), _only_trainable(qmodel, None):  # gradients reach the outputs only
            for i in range(0, len(images), batch_size):
                x = images[i:i + batch_size].detach().requires_grad_(True)
                with torch.no_grad():
                    p_float = F.log_softmax(model(x.detach()), -1)
                loss = F.kl_div(F.log_softmax(qmodel(x), -1), p_float, log_target=True, reduction="sum")
                loss.backward()
    finally:
        for h in handles:
            h.remove()
    fisher = {}
    for name, parts in grads.items():
        if not parts:
            raise ValueError(f"output_fisher: unit {name!r} is not called in the model's forward pass")
        g = torch.cat(parts)
        mean = float(g.mean())
        fisher[name] = g / mean if mean > 0 else torch.ones_like(g)
    return fisher


def fit_rounding(qmodel: nn.Module, model: nn.Module, images: torch.Tensor, learned: LearnedQuantizers,
                 steps: int, lr: float = 1e-2, reg: float = 0.01, scales: bool = True, scale_lr: float = 1e-3,
                 batch_size: int = 32, gen: torch.Generator | None = None, verbose: bool = False,
                 units: str = "all", drop: float = 0.0, loss: str = "mse") -> list[BlockFit]:
    """Stage 1 of :func:`reconstruct` on ``qmodel`` in place (its quantizers made learnable as
    ``learned``); returns one :class:`BlockFit` per unit (:func:`quant.adaround.find_units` with
    ``units``), in forward order.

    Per unit: ``steps`` Adam steps (learning rate ``lr`` on the rounding variables; with
    ``scales`` also on the unit's step sizes and offsets at the LSQ-equivalent rates of
    ``scale_lr``) on random batches of ``batch_size`` inputs, minimising the normalised unit
    output error plus ``reg`` times the mean rounding regulariser (annealed,
    :func:`quant.adaround.beta_schedule`). With ``drop`` (QDrop) each element of the unit's
    activation quantizers' outputs stays float with that probability during those steps (not
    when its errors are measured), so the rounding is fitted for many upstream error patterns.
    ``loss``: ``"mse"`` weighs every output element alike; ``"fisher"`` weighs each element of
    each image by :func:`output_fisher`, measured once on ``qmodel`` before the first unit is
    fitted (BRECQ's choice); ``"fisher-mean"`` by its mean over the images, one weight per output
    position (token and channel): the diagonal Fisher estimated over the calibration set rather
    than from one image, so e.g. a ViT's last block is fitted on its class token, the one token
    the head reads. The reported errors and the put-back rule use the weighted error.
    """
    _check_loss("fit_rounding", "loss", loss)
    names = find_units(qmodel, units)
    if not names:
        raise ValueError(f"fit_rounding: nothing to round with units={units!r}: " + (
            "the model has no transformer block (a module whose class name ends in 'Block'); pass units='all'"
            if units == "blocks" else "the model has no quantized weight; quantize it with weight bits first"))
    names = _forward_order(qmodel, names, images[:1])
    weights = output_fisher(qmodel, model, images, names, batch_size) if loss != "mse" else {}
    if loss == "fisher-mean":
        weights = {n: w.mean(0, keepdim=True).expand_as(w) for n, w in weights.items()}
    gen = gen if gen is not None else torch.Generator().manual_seed(0)
    # One random stream per unit, from one draw of ``gen`` and the unit's name: a unit's batches
    # do not depend on how many units were fitted before it. (With one shared stream, adding a
    # unit before the blocks re-drew every block's batches, and that alone moved the Swin's
    # W4A4 top-1 by up to 1 point on 2,000 test images: the comparison of unit sets was noise.)
    base = int(torch.randint(2**62, (1,), generator=gen))
    groups = param_groups(qmodel, learned, scale_lr) if scales else []
    fits = []
    with _only_trainable(qmodel, learned):
        for name in tqdm(names, desc="rounding", disable=None if verbose else True, leave=False):
            unit = qmodel.get_submodule(name)
            inputs = _at_block(qmodel, unit, images, batch_size, output=False)
            target = _at_block(model, model.get_submodule(name), images, batch_size, output=True)
            unit_gen = torch.Generator().manual_seed(base + zlib.crc32(name.encode()))
            fits.append(_fit_unit(name, unit, inputs, target, steps, lr, reg,
                                  [g for g in groups if g["name"].startswith(name + ".")], learned, batch_size,
                                  unit_gen, drop, weights.get(name)))
    return fits


def _fit_unit(name: str, unit: nn.Module, inputs: torch.Tensor, target: torch.Tensor, steps: int, lr: float,
              reg: float, scale_groups: list[dict], learned: LearnedQuantizers, batch_size: int,
              gen: torch.Generator, drop: float = 0.0, weight: torch.Tensor | None = None) -> BlockFit:
    """Fit one unit (a block or any other module called as ``unit(x)``) and harden it; ``weight``
    (one per output element, or None) weighs its output error."""
    skipped = _too_few_images(inputs, target)
    roundings = [] if skipped else list(attach_rounding(unit).values())
    if not roundings:  # a unit whose weights are all float (nothing to round), or skipped
        err = _block_error(unit, inputs, target, batch_size, weight)
        return BlockFit(name, err, err, 0.0, False, skipped)
    start_codes = [r.codes() for r in roundings]
    start_scales = [p.detach().clone() for g in scale_groups for p in g["params"]]
    start_error = _block_error(unit, inputs, target, batch_size, weight)
    variance = max(float(target.var()), 1e-12)
    opt = torch.optim.Adam([{"params": [r.v for r in roundings], "lr": lr}, *scale_groups])
    for r in roundings:
        r.soft = True
    hooks = [aq.register_forward_hook(_dropping(drop, gen)) for aq in unit.modules()
             if isinstance(aq, ActQuantizer)] if drop > 0 else []
    try:
        for step in range(steps):
            idx = torch.randperm(len(inputs), generator=gen)[:batch_size]
            loss = _unit_loss(unit(inputs[idx]), target[idx], None if weight is None else weight[idx]) / variance
            beta = beta_schedule(step, steps)
            if beta is not None:
                loss = loss + reg * sum(r.regulariser(beta) for r in roundings) / len(roundings)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            learned.project_()
    finally:
        for h in hooks:
            h.remove()
        for r in roundings:
            r.soft = False
    end_error = _block_error(unit, inputs, target, batch_size, weight)
    reverted = end_error > start_error
    if reverted:  # put the unit back as it started: hard codes and scales
        with torch.no_grad():
            for r, codes in zip(roundings, start_codes):
                r.v.copy_(torch.where(codes > r.base, 1.0, -1.0))
            for p, s in zip((p for g in scale_groups for p in g["params"]), start_scales):
                p.copy_(s)
        end_error = start_error
    changed = sum(int((r.codes() != c).sum()) for r, c in zip(roundings, start_codes))
    total = sum(c.numel() for c in start_codes)
    for r in roundings:
        r.harden_()
    return BlockFit(name, start_error, end_error, changed / total, reverted)


def reconstruct(qmodel: nn.Module, model: nn.Module, calib_data, steps: int = 100, lr: float = 1e-3,
                batch_size: int = 32, seed: int = 0, verbose: bool = False, drop: float = 0.0,
                rounding_steps: int = 0, rounding_lr: float = 1e-2, rounding_reg: float = 0.01,
                rounding_scales: bool = True, rounding_units: str = "all", rounding_drop: float = 0.0,
                rounding_loss: str = "mse", report: list | None = None, check_data=None) -> nn.Module:
    """Fit ``qmodel`` (from :func:`quant.quantize`) to the float ``model`` on ``calib_data``, in
    place; returns ``qmodel`` in eval mode. See the module docstring for the two stages.

    Stage 1 runs when ``rounding_steps > 0`` (:func:`fit_rounding` with ``rounding_lr``,
    ``rounding_reg``, ``rounding_scales``, ``rounding_units`` and ``lr`` for the scales); its
    :class:`BlockFit` records (one per unit) are appended to ``report`` when given;
    ``rounding_drop`` is its QDrop probability and ``rounding_loss`` its unit loss (``"mse"``,
    or BRECQ's output-gradient weighting per image, ``"fisher"``, or per output position,
    ``"fisher-mean"``: :func:`fit_rounding`). Stage 2 runs when ``steps > 0``: loss per
    batch is the mean squared error of the output features over their variance in the float
    model plus the KL divergence of the logits; Adam over the LSQ parameter groups
    (:func:`quant.lsq.param_groups`), step sizes kept positive after each step. With ``drop``
    (QDrop, Wei et al., ICLR 2022) each activation quantizer's output element stays float
    with that probability during stage 2. Ends with :func:`quant.settle.settle_constant_inputs`
    (as ``quantize`` does): the fitted scales and weights move the image-independent inputs.
    Deterministic for a given ``seed``.

    ``check_data`` (any form ``calib_data`` accepts; ``None``: no check): images to judge the
    whole reconstruction on (module docstring); its :class:`HeldOutCheck` is appended to
    ``report`` after the units' records. It should not overlap the calibration images, which the
    stages have fitted.
    """
    if steps < 0 or rounding_steps < 0 or steps + rounding_steps == 0:
        raise ValueError(f"reconstruct: steps={steps}, rounding_steps={rounding_steps}; expected both >= 0 and at "
                         "least one > 0 (steps: network-wide scale fitting; rounding_steps: learned rounding per block)")
    for arg, p in (("drop", drop), ("rounding_drop", rounding_drop)):
        if not 0.0 <= p < 1.0:
            raise ValueError(f"reconstruct: {arg}={p}; expected 0 <= {arg} < 1 (the share of activations kept float "
                             "while fitting)")
    if rounding_lr <= 0 or rounding_reg < 0:
        raise ValueError(f"reconstruct: rounding_lr={rounding_lr}, rounding_reg={rounding_reg}; expected "
                         "rounding_lr > 0 and rounding_reg >= 0")
    _check_loss("reconstruct", "rounding_loss", rounding_loss)
    if rounding_units not in UNITS:
        raise ValueError(f"reconstruct: rounding_units={rounding_units!r}; expected one of {UNITS} ('all': every "
                         "quantized weight; 'blocks': only those inside transformer blocks)")
    images = torch.cat([b for b in iter_images(calib_data, None)])
    device = next(qmodel.parameters()).device
    images = images.to(device)
    model.eval()
    qmodel.eval()  # no dropout; quantizers train through their parameters only
    check = _HeldOut(qmodel, model, check_data, device, batch_size) if check_data is not None else None
    learned = make_quantizers_learnable(qmodel)
    gen = torch.Generator().manual_seed(seed)
    if rounding_steps:
        fits = fit_rounding(qmodel, model, images, learned, rounding_steps, rounding_lr, rounding_reg,
                            rounding_scales, lr, batch_size, gen, verbose, rounding_units, rounding_drop,
                            rounding_loss)
        if report is not None:
            report.extend(fits)
    if steps:
        _fit_scales(qmodel, model, images, learned, steps, lr, batch_size, gen, drop, verbose)
    settle_constant_inputs(qmodel, images.shape[1:])  # the fitted scales and weights move the constants
    if check is not None:
        verdict = check.judge(qmodel.eval())
        if report is not None:
            report.append(verdict)
    return qmodel.eval()


class _HeldOut:
    """The model as :func:`quant.quantize` left it, with its KL on the check images, so that
    :meth:`judge` can keep the reconstruction or put that model back."""

    def __init__(self, qmodel: nn.Module, model: nn.Module, check_data, device: torch.device, batch_size: int):
        batches = [b for b in iter_images(check_data, None) if len(b)]
        if not batches:
            raise ValueError("reconstruct: check_data holds no image; pass None for no check")
        self.images = torch.cat(batches).to(device)
        self.batch_size = batch_size
        with torch.no_grad():
            self.float_logits = [_features(model, self.images[i:i + batch_size])[1]
                                 for i in range(0, len(self.images), batch_size)]
        self.before = _logit_kl(qmodel, self.float_logits, self.images, batch_size)
        self.start = copy.deepcopy(qmodel)

    def judge(self, qmodel: nn.Module) -> HeldOutCheck:
        after = _logit_kl(qmodel, self.float_logits, self.images, self.batch_size)
        kept = after < self.before
        if not kept:
            _take_over(qmodel, self.start)
        return HeldOutCheck(len(self.images), self.before, after, kept)


def _fit_scales(qmodel: nn.Module, model: nn.Module, images: torch.Tensor, learned: LearnedQuantizers, steps: int,
                lr: float, batch_size: int, gen: torch.Generator, drop: float, verbose: bool) -> None:
    """Stage 2 of :func:`reconstruct`: every step size and offset against features and logits."""
    with torch.no_grad():
        target_feats, target_logits = zip(*(_features(model, images[i:i + batch_size])
                                             for i in range(0, len(images), batch_size)))
    hooks = [aq.register_forward_hook(_dropping(drop, gen)) for aq in qmodel.modules()
             if isinstance(aq, ActQuantizer)] if drop > 0 else []
    try:
        with _only_trainable(qmodel, learned):
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
