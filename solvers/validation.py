"""Input validation for `Problem`, done once, in one function (like scipy's `_milp_iv`).

Every check raises `ValueError` (or `TypeError` for a wrong container type) whose message names
the field, says what was given and what is expected. Backends can therefore assume clean input:
finite non-negative costs, a loss that is finite or +inf, at least one allowed option per layer,
and tied groups that are disjoint, in range and share at least one allowed option.
"""
from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["ValidatedProblem", "problem_iv", "time_limit_iv"]

ValidatedProblem = tuple[np.ndarray, dict[str, np.ndarray], dict[str, float], tuple[tuple[int, ...], ...]]


def _first_bad(mask: np.ndarray) -> str:
    """Describe the first True entry of a (layers, options) mask as 'layer i, option k'."""
    layer, option = np.argwhere(mask)[0]
    return f"layer {int(layer)}, option {int(option)}"


def _as_float_array(value: Any, field: str) -> np.ndarray:
    try:
        array = np.array(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{field}: expected a numeric (layers x options) array, got {type(value).__name__} ({exc})") from None
    return array


def _loss_iv(loss: Any) -> np.ndarray:
    loss = _as_float_array(loss, "Problem.loss")
    if loss.ndim != 2 or loss.shape[0] == 0 or loss.shape[1] == 0:
        raise ValueError(
            f"Problem.loss: expected a non-empty 2-D array of shape (layers, options), got shape {loss.shape}"
        )
    if np.isnan(loss).any():
        raise ValueError(f"Problem.loss: NaN at {_first_bad(np.isnan(loss))}; use np.inf to forbid an option")
    if np.isneginf(loss).any():
        raise ValueError(
            f"Problem.loss: -inf at {_first_bad(np.isneginf(loss))}; losses must be finite, or +inf to forbid an option"
        )
    empty = np.isinf(loss).all(axis=1)
    if empty.any():
        layers = np.flatnonzero(empty).tolist()
        raise ValueError(
            f"Problem.loss: layer(s) {layers} have no allowed option (every entry is inf); "
            "allow at least one option per layer"
        )
    _overflow_iv(loss)
    return loss


def _overflow_iv(loss: np.ndarray) -> None:
    """Refuse losses whose plan objectives can overflow float64 (a sum of finite entries that is
    inf), naming the layers responsible; then every plan's objective is finite."""
    finite = np.isfinite(loss)
    with np.errstate(over="ignore", invalid="ignore"):
        largest = np.where(finite, np.abs(loss), 0.0).max(axis=1)  # per layer
        spread = np.where(finite, loss, -np.inf).max(axis=1) - np.where(finite, loss, np.inf).min(axis=1)
        total = largest.sum()
    wide = np.flatnonzero(~np.isfinite(spread))
    if wide.size:
        raise ValueError(
            f"Problem.loss: the losses of layer(s) {wide.tolist()} span more than float64 can hold "
            "(largest minus smallest allowed entry overflows to inf); rescale the losses"
        )
    if not np.isfinite(total):
        worst = np.argsort(-largest, kind="stable")[:5]
        named = ", ".join(f"layer {int(l)} (|loss| up to {largest[l]:.3g})" for l in worst)
        raise ValueError(
            f"Problem.loss: the objective of some plans overflows float64 to inf (the sum over layers "
            f"of each layer's largest allowed |loss| is inf); the largest: {named}; rescale the losses"
        )


def _costs_iv(costs: Any, shape: tuple[int, int]) -> dict[str, np.ndarray]:
    if not isinstance(costs, Mapping):
        raise TypeError(f"Problem.costs: expected a dict name -> (layers x options) array, got {type(costs).__name__}")
    clean: dict[str, np.ndarray] = {}
    for name, table in costs.items():
        if not isinstance(name, str):
            raise TypeError(f"Problem.costs: resource names must be str, got {name!r}")
        field = f"Problem.costs[{name!r}]"
        array = _as_float_array(table, field)
        if array.shape != shape:
            raise ValueError(f"{field}: shape {array.shape} does not match Problem.loss shape {shape}")
        if np.isnan(array).any():
            raise ValueError(f"{field}: NaN at {_first_bad(np.isnan(array))}; costs must be finite and >= 0")
        if np.isinf(array).any():
            raise ValueError(
                f"{field}: infinite cost at {_first_bad(np.isinf(array))}; costs must be finite "
                "(forbid an option with np.inf in Problem.loss instead)"
            )
        if (array < 0).any():
            where = _first_bad(array < 0)
            raise ValueError(f"{field}: negative cost {float(array[array < 0][0])!r} at {where}; costs must be >= 0")
        array.setflags(write=False)
        clean[name] = array
    return clean


def _limits_iv(limits: Any, costs: Mapping[str, np.ndarray]) -> dict[str, float]:
    if not isinstance(limits, Mapping):
        raise TypeError(f"Problem.limits: expected a dict name -> float, got {type(limits).__name__}")
    clean: dict[str, float] = {}
    for name, limit in limits.items():
        field = f"Problem.limits[{name!r}]"
        if name not in costs:
            raise ValueError(
                f"{field}: names a resource that is not in Problem.costs (known: {sorted(costs)}); "
                "add its cost table or drop the limit"
            )
        if isinstance(limit, bool) or not isinstance(limit, numbers.Real):
            raise TypeError(f"{field}: expected a real number, got {type(limit).__name__}")
        limit = float(limit)
        if math.isnan(limit):
            raise ValueError(f"{field}: NaN; a limit must be a number >= 0")
        if limit < 0:
            raise ValueError(f"{field}: {limit!r} is negative; costs are >= 0 so a limit must be >= 0")
        clean[name] = limit
    return clean


def _tied_iv(tied: Any, loss: np.ndarray) -> tuple[tuple[int, ...], ...]:
    n_layers = loss.shape[0]
    if tied is None:
        return ()
    if isinstance(tied, (str, bytes)) or not isinstance(tied, Sequence):
        raise TypeError(f"Problem.tied: expected a list of lists of layer indices, got {type(tied).__name__}")
    owner: dict[int, int] = {}
    allowed = np.isfinite(loss)
    groups = []
    for g, group in enumerate(tied):
        field = f"Problem.tied[{g}]"
        if isinstance(group, (str, bytes)) or not isinstance(group, (Sequence, np.ndarray)):
            raise TypeError(f"{field}: expected a list of layer indices, got {type(group).__name__}")
        members = []
        for index in group:
            if isinstance(index, bool) or not isinstance(index, numbers.Integral):
                raise TypeError(f"{field}: layer indices must be int, got {index!r}")
            index = int(index)
            if not 0 <= index < n_layers:
                raise ValueError(f"{field}: layer index {index} is out of range for {n_layers} layers (0..{n_layers - 1})")
            if index in owner:
                where = "twice in this group" if owner[index] == g else f"also in Problem.tied[{owner[index]}]"
                raise ValueError(f"{field}: layer {index} appears {where}; each layer may be in one group once (merge groups that overlap)")
            owner[index] = g
            members.append(index)
        if not members:
            raise ValueError(f"{field}: empty group; a tied group lists the layers that must share an option")
        common = allowed[members].all(axis=0)
        if not common.any():
            patterns = {m: np.flatnonzero(allowed[m]).tolist() for m in members}
            raise ValueError(
                f"{field}: layers {members} share no allowed option, so the tie is impossible "
                f"(allowed options per layer, from the np.inf pattern of Problem.loss: {patterns})"
            )
        groups.append(tuple(members))
    return tuple(groups)


def problem_iv(loss: Any, costs: Any, limits: Any, tied: Any) -> ValidatedProblem:
    """Validate and normalise the fields of a `Problem`.

    Returns read-only float64 arrays for loss and costs, float limits and tied groups as tuples.
    """
    loss = _loss_iv(loss)
    loss.setflags(write=False)
    clean_costs = _costs_iv({} if costs is None else costs, loss.shape)
    clean_limits = _limits_iv({} if limits is None else limits, clean_costs)
    clean_tied = _tied_iv(tied, loss)
    return loss, clean_costs, clean_limits, clean_tied


def time_limit_iv(time_limit: Any) -> float | None:
    """A time limit is None (no limit) or a positive finite number of seconds."""
    if time_limit is None:
        return None
    if isinstance(time_limit, bool) or not isinstance(time_limit, numbers.Real):
        raise TypeError(f"time_limit: expected seconds as a number or None, got {type(time_limit).__name__}")
    value = float(time_limit)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"time_limit: expected a positive finite number of seconds or None, got {time_limit!r}")
    return value
