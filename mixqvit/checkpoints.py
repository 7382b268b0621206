"""Checkpoint files: reading a model (safetensors + json, torch files, bare state_dicts) and writing one.

* ``file.safetensors`` with ``file.json`` beside it (written by :func:`save_checkpoint` or by
  ``mixqvit train``): the json names the architecture;
* a torch file (``.pt``/``.pth``/``.bin``/``.ckpt``) holding a whole module or
  ``{"arch", "model_kwargs", "state_dict"}``;
* a bare state_dict (``.pth``/``.safetensors``) for a timm architecture named separately
  (:func:`read_state_dict`, ``--weights``).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from allocator.atomic import atomic_path, write_bytes, write_json

from . import models as shipped_models
from .errors import InputFileError, ModelLoadError
from .loaded import LoadedModel, build_timm, fmnist_loaded, timm_loaded

__all__ = ["TORCH_SUFFIXES", "CHECKPOINT_SUFFIXES", "read_state_dict", "load_checkpoint", "load_state",
           "save_checkpoint", "save_quantized"]

TORCH_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")
CHECKPOINT_SUFFIXES = (".safetensors",) + TORCH_SUFFIXES


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


def load_checkpoint(path: Path) -> LoadedModel:
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
    return build_timm(arch, False, kwargs), arch, False


def load_state(model: nn.Module, state: Mapping[str, torch.Tensor], where: str) -> None:
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
    load_state(model, state, str(path))
    info = {k: v for k, v in config.items() if k != "history"}
    if is_fmnist:
        return fmnist_loaded(model, name, "checkpoint", info)
    return timm_loaded(model, name, "checkpoint", info, config.get("data_config"))


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
            return timm_loaded(obj, name, "checkpoint", {"file": str(path)})
        raise ModelLoadError(f"{path} holds a {type(obj).__name__} that is not a timm vision model")
    if isinstance(obj, Mapping) and "state_dict" in obj:
        model, name, is_fmnist = _build_from_config(obj, str(path))
        load_state(model, obj["state_dict"], str(path))
        info = {k: v for k, v in obj.items() if k != "state_dict"}
        if is_fmnist:
            return fmnist_loaded(model, name, "checkpoint", info)
        return timm_loaded(model, name, "checkpoint", info, obj.get("data_config"))
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
