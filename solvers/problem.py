"""The data the solvers exchange: `Problem` in, `Solution` out.

A `Problem` is a multiple-choice knapsack: each of L layers picks exactly one of K options;
option k of layer l adds `loss[l, k]` to the objective and `costs[name][l, k]` to each resource
total; every resource with a limit must stay at or below it; layers in a tied group pick the same
option index. Construction validates everything (see `solvers.validation`), so a `Problem` that
exists is well-formed.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from .validation import problem_iv

__all__ = ["Problem", "Solution", "Status", "FEASIBILITY_RTOL"]

Status = Literal["optimal", "feasible"]

# A plan whose total is within this relative distance above a limit counts as satisfying it. MIP
# solvers accept tiny violations (their feasibility tolerances, ~1e-6 absolute); integral cost
# data (bits, BOPs) is never affected, floating-point measured costs may be.
FEASIBILITY_RTOL = 1e-9


@dataclass(frozen=True, eq=False)
class Problem:
    """A multiple-choice knapsack over layers and options.

    Attributes:
        loss: (L, K) floats; np.inf marks an option the layer may not take.
        costs: resource name -> (L, K) finite costs >= 0 (resources without a limit are only
            reported in `Solution.usage`).
        limits: resource name -> limit >= 0 on the sum over layers of the chosen option's cost.
        tied: groups of layer indices that must choose the same option index.
    """

    loss: np.ndarray
    costs: Mapping[str, np.ndarray] = field(default_factory=dict)
    limits: Mapping[str, float] = field(default_factory=dict)
    tied: Sequence[Sequence[int]] = ()

    def __post_init__(self) -> None:
        loss, costs, limits, tied = problem_iv(self.loss, self.costs, self.limits, self.tied)
        object.__setattr__(self, "loss", loss)
        object.__setattr__(self, "costs", costs)
        object.__setattr__(self, "limits", limits)
        object.__setattr__(self, "tied", tied)

    @property
    def n_layers(self) -> int:
        return self.loss.shape[0]

    @property
    def n_options(self) -> int:
        return self.loss.shape[1]

    def objective_of(self, choice: np.ndarray) -> float:
        """Sum of the chosen options' losses (inf if a forbidden option is chosen)."""
        choice = np.asarray(choice, dtype=np.int64)
        return float(self.loss[np.arange(self.n_layers), choice].sum())

    def usage_of(self, choice: np.ndarray) -> dict[str, float]:
        """Total of every cost (limited or not) for a choice."""
        choice = np.asarray(choice, dtype=np.int64)
        rows = np.arange(self.n_layers)
        return {name: float(table[rows, choice].sum()) for name, table in self.costs.items()}

    def violations_of(self, choice: np.ndarray, rtol: float = FEASIBILITY_RTOL) -> list[str]:
        """Describe every way a choice breaks the problem (forbidden option, broken tie, limit); [] if none."""
        choice = np.asarray(choice, dtype=np.int64)
        problems: list[str] = []
        if choice.shape != (self.n_layers,) or (choice < 0).any() or (choice >= self.n_options).any():
            return [f"choice must be {self.n_layers} option indices in 0..{self.n_options - 1}, got {choice!r}"]
        forbidden = np.flatnonzero(~np.isfinite(self.loss[np.arange(self.n_layers), choice]))
        if forbidden.size:
            problems.append(f"layers {forbidden.tolist()} take a forbidden option")
        for group in self.tied:
            if len(set(choice[list(group)].tolist())) > 1:
                problems.append(f"tied layers {list(group)} take different options {choice[list(group)].tolist()}")
        usage = self.usage_of(choice)
        for name, limit in self.limits.items():
            if usage[name] > limit + rtol * abs(limit):
                problems.append(f"{name} total {usage[name]!r} exceeds its limit {limit!r}")
        return problems


@dataclass(frozen=True, eq=False)
class Solution:
    """The plan a backend found.

    Attributes:
        choice: (L,) option index per layer.
        objective: sum of the chosen losses.
        status: "optimal" (proven) or "feasible" (a heuristic, or a time limit was hit).
        bound: proven lower bound on the optimum; equals `objective` when optimal.
        time_s: wall time of `solve_problem`, preprocessing included.
        solver: backend name.
        usage: resource name -> total, for every cost of the problem.
    """

    choice: np.ndarray
    objective: float
    status: Status
    bound: float
    time_s: float
    solver: str
    usage: dict[str, float]

    @property
    def gap(self) -> float:
        """Relative distance between objective and bound (0 when optimal)."""
        return (self.objective - self.bound) / max(abs(self.objective), 1e-12)
