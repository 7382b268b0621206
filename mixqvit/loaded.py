"""What a loaded model is, and how one is built from a timm name (seeded, offline-aware).

:class:`LoadedModel` is a module in eval mode plus its data config, so :mod:`mixqvit.datasets`
can feed it images the way it was trained on them; :func:`build_timm` makes the timm model
(published weights only when asked, and a one-line answer at once when they cannot be had).
"""
from __future__ import annotations

import difflib
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping

import torch
from torch import nn

from . import data as fmnist_data
from . import models as shipped_models
from .errors import ModelLoadError

__all__ = ["LoadedModel", "FMNIST_INPUT", "RANDOM_INIT_SEED", "HUB_PREFIXES", "fmnist_loaded", "timm_loaded",
           "build_timm"]

FMNIST_INPUT = (1, 28, 28)
HUB_PREFIXES = ("hf-hub:", "hf_hub:")  # timm names of Hugging Face Hub models
RANDOM_INIT_SEED = 0  # seed of the weights of a timm model loaded without --pretrained


@dataclass
class LoadedModel:
    """A model in eval mode plus what is needed to feed it data and to describe it.

    ``source`` is "shipped", "checkpoint" or "timm"; ``input_size`` is (C, H, W); ``mean``,
    ``std``, ``crop_pct`` and ``interpolation`` form its data config; ``info`` holds what the
    checkpoint recorded (for a shipped model, e.g. ``test_accuracy``); ``fashion_mnist`` is True
    for models trained on Fashion-MNIST's normalisation (used when no ``--data`` is given).
    """

    model: nn.Module
    name: str
    source: str
    input_size: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    crop_pct: float = 1.0
    interpolation: str = "bilinear"
    info: dict[str, Any] = field(default_factory=dict)
    fashion_mnist: bool = False

    def describe(self) -> dict[str, Any]:
        """JSON-ready description, stored in profile metadata and reports."""
        return {"model": self.name, "source": self.source, "input_size": list(self.input_size)}


def fmnist_loaded(model: nn.Module, name: str, source: str, info: dict[str, Any]) -> LoadedModel:
    return LoadedModel(model.eval(), name, source, FMNIST_INPUT, (fmnist_data.FMNIST_MEAN,),
                       (fmnist_data.FMNIST_STD,), info=info, fashion_mnist=True)


def timm_loaded(model: nn.Module, name: str, source: str, info: dict[str, Any],
                 data_config: Mapping[str, Any] | None = None) -> LoadedModel:
    """Wrap a timm(-like) model with its data config; the input size is read off the model."""
    from timm.data import resolve_model_data_config

    cfg = dict(resolve_model_data_config(model))
    cfg.update(data_config or {})
    c, h, w = (int(v) for v in cfg["input_size"])
    patch_embed = getattr(model, "patch_embed", None)
    img_size = getattr(patch_embed, "img_size", None)
    proj = getattr(patch_embed, "proj", None)
    if not (data_config and "input_size" in data_config):
        # pretrained_cfg keeps the published size even when img_size/in_chans were overridden
        if isinstance(img_size, (tuple, list)) and len(img_size) == 2:
            h, w = int(img_size[0]), int(img_size[1])
        if isinstance(getattr(proj, "in_channels", None), int):
            c = proj.in_channels
    mean, std = tuple(float(v) for v in cfg["mean"]), tuple(float(v) for v in cfg["std"])
    if len(mean) != c:  # e.g. a 1-channel model keeping RGB statistics in its pretrained_cfg
        mean, std = (sum(mean) / len(mean),) * c, (sum(std) / len(std),) * c
    return LoadedModel(model.eval(), name, source, (c, h, w), mean, std,
                       float(cfg.get("crop_pct", 1.0)), str(cfg.get("interpolation", "bilinear")), info)


def build_timm(arch: str, pretrained: bool, model_kwargs: Mapping[str, Any] | None) -> nn.Module:
    import timm

    if not arch.startswith(HUB_PREFIXES) and not timm.is_model(arch):
        close = difflib.get_close_matches(arch, timm.list_models(), n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ModelLoadError(
            f"unknown model {arch!r}: not a shipped demo model ({', '.join(shipped_models.available_models())}), "
            f"not an existing checkpoint file, and not a timm model name{hint} "
            "(list timm names with `python -c \"import timm; print(timm.list_models('vit*'))\"`)"
        )
    offline = _hub_offline_reason() if pretrained else None
    try:
        # Random initialisation is seeded (and the caller's RNG left untouched), so separate
        # commands (`profile`, then `quantize`) naming the same untrained model get the same one.
        with torch.random.fork_rng(devices=[]), _hub_offline(offline is not None):
            torch.manual_seed(RANDOM_INIT_SEED)
            return timm.create_model(arch, pretrained=pretrained, **dict(model_kwargs or {}))
    except TypeError as exc:
        raise ModelLoadError(f"timm model {arch!r} rejected --model-kwargs {dict(model_kwargs or {})}: {exc}") from None
    except Exception as exc:  # download failures come as OSError, HTTP or hub errors
        if not pretrained:
            raise
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if offline is not None:
            raise ModelLoadError(
                f"no pretrained weights for {arch!r} in the local Hugging Face cache, and {offline}; run once "
                "with internet access to cache them, or pass --weights FILE (a state_dict) or a checkpoint path"
            ) from None
        raise ModelLoadError(
            f"could not get pretrained weights for {arch!r} ({type(exc).__name__}: {first}); timm downloads "
            "them from the Hugging Face Hub on first use, so check the internet connection (or the "
            "HF_HUB_OFFLINE setting and cache), or pass a checkpoint path instead"
        ) from None


def _hub_offline_reason(timeout_s: float = 3.0) -> str | None:
    """Why the Hugging Face Hub cannot be used now (None: it can): HF_HUB_OFFLINE, or no answer
    from huggingface.co within `timeout_s` (DNS included, so a machine without network fails in
    seconds instead of retrying for minutes)."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:  # the HF_HUB_OFFLINE environment variable, as the hub reads it
        return "HF_HUB_OFFLINE is set"
    import socket
    import threading

    reached: list[bool] = []

    def probe() -> None:
        try:
            socket.create_connection(("huggingface.co", 443), timeout=timeout_s).close()
            reached.append(True)
        except OSError:
            pass

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout_s + 0.5)
    return None if reached else f"huggingface.co cannot be reached (no answer in {timeout_s:.0f} s)"


@contextmanager
def _hub_offline(offline: bool) -> Iterator[None]:
    """Put huggingface_hub in offline mode for the block (cached weights load, nothing is fetched)."""
    if not offline:
        yield
        return
    from huggingface_hub import constants

    before = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = before
