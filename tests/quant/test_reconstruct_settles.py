"""`quant.reconstruct` and `quant.qat` end settled: their fitted scales and weights leave no
image-independent quantizer input near a rounding half (what `quantize` guarantees, kept after
the fit)."""
from hypothesis import given, settings
from hypothesis import strategies as st

from quant import quantize
from quant.reconstruct import reconstruct
from quant.settle import MARGIN, settle_constant_inputs
from quant_helpers import build_tiny, make_images


@settings(max_examples=6, deadline=None)
@given(kind=st.sampled_from(["vit", "deit"]), seed=st.integers(0, 50), bits=st.sampled_from([3, 4]),
       rounding=st.booleans())
def test_reconstruction_leaves_nothing_to_settle(kind, seed, bits, rounding):
    model, calib = build_tiny(kind, seed), make_images(16, seed=seed + 1)
    qmodel = quantize(model, f"W{bits}A{bits}", calib)
    reconstruct(qmodel, model, calib, steps=0 if rounding else 3, rounding_steps=3 if rounding else 0, seed=seed)
    again = settle_constant_inputs(qmodel, calib.shape[1:])
    assert again.quantizers, "a ViT/DeiT has prefix-token constants in its first block"
    assert all(q.distance_before >= MARGIN for q in again.quantizers), [q for q in again.quantizers]
    assert not again.nudged


@settings(max_examples=4, deadline=None)
@given(kind=st.sampled_from(["vit", "deit"]), seed=st.integers(0, 50))
def test_qat_leaves_nothing_to_settle(kind, seed):
    from quant import QATConfig, qat

    images = make_images(16, seed=seed + 1)
    qmodel, _ = qat(build_tiny(kind, seed), "W3A3", images,
                    config=QATConfig(epochs=2, batch_size=8, lr=1e-2, seed=seed), verbose=False)
    again = settle_constant_inputs(qmodel, images.shape[1:])
    assert again.quantizers and all(q.distance_before >= MARGIN for q in again.quantizers)
