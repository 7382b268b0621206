"""The end-to-end steps shared by the CLI and the demo: load, profile, solve, quantize, evaluate.

Each step is one function with plain inputs and outputs, so ``mixqvit profile`` /
``solve`` / ``quantize`` (one step per command, JSON files in between) and ``mixqvit demo``
(all steps in one process) run exactly the same code.

Models are named three ways (:func:`load_model`):

* a shipped demo model: ``fmnist_vit``, ``fmnist_deit``, ``fmnist_swin`` (Fashion-MNIST, 1x28x28);
* a checkpoint path: ``file.safetensors`` with ``file.json`` beside it (written by
  :func:`save_checkpoint` or by ``mixqvit train``), or a torch file (``.pt``/``.pth``/``.bin``)
  holding a whole module or ``{"arch", "model_kwargs", "state_dict"}``;
* any ``timm`` model name, with ``pretrained=True`` for its published weights (downloaded by
  timm; needs internet the first time) and ``model_kwargs`` for its constructor. Without
  ``pretrained`` the weights are a seeded random initialisation (the same in every command).

Data (:func:`load_calibration`, :func:`load_test`) is either a Fashion-MNIST directory of IDX
files (calibration from the train split, test from the test split) or an ImageFolder (one
sub-directory per class, e.g. ImageNet val), transformed with the model's timm data config.
"""
from __future__ import annotations

import difflib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from . import data as fmnist_data
from . import models as shipped_models
from .atomic import atomic_path, write_bytes, write_json
from .errors import DataLoadError, InputFileError, ModelLoadError

__all__ = [
    "LoadedModel",
    "EvalData",
    "TORCH_SUFFIXES",
    "load_model",
    "save_checkpoint",
    "load_calibration",
    "load_test",
    "evaluate",
    "profile_model",
    "solve_budgets",
    "quantize_model",
    "save_quantized",
    "PlanSwitcher",
    "plan_stats",
    "joint_damage",
    "Timer",
]

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


# -- models ------------------------------------------------------------------------------------
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
    try:
        # Random initialisation is seeded (and the caller's RNG left untouched), so separate
        # commands (`profile`, then `quantize`) naming the same untrained model get the same one.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(RANDOM_INIT_SEED)
            return timm.create_model(arch, pretrained=pretrained, **dict(model_kwargs or {}))
    except TypeError as exc:
        raise ModelLoadError(f"timm model {arch!r} rejected --model-kwargs {dict(model_kwargs or {})}: {exc}") from None
    except Exception as exc:  # download failures come as OSError, HTTP or hub errors
        if not pretrained:
            raise
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelLoadError(
            f"could not get pretrained weights for {arch!r} ({type(exc).__name__}: {first}); timm downloads "
            "them from the Hugging Face Hub on first use, so check the internet connection (or the "
            "HF_HUB_OFFLINE setting and cache), or pass a checkpoint path instead"
        ) from None


def _looks_like_path(spec: str) -> bool:
    if spec.startswith(_HUB_PREFIXES):  # "hf-hub:timm/name": a timm name with a slash
        return False
    return os.sep in spec or spec.endswith(_CHECKPOINT_SUFFIXES + (".json",)) or Path(spec).exists()


def load_model(spec: str, pretrained: bool = False, model_kwargs: Mapping[str, Any] | None = None) -> LoadedModel:
    """Load a model named by ``spec``: shipped name, checkpoint path or timm name (module docstring).

    Raises :class:`ModelLoadError` (unknown name, missing or unreadable checkpoint, failed
    download) with a message that says which of the three forms was expected.
    """
    spec = str(spec)
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
    return _timm_loaded(model, spec, "timm", info)


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


# -- data --------------------------------------------------------------------------------------
@dataclass
class EvalData:
    """Labelled images to evaluate on: tensors in memory, or a Dataset read batch by batch."""

    images: torch.Tensor | None
    labels: torch.Tensor | None
    dataset: Any = None
    description: str = ""

    def __len__(self) -> int:
        return len(self.images) if self.images is not None else len(self.dataset)

    def loader(self, batch_size: int) -> torch.utils.data.DataLoader:
        if self.images is not None:
            return fmnist_data.make_loader(self.images, self.labels, batch_size=batch_size)
        return fmnist_data.make_loader(self.dataset, batch_size=batch_size)


