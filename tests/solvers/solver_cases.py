"""Which backends the shared suite runs against: every one `available_solvers()` lists."""
from __future__ import annotations

from solvers import available_solvers
from solvers.backends import is_exact

BACKENDS = available_solvers()
EXACT_BACKENDS = [name for name in BACKENDS if is_exact(name)]
HEURISTIC_BACKENDS = [name for name in BACKENDS if not is_exact(name)]
