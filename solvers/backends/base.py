"""What a backend returns to the dispatcher (see the interface in `solvers.backends`)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

__all__ = ["BackendResult", "BackendStatus"]

BackendStatus = Literal["optimal", "feasible", "infeasible"]


@dataclass(frozen=True)
class BackendResult:
    """A backend's answer on a `PreparedProblem`.

    Attributes:
        choice: (G,) option index per group (original option indices; None when infeasible).
        status: "optimal" (proven), "feasible" (heuristic or time limit), or "infeasible"
            (proven: only exact backends may say so).
        bound: proven lower bound on the optimal objective, in loss units, or None when the
            backend has none (the dispatcher then uses the LP relaxation bound).
    """

    choice: np.ndarray | None
    status: BackendStatus
    bound: float | None = None
