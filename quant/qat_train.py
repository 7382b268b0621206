"""Quantization-aware training (QAT) of a (mixed-precision) plan, starting from its PTQ model.

    qmodel, history = qat(model, plan, (images, labels), config=QATConfig(epochs=2))

*What* it trains with (model, plan, data, teacher, checkpoint path, device) are arguments; *how*
(schedule, loss weights, seed, PTQ settings) is one serialisable :class:`quant.QATConfig`.

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

Several processes (``torchrun``, see :mod:`quant.dist`): the model is wrapped in
``DistributedDataParallel`` and every global batch of ``config.batch_size`` images is split
across the processes; each process's loss is weighted by its share of the batch, so the
averaged gradient, the updates and the recorded loss curve are those of one process with the
same global batch (up to float summation order). Rank 0 writes checkpoints and prints.
"""
from __future__ import annotations

import copy
import math
import time
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from . import dist
from .api import quantize, resolve_plan
from .data_utils import iter_batches, iter_images
from .device import check_device, model_device
from .digest import module_digest, tensor_digest
from .discovery import find_quantizable_layers
from .distill import as_heads, qat_loss, teacher_logits
from .lsq import LearnedQuantizers, make_quantizers_learnable, param_groups
from .progress import Progress
from .qat_config import QATConfig
from .qat_data import EpochStats, TrainSet
from .qat_state import check_fingerprint, load_checkpoint, save_checkpoint
from .settle import settle_constant_inputs

__all__ = ["qat"]


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


def _fingerprint(bits: dict[str, tuple[int | None, int | None]], config: QATConfig, model: nn.Module,
                 teacher: nn.Module | None, trainset: TrainSet, calib_data: Any, total_steps: int) -> dict[str, Any]:
    """What identifies a QAT run: a checkpoint is resumed only by a run with the same fingerprint.

    Flat (one key per setting), so a mismatch names the setting that differs; the world size is
    not part of it (a run may resume with another number of processes)."""
    settings = config.to_dict()
    use_kd = config.kd_weight > 0
    return {
        "plan": {name: [w, a] for name, (w, a) in bits.items()},
        "config": settings.pop("quant"),
        "model": module_digest(model),
        "teacher": None if not use_kd else ("model" if teacher is None else module_digest(teacher)),
        "train_data": trainset.fingerprint(),
        "calib_data": "train_data" if calib_data is None else tensor_digest(
            [b.to("cpu") for b, _ in iter_batches(calib_data, batch_size=None)]),
        "total_steps": total_steps,
        **settings,
    }


