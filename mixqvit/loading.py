"""Loading models: the shipped demo models, checkpoints and timm names, and saving them back.

Models are named three ways (:func:`load_model`):

* a shipped demo model: ``fmnist_vit``, ``fmnist_deit``, ``fmnist_swin`` (Fashion-MNIST, 1x28x28);
* a checkpoint path: ``file.safetensors`` with ``file.json`` beside it (written by
  :func:`save_checkpoint` or by ``mixqvit train``), or a torch file (``.pt``/``.pth``/``.bin``)
  holding a whole module or ``{"arch", "model_kwargs", "state_dict"}``;
* any ``timm`` model name, with ``pretrained=True`` for its published weights (downloaded by
  timm; needs internet the first time, and fails at once without it unless they are cached),
  ``weights=FILE`` for a plain ``torch.save(model.state_dict())`` ``.pth``/``.pt`` or a bare
  ``.safetensors`` of that architecture, and ``model_kwargs`` for its constructor. With neither
  the weights are a seeded random initialisation (the same in every command): a warning line
  says so and ``info["weights"]`` records it (profiles carry it in their metadata).

The result is a :class:`LoadedModel`: the module in eval mode plus its data config, so
:mod:`mixqvit.datasets` can feed it images the way it was trained on them.
"""
from __future__ import annotations

import difflib
import json
import os
import sys
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping

import torch
from torch import nn

from allocator.atomic import atomic_path, write_bytes, write_json

from . import data as fmnist_data
from . import models as shipped_models
from .errors import InputFileError, ModelLoadError

__all__ = ["LoadedModel", "TORCH_SUFFIXES", "FMNIST_INPUT", "load_model", "read_state_dict", "save_checkpoint",
           "save_quantized"]

TORCH_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")
_CHECKPOINT_SUFFIXES = (".safetensors",) + TORCH_SUFFIXES
FMNIST_INPUT = (1, 28, 28)
_HUB_PREFIXES = ("hf-hub:", "hf_hub:")  # timm names of Hugging Face Hub models
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



def _fmnist_loaded(model: nn.Module, name: str, source: str, info: dict[str, Any]) -> LoadedModel:
    return LoadedModel(model.eval(), name, source, FMNIST_INPUT, (fmnist_data.FMNIST_MEAN,),
                       (fmnist_data.FMNIST_STD,), info=info, fashion_mnist=True)


