"""The (layer, bits) sweep behind `measure_sensitivity`: memory-flat, device-generic, shardable.

Order of work: the layers to measure are grouped by the transformer unit they start from
(`profiling._chain`); for each group and each calibration batch, the tensor entering that unit
is computed once (the prefix only) and then every (layer, bits) pair of the group re-runs the
suffix on that batch. Only one batch and one unit input are alive at a time, so memory does not
grow with the calibration set; the prefix is recomputed once per (unit, batch), about half a
forward pass per batch over the whole sweep (a few percent of the pairs' cost).

Each pair's damage is accumulated over the batches in batch order, exactly as a pair-by-pair
loop would, so the numbers do not depend on the grouping. Under torchrun each process takes a
contiguous, cost-balanced share of the groups (`quant.dist.shard`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
import torch.nn as nn

from quant.progress import Progress

from ._chain import Chain
from ._data import CalibSet
from .metrics import per_sample_damage

__all__ = ["Group", "group_layers", "group_cost", "baseline_logits", "sweep"]


@dataclass
class Group:
    """Consecutive layers that start re-computation at the same unit ``k`` (-1: everything)."""

    k: int
    names: list[str]


def group_layers(names: Sequence[str], start_of: dict[str, int]) -> list[Group]:
    """Layers in forward order, grouped by their start unit."""
    groups: list[Group] = []
    for n in names:
        k = start_of[n]
        if groups and groups[-1].k == k:
            groups[-1].names.append(n)
        else:
            groups.append(Group(k, [n]))
    return groups


def group_cost(group: Group, n_units: int, pairs_of: Callable[[str], int]) -> float:
    """Estimated cost of a group in suffix-units: pairs x units re-run (+1 for the head)."""
    suffix = n_units + 1 if group.k < 0 else n_units - group.k + 1
    return float(sum(pairs_of(n) for n in group.names) * suffix)


def baseline_logits(qmodel: nn.Module, calib: CalibSet, device: torch.device) -> list[torch.Tensor]:
    """Logits of the model as it is now (the baseline), per batch, on `device`."""
    return [qmodel(x.to(device)) for x in calib.images]


def sweep(qmodel: nn.Module, sites: dict[str, Any], groups: list[Group], chain: Chain | None,
          calib: CalibSet, labels: list[torch.Tensor] | None, base_logits: list[torch.Tensor],
          device: torch.device, settings: Callable[[str], list[tuple[str, int | None, int | None]]],
          metric: str, record: Callable[[str, dict[str, list[float]]], None], progress: Progress) -> None:
    """Measure every pair of `groups`; call ``record(name, rows)`` when a layer is finished.

    ``settings(name)`` lists the layer's pairs as ``(table, w_bits, a_bits)`` (table "weight" or
    "act"); ``rows`` maps each table to the layer's mean damages in that order. Sites are
    restored to ``base`` (the bits each site had on entry) after every pair.
    """
    n_images = calib.size
    for group in groups:
        plan = {name: settings(name) for name in group.names}
        sums = {name: [0.0] * len(pairs) for name, pairs in plan.items()}
        for i, x in enumerate(calib.images):
            x = x.to(device)
            y = None if labels is None else labels[i].to(device)
            h = chain.input_of(x, group.k) if chain is not None and group.k >= 0 else None
            for name, pairs in plan.items():
                site = sites[name]
                base = (site.w_bits, site.a_bits)
                try:
                    for j, (_, w_bits, a_bits) in enumerate(pairs):
                        site.set_bits(w_bits, a_bits)
                        logits = chain.run_from(x, group.k, h) if chain is not None else qmodel(x)
                        sums[name][j] += float(per_sample_damage(metric, logits, base_logits[i], y).sum())
                        progress.update(1)
                finally:
                    site.set_bits(*base)
            del h
        for name, pairs in plan.items():
            rows: dict[str, list[float]] = {}
            for (table, _, _), total in zip(pairs, sums[name]):
                rows.setdefault(table, []).append(total / n_images)
            record(name, rows)