def qat(
    model: nn.Module,
    plan: Any,
    train_data: Any,
    *,
    config: QATConfig | None = None,
    calib_data: Any = None,
    teacher: nn.Module | None = None,
    checkpoint: str | Path | None = None,
    device: str | torch.device | None = None,
    verbose: bool = True,
) -> tuple[nn.Module, list[dict[str, float]]]:
    """Quantization-aware training of ``model`` under ``plan``; returns ``(qmodel, history)``.

    Args:
        model: float timm ViT / DeiT / Swin (not modified).
        plan: an ``allocator.Plan`` or a uniform string such as ``"W2A2"`` (see :func:`quant.quantize`).
        train_data: images ``(N, C, H, W)`` (unlabelled: distillation only), an ``(images,
            labels)`` pair of tensors, or a re-iterable of batches with a length (DataLoader).
        config: how to train (:class:`QATConfig`: epochs, lr, batch size, distillation, seed,
            PTQ settings ...); default ``QATConfig()``.
        calib_data: PTQ calibration data (any ``calib_data`` form); ``None`` takes
            ``config.calib_size`` images of ``train_data`` (a seeded subset of tensors, or the
            first batches of a loader).
        teacher: distillation teacher (kept frozen, in eval mode); ``None`` means the float
            ``model`` itself. Not used when ``config.kd_weight == 0``.
        checkpoint: path of a checkpoint to write (each epoch, and every
            ``config.checkpoint_every`` steps) and to resume from when it exists and belongs to
            this run.
        device: where to train (``"cpu"``, ``"cuda"``, ...); default: the model's device. Under
            torchrun a bare ``"cuda"`` means this process's ``cuda:LOCAL_RANK``.
        verbose: progress (a bar on a terminal, periodic lines in a log) and a line per epoch.

    Returns:
        The trained fake-quant model (eval mode, on ``device``; settled like ``quantize``'s,
        :func:`quant.settle.settle_constant_inputs`) and one record per epoch:
        ``epoch``, ``steps``, ``loss``, ``ce``, ``kd`` (NaN when off), ``train_acc`` (of the
        averaged heads, on the labelled batches; NaN without labels), ``lr_end``, ``time_s``.

    Raises:
        PlanMismatchError / ValueError / TypeError: bad plan, data, device or settings (before any work).
        CheckpointMismatchError: ``checkpoint`` exists but was written by a different run.
    """
    cfg = QATConfig() if config is None else config
    if not isinstance(cfg, QATConfig):
        raise TypeError(f"config must be a quant.QATConfig, got {type(cfg).__name__}")
    bits = resolve_plan(plan, find_quantizable_layers(model), cfg.quant)  # validates the plan first
    trainset = TrainSet(train_data, cfg.batch_size, cfg.seed)
    dev = dist.local_device(check_device(device)) if device is not None else model_device(model)
    rank, world_size = dist.world()
    if world_size > 1 and trainset.images is not None and cfg.batch_size < world_size:
        raise ValueError(f"batch_size {cfg.batch_size} is smaller than the {world_size} processes; "
                         "each process needs at least one image per step")
    spe = trainset.steps_per_epoch
    total = spe * cfg.epochs if cfg.max_steps is None else min(spe * cfg.epochs, cfg.max_steps)
    source = model if model_device(model) == dev else copy.deepcopy(model).to(dev)
    use_kd = cfg.kd_weight > 0
    teach = (teacher if teacher is not None else source) if use_kd else None
    if teach is not None and model_device(teach) != dev:
        teach = copy.deepcopy(teach).to(dev)
    calib = calib_data if calib_data is not None else trainset.calibration(cfg.calib_size)

    fingerprint = _fingerprint(bits, cfg, model, teacher if use_kd else None, trainset, calib_data, total)
    ckpt_path = Path(checkpoint) if checkpoint is not None else None
    saved = None
    if ckpt_path is not None and ckpt_path.exists():  # refuse a foreign checkpoint before any work
        saved = load_checkpoint(ckpt_path)
        check_fingerprint(saved["fingerprint"], fingerprint, ckpt_path)
    dist.barrier()  # every process has read the checkpoint before rank 0 may overwrite it

    qmodel = quantize(source, plan, calib, config=cfg.quant).to(dev)
    learned = make_quantizers_learnable(qmodel, offsets=cfg.learn_offsets)
    optimizer = torch.optim.AdamW(param_groups(qmodel, learned, cfg.lr, cfg.weight_decay), lr=cfg.lr)

    state = {"step": 0, "epoch": 0, "stats": EpochStats(), "history": [], "rng": None}
    say = verbose and rank == 0
    if saved is not None:
        qmodel.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        state.update(step=saved["step"], epoch=saved["epoch"], stats=EpochStats(**saved["stats"]),
                     history=list(saved["history"]), rng=saved["rng"])
        if say:
            print(f"qat: resuming from {ckpt_path} at step {saved['step']}/{total}", flush=True)
    if say:
        s = learned.summary()
        procs = f" x {world_size} processes" if world_size > 1 else ""
        print(f"qat: {s['weight_step_sizes']} weight and {s['act_step_sizes']} activation step sizes, "
              f"{s['offsets']} offsets learned; {len(s['frozen'])} log2 softmax quantizers frozen; "
              f"{total} steps on {dev}{procs}", flush=True)

    def save(stats: EpochStats) -> None:
        if ckpt_path is None or rank != 0:
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
                torch.manual_seed(cfg.seed)
            else:
                _set_rng_state(state["rng"], dev)
            if teach is not None:
                teach.eval()
            if distilled:
                qmodel.set_distilled_training(True)
            qmodel.train()
            net = _wrap_ddp(qmodel, dev) if world_size > 1 else qmodel
            _train(net, teach, learned, optimizer, trainset, state, cfg, total, dev, save, say)
    finally:
        if distilled:
            qmodel.set_distilled_training(False)
        if teach is not None:
            teach.train(teacher_was_training)
    # training moved the scales and weights, hence the image-independent inputs (as quantize does)
    settle_constant_inputs(qmodel, next(iter(iter_images(calib, None))).shape[1:])
    return qmodel.eval(), state["history"]


def _wrap_ddp(qmodel: nn.Module, dev: torch.device) -> nn.Module:
    """DistributedDataParallel around the QAT model. Every process built the same model from the
    same calibration (deterministic), so buffers need no broadcasting; some parameters (e.g. the
    second head when a plain ViT is trained) may receive no gradient in a step."""
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(qmodel, device_ids=[dev.index] if dev.type == "cuda" else None,
                                   broadcast_buffers=False, find_unused_parameters=True)


