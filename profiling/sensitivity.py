"""Per-layer quantization sensitivity: damage when one site is quantized, the rest at baseline.

For every site and candidate bit-width ``b``: set that site's weights (then, separately, its
input activations) to ``b`` bits with quant's calibrated quantizers (`quant.prepare` +
`quant.calibrate` + ``set_bits``), keep every other site at the baseline (float, or
``baseline_bits``), run the calibration set and compare the logits with the baseline's
(`profiling.metrics`). Matmul sites (attention products) have no weights: weight row 0, only
activation sensitivity is measured (``set_bits(None, b)`` quantizes both operands).

Cost: a layer inside transformer unit ``k`` cannot change anything before unit ``k``, so the
tensors entering each unit are cached once (under the baseline) and each (layer, bits) pair
re-runs only units ``k..`` and the head (`profiling._chain`). Layers before the first unit
(patch embedding) re-run everything; layers after the last (heads) re-run only the head.

Resumable: with a checkpoint path, each finished layer is written atomically; a rerun reuses
finished layers and refuses a checkpoint made under other conditions (`profiling.checkpoint`).
"""
from __future__ import annotations

import sys
import time
import warnings
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn as nn
from allocator.bits import BITS_RANGE_TEXT, bits_defect
from quant.digest import module_digest
from tqdm.auto import tqdm

from ._chain import Chain, find_chain
from ._data import CalibSet, as_calib_set
from .checkpoint import SensitivityCheckpoint
from .metrics import check_metric, needs_labels, per_sample_damage

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


def _device(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


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
) -> SensitivityResult:
    """Sensitivity tables of a prepared and calibrated model (`quant.prepare` + `quant.calibrate`).

    `sites` restricts the measurement to those site names (rows of other sites are 0); it
    exists for benchmarks and debugging. `cache=False` re-runs the whole network for every pair
    (the reference the cached path is tested against). The site bits of `qmodel` are restored.
    """
    from quant import quant_sites

    bits = _check_bits(bits, baseline_bits)
    check_metric(metric)
    if not (weight or activation):
        raise ValueError("weight=False and activation=False: nothing to measure")
    calib = calib_data if isinstance(calib_data, CalibSet) else as_calib_set(calib_data)
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
        **(fingerprint_extra or {}),
    }
    ckpt = SensitivityCheckpoint(checkpoint, fingerprint)

    device, was_training = _device(qmodel), qmodel.training
    saved_bits = {n: (s.w_bits, s.a_bits) for n, s in qsites.items()}
    base = (baseline_bits, baseline_bits)
    B = len(bits)
    todo = [n for n in measured if n not in ckpt.done]
    n_pairs = sum((B if weight and qsites[n].kind != "matmul" else 0) + (B if activation else 0)
                  for n in todo)
    t0, c0 = time.perf_counter(), time.process_time()
    setup = setup_cpu = 0.0
    chain = find_chain(qmodel) if cache else None
    try:
        qmodel.eval()
        for s in qsites.values():
            s.set_bits(*base)
        with torch.no_grad():
            xs = [x.to(device) for x in calib.images]
            ys = None if labels is None else [y.to(device) for y in labels]
            if todo:
                base_logits, caches = _baseline(qmodel, chain, xs)
                if chain is not None and not _chain_reproduces(chain, xs[0], caches[0], base_logits[0]):
                    warnings.warn(
                        f"{type(qmodel).__name__}: re-running from a cached block does not reproduce "
                        "the full forward pass; falling back to full re-evaluation per pair",
                        RuntimeWarning, stacklevel=2,
                    )
                    chain = None
                starts = chain.positions(names) if chain is not None else [-1] * len(names)
                start_of = dict(zip(names, starts))
                setup, setup_cpu = time.perf_counter() - t0, time.process_time() - c0
            bar = tqdm(total=n_pairs, desc="sensitivity", unit="pair", leave=False,
                       disable=not verbose or not sys.stderr.isatty())
            for name in todo:
                site = qsites[name]
                k = start_of[name]

                def damage(w_bits: int | None, a_bits: int | None) -> float:
                    site.set_bits(w_bits, a_bits)
                    total = 0.0
                    for i, x in enumerate(xs):
                        logits = chain.run_from(x, k, caches[i]) if chain is not None else qmodel(x)
                        y = None if ys is None else ys[i]
                        total += float(per_sample_damage(metric, logits, base_logits[i], y).sum())
                    site.set_bits(*base)
                    bar.update(1)
                    return total / calib.size

                w_row = a_row = None
                if weight:
                    w_row = [0.0] * B if site.kind == "matmul" else [damage(b, base[1]) for b in bits]
                if activation:
                    a_row = [damage(base[0], b) for b in bits]
                ckpt.record(name, w_row, a_row)
            bar.close()
    finally:
        for n, s in qsites.items():
            s.set_bits(*saved_bits[n])
        qmodel.train(was_training)
    seconds, cpu_seconds = time.perf_counter() - t0, time.process_time() - c0

    def table(rows: dict[str, list[float]], enabled: bool) -> np.ndarray | None:
        if not enabled:
            return None
        return np.array([rows.get(n, [0.0] * B) for n in names], dtype=np.float64)

    return SensitivityResult(
        names=names, bits=bits, weight=table(ckpt.weight, weight), act=table(ckpt.act, activation),
        metric=metric, baseline_bits=baseline_bits, seconds=seconds, setup_seconds=setup,
        cpu_seconds=cpu_seconds, setup_cpu_seconds=setup_cpu, pairs=n_pairs,
        cached=chain is not None,
    )


def _baseline(qmodel: nn.Module, chain: Chain | None, xs: list[torch.Tensor]
              ) -> tuple[list[torch.Tensor], list[list[torch.Tensor]]]:
    """Baseline logits per batch, and (with a chain) the tensors entering each unit."""
    logits, caches = [], []
    for x in xs:
        if chain is None:
            logits.append(qmodel(x))
            caches.append([])
        else:
            out, cache = chain.capture(x)
            logits.append(out)
            caches.append(cache)
    return logits, caches


def _chain_reproduces(chain: Chain, x: torch.Tensor, cache: list[torch.Tensor],
                      base: torch.Tensor) -> bool:
    """Cheap self-check: re-running from the middle unit gives the baseline logits."""
    k = len(chain) // 2
    return bool(torch.allclose(chain.run_from(x, k, cache), base, rtol=1e-4, atol=1e-5))