def _is_fashion_mnist_dir(root: Path) -> bool:
    try:
        fmnist_data.fashion_mnist_files("test", root)
        return True
    except FileNotFoundError:
        return False


def _data_root(data: str | os.PathLike | None, loaded: LoadedModel) -> tuple[str, Path | None]:
    """Decide the data kind: ("fashion-mnist", root or None for the default) or ("folder", root)."""
    if data is None:
        if loaded.fashion_mnist:
            return "fashion-mnist", None
        raise DataLoadError(
            f"model {loaded.name!r} needs --data: an ImageFolder directory (one sub-directory of images "
            "per class, e.g. ImageNet val) or a Fashion-MNIST directory of IDX files"
        )
    root = Path(data).expanduser()
    if not root.exists():
        raise DataLoadError(f"data path {root} does not exist; expected a Fashion-MNIST IDX directory or an ImageFolder")
    if not root.is_dir():
        raise DataLoadError(f"data path {root} is a file; expected a directory (Fashion-MNIST IDX files or an ImageFolder)")
    if _is_fashion_mnist_dir(root):
        return "fashion-mnist", root
    return "folder", root


def _check_fmnist_fits(loaded: LoadedModel) -> None:
    if tuple(loaded.input_size) != FMNIST_INPUT:
        raise DataLoadError(
            f"Fashion-MNIST images are {FMNIST_INPUT} (C, H, W) but model {loaded.name!r} expects "
            f"{tuple(loaded.input_size)}; pass --data with an ImageFolder for this model"
        )


def _image_folder(root: Path, loaded: LoadedModel):
    """ImageFolder with the model's transform: Fashion-MNIST normalisation or its timm data config."""
    if loaded.fashion_mnist:
        make = lambda: fmnist_data.image_folder(root, loaded.input_size)  # noqa: E731
    else:
        def make():
            from timm.data import create_transform
            from torchvision import datasets, transforms

            tf = create_transform(input_size=loaded.input_size, interpolation=loaded.interpolation,
                                  mean=loaded.mean, std=loaded.std, crop_pct=loaded.crop_pct)
            if loaded.input_size[0] == 1:
                tf = transforms.Compose([transforms.Grayscale(1), tf])
            return datasets.ImageFolder(str(root), transform=tf)
    try:
        dataset = make()
    except (FileNotFoundError, RuntimeError) as exc:
        raise DataLoadError(
            f"{root} is neither a Fashion-MNIST directory (no t10k-images-idx3-ubyte[.gz]) nor an ImageFolder "
            f"with images in one sub-directory per class ({exc})"
        ) from None
    return dataset


def _stack(dataset, indices: Sequence[int], what: str) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = [], []
    for i in indices:
        try:
            x, y = dataset[int(i)]
        except Exception as exc:  # PIL / IO errors name the file
            raise DataLoadError(f"cannot read {what} image {dataset.samples[int(i)][0]}: {exc}") from None
        images.append(x)
        labels.append(int(y))
    return torch.stack(images), torch.tensor(labels, dtype=torch.long)