def _local_share(images: torch.Tensor, labels: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None, float]:
    """This process's part of a global batch and its weight ``world * n_local / n_global``
    (DDP averages gradients over processes; the weight turns that average into the global
    batch's mean)."""
    rank, size = dist.world()
    if size == 1:
        return images, labels, 1.0
    n = images.shape[0]
    if n < size:
        raise ValueError(f"a training batch of {n} images cannot be split across {size} processes; "
                         "use a batch size of at least the number of processes")
    part = dist.split_evenly(n, size)[rank]
    sl = slice(part.start, part.stop)
    return images[sl], None if labels is None else labels[sl], size * len(part) / n


def _train(net: nn.Module, teacher: nn.Module | None, learned: LearnedQuantizers, optimizer: torch.optim.Optimizer,
           trainset: TrainSet, state: dict[str, Any], cfg: QATConfig, total: int, dev: torch.device,
           save: Callable[[EpochStats], None], verbose: bool) -> None:
    """The training loop proper; advances ``state`` (step, epoch, running stats, history)."""
    spe = trainset.steps_per_epoch
    lr_now = optimizer.param_groups[0]["lr"]
    while state["step"] < total and state["epoch"] < cfg.epochs:
        epoch, stats = state["epoch"], state["stats"]
        skip = stats.steps
        todo = min(spe - skip, total - state["step"])
        bar = Progress(skip + todo, f"qat epoch {epoch + 1}/{cfg.epochs}", "steps", enabled=verbose, initial=skip)
        for images, labels in trainset.batches(epoch, skip):
            t0 = time.perf_counter()
            factor = _cosine(state["step"], total)
            for group in optimizer.param_groups:
                group["lr"] = group["base_lr"] * factor
            lr_now = optimizer.param_groups[0]["lr"]
            n_global = images.shape[0]
            images, labels, weight = _local_share(images, labels)
            images = images.to(dev, non_blocking=True)
            labels = labels.to(dev, non_blocking=True) if labels is not None else None
            out = as_heads(net(images))
            t_out = teacher_logits(teacher, images) if teacher is not None else None
            loss, parts = qat_loss(out, labels, t_out, cfg.kd_temperature, cfg.kd_weight)
            optimizer.zero_grad(set_to_none=True)
            (loss * weight if weight != 1.0 else loss).backward()
            optimizer.step()
            learned.project_()
            correct = None
            if labels is not None:
                correct = int((torch.stack(out).mean(dim=0).argmax(-1) == labels).sum())
            loss_v, parts, correct = _global_step_stats(images.shape[0], n_global, float(loss.detach()), parts,
                                                        correct, dev)
            stats.add(n_global, loss_v, parts, correct)
            stats.time_s += time.perf_counter() - t0
            state["step"] += 1
            bar.update(1, loss=f"{stats.loss / stats.seen:.4f}",
                       acc=f"{stats.correct / stats.labelled:.4f}" if stats.labelled else "n/a")
            if state["step"] >= total:
                break
            if cfg.checkpoint_every and state["step"] % cfg.checkpoint_every == 0 and stats.steps < spe:
                save(stats)
        bar.close()
        record = stats.record(epoch + 1, lr_now, teacher is not None)
        state["history"].append(record)
        state["epoch"], state["stats"] = epoch + 1, EpochStats()
        save(state["stats"])
        if verbose:
            acc = f"{record['train_acc']:.4f}" if record["train_acc"] == record["train_acc"] else "n/a"
            print(f"qat epoch {epoch + 1}/{cfg.epochs}: loss {record['loss']:.4f} (ce {record['ce']:.4f}, "
                  f"kd {record['kd']:.4f}) train acc {acc} lr {lr_now:.2e} {record['time_s']:.0f}s", flush=True)


def _global_step_stats(n_local: int, n_global: int, loss: float, parts: dict[str, float],
                       correct: int | None, dev: torch.device) -> tuple[float, dict[str, float], int | None]:
    """One step's loss, parts and correct count over the whole global batch (sums over the
    processes of the image-weighted local values); unchanged with one process."""
    if not dist.is_distributed():
        return loss, parts, correct
    nan = [math.isnan(parts["ce"]), math.isnan(parts["kd"])]
    t = torch.tensor([loss * n_local, 0.0 if nan[0] else parts["ce"] * n_local,
                      0.0 if nan[1] else parts["kd"] * n_local, float(correct or 0)], dtype=torch.float64,
                     device=dev)
    dist.all_reduce_sum(t)
    glob = {"ce": float("nan") if nan[0] else float(t[1]) / n_global,
            "kd": float("nan") if nan[1] else float(t[2]) / n_global}
    return float(t[0]) / n_global, glob, None if correct is None else int(t[3])
