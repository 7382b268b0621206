"""Training the demo models on Fashion-MNIST, reproducibly, on a CPU.

Recipe (per model in :data:`RECIPES`): AdamW (no weight decay on norms, biases, position
embeddings and tokens), batch 64, linear warm-up then cosine decay of the learning rate per step,
label smoothing 0.1, and random horizontal flips (clothes are left-right symmetric, so flipping
keeps the label). A random translation (``crop_padding``: pad with the background value, crop
back to 28x28) is available but off: in pilot runs it slowed learning more than it curbed
over-fitting within a 30-minute CPU budget, as did batch 128 against 64 (fewer updates per epoch
at the same cost).

Distillation (``fmnist_deit``): DeiT's *hard* distillation. The class-token head learns the true
label (with label smoothing); the distillation-token head ``head_dist`` learns the teacher's
argmax on the same augmented image (computed once per image and orientation, see
:class:`TeacherTargets`); the loss is the mean of both. The DeiT paper found hard
distillation better than soft (KL to the teacher's temperature-scaled probabilities), and it needs
no temperature to tune. ``distill="soft"`` is available too. The teacher is the trained
``fmnist_swin``: like the convnet teachers of the DeiT paper it is the stronger model (91.1%)
and brings another inductive bias (local windows); measured, 9 epochs from it gave 89.33% test
accuracy against 89.08% from ``fmnist_vit`` (89.5%), and 14 epochs 90.04%.

Determinism: one ``seed`` sets the weight initialisation (torch's global RNG, seeded just before
the model is built) and a separate ``torch.Generator`` drives shuffling and augmentation, so two
runs with the same seed, thread count and library versions produce the same weights bit for bit.
"""
from __future__ import annotations

import os
import platform
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from allocator.atomic import write_bytes, write_json
from quant import check_device

from .data import FMNIST_MEAN, FMNIST_STD, load_fashion_mnist
from .fit import accuracy, fit
from .models import MODEL_CONFIGS, build_model, count_parameters, load_shipped, shipped_paths
from .recipes import RECIPES, TrainConfig

__all__ = ["CheckpointExistsError", "train_model"]


class CheckpointExistsError(FileExistsError):
    """The output directory already holds a checkpoint of this model and replacing it was not asked for."""


def _resolve_teacher(teacher: str | nn.Module | None, cfg: TrainConfig, out_dir: Path) -> tuple[nn.Module | None, dict]:
    """The teacher module and a description of it for the info json."""
    if cfg.distill is None:
        if teacher is not None:
            raise ValueError("a teacher was given but this recipe does not distill (distill=None)")
        return None, {}
    teacher = teacher if teacher is not None else cfg.teacher
    if isinstance(teacher, nn.Module):
        return teacher.eval(), {"name": type(teacher).__name__}
    if not isinstance(teacher, str):
        raise ValueError(f"teacher must be a model name or an nn.Module, got {type(teacher).__name__}")
    directory = out_dir if shipped_paths(teacher, out_dir)[0].is_file() else None
    model, info = load_shipped(teacher, directory)
    return model, {"name": teacher, "test_accuracy": info.get("test_accuracy")}


