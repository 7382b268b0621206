"""Per-layer quantization sensitivity: damage when one site is quantized, the rest at baseline.

For every site and candidate bit-width ``b``: set that site's weights (then, separately, its
input activations) to ``b`` bits with quant's calibrated quantizers (`quant.prepare` +
`quant.calibrate` + ``set_bits``), keep every other site at the baseline (float, or
``baseline_bits``), run the calibration set and compare the logits with the baseline's
(`profiling.metrics`). Matmul sites (attention products) have no weights: weight row 0, only
activation sensitivity is measured (``set_bits(None, b)`` quantizes both operands).

Cost: a layer inside transformer unit ``k`` cannot change anything before unit ``k``, so the
tensor entering unit ``k`` is computed once per batch (under the baseline) and each (layer,
bits) pair re-runs only units ``k..`` and the head (`profiling._chain`). Layers before the first
unit (patch embedding) re-run everything; layers after the last (heads) re-run only the head.

Each pair is measured as `quant.quantize` would apply it: the quantizers whose inputs are the
same for every image are settled off rounding halves (`quant.settle`, `profiling._settled`).

Memory: one calibration batch (``batch_size`` images) and one unit input at a time
(`profiling._sweep`), whatever the calibration set's size. Inputs go to the model's device.

Early stopping (opt-in, `profiling._early_stop`): a pair stops once its mean damage is known to a
stated precision, or is negligible next to the layer's lowest-bit damage; the images each pair
used are returned (and recorded in the profile).

Resumable: with a checkpoint path, each finished layer is written atomically; a rerun reuses
finished layers and refuses a checkpoint made under other conditions (`profiling.checkpoint`).
Under torchrun the layers are shared out between the processes, whose rows are merged so that
every process returns the same tables (`profiling._shards`).
"""
from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn as nn
from allocator.bits import BITS_RANGE_TEXT, bits_defect
from quant import dist
from quant.device import model_device
from quant.digest import module_digest
from quant.progress import Progress

from ._chain import Chain, find_chain
from ._data import DEFAULT_BATCH_SIZE, as_calib_set
from ._early_stop import EarlyStop
from ._settled import PairSettler
from ._shards import PartCheckpoints
from ._sweep import baseline_logits, group_cost, group_layers, sweep
from .checkpoint import SensitivityCheckpoint
from .metrics import check_metric, needs_labels

__all__ = ["SensitivityResult", "measure_sensitivity"]


@dataclass
class SensitivityResult:
    """Mean damage per (site, bits); rows follow `names`, columns follow `bits`."""

    names: list[str]
    bits: tuple[int, ...]
    weight: np.ndarray | None  # (L, B), 0 rows for matmul sites
    act: np.ndarray | None     # (L, B)
    metric: str
    baseline_bits: int | None
    seconds: float             # wall time of the whole call
    setup_seconds: float       # of which: baseline pass, unit caching and the chain self-check
    cpu_seconds: float         # process CPU time of the call (robust to other load on the machine)
    setup_cpu_seconds: float   # process CPU time of the setup
    pairs: int                 # (site, bits) evaluations run in this call
    cached: bool               # whether the suffix cache was used
    early_stop: EarlyStop | None = None
    weight_images: np.ndarray | None = None  # (L, B) images each mean is over; early stopping only
    act_images: np.ndarray | None = None
    images: int = 0            # calibration images available to every pair
    anchor_bits: int | None = None  # anchored approximation (None: every pair exact)


def _check_bits(bits: Sequence[int], baseline_bits: int | None) -> tuple[int, ...]:
    out = tuple(bits)
    if not out:
        raise ValueError(f"bits={bits!r}; expected a non-empty sequence of integers in {BITS_RANGE_TEXT}")
    defects = [d for d in (bits_defect(b, f"bits[{k}]") for k, b in enumerate(out)) if d]
    if defects:
        raise ValueError("; ".join(defects))
    if len(set(out)) != len(out):
        raise ValueError(f"bits={bits!r} contains duplicates")
    if baseline_bits is not None and bits_defect(baseline_bits, "baseline_bits"):
        raise ValueError(f"{bits_defect(baseline_bits, 'baseline_bits')}, or None (float)")
    return tuple(int(b) for b in out)


