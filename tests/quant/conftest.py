"""Fixtures of the quant tests: tiny random-init models and image batches."""
from __future__ import annotations

import pytest
import torch

from quant_helpers import TINY_BUILDERS, build_tiny, make_images


@pytest.fixture(params=sorted(TINY_BUILDERS))
def tiny_kind(request) -> str:
    return request.param


@pytest.fixture
def tiny_model(tiny_kind) -> torch.nn.Module:
    return build_tiny(tiny_kind)


@pytest.fixture(scope="session")
def calib_images() -> torch.Tensor:
    return make_images(32, seed=1)


@pytest.fixture(scope="session")
def test_images() -> torch.Tensor:
    return make_images(48, seed=2)