def train_model(
    name: str,
    *,
    out_dir: str | os.PathLike,
    force: bool = False,
    data_root: str | os.PathLike | None = None,
    epochs: int | None = None,
    seed: int = 0,
    threads: int = 1,
    teacher: str | nn.Module | None = None,
    verbose: bool = True,
    overrides: dict[str, Any] | None = None,
    train_limit: int | None = None,
    test_limit: int | None = None,
    max_steps: int | None = None,
    monitor: bool = False,
    device: str | torch.device = "cpu",
) -> dict[str, Any]:
    """Train a demo model, measure its test accuracy, save weights and info; return the info.

    Writes ``<out_dir>/<name>.safetensors`` and ``<out_dir>/<name>.json`` atomically. There is no
    default ``out_dir`` (a default inside the installed package once overwrote the shipped
    checkpoints), and an existing checkpoint there is replaced only with ``force=True``
    (:class:`CheckpointExistsError` otherwise), checked before any training. ``threads`` sets torch's CPU threads
    for the run (restored afterwards). ``teacher`` (distilled recipes only) is a model name, looked
    up first in ``out_dir`` then in the shipped assets, or a module; by default the recipe's.
    ``overrides`` replaces fields of the recipe's :class:`TrainConfig`. ``train_limit``,
    ``test_limit`` and ``max_steps`` shrink the run for tests and smoke checks; the info records them.
    ``monitor`` also measures test accuracy after every epoch (the learning curve in ``history``;
    its time is not counted in ``train_time_s``). ``device``: where to train (the model is
    initialised on the CPU, so the seed gives the same starting weights anywhere; a device this
    machine lacks is a ``ValueError`` before any work); the weights are saved from the CPU.
    """
    if name not in RECIPES:
        raise ValueError(f"unknown model {name!r}; expected one of {list(RECIPES)}")
    cfg = RECIPES[name]
    if epochs is not None:
        cfg = replace(cfg, epochs=epochs)
    if overrides:
        cfg = replace(cfg, **overrides)
    if isinstance(teacher, str):
        cfg = replace(cfg, teacher=teacher)  # the info json records the teacher actually used
    out = Path(out_dir)
    existing = [p for p in shipped_paths(name, out) if p.exists()]
    if existing and not force:
        raise CheckpointExistsError(
            f"{existing[0]} exists; training would replace it. Pass force=True (`mixqvit train --force`) to "
            "replace it, or choose another output directory")
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    device = check_device(device)
    old_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        teacher_model, teacher_info = _resolve_teacher(teacher, cfg, out)
        if teacher_model is not None:
            teacher_model = teacher_model.to(device)
        train_x, train_y = load_fashion_mnist("train", data_root)
        test_x, test_y = load_fashion_mnist("test", data_root)
        if train_limit is not None:
            train_x, train_y = train_x[:train_limit], train_y[:train_limit]
        if test_limit is not None:
            test_x, test_y = test_x[:test_limit], test_y[:test_limit]
        torch.manual_seed(seed)
        model = build_model(name).to(device)
        generator = torch.Generator().manual_seed(seed + 1)
        if verbose:
            print(
                f"training {name}: {count_parameters(model):,} parameters, {len(train_x):,} images, "
                f"{cfg.epochs} epochs, seed {seed}, {threads} thread(s), on {device}"
            )
        load_start = os.getloadavg()
        history = fit(
            model,
            train_x,
            train_y,
            cfg,
            generator,
            teacher_model,
            max_steps=max_steps,
            verbose=verbose,
            monitor=(test_x, test_y) if monitor else None,
        )
        load_end = os.getloadavg()
        train_time = sum(r["time_s"] for r in history)
        train_cpu = sum(r["cpu_s"] for r in history)
        t1 = time.perf_counter()
        test_acc = accuracy(model, test_x, test_y, cfg.eval_batch_size)
        first500 = accuracy(model, test_x[:500], test_y[:500], cfg.eval_batch_size)
        eval_time = time.perf_counter() - t1
    finally:
        torch.set_num_threads(old_threads)
    import timm
    from safetensors.torch import save as safetensors_bytes

    info: dict[str, Any] = {
        "name": name,
        "model": MODEL_CONFIGS[name].to_dict(),
        "params": count_parameters(model),
        "train": asdict(cfg),
        "seed": seed,
        "epochs": len(history),
        "threads": threads,
        "device": str(device),
        "train_time_s": round(train_time, 1),
        "train_cpu_time_s": round(train_cpu, 1),
        "eval_time_s": round(eval_time, 1),
        "test_accuracy": test_acc,
        "test_accuracy_first500": first500,
        "n_train": len(train_x),
        "n_test": len(test_x),
        "eval_batch_size": cfg.eval_batch_size,
        "teacher": teacher_info or None,
        "data": {
            "dataset": "Fashion-MNIST",
            "normalisation": {"mean": FMNIST_MEAN, "std": FMNIST_STD},
            "input_size": list(MODEL_CONFIGS[name].input_size),
        },
        "history": history,
        "limits": {"train_limit": train_limit, "test_limit": test_limit, "max_steps": max_steps},
        "environment": {
            "torch": torch.__version__,
            "timm": timm.__version__,
            "python": platform.python_version(),
            "cpu": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "load_average_start": [round(v, 2) for v in load_start],
            "load_average_end": [round(v, 2) for v in load_end],
        },
    }
    weights_path, info_path = shipped_paths(name, out)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    # safetensors' own save_file creates 0600 files; package data must be readable by every user.
    write_bytes(weights_path, safetensors_bytes(state, metadata={"name": name, "seed": str(seed)}))
    write_json(info_path, info)
    if verbose:
        print(
            f"{name}: test accuracy {test_acc:.4f} (first 500: {first500:.4f}), "
            f"trained in {train_time / 60:.1f} min; wrote {weights_path} and {info_path}"
        )
    return info
