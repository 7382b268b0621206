"""`quant.reconstruct` and `quant.qat` end settled: their fitted scales and weights leave no
image-independent quantizer input near a rounding half (what `quantize` guarantees, kept after
the fit), except where their final settle warned that no nudge within its bound could."""
import warnings

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quant import quantize
from quant.reconstruct import reconstruct
from quant.settle import MARGIN, UnsettledWarning, settle_constant_inputs
from quant_helpers import build_tiny, make_images


def _unsettled_names(caught: list[warnings.WarningMessage]) -> set[str]:
    return {q.name for w in caught if isinstance(w.message, UnsettledWarning) for q in w.message.report.unsettled}


def _settled_again(qmodel, shape, warned: set[str]) -> None:
    again = settle_constant_inputs(qmodel, shape)
    assert again.quantizers, "a ViT/DeiT has prefix-token constants in its first block"
    near = [q for q in again.quantizers if q.distance_before < MARGIN]
    assert {q.name for q in near} <= warned, near


@settings(max_examples=6, deadline=None)
@given(kind=st.sampled_from(["vit", "deit"]), seed=st.integers(0, 50), bits=st.sampled_from([3, 4]),
       rounding=st.booleans())
def test_reconstruction_leaves_nothing_to_settle(kind, seed, bits, rounding):
    model, calib = build_tiny(kind, seed), make_images(16, seed=seed + 1)
    qmodel = quantize(model, f"W{bits}A{bits}", calib)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UnsettledWarning)
        reconstruct(qmodel, model, calib, steps=0 if rounding else 3, rounding_steps=3 if rounding else 0, seed=seed)
    _settled_again(qmodel, calib.shape[1:], _unsettled_names(caught))


@settings(max_examples=4, deadline=None)
@given(kind=st.sampled_from(["vit", "deit"]), seed=st.integers(0, 50))
def test_qat_leaves_nothing_to_settle(kind, seed):
    from quant import QATConfig, qat

    images = make_images(16, seed=seed + 1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UnsettledWarning)
        qmodel, _ = qat(build_tiny(kind, seed), "W3A3", images,
                        config=QATConfig(epochs=2, batch_size=8, lr=1e-2, seed=seed), verbose=False)
    _settled_again(qmodel, images.shape[1:], _unsettled_names(caught))


@pytest.mark.recorded  # a float32 training outcome recorded on one CPU: `make test` reruns it on SSE kernels
def test_qat_warns_where_it_cannot_settle():
    """The case hypothesis found (a ViT, seed 34): QAT's learned step size leaves the class token's
    key 0.00067 steps from a rounding half and 1% of nudge reaches only 0.00085; QAT says so."""
    from quant import QATConfig, qat

    images = make_images(16, seed=35)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UnsettledWarning)
        qmodel, _ = qat(build_tiny("vit", 34), "W3A3", images,
                        config=QATConfig(epochs=2, batch_size=8, lr=1e-2, seed=34), verbose=False)
    warned = _unsettled_names(caught)
    assert warned == {"blocks.0.attn.matmul_qk.b_quant"}
    _settled_again(qmodel, images.shape[1:], warned)
