"""`profile_model`: everything the allocator needs about a model, measured in one call.

costs (`profiling.costs`) + LRP importance (`profiling.lrp`) + weight / activation
sensitivity (`profiling.sensitivity`) -> `allocator.Profile`.
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import asdict, replace
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn as nn

from ._data import DEFAULT_BATCH_SIZE, as_calib_set
from ._early_stop import EarlyStop
from ._heap import bounded_heap
from .costs import layer_costs
from .lrp import DEFAULT_EPSILON, lrp_importance
from .sensitivity import measure_sensitivity

__all__ = ["profile_model", "library_version"]

CALIBRATE_BATCH = 64  # quant.calibrate's batching; its value subsample depends on it


def library_version() -> str:
    """Installed mixqvit version ("unknown" when run from a source tree without metadata)."""
    try:
        from importlib.metadata import version

        return version("mixqvit")
    except Exception:  # noqa: BLE001 - metadata missing is not an error worth failing on
        return "unknown"


def profile_model(
    model: nn.Module,
    calib_data: Any,
    bits: Sequence[int] = (2, 3, 4, 5, 6, 8),
    metric: str = "kl",
    baseline_bits: int | None = None,
    importance: bool = True,
    weight: bool = True,
    activation: bool = True,
    pin_first_last: int | None = 8,
    seed: int = 0,
    checkpoint: str | None = None,
    verbose: bool = True,
    config: Any = None,
    lrp_target: str | int = "pred",
    lrp_epsilon: float = DEFAULT_EPSILON,
    batch_size: int | None = DEFAULT_BATCH_SIZE,
    metadata: dict[str, Any] | None = None,
    early_stop: EarlyStop | None = None,
    anchor_bits: int | None = None,
):
    """Profile `model` on `calib_data` and return an `allocator.Profile`.

    * layers: one `LayerInfo` per quantizable site (quant's discovery, forward order) with
      weight count and MACs per sample for the calibration image shape; the first layer (patch
      embedding) and last layers (classifier heads) get ``fixed_bits=pin_first_last`` (None:
      nothing pinned).
    * importance: AttnLRP relevance per site, averaged over the calibration images, sum 1
      (``importance=False`` skips it).
    * weight / act sensitivity: mean `metric` damage per (site, bits) with every other site at
      `baseline_bits` (None = float). Negative damage (a quantized layer doing slightly better on
      the calibration set, possible for "loss"/"top1") is stored as 0: the allocator reads these
      tables as costs, and a measured improvement is noise, not a reason to prefer fewer bits.
    * metadata: model class and name, calibration size, input shape, seed, library version,
      quant config, LRP target, timings.

    `batch_size` images at a time go through the network (LRP and sensitivity; None: the
    batches as given), so memory does not grow with the calibration set; the profile agrees
    across batch sizes to float rounding (calibration statistics do not depend on it). Work runs
    on the model's device. Under torchrun the LRP batches and the sensitivity layers are shared
    out between the processes and every process returns the same profile. `metadata` entries
    (e.g. where the weights came from) are added to the profile's metadata.

    `early_stop` (a `profiling.EarlyStop`, opt-in) ends each sensitivity pair once its mean
    damage is known to the rule's precision, visiting the images in an order seeded by `seed`;
    the metadata then records the rule (``early_stop``) and the images each pair used
    (``sensitivity_images``: ``{"weight": (L, B), "act": (L, B)}`` lists of counts).
    `anchor_bits` (opt-in approximation, see `measure_sensitivity`) is recorded as
    ``metadata["anchor_bits"]`` when used.

    `config` is a `quant.QuantConfig` (default one if None). `seed` seeds torch before each
    stage (in a forked RNG scope: the caller's random state is left as it was), so repeated
    calls give identical profiles. `model` is not modified.
    """
    from allocator import LayerInfo, Profile
    from allocator.bits import bits_defect
    from quant import QuantConfig, calibrate, find_quantizable_layers, prepare

    if pin_first_last is not None and bits_defect(pin_first_last, "pin_first_last"):
        raise ValueError(f"{bits_defect(pin_first_last, 'pin_first_last')}, or None (no pin)")
    if early_stop is not None and not isinstance(early_stop, EarlyStop):
        raise TypeError(f"early_stop={early_stop!r}; expected a profiling.EarlyStop or None")
    config = QuantConfig() if config is None else config
    calib = as_calib_set(calib_data, batch_size)
    was_training = model.training
    model.eval()
    timings: dict[str, float] = {}
    # `seed` seeds torch inside a forked RNG scope: the caller's global generators are restored.
    rng_scope = contextlib.ExitStack()
    rng_scope.enter_context(torch.random.fork_rng(devices=_cuda_indices(model)))
    try:
        sites = find_quantizable_layers(model)
        t = time.perf_counter()
        costs = layer_costs(model, calib.input_shape, sites)
        timings["costs_s"] = time.perf_counter() - t

        imp = None
        if importance:
            torch.manual_seed(seed)
            t = time.perf_counter()
            imp = lrp_importance(model, calib, sites, target=lrp_target, epsilon=lrp_epsilon,
                                 batch_size=batch_size, verbose=verbose).importance
            timings["lrp_s"] = time.perf_counter() - t

        w_table = a_table = None
        stop_meta: dict[str, Any] = {}
        if weight or activation:
            torch.manual_seed(seed)
            t = time.perf_counter()
            qmodel = prepare(model, config)
            # quant's own fixed batching (64), independent of batch_size; given as those batches,
            # so no temporary the size of the whole set is made (nor, for a dataset, all read at once).
            # bounded_heap as for LRP: one pass, larger batches than the sensitivity's
            with bounded_heap():
                calibrate(qmodel, calib.rebatched(CALIBRATE_BATCH).images, batch_size=CALIBRATE_BATCH)
            timings["calibrate_s"] = time.perf_counter() - t
            sens = measure_sensitivity(
                qmodel, calib, bits=bits, metric=metric, baseline_bits=baseline_bits,
                weight=weight, activation=activation, checkpoint=checkpoint,
                fingerprint_extra={"quant_config": _jsonable(config), "seed": seed},
                verbose=verbose, batch_size=batch_size,
                early_stop=None if early_stop is None else replace(early_stop, seed=seed), anchor_bits=anchor_bits,
            )
            timings["sensitivity_s"] = sens.seconds
            if sens.names != [s.name for s in sites]:
                raise RuntimeError(
                    "quant.prepare changed the site list: "
                    f"{[s.name for s in sites][:3]}... vs {sens.names[:3]}..."
                )
            w_table = None if sens.weight is None else np.maximum(sens.weight, 0.0)
            a_table = None if sens.act is None else np.maximum(sens.act, 0.0)
            if early_stop is not None:
                stop_meta = _early_stop_metadata(sens)
            if sens.anchor_bits is not None:
                stop_meta["anchor_bits"] = sens.anchor_bits
    finally:
        model.train(was_training)
        rng_scope.close()

    layers = [
        LayerInfo(
            name=c.name, kind=c.kind, params=c.params, macs=c.macs,
            fixed_bits=pin_first_last if pin_first_last is not None and s.role in ("first", "last") else None,
        )
        for c, s in zip(costs, sites)
    ]
    metadata = {
        "model_class": f"{type(model).__module__}.{type(model).__name__}",
        "model_name": _model_name(model),
        "calibration_size": calib.size,
        "input_shape": list(calib.input_shape),
        "seed": seed,
        "library_version": library_version(),
        "quant_config": _jsonable(config),
        "lrp_target": lrp_target if importance else None,
        "lrp_epsilon": lrp_epsilon if importance else None,
        "pinned_bits": pin_first_last,
        "batch_size": batch_size,
        "timings_s": {k: round(v, 4) for k, v in timings.items()},
        **stop_meta,
        **(metadata or {}),
    }
    return Profile(
        layers=layers, bits=tuple(int(b) for b in bits), importance=imp,
        weight_sensitivity=w_table, act_sensitivity=a_table, metric=metric,
        baseline_bits=baseline_bits, metadata=metadata,
    )


def _early_stop_metadata(sens: Any) -> dict[str, Any]:
    """The early-stopping rule and the images each (layer, bits) pair used, for the metadata."""
    used = {t: a.tolist() for t, a in (("weight", sens.weight_images), ("act", sens.act_images)) if a is not None}
    return {"early_stop": sens.early_stop.to_dict(), "sensitivity_images": used}


def _cuda_indices(model: nn.Module) -> list[int]:
    """CUDA devices whose RNG state `fork_rng` must save and restore (those the model is on)."""
    return sorted({p.device.index or 0 for p in model.parameters() if p.device.type == "cuda"})


def _model_name(model: nn.Module) -> str | None:
    cfg = getattr(model, "pretrained_cfg", None) or getattr(model, "default_cfg", None) or {}
    name = cfg.get("architecture") if isinstance(cfg, dict) else None
    return name if isinstance(name, str) else None


def _jsonable(config: Any) -> Any:
    try:
        return asdict(config)
    except TypeError:
        return repr(config)