def _fmnist_split(loaded: LoadedModel, root: Path | None, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """One Fashion-MNIST split for ``loaded``, a missing or corrupt file as a DataLoadError."""
    _check_fmnist_fits(loaded)
    try:
        return fmnist_data.load_fashion_mnist(split, root)
    except (FileNotFoundError, ValueError) as exc:
        raise DataLoadError(str(exc)) from None


def load_calibration(loaded: LoadedModel, data: str | os.PathLike | None, n: int,
                     seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` class-balanced, seeded calibration images and labels, in memory.

    Fashion-MNIST: drawn from the train split (never from the test images accuracy is reported
    on). ImageFolder: drawn from the folder itself (for ImageNet val this is the usual PTQ
    practice; the evaluation then includes the calibration images).
    """
    if n < 1:
        raise DataLoadError(f"--calib must be at least 1 image, got {n}")
    kind, root = _data_root(data, loaded)
    if kind == "fashion-mnist":
        images, labels = _fmnist_split(loaded, root, "train")
        if n > len(labels):
            raise DataLoadError(f"--calib {n} exceeds the {len(labels)} Fashion-MNIST training images")
        idx = fmnist_data.calibration_indices(labels, n, seed)
        return images[idx].clone(), labels[idx].clone()
    dataset = _image_folder(root, loaded)
    if n > len(dataset):
        raise DataLoadError(f"--calib {n} exceeds the {len(dataset)} images in {root}")
    try:
        idx = fmnist_data.calibration_indices(torch.tensor(dataset.targets), n, seed)
    except ValueError as exc:
        raise DataLoadError(f"cannot draw a class-balanced calibration set from {root}: {exc}") from None
    return _stack(dataset, idx.tolist(), "calibration")


def load_test(loaded: LoadedModel, data: str | os.PathLike | None, limit: int | None = None,
              seed: int = 0) -> EvalData:
    """The evaluation set: the Fashion-MNIST test split (first ``limit`` images) or the ImageFolder.

    For an ImageFolder a ``limit`` takes a seeded class-balanced subset (its files are sorted
    by class, so the first images would all share one label).
    """
    if limit is not None and limit < 1:
        raise DataLoadError(f"--test-limit must be at least 1, got {limit}")
    kind, root = _data_root(data, loaded)
    if kind == "fashion-mnist":
        images, labels = _fmnist_split(loaded, root, "test")
        if limit is not None:
            images, labels = images[:limit], labels[:limit]
        where = root or fmnist_data.DEFAULT_FASHION_MNIST_ROOT
        return EvalData(images, labels, description=f"Fashion-MNIST test, {len(labels)} images ({where})")
    dataset = _image_folder(root, loaded)
    if limit is not None and limit < len(dataset):
        idx = fmnist_data.calibration_indices(torch.tensor(dataset.targets), limit, seed)
        dataset = torch.utils.data.Subset(dataset, idx.tolist())
    return EvalData(None, None, dataset, description=f"ImageFolder {root}, {len(dataset)} images")


# -- evaluation --------------------------------------------------------------------------------
@torch.no_grad()
def evaluate(model: nn.Module, data: EvalData, batch_size: int = 250, verbose: bool = True,
             desc: str = "eval") -> float:
    """Top-1 accuracy of ``model`` (put in eval mode) on ``data``, with a tqdm bar when verbose."""
    from tqdm.auto import tqdm

    model.eval()
    correct = total = 0
    batches = tqdm(data.loader(batch_size), desc=desc, total=None if data.images is None else
                   -(-len(data) // batch_size), disable=None if verbose else True, leave=False)
    for images, labels in batches:
        try:
            logits = model(images)
        except RuntimeError as exc:
            if total == 0 and ("shape" in str(exc) or "size" in str(exc)):
                raise DataLoadError(
                    f"model rejected input of shape {tuple(images.shape[1:])}: {str(exc).splitlines()[0]}"
                ) from None
            raise
        correct += int((logits.argmax(-1) == labels).sum())
        total += len(labels)
    if total == 0:
        raise DataLoadError(f"no images to evaluate in {data.description or 'the data'}")
    return correct / total


# -- profile, solve, quantize ------------------------------------------------------------------
def profile_model(loaded: LoadedModel, calib: torch.Tensor | tuple[torch.Tensor, torch.Tensor],
                  bits: Sequence[int], verbose: bool = True, batch_size: int = 64, **options: Any):
    """Profile ``loaded.model`` on calibration data (``profiling.profile_model`` with ``options``).

    ``calib`` is an images tensor, any ``calib_data`` form, or an ``(images, labels)`` pair as
    :func:`load_calibration` returns (fed in batches of ``batch_size`` with their labels, for
    metrics that need them). The model's name, source and input size go into the metadata.
    """
    from profiling import profile_model as _profile

    if isinstance(calib, tuple):  # (images, labels) in memory -> batches of pairs
        calib = fmnist_data.make_loader(calib[0], calib[1], batch_size=batch_size)
    prof = _profile(loaded.model, calib, bits=tuple(bits), verbose=verbose, **options)
    prof.metadata.setdefault("model", loaded.name)
    prof.metadata.setdefault("model_source", loaded.source)
    prof.metadata.setdefault("input_size", list(loaded.input_size))
    return prof


def solve_budgets(profile, budgets: Sequence[Any], solver: str = "auto", **options: Any) -> list:
    """One plan per budget (``allocator.solve``); infeasible budgets raise the allocator's error."""
    from allocator import solve

    return [solve(profile, budget=b, solver=solver, **options) for b in budgets]


def quantize_model(model: nn.Module, plan: Any, calib: Any, verbose: bool = False) -> nn.Module:
    """A fake-quantized copy of ``model`` following ``plan`` (a Plan or "W4A4"), calibrated on ``calib``."""
    from quant import quantize

    return quantize(model, plan, calib, verbose=verbose)


class PlanSwitcher:
    """Prepare and calibrate a fake-quant copy once, then switch it from plan to plan.

    ``quant.quantize`` does prepare + calibrate + set bits for one plan; calibration statistics
    do not depend on the bits, so evaluating many plans (the demo: uniform and mixed at four
    budgets) reuses one calibrated copy and only re-sets the bits, which gives the same model
    as a fresh ``quantize`` call per plan at a fraction of the cost.
    """

    def __init__(self, model: nn.Module, calib: Any, verbose: bool = False, config: Any = None):
        from quant import QuantConfig, calibrate, find_quantizable_layers, prepare, quant_sites

        self.config = config if config is not None else QuantConfig()
        self._layers = find_quantizable_layers(model)
        self.qmodel = prepare(model, self.config)
        calibrate(self.qmodel, calib, verbose=verbose)
        self._sites = quant_sites(self.qmodel)

    def apply(self, plan: Any) -> nn.Module:
        """Set every site's bits from ``plan`` (a Plan or "W4A4"); returns the quantized model."""
        from quant import resolve_plan

        for name, (w, a) in resolve_plan(plan, self._layers, self.config).items():
            self._sites[name].set_bits(w, a)
        return self.qmodel.eval()


def joint_damage(switcher: PlanSwitcher, plans: Sequence[Any], images: torch.Tensor,
                 reference_logits: torch.Tensor, metric: str = "kl", batch_size: int = 256) -> list[float]:
    """Mean damage (KL of the logits to ``reference_logits`` by default) of each plan applied as a
    whole, on ``images``.

    The allocator adds up damages measured one layer at a time; this measures the plan jointly,
    which is what the additive model approximates, so a caller can check a solved plan against
    an alternative (the demo: the uniform plan of the same budget) before trusting it.
    """
    from profiling import per_sample_damage

    totals = []
    for plan in plans:
        model = switcher.apply(plan)
        damage = []
        with torch.no_grad():
            for start in range(0, len(images), batch_size):
                logits = model(images[start:start + batch_size])
                damage.append(per_sample_damage(metric, logits, reference_logits[start:start + batch_size], None))
        totals.append(float(torch.cat(damage).mean()))
    return totals


def plan_stats(plan: Any) -> dict[str, float]:
    """Average weight bits (parameter-weighted), average activation bits (MAC-weighted), size in
    MB and GBOPs of a plan; activation bits are weighted by MACs because that is where they cost."""
    macs = sum(layer.macs for layer in plan.layer_info)
    avg_a = sum(layer.macs * plan.a_bits[layer.name] for layer in plan.layer_info) / macs if macs else 0.0
    return {"avg_w_bits": plan.avg_w_bits, "avg_a_bits": avg_a, "size_mb": plan.size_bytes / 1e6,
            "gbops": plan.bops / 1e9}


def save_quantized(qmodel: nn.Module, path: str | os.PathLike) -> Path:
    """Save the whole quantized module with ``torch.save`` (atomically); reload with
    ``torch.load(path, weights_only=False)`` in an environment where mixqvit is installed."""
    with atomic_path(path) as tmp:
        torch.save(qmodel, tmp)
    return Path(path)


class Timer:
    """``with Timer() as t: ...``; then ``t.seconds`` (wall clock, perf_counter)."""

    def __enter__(self) -> "Timer":
        self._start = time.perf_counter()
        self.seconds = 0.0
        return self

    def __exit__(self, *exc: Any) -> None:
        self.seconds = time.perf_counter() - self._start
