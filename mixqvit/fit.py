"""The training loop of the demo models: schedule, augmentation, distillation targets, ``fit``.

What the recipes in :mod:`mixqvit.recipes` mean in code; :mod:`mixqvit.train` runs them and
records the result. See :mod:`mixqvit.train` for the recipe's reasons and determinism.
"""
from __future__ import annotations

import math
import time
from typing import Any, Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from quant import model_device

from .data import FMNIST_MEAN, FMNIST_STD
from .datasets import EvalData
from .evaluation import evaluate_top1
from .recipes import TrainConfig

__all__ = ["TeacherTargets", "accuracy", "augment", "fit", "lr_at"]


def lr_at(step: int, total_steps: int, warmup_steps: int, lr: float, min_lr: float) -> float:
    """Learning rate of a step: linear warm-up from lr/warmup to lr, then cosine down to min_lr."""
    if warmup_steps > 0 and step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return min_lr + 0.5 * (lr - min_lr) * (1.0 + math.cos(math.pi * min(1.0, progress)))


def augment(
    images: torch.Tensor,
    generator: torch.Generator,
    padding: int,
    hflip: bool,
    return_flips: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Random translation by up to ``padding`` pixels and random horizontal flip, batched.

    Padding uses the normalised background value (pixel 0), so shifted images look like real ones.
    With ``return_flips`` also returns the boolean mask of flipped images.
    """
    n, _, h, w = images.shape
    out = images
    if padding > 0:
        background = (0.0 - FMNIST_MEAN) / FMNIST_STD
        padded = F.pad(images, (padding, padding, padding, padding), value=background)
        dy = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
        dx = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
        rows = (dy[:, None] + torch.arange(h)[None, :])[:, None, :, None]  # (n,1,h,1)
        cols = (dx[:, None] + torch.arange(w)[None, :])[:, None, None, :]  # (n,1,1,w)
        batch = torch.arange(n)[:, None, None, None]
        out = padded[batch, torch.arange(images.shape[1])[None, :, None, None], rows, cols]
    flip = torch.zeros(n, dtype=torch.bool)
    if hflip:
        flip = torch.rand(n, generator=generator) < 0.5
        out = torch.where(flip[:, None, None, None], out.flip(-1), out)
    return (out, flip) if return_flips else out


class TeacherTargets:
    """The teacher's logits for each augmented training batch.

    When flipping is the only augmentation (``crop_padding == 0``), every augmented image is one of
    two fixed images (as is or mirrored), and the teacher in eval mode is a fixed function, so its
    logits are computed once per image and orientation before training and looked up afterwards:
    the same targets for about a third less compute per epoch. With translation the teacher runs
    on every batch.
    """

    def __init__(self, teacher: nn.Module, images: torch.Tensor, cfg: TrainConfig) -> None:
        self.teacher = teacher.eval()
        self.cache: torch.Tensor | None = None
        device = model_device(teacher)
        if cfg.crop_padding == 0:
            with torch.no_grad():
                self.cache = torch.stack(
                    [
                        torch.cat([teacher(v[i : i + cfg.eval_batch_size].to(device))
                                   for i in range(0, len(v), cfg.eval_batch_size)])
                        for v in (images, images.flip(-1))
                    ]
                )  # (2, N, classes): [orientation, image]

    def __call__(self, x: torch.Tensor, idx: torch.Tensor, flipped: torch.Tensor) -> torch.Tensor:
        """Teacher logits for the augmented batch ``x`` of training images ``idx``."""
        if self.cache is not None:
            return self.cache[flipped.long().to(self.cache.device), idx.to(self.cache.device)]
        with torch.no_grad():
            return self.teacher(x)


def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int) -> float:
    """Top-1 in fixed batches (the batch size is recorded with the results)."""
    return evaluate_top1(model, EvalData(images, labels), batch_size=batch_size, verbose=False)


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    skip = set(getattr(model, "no_weight_decay", lambda: set())())
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if p.ndim <= 1 or name in skip or name.endswith("_token") or "pos_embed" in name:
            no_decay.append(p)
        else:
            decay.append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _loss(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    cfg: TrainConfig,
    t_logits: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Training loss and the logits used to count training accuracy (``t_logits``: teacher's)."""
    out = model(x)
    if t_logits is None:
        return F.cross_entropy(out, y, label_smoothing=cfg.label_smoothing), out
    logits, logits_dist = out
    base = F.cross_entropy(logits, y, label_smoothing=cfg.label_smoothing)
    if cfg.distill == "hard":
        dist = F.cross_entropy(logits_dist, t_logits.argmax(-1))
    else:
        tau = cfg.distill_tau
        dist = F.kl_div(
            F.log_softmax(logits_dist / tau, -1), F.log_softmax(t_logits / tau, -1), reduction="batchmean", log_target=True
        ) * (tau * tau)
    return 0.5 * base + 0.5 * dist, (logits + logits_dist) / 2


def _batches(n: int, batch_size: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
    perm = torch.randperm(n, generator=generator)
    for start in range(0, n - batch_size + 1, batch_size):  # drop the ragged last batch
        yield perm[start : start + batch_size]


def fit(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    cfg: TrainConfig,
    generator: torch.Generator,
    teacher: nn.Module | None = None,
    max_steps: int | None = None,
    verbose: bool = True,
    log: Callable[[str], None] = print,
    monitor: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> list[dict[str, float]]:
    """Train ``model`` in place; return one record per epoch (loss, train accuracy, lr, seconds).

    Each record holds wall time ``time_s`` and process CPU time ``cpu_s``: on a shared machine the
    CPU time of a 1-thread run is what the run would take on an idle core.

    ``max_steps`` stops early (used by tests); the learning-rate schedule still spans ``cfg.epochs``.
    Training runs where ``model`` is (``images`` stay on the CPU, where the seeded augmentation
    draws; each batch moves to the model's device).
    ``monitor`` = (images, labels) is evaluated after every epoch (``test_acc``, timed apart in
    ``eval_s``) to show the learning curve; nothing is selected on it. With a teacher, the first
    epoch's time includes the teacher's pass over the training set (see :class:`TeacherTargets`).
    """
    from tqdm.auto import tqdm

    if len(images) < cfg.batch_size:
        raise ValueError(f"need at least one batch: {len(images)} images < batch_size {cfg.batch_size}")
    if teacher is not None:
        if cfg.distill is None:
            raise ValueError("a teacher was given but the recipe has distill=None")
        if not hasattr(model, "set_distilled_training"):
            raise ValueError(f"distillation needs a model with a distillation head, got {type(model).__name__}")
        model.set_distilled_training(True)
        teacher.eval()
    device = model_device(model)
    steps_per_epoch = len(images) // cfg.batch_size
    total = steps_per_epoch * cfg.epochs
    warmup = int(round(cfg.warmup_epochs * steps_per_epoch))
    opt = torch.optim.AdamW(_param_groups(model, cfg.weight_decay), lr=cfg.lr)
    model.train()
    history: list[dict[str, float]] = []
    step = 0
    targets: TeacherTargets | None = None
    try:
        for epoch in range(cfg.epochs):
            t0, cpu0 = time.perf_counter(), time.process_time()
            if teacher is not None and targets is None:
                targets = TeacherTargets(teacher, images, cfg)
            loss_sum, correct, seen = 0.0, 0, 0
            bar = tqdm(
                _batches(len(images), cfg.batch_size, generator),
                total=steps_per_epoch,
                desc=f"epoch {epoch + 1}/{cfg.epochs}",
                disable=None if verbose else True,
                leave=False,
            )
            for idx in bar:
                lr = lr_at(step, total, warmup, cfg.lr, cfg.min_lr)
                for group in opt.param_groups:
                    group["lr"] = lr
                x, flipped = augment(images[idx], generator, cfg.crop_padding, cfg.hflip, return_flips=True)
                x, y = x.to(device), labels[idx].to(device)
                t_logits = targets(x, idx, flipped) if targets is not None else None
                loss, logits = _loss(model, x, y, cfg, t_logits)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.grad_clip is not None:
                    nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                opt.step()
                loss_sum += float(loss.detach()) * len(y)
                correct += int((logits.argmax(-1) == y).sum())
                seen += len(y)
                step += 1
                bar.set_postfix(loss=f"{loss_sum / seen:.4f}", acc=f"{correct / seen:.4f}")
                if max_steps is not None and step >= max_steps:
                    break
            bar.close()
            record = {
                "epoch": epoch + 1,
                "loss": loss_sum / seen,
                "train_acc": correct / seen,
                "lr_end": lr,
                "time_s": time.perf_counter() - t0,
                "cpu_s": time.process_time() - cpu0,
            }
            if monitor is not None:
                t_eval = time.perf_counter()
                record["test_acc"] = accuracy(model, monitor[0], monitor[1], cfg.eval_batch_size)
                record["eval_s"] = time.perf_counter() - t_eval
            history.append(record)
            if verbose:
                log(
                    f"epoch {epoch + 1}/{cfg.epochs}: loss {record['loss']:.4f} train acc "
                    f"{record['train_acc']:.4f}"
                    + (f" test acc {record['test_acc']:.4f}" if monitor is not None else "")
                    + f" lr {lr:.2e} {record['time_s']:.0f}s",
                )
            if max_steps is not None and step >= max_steps:
                break
    finally:
        if teacher is not None:
            model.set_distilled_training(False)
    model.eval()
    return history
