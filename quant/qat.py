"""Quantization-aware training (QAT) of a (mixed-precision) plan, starting from its PTQ model.

    qmodel, history = qat(model, plan, (images, labels), epochs=2)

Steps: :func:`quant.quantize` (PTQ: prepare, calibrate, fold, set the plan's bits) gives the
starting point; :func:`quant.lsq.make_quantizers_learnable` turns its calibrated step sizes
(and asymmetric activation offsets) into LSQ/LSQ+ parameters; then AdamW trains the weights,
LayerNorms, tokens and quantizer parameters together on :func:`quant.distill.qat_loss`
(hard-label cross-entropy plus distillation from the float model), with a cosine learning-rate
decay over the run. Rounding gradients are straight-through.

Determinism: all randomness comes from ``seed``: the batch order of epoch ``e`` is a
permutation drawn from a generator seeded with ``(seed, e)``, and torch's global generator
(dropout, drop-path) is seeded inside a forked RNG scope, so the caller's RNG state is left
untouched. Same seed, data, thread count and library versions give the same model bit for bit
on the CPU (on CUDA up to its non-deterministic kernels).

Checkpoints (``checkpoint=path``): written atomically at the end of every epoch and every
``checkpoint_every`` steps (see :mod:`quant.qat_state`). If the file exists when ``qat`` starts
and was written by the same run (model, plan, data and settings), training resumes from it, and
the result equals that of an unbroken run; a checkpoint of another run raises
:class:`~quant.errors.CheckpointMismatchError` naming what differs.
"""
from __future__ import annotations

import copy
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from .api import quantize, resolve_plan
from .config import QuantConfig
from .data_utils import _is_tensor_pair, iter_batches
from .discovery import find_quantizable_layers
from .distill import as_heads, qat_loss, teacher_logits
from .lsq import LearnedQuantizers, make_quantizers_learnable, param_groups
from .digest import module_digest, tensor_digest
from .qat_state import check_fingerprint, load_checkpoint, save_checkpoint

__all__ = ["qat"]

Batch = tuple[torch.Tensor, torch.Tensor | None]


def _model_device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def _cosine(step: int, total: int) -> float:
    """Learning-rate factor of update ``step`` (0-based) of ``total``: cosine from 1 towards 0."""
    return 0.5 * (1.0 + math.cos(math.pi * step / max(total, 1)))


