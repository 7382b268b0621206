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

from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
import torch.nn as nn

from quant.progress import Progress

from ._chain import Chain
from ._data import CalibSet
from ._anchored import UnitProbe, anchored_means
from ._early_stop import EarlyStop, RunningMean, should_stop
from ._settled import PairSettler
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
          metric: str, record: Callable[[str, dict[str, list[float]], dict[str, list[int]]], None],
          progress: Progress, stop: EarlyStop | None = None, anchor_bits: int | None = None,
          settler: PairSettler | None = None) -> None:
    """Measure every pair of `groups`; call ``record(name, rows, used)`` when a layer is finished.

    ``settings(name)`` lists the layer's pairs as ``(table, w_bits, a_bits)`` (table "weight" or
    "act"); ``rows`` maps each table to the layer's mean damages in that order and ``used`` to
    the number of images each mean is over (all of them unless `stop` ended a pair early,
    `profiling._early_stop`). With `anchor_bits`, layers inside a unit run the whole suffix at
    that bit-width only (`profiling._anchored`). With `settler`, each pair's constant quantizer
    inputs are settled as `quant.quantize` settles them (`profiling._settled`). Sites are restored
    to the bits they had on entry after every pair.
    """
    for group in groups:
        plan = {name: settings(name) for name in group.names}
        stats = {name: [RunningMean() for _ in pairs] for name, pairs in plan.items()}
        errors = {name: [0.0] * len(pairs) for name, pairs in plan.items()}
        running = {name: list(range(len(pairs))) for name, pairs in plan.items()}
        anchored = anchor_bits is not None and chain is not None and 0 <= group.k < len(chain)
        for i, x in enumerate(calib.images):
            if not any(running.values()):
                progress.update(sum(len(p) for p in plan.values()) * (len(calib.images) - i))
                break
            x = x.to(device)
            y = None if labels is None else labels[i].to(device)
            h = chain.input_of(x, group.k) if chain is not None and group.k >= 0 else None
            probe = UnitProbe(chain, group.k, h) if anchored else None
            for name, pairs in plan.items():
                site = sites[name]
                base = (site.w_bits, site.a_bits)
                try:
                    for j in running[name]:
                        table, w_bits, a_bits = pairs[j]
                        site.set_bits(w_bits, a_bits)
                        with settler.pair(site) if settler is not None else nullcontext():
                            if probe is not None and (w_bits if table == "weight" else a_bits) != anchor_bits:
                                errors[name][j] += probe.error(probe.run())
                                continue
                            with probe.capture() if probe is not None else nullcontext([]) as unit_out:
                                logits = chain.run_from(x, group.k, h) if chain is not None else qmodel(x)
                        stats[name][j].add(per_sample_damage(metric, logits, base_logits[i], y))
                        if probe is not None:
                            errors[name][j] += probe.error(unit_out[0])
                finally:
                    site.set_bits(*base)
                    if settler is not None:
                        settler.restore_site(site)
                progress.update(len(pairs))
                if stop is not None:
                    running[name] = _still_running(pairs, stats[name], running[name], stop)
            del h, probe
        for name, pairs in plan.items():
            rows: dict[str, list[float]] = {}
            used: dict[str, list[int]] = {}
            for (table, _, _), stat in zip(pairs, stats[name]):
                rows.setdefault(table, []).append(stat.mean)
                used.setdefault(table, []).append(stat.n if not anchored else calib.size)
            if anchored:
                rows = {table: _anchored_row(name, table, pairs, stats[name], errors[name], anchor_bits)
                        for table in rows}
            record(name, rows, used)


def _anchored_row(name: str, table: str, pairs: list[tuple[str, int | None, int | None]],
                  stats: list[RunningMean], errors: list[float], anchor_bits: int) -> list[float]:
    idx = [j for j, p in enumerate(pairs) if p[0] == table]
    bits = [pairs[j][1] if table == "weight" else pairs[j][2] for j in idx]
    a = bits.index(anchor_bits)
    return anchored_means(name, table, stats[idx[a]].mean, [errors[j] for j in idx], a)


def _still_running(pairs: list[tuple[str, int | None, int | None]], stats: list[RunningMean],
                   running: list[int], stop: EarlyStop) -> list[int]:
    """The pairs of one layer that go on to the next batch."""
    table_max: dict[str, float] = {}
    for (table, _, _), stat in zip(pairs, stats):
        table_max[table] = max(table_max.get(table, 0.0), abs(stat.mean))
    return [j for j in running if not should_stop(stats[j], table_max[pairs[j][0]], stop)]
