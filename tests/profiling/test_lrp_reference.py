"""LRP numbers are pinned: optimisations of the implementation must not change the rules.

``data/lrp_reference.json`` holds the relevance numbers of the straightforward implementation
(every rule written with autograd primitives: explicit LayerNorm, ``_Surrogate`` GELU, ``_half``
on each attention operand, tensor hooks for the softmax bookkeeping), recorded on the tiny
timm models of the profiling tests, in float32. The fused rules must reproduce them to 1e-4
(relative to the largest value of each quantity): float32 results differ across CPUs' BLAS kernels
(up to 3e-5 measured, e.g. with ``ATEN_CPU_CAPABILITY=default MKL_ENABLE_INSTRUCTIONS=SSE4_2``,
which CI also runs), while a changed rule moves these numbers by far more.

Regenerate (only when the rules themselves change on purpose, and say so in docs/lrp.md):
``python -m tests.profiling.test_lrp_reference`` from the repository root.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from profiling import lrp_conservation, lrp_importance

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _profiling_fixtures import BUILDERS, images  # noqa: E402

pytestmark = pytest.mark.recorded

REFERENCE = Path(__file__).resolve().parent / "data" / "lrp_reference.json"
RTOL = 1e-4  # float32 across BLAS kernels: differences up to 3e-5 were measured (AVX2 vs AVX-512 vs SSE)


def _blocks(model) -> list[str]:
    return [n for n, _ in model.named_modules()
            if n.split(".")[-2:-1] == ["blocks"] and n.split(".")[-1].isdigit()]


def lrp_numbers(family: str) -> dict[str, list[float]]:
    """Every number LRP reports on the tiny `family` model, flattened per quantity."""
    model = BUILDERS[family]()
    out: dict[str, list[float]] = {}
    for eps in (0.0, 1e-6):
        res = lrp_importance(model, images(4), epsilon=eps)
        out[f"per_image@{eps}"] = res.per_image.ravel().tolist()
        out[f"target_logits@{eps}"] = res.target_logits.tolist()
        out[f"input_relevance@{eps}"] = res.input_relevance.tolist()
        out[f"targets@{eps}"] = res.targets.astype(float).tolist()
    r = lrp_conservation(model, images(2)[1], blocks=_blocks(model))
    out["conservation"] = [r.logit, r.input, r.biases, r.softmax]
    out["conservation_blocks"] = [v for pair in r.blocks.values() for v in pair]
    return out


@pytest.mark.parametrize("family", sorted(BUILDERS))
def test_lrp_matches_recorded_reference(family):
    ref = json.loads(REFERENCE.read_text())[family]
    got = lrp_numbers(family)
    assert got.keys() == ref.keys()
    for key, expected in ref.items():
        e, g = np.asarray(expected), np.asarray(got[key])
        scale = float(np.abs(e).max()) or 1.0
        np.testing.assert_allclose(g, e, rtol=RTOL, atol=RTOL * scale, err_msg=f"{family}: {key}")


if __name__ == "__main__":
    REFERENCE.parent.mkdir(parents=True, exist_ok=True)
    REFERENCE.write_text(json.dumps({f: lrp_numbers(f) for f in sorted(BUILDERS)}, indent=1))
    print(f"wrote {REFERENCE}")