def _rng_state(device: torch.device) -> dict[str, torch.Tensor]:
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict[str, torch.Tensor], device: torch.device) -> None:
    torch.set_rng_state(state["cpu"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def _fingerprint(bits: dict[str, tuple[int | None, int | None]], config: QuantConfig, model: nn.Module,
                 teacher: nn.Module | None, use_kd: bool, trainset: _TrainSet, calib_data: Any,
                 **settings: Any) -> dict[str, Any]:
    """What identifies a QAT run: a checkpoint is resumed only by a run with the same fingerprint."""
    return {
        "plan": {name: [w, a] for name, (w, a) in bits.items()},
        "config": config.to_dict(),
        "model": module_digest(model),
        "teacher": None if not use_kd else ("model" if teacher is None else module_digest(teacher)),
        "train_data": trainset.fingerprint(),
        "calib_data": "train_data" if calib_data is None else tensor_digest(
            [b.to("cpu") for b, _ in iter_batches(calib_data, batch_size=None)]),
        **settings,
    }


def qat(
    model: nn.Module,
    plan: Any,
    train_data: Any,
    epochs: int = 1,
    calib_data: Any = None,
    teacher: nn.Module | None = None,
    lr: float = 5e-4,
    kd_temperature: float = 2.0,
    kd_weight: float = 0.5,
    seed: int = 0,
    device: str | torch.device | None = None,
    checkpoint: str | Path | None = None,
    verbose: bool = True,
    max_steps: int | None = None,
    *,
    batch_size: int = 64,
    weight_decay: float = 0.0,
    checkpoint_every: int | None = None,
    config: QuantConfig = QuantConfig(),
    learn_offsets: bool = True,
    calib_size: int = 256,
) -> tuple[nn.Module, list[dict[str, float]]]:
    """Quantization-aware training of ``model`` under ``plan``; returns ``(qmodel, history)``.

    Args:
        model: float timm ViT / DeiT / Swin (not modified).
        plan: an ``allocator.Plan`` or a uniform string such as ``"W2A2"`` (see :func:`quant.quantize`).
        train_data: images ``(N, C, H, W)`` (unlabelled: distillation only), an ``(images,
            labels)`` pair of tensors, or a re-iterable of batches with a length (DataLoader).
        epochs: passes over ``train_data``.
        calib_data: PTQ calibration data (any ``calib_data`` form); ``None`` takes
            ``calib_size`` images of ``train_data`` (a seeded subset of tensors, or the first
            batches of a loader).
        teacher: distillation teacher (kept frozen, in eval mode); ``None`` means the float
            ``model`` itself. Not used when ``kd_weight == 0``.
        lr: peak learning rate of the weights (AdamW); quantizer step sizes and offsets get the
            LSQ-equivalent rates derived from it (:func:`quant.lsq.param_groups`). Cosine decay
            over the run. The default suits short runs (60 steps of 128 images on a Fashion-MNIST
            ViT at W2A2: 5e-4 and 1e-3 recovered 75% top-1, 1e-4 69%, 2e-3 72%); lower it for
            long runs on large models.
        kd_temperature, kd_weight: distillation temperature ``T`` and weight ``alpha`` of
            ``(1 - alpha) * CE + alpha * T^2 * KL`` (:func:`quant.distill.qat_loss`).
        seed: the one source of randomness (batch order, dropout).
        device: where to train (``"cpu"``, ``"cuda"``, ...); default: the model's device.
        checkpoint: path of a checkpoint to write (each epoch, and every ``checkpoint_every``
            steps) and to resume from when it exists and belongs to this run.
        verbose: tqdm progress bar with the running loss and accuracy, and a line per epoch.
        max_steps: stop after this many optimiser steps in all (the schedule spans them).
        batch_size: batch size for tensor ``train_data``.
        weight_decay: AdamW weight decay of weight matrices (never of quantizer parameters).
        checkpoint_every: also checkpoint every this many steps (mid-epoch).
        config: :class:`QuantConfig` of the PTQ starting point.
        learn_offsets: learn asymmetric activation offsets (LSQ+); ``False``: plain LSQ.
        calib_size: calibration images taken from ``train_data`` when ``calib_data`` is None.

    Returns:
        The trained fake-quant model (eval mode, on ``device``) and one record per epoch:
        ``epoch``, ``steps``, ``loss``, ``ce``, ``kd`` (NaN when off), ``train_acc`` (of the
        averaged heads, on the labelled batches; NaN without labels), ``lr_end``, ``time_s``.

    Raises:
        PlanMismatchError / ValueError / TypeError: bad plan, data or settings (before any work).
        CheckpointMismatchError: ``checkpoint`` exists but was written by a different run.
    """
    _check_args(epochs, lr, kd_temperature, kd_weight, max_steps, checkpoint_every, calib_size)
    bits = resolve_plan(plan, find_quantizable_layers(model), config)  # validates the plan first
    trainset = _TrainSet(train_data, batch_size, seed)
    dev = torch.device(device) if device is not None else _model_device(model)
    total = trainset.steps_per_epoch * epochs if max_steps is None else min(trainset.steps_per_epoch * epochs, max_steps)
    source = model if _model_device(model) == dev else copy.deepcopy(model).to(dev)
    use_kd = kd_weight > 0
    teach = (teacher if teacher is not None else source) if use_kd else None
    if teach is not None and _model_device(teach) != dev:
        teach = copy.deepcopy(teach).to(dev)
    calib = calib_data if calib_data is not None else trainset.calibration(calib_size)

    fingerprint = _fingerprint(bits, config, model, teacher if use_kd else None, use_kd, trainset, calib_data,
                               epochs=epochs, total_steps=total, batch_size=batch_size, lr=lr,
                               weight_decay=weight_decay, kd_temperature=kd_temperature, kd_weight=kd_weight,
                               seed=seed, learn_offsets=learn_offsets, calib_size=calib_size)
    ckpt_path = Path(checkpoint) if checkpoint is not None else None
    saved = None
    if ckpt_path is not None and ckpt_path.exists():  # refuse a foreign checkpoint before any work
        saved = load_checkpoint(ckpt_path)
        check_fingerprint(saved["fingerprint"], fingerprint, ckpt_path)

    qmodel = quantize(source, plan, calib, config).to(dev)
    learned = make_quantizers_learnable(qmodel, offsets=learn_offsets)
    optimizer = torch.optim.AdamW(param_groups(qmodel, learned, lr, weight_decay), lr=lr)

    state = {"step": 0, "epoch": 0, "stats": _EpochStats(), "history": [], "rng": None}
    if saved is not None:
        qmodel.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        state.update(step=saved["step"], epoch=saved["epoch"], stats=_EpochStats(**saved["stats"]),
                     history=list(saved["history"]), rng=saved["rng"])
        if verbose:
            print(f"qat: resuming from {ckpt_path} at step {saved['step']}/{total}", flush=True)
    if verbose:
        s = learned.summary()
        print(f"qat: {s['weight_step_sizes']} weight and {s['act_step_sizes']} activation step sizes, "
              f"{s['offsets']} offsets learned; {len(s['frozen'])} log2 softmax quantizers frozen; "
              f"{total} steps on {dev}", flush=True)

    def save(stats: _EpochStats) -> None:
        if ckpt_path is None:
            return
        save_checkpoint(ckpt_path, {
            "fingerprint": fingerprint, "step": state["step"], "epoch": state["epoch"], "stats": vars(stats).copy(),
            "history": state["history"], "model": qmodel.state_dict(), "optimizer": optimizer.state_dict(),
            "rng": _rng_state(dev), "learned": learned.summary(),
        })

    distilled = hasattr(qmodel, "set_distilled_training")
    teacher_was_training = teach.training if teach is not None else False
    cuda_devices = [dev.index if dev.index is not None else torch.cuda.current_device()] if dev.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=cuda_devices):
            if state["rng"] is None:
                torch.manual_seed(seed)
            else:
                _set_rng_state(state["rng"], dev)
            if teach is not None:
                teach.eval()
            if distilled:
                qmodel.set_distilled_training(True)
            qmodel.train()
            _train(qmodel, teach, learned, optimizer, trainset, state, total, epochs, dev,
                   kd_temperature, kd_weight, checkpoint_every, save, verbose)
    finally:
        if distilled:
            qmodel.set_distilled_training(False)
        if teach is not None:
            teach.train(teacher_was_training)
    return qmodel.eval(), state["history"]


def _train(qmodel: nn.Module, teacher: nn.Module | None, learned: LearnedQuantizers, optimizer: torch.optim.Optimizer,
           trainset: _TrainSet, state: dict[str, Any], total: int, epochs: int, dev: torch.device,
           kd_temperature: float, kd_weight: float, checkpoint_every: int | None, save, verbose: bool) -> None:
    """The training loop proper; advances ``state`` (step, epoch, running stats, history)."""
    spe = trainset.steps_per_epoch
    lr_now = optimizer.param_groups[0]["lr"]
    while state["step"] < total and state["epoch"] < epochs:
        epoch, stats = state["epoch"], state["stats"]
        skip = stats.steps
        todo = min(spe - skip, total - state["step"])
        bar = tqdm(total=skip + todo, initial=skip, desc=f"qat epoch {epoch + 1}/{epochs}",
                   disable=None if verbose else True, leave=False)
        for images, labels in trainset.batches(epoch, skip):
            t0 = time.perf_counter()
            factor = _cosine(state["step"], total)
            for group in optimizer.param_groups:
                group["lr"] = group["base_lr"] * factor
            lr_now = optimizer.param_groups[0]["lr"]
            images = images.to(dev, non_blocking=True)
            labels = labels.to(dev, non_blocking=True) if labels is not None else None
            out = as_heads(qmodel(images))
            t_out = teacher_logits(teacher, images) if teacher is not None else None
            loss, parts = qat_loss(out, labels, t_out, kd_temperature, kd_weight)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            learned.project_()
            correct = None
            if labels is not None:
                correct = int((torch.stack(out).mean(dim=0).argmax(-1) == labels).sum())
            stats.add(images.shape[0], float(loss.detach()), parts, correct)
            stats.time_s += time.perf_counter() - t0
            state["step"] += 1
            bar.update(1)
            bar.set_postfix(loss=f"{stats.loss / stats.seen:.4f}",
                            acc=f"{stats.correct / stats.labelled:.4f}" if stats.labelled else "n/a")
            if state["step"] >= total:
                break
            if checkpoint_every and state["step"] % checkpoint_every == 0 and stats.steps < spe:
                save(stats)
        bar.close()
        record = stats.record(epoch + 1, lr_now, teacher is not None)
        state["history"].append(record)
        state["epoch"], state["stats"] = epoch + 1, _EpochStats()
        save(state["stats"])
        if verbose:
            acc = f"{record['train_acc']:.4f}" if record["train_acc"] == record["train_acc"] else "n/a"
            print(f"qat epoch {epoch + 1}/{epochs}: loss {record['loss']:.4f} (ce {record['ce']:.4f}, "
                  f"kd {record['kd']:.4f}) train acc {acc} lr {lr_now:.2e} {record['time_s']:.0f}s", flush=True)
