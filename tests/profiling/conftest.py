"""Fixtures of the profiling tests."""
from __future__ import annotations

import pytest

from _profiling_fixtures import BUILDERS


@pytest.fixture(params=sorted(BUILDERS))
def family(request) -> str:
    return request.param
