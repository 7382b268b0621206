"""Incumbents for the exact search: round the LP solution, repair it, improve it by local search.

A good incumbent early makes reduced-cost fixing and bound pruning bite, so this runs before
the search. All arrays are the scaled ones of `solvers.exact.mckp` (every limit is 1).
"""
from __future__ import annotations

import time

import numpy as np

__all__ = ["usage", "round_lp", "repair", "improve"]


def _past(deadline: float | None) -> bool:
    return deadline is not None and time.perf_counter() > deadline


def usage(costs: np.ndarray, choice: np.ndarray) -> np.ndarray:
    return costs[:, np.arange(costs.shape[1]), choice].sum(axis=1)


def round_lp(weight: np.ndarray, loss: np.ndarray) -> np.ndarray:
    """Each layer's option with the largest LP weight (an allowed one)."""
    return np.argmax(np.where(np.isfinite(loss), weight + 1e-15, -1.0), axis=1)


def repair(loss: np.ndarray, costs: np.ndarray, choice: np.ndarray, max_moves: int | None = None,
           deadline: float | None = None) -> np.ndarray | None:
    """Switch options, cheapest loss increase per unit of violation removed first, until every limit
    holds; None if it gets stuck or the deadline passes first."""
    n_layers = loss.shape[0]
    rows = np.arange(n_layers)
    choice = choice.copy()
    total = usage(costs, choice)
    for _ in range(max_moves or 4 * n_layers * loss.shape[1]):
        excess = np.maximum(total - 1.0, 0.0)
        if not excess.any():
            return choice
        if _past(deadline):
            return None
        d_loss = loss - loss[rows, choice][:, None]
        d_cost = costs - costs[:, rows, choice][:, :, None]
        removed = excess.sum() - np.maximum(total[:, None, None] + d_cost - 1.0, 0.0).sum(axis=0)
        with np.errstate(divide="ignore", invalid="ignore"):
            score = np.where(removed > 1e-15, d_loss / removed, np.inf)
        score[~np.isfinite(loss)] = np.inf
        best = int(np.argmin(score))
        if not np.isfinite(score.flat[best]):
            return None
        layer, option = divmod(best, loss.shape[1])
        total += d_cost[:, layer, option]
        choice[layer] = option
    return None


def improve(loss: np.ndarray, costs: np.ndarray, choice: np.ndarray, lam: np.ndarray, n_pair: int = 50,
            deadline: float | None = None) -> np.ndarray:
    """Best improving single switch while one exists, then best improving pair of switches; repeat
    (until none improves or the deadline passes: every step keeps the plan feasible)."""
    n_layers, n_opt = loss.shape
    rows = np.arange(n_layers)
    choice = choice.copy()
    total = usage(costs, choice)
    for _ in range(4 * n_layers * n_opt):
        if _past(deadline):
            return choice
        d_loss = loss - loss[rows, choice][:, None]
        d_cost = costs - costs[:, rows, choice][:, :, None]
        fits = (total[:, None, None] + d_cost <= 1.0).all(axis=0) & (d_loss < 0)
        if fits.any():
            best = int(np.argmin(np.where(fits, d_loss, np.inf)))
            layer, option = divmod(best, n_opt)
            total += d_cost[:, layer, option]
            choice[layer] = option
            continue
        # pairs among the switches that change the Lagrangian least
        priced = d_loss + np.tensordot(lam, d_cost, axes=1)
        priced[rows, choice] = np.inf
        priced[~np.isfinite(loss)] = np.inf
        n = int(min(n_pair, np.isfinite(priced).sum()))
        if n < 2:
            return choice
        flat = np.argpartition(priced.ravel(), n - 1)[:n]
        ml, mk = np.divmod(flat, n_opt)
        dl, dc = d_loss[ml, mk], d_cost[:, ml, mk]
        gain = dl[:, None] + dl[None, :]
        ok = (total[:, None, None] + dc[:, :, None] + dc[:, None, :] <= 1.0).all(axis=0) & (ml[:, None] != ml[None, :])
        gain = np.where(ok, gain, np.inf)
        best = int(np.argmin(gain))
        if not gain.flat[best] < 0:
            return choice
        for m in divmod(best, n):
            total += dc[:, m]
            choice[ml[m]] = mk[m]
    return choice