def _timm_loaded(model: nn.Module, name: str, source: str, info: dict[str, Any],
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


def _build_timm(arch: str, pretrained: bool, model_kwargs: Mapping[str, Any] | None) -> nn.Module:
    import timm

    if not arch.startswith(_HUB_PREFIXES) and not timm.is_model(arch):
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


def _looks_like_path(spec: str) -> bool:
    if spec.startswith(_HUB_PREFIXES):  # "hf-hub:timm/name": a timm name with a slash
        return False
    return os.sep in spec or spec.endswith(_CHECKPOINT_SUFFIXES + (".json",)) or Path(spec).exists()


def load_model(spec: str, pretrained: bool = False, model_kwargs: Mapping[str, Any] | None = None,
               weights: str | os.PathLike | None = None) -> LoadedModel:
    """Load a model named by ``spec``: shipped name, checkpoint path or timm name (module docstring).

    ``weights`` (timm names only): a state_dict file for the architecture. Raises
    :class:`ModelLoadError` (unknown name, missing or unreadable checkpoint, failed download,
    weights that do not fit) with a message that says which of the forms was expected.
    """
    spec = str(spec)
    if weights is not None and (pretrained or spec in shipped_models.available_models() or _looks_like_path(spec)):
        raise ModelLoadError(f"--weights {weights} goes with a timm model name (the architecture), not with "
                             f"{'--pretrained' if pretrained else repr(spec)}")
    if spec in shipped_models.available_models():
        if pretrained or model_kwargs:
            raise ModelLoadError(
                f"{spec!r} is a shipped demo model with its own trained weights; --pretrained and "
                "--model-kwargs apply to timm model names only"
            )
        try:
            model, info = shipped_models.load_shipped(spec)
        except (FileNotFoundError, ValueError) as exc:
            raise ModelLoadError(str(exc)) from None
        return _fmnist_loaded(model, spec, "shipped", info)
    if _looks_like_path(spec):
        if pretrained or model_kwargs:
            raise ModelLoadError(f"--pretrained and --model-kwargs apply to timm model names, not to checkpoint {spec}")
        return _load_checkpoint(Path(spec))
    model = _build_timm(spec, pretrained, model_kwargs)
    info = {"arch": spec, "pretrained": bool(pretrained), "model_kwargs": dict(model_kwargs or {})}
    if weights is not None:
        _load_state(model, read_state_dict(Path(weights)), str(weights))
        info["weights"] = f"file {weights}"
    elif pretrained:
        info["weights"] = "pretrained (timm)"
    else:
        info["weights"] = f"random (seed {RANDOM_INIT_SEED}; no --pretrained, no --weights)"
        from quant.dist import is_main

        if is_main():  # under torchrun one line, not one per process
            print(f"warning: {spec} has RANDOM weights (no --pretrained, no --weights FILE): its accuracy and "
                  "profile say nothing about the trained model", file=sys.stderr, flush=True)
    return _timm_loaded(model, spec, "timm", info)


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a state_dict file: ``.safetensors``, or a ``torch.save`` of a state_dict
    (also one nested under "state_dict", "model" or "model_state_dict", with DDP's "module."
    prefixes), read without unpickling code."""
    if not path.is_file():
        raise ModelLoadError(f"weights file {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError) as exc:
            raise ModelLoadError(f"cannot read weights {path}: {exc}") from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling errors have many types
        raise ModelLoadError(f"cannot read weights {path} as a state_dict ({type(exc).__name__}: "
                             f"{str(exc).splitlines()[0] if str(exc) else ''}); expected torch.save(model.state_dict()) "
                             "or a .safetensors file") from None
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
            obj = obj[key]
            break
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ModelLoadError(f"{path} holds a {type(obj).__name__}, not a state_dict of tensors; expected "
                             "torch.save(model.state_dict()) or a .safetensors file")
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in obj.items()}


def _read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputFileError(f"{what} {path} does not exist") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputFileError(f"{what} {path} is not readable JSON: {exc}") from None
    if not isinstance(data, dict):
        raise InputFileError(f"{what} {path} must hold a JSON object, got {type(data).__name__}")
    return data


def _load_checkpoint(path: Path) -> LoadedModel:
    if not path.exists():
        raise ModelLoadError(
            f"checkpoint {path} does not exist; expected a .safetensors file with a .json config "
            f"beside it, a torch file ({', '.join(TORCH_SUFFIXES)}), a shipped model name "
            f"({', '.join(shipped_models.available_models())}) or a timm model name"
        )
    if path.suffix == ".json":
        path = path.with_suffix(".safetensors")
    if path.suffix == ".safetensors":
        return _load_safetensors(path)
    if path.suffix in TORCH_SUFFIXES:
        return _load_torch_file(path)
    raise ModelLoadError(
        f"cannot tell the format of checkpoint {path}; expected a name ending in .safetensors "
        f"(with a .json config beside it) or one of {', '.join(TORCH_SUFFIXES)}"
    )


def _build_from_config(config: Mapping[str, Any], where: str) -> tuple[nn.Module, str, bool]:
    """Build the architecture a checkpoint config names; returns (model, name, is_fashion_mnist)."""
    name = config.get("name")
    if name in shipped_models.available_models() and isinstance(config.get("model"), Mapping):
        expected = shipped_models.MODEL_CONFIGS[name].to_dict()
        if config["model"] != expected:
            raise ModelLoadError(f"{where} describes architecture {config['model']} but {name} is {expected}")
        return shipped_models.build_model(name), name, True
    arch = config.get("arch")
    if not isinstance(arch, str):
        raise ModelLoadError(
            f"{where} names no architecture: expected {{\"arch\": <timm model name>, \"model_kwargs\": {{...}}}} "
            "(as written by mixqvit.pipeline.save_checkpoint) or a mixqvit training record"
        )
    kwargs = config.get("model_kwargs") or {}
    if not isinstance(kwargs, Mapping):
        raise ModelLoadError(f"{where}: model_kwargs must be a JSON object, got {kwargs!r}")
    return _build_timm(arch, False, kwargs), arch, False


def _load_state(model: nn.Module, state: Mapping[str, torch.Tensor], where: str) -> None:
    try:
        model.load_state_dict(dict(state), strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise ModelLoadError(f"weights in {where} do not fit the architecture its config names: {first}") from None


def _load_safetensors(path: Path) -> LoadedModel:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    config_path = path.with_suffix(".json")
    if not path.is_file():
        raise ModelLoadError(f"weights file {path} does not exist (its config {config_path} does)")
    if not config_path.is_file():
        raise ModelLoadError(
            f"checkpoint {path} has no config {config_path} beside it; the config names the architecture, "
            "e.g. {\"arch\": \"vit_tiny_patch16_224\", \"model_kwargs\": {\"num_classes\": 10}}"
        )
    try:
        config = _read_json(config_path, "checkpoint config")
    except InputFileError as exc:
        raise ModelLoadError(str(exc)) from None
    model, name, is_fmnist = _build_from_config(config, str(config_path))
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError) as exc:
        raise ModelLoadError(f"cannot read weights {path}: {exc}") from None
    _load_state(model, state, str(path))
    info = {k: v for k, v in config.items() if k != "history"}
    if is_fmnist:
        return _fmnist_loaded(model, name, "checkpoint", info)
    return _timm_loaded(model, name, "checkpoint", info, config.get("data_config"))


def _load_torch_file(path: Path) -> LoadedModel:
    """A whole pickled module, or ``{"arch", "model_kwargs", "state_dict"[, "data_config"]}``.

    Tries ``weights_only=True`` first; a whole module needs full unpickling, which runs code from
    the file, so only load torch files you trust (prefer .safetensors).
    """
    import pickle

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, AttributeError, TypeError):
        try:
            obj = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as exc:
            raise ModelLoadError(f"cannot read torch file {path}: {type(exc).__name__}: {exc}") from None
    except Exception as exc:
        raise ModelLoadError(f"cannot read torch file {path}: {type(exc).__name__}: {exc}") from None
    if isinstance(obj, nn.Module):
        name = path.stem
        if getattr(obj, "pretrained_cfg", None) is not None or hasattr(obj, "patch_embed"):
            return _timm_loaded(obj, name, "checkpoint", {"file": str(path)})
        raise ModelLoadError(f"{path} holds a {type(obj).__name__} that is not a timm vision model")
    if isinstance(obj, Mapping) and "state_dict" in obj:
        model, name, is_fmnist = _build_from_config(obj, str(path))
        _load_state(model, obj["state_dict"], str(path))
        info = {k: v for k, v in obj.items() if k != "state_dict"}
        if is_fmnist:
            return _fmnist_loaded(model, name, "checkpoint", info)
        return _timm_loaded(model, name, "checkpoint", info, obj.get("data_config"))
    raise ModelLoadError(
        f"{path} holds a {type(obj).__name__}; expected a whole nn.Module or a dict with 'arch', "
        "'model_kwargs' and 'state_dict'"
    )


def save_checkpoint(model: nn.Module, path: str | os.PathLike, arch: str,
                    model_kwargs: Mapping[str, Any] | None = None,
                    data_config: Mapping[str, Any] | None = None) -> Path:
    """Save ``model`` as ``path`` (.safetensors) plus a ``.json`` config that :func:`load_model` reads.

    ``arch`` is the timm name the model was built from, ``model_kwargs`` its constructor keywords.
    Both files are written atomically.
    """
    from safetensors.torch import save as safetensors_bytes

    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"checkpoint path must end in .safetensors, got {path}")
    state = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    config: dict[str, Any] = {"arch": arch, "model_kwargs": dict(model_kwargs or {})}
    if data_config:
        config["data_config"] = dict(data_config)
    write_bytes(path, safetensors_bytes(state))  # not save_file: it creates 0600 files
    write_json(path.with_suffix(".json"), config)
    return path



def save_quantized(qmodel: nn.Module, path: str | os.PathLike) -> Path:
    """Save the whole quantized module with ``torch.save`` (atomically); reload with
    ``torch.load(path, weights_only=False)`` in an environment where mixqvit is installed."""
    with atomic_path(path) as tmp:
        torch.save(qmodel, tmp)
    return Path(path)

