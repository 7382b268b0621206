"""Reference answers by enumerating every choice (small problems only: K**L <= ~20k).

Written independently of `solvers` (it reads only the raw arrays), so it checks the library's
preprocessing as well as its backends.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np


@dataclass
class Reference:
    optimum: float | None          # None: no feasible choice
    choice: np.ndarray | None
    minima: dict[str, float]       # smallest total of each cost over tie-respecting allowed choices
    maxima: dict[str, float]       # largest such total


def enumerate_choices(n_layers: int, n_options: int, tied) -> np.ndarray:
    """Every choice (rows) that respects the ties."""
    choices = np.array(list(itertools.product(range(n_options), repeat=n_layers)), dtype=np.int64)
    keep = np.ones(len(choices), dtype=bool)
    for group in tied:
        for layer in group[1:]:
            keep &= choices[:, layer] == choices[:, group[0]]
    return choices[keep]


def brute_force(loss, costs, limits, tied=()) -> Reference:
    loss = np.asarray(loss, dtype=np.float64)
    n_layers, n_options = loss.shape
    choices = enumerate_choices(n_layers, n_options, [list(g) for g in tied])
    rows = np.arange(n_layers)
    objective = loss[rows, choices].sum(axis=1)
    allowed = np.isfinite(objective)
    totals = {name: np.asarray(table, dtype=np.float64)[rows, choices].sum(axis=1) for name, table in costs.items()}
    minima = {name: float(total[allowed].min()) for name, total in totals.items()}
    maxima = {name: float(total[allowed].max()) for name, total in totals.items()}
    feasible = allowed.copy()
    for name, limit in limits.items():
        feasible &= totals[name] <= limit
    if not feasible.any():
        return Reference(None, None, minima, maxima)
    best = np.flatnonzero(feasible)[np.argmin(objective[feasible])]
    return Reference(float(objective[best]), choices[best], minima, maxima)