def measure_sensitivity(
    qmodel: nn.Module,
    calib_data: Any,
    bits: Sequence[int] = (2, 3, 4, 5, 6, 8),
    metric: str = "kl",
    baseline_bits: int | None = None,
    weight: bool = True,
    activation: bool = True,
    checkpoint: str | None = None,
    fingerprint_extra: dict[str, Any] | None = None,
    cache: bool = True,
    verbose: bool = True,
    sites: Sequence[str] | None = None,
    batch_size: int | None = DEFAULT_BATCH_SIZE,
    early_stop: EarlyStop | None = None,
    anchor_bits: int | None = None,
) -> SensitivityResult:
    """Sensitivity tables of a prepared and calibrated model (`quant.prepare` + `quant.calibrate`).

    `sites` restricts the measurement to those site names (rows of other sites are 0); it
    exists for benchmarks and debugging. `cache=False` re-runs the whole network for every pair
    (the reference the cached path is tested against). The site bits of `qmodel` are restored.
    `batch_size` images go through the network at a time (None: the batches as given); the
    tables agree across batch sizes to float rounding. `early_stop` (`EarlyStop`, opt-in) ends
    each pair once its mean is known to the rule's precision; the images are then visited in the
    rule's seeded random order and the images each pair used are returned. `anchor_bits` (one of
    `bits`, opt-in, an approximation) runs the whole network only at that bit-width and scales
    the others by the error they make at the output of the layer's own transformer unit
    (`profiling._anchored`); layers outside the units, and models without a unit chain, are
    measured exactly.
    """
    from quant import quant_sites

    bits = _check_bits(bits, baseline_bits)
    check_metric(metric)
    if not (weight or activation):
        raise ValueError("weight=False and activation=False: nothing to measure")
    _check_anchor(anchor_bits, bits, early_stop)
    calib = as_calib_set(calib_data, batch_size)
    if early_stop is not None:
        if not isinstance(early_stop, EarlyStop):
            raise TypeError(f"early_stop={early_stop!r}; expected a profiling.EarlyStop or None")
        calib = calib.shuffled(early_stop.seed)  # every prefix a random sample (ImageFolders are class-sorted)
    labels = calib.require_labels(f"metric={metric!r}") if needs_labels(metric) else calib.labels
    qsites = quant_sites(qmodel)
    names = list(qsites)
    measured = names if sites is None else [n for n in names if n in set(sites)]
    if sites is not None and len(measured) != len(set(sites)):
        unknown = sorted(set(sites) - set(names))
        raise ValueError(f"sites {unknown} are not quantizable sites of this model; known: {names[:5]}...")

    fingerprint = {
        "model_class": type(qmodel).__name__,
        "model_hash": module_digest(qmodel),
        "sites": names,
        "measured": measured,
        "bits": list(bits),
        "metric": metric,
        "baseline_bits": baseline_bits,
        "weight": bool(weight),
        "activation": bool(activation),
        "data_hash": calib.fingerprint(),
        "batch_size": batch_size,
        "settled": True,  # pairs settled as quant.quantize settles (profiles before it differ)
        **({"early_stop": early_stop.to_dict()} if early_stop is not None else {}),
        **({"anchor_bits": anchor_bits} if anchor_bits is not None else {}),
        **(fingerprint_extra or {}),
    }
    ckpt = SensitivityCheckpoint(checkpoint, fingerprint)
    rank, world_size = dist.world()
    parts = PartCheckpoints(checkpoint, fingerprint, ckpt) if world_size > 1 else None

    device, was_training = model_device(qmodel), qmodel.training
    saved_bits = {n: (s.w_bits, s.a_bits) for n, s in qsites.items()}
    base = (baseline_bits, baseline_bits)
    B = len(bits)

    def settings(name: str) -> list[tuple[str, int | None, int | None]]:
        out = []
        if weight and qsites[name].kind != "matmul":
            out += [("weight", b, base[1]) for b in bits]
        if activation:
            out += [("act", base[0], b) for b in bits]
        return out

    todo = [n for n in measured if n not in ckpt.done]
    t0, c0 = time.perf_counter(), time.process_time()
    setup = setup_cpu = 0.0
    chain = find_chain(qmodel) if cache else None
    n_pairs = 0
    try:
        qmodel.eval()
        for s in qsites.values():
            s.set_bits(*base)
        with torch.no_grad():
            if todo:
                settler = PairSettler(qmodel, calib.images[0].shape[1:], baseline_bits is None)
                settler.baseline()
                base_logits = baseline_logits(qmodel, calib, device)
                if chain is not None and not _chain_reproduces(chain, calib.images[0].to(device), base_logits[0]):
                    warnings.warn(
                        f"{type(qmodel).__name__}: re-running from a cached block does not reproduce "
                        "the full forward pass; falling back to full re-evaluation per pair",
                        RuntimeWarning, stacklevel=2,
                    )
                    chain = None
                starts = chain.positions(names) if chain is not None else [-1] * len(names)
                groups = group_layers(todo, dict(zip(names, starts)))
                n_units = len(chain) if chain is not None else 0
                groups = dist.shard(groups, [group_cost(g, n_units, lambda n: len(settings(n))) for g in groups])
                n_pairs = sum(len(settings(n)) for g in groups for n in g.names)
                setup, setup_cpu = time.perf_counter() - t0, time.process_time() - c0

                def record(name: str, rows: dict[str, list[float]], used: dict[str, list[int]]) -> None:
                    w_row = None if not weight else rows.get("weight", [0.0] * B)
                    (parts or ckpt).record(name, w_row, rows.get("act") if activation else None,
                                           used if early_stop is not None else None)

                with Progress(n_pairs * len(calib.images), "sensitivity", "layer x bits x batch",
                              enabled=verbose) as progress:
                    sweep(qmodel, qsites, groups, chain, calib, labels, base_logits, device, settings, metric,
                          record, progress, early_stop, anchor_bits, settler)
        if parts is not None:
            parts.merge()
    finally:
        for n, s in qsites.items():
            s.set_bits(*saved_bits[n])
        qmodel.train(was_training)
    seconds, cpu_seconds = time.perf_counter() - t0, time.process_time() - c0

    def table(rows: dict[str, list[float]], enabled: bool) -> np.ndarray | None:
        if not enabled:
            return None
        return np.array([rows.get(n, [0.0] * B) for n in names], dtype=np.float64)

    def used(which: str, enabled: bool) -> np.ndarray | None:
        if early_stop is None or not enabled:
            return None
        return np.array([ckpt.images.get(n, {}).get(which, [0] * B) for n in names], dtype=np.int64)

    return SensitivityResult(
        names=names, bits=bits, weight=table(ckpt.weight, weight), act=table(ckpt.act, activation),
        metric=metric, baseline_bits=baseline_bits, seconds=seconds, setup_seconds=setup,
        cpu_seconds=cpu_seconds, setup_cpu_seconds=setup_cpu, pairs=n_pairs,
        cached=chain is not None, early_stop=early_stop, weight_images=used("weight", weight),
        act_images=used("act", activation), images=calib.size,
        anchor_bits=anchor_bits if chain is not None else None,
    )


def _check_anchor(anchor_bits: int | None, bits: tuple[int, ...], early_stop: EarlyStop | None) -> None:
    if anchor_bits is None:
        return
    if isinstance(anchor_bits, bool) or anchor_bits not in bits:
        raise ValueError(f"anchor_bits={anchor_bits!r}; expected one of the measured bits {list(bits)} "
                         "(the lowest is the usual choice), or None for the exact matrix")
    if early_stop is not None:
        raise ValueError("anchor_bits and early_stop cannot be combined; choose one approximation")


def _chain_reproduces(chain: Chain, x: torch.Tensor, base: torch.Tensor) -> bool:
    """Cheap self-check: re-running from the middle unit gives the baseline logits."""
    k = len(chain) // 2
    return bool(torch.allclose(chain.run_from(x, k, chain.input_of(x, k)), base, rtol=1e-4, atol=1e-5))
