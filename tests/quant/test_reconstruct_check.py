"""The model-level check of quant.reconstruct on images it does not fit (``check_data``): the
reconstruction is kept only if it lowers the KL divergence from the float model there."""
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from quant import QuantConfig, quantize
from quant.reconstruct import BlockFit, HeldOutCheck, _HeldOut, reconstruct

from quant_helpers import build_tiny, make_images

CFG = QuantConfig(edge_bits=None)


def _kl(qmodel: torch.nn.Module, model: torch.nn.Module, images: torch.Tensor) -> float:
    """Mean KL of the quantized from the float class probabilities, computed independently."""
    with torch.no_grad():
        q, f = qmodel(images).double(), model(images).double()
    return float(F.kl_div(F.log_softmax(q, -1), F.log_softmax(f, -1), log_target=True, reduction="batchmean"))


def _same_function(a: torch.nn.Module, b: torch.nn.Module, images: torch.Tensor) -> bool:
    with torch.no_grad():
        return torch.equal(a(images), b(images))


@settings(max_examples=8, deadline=None)
@given(kind=st.sampled_from(["vit", "deit", "swin"]), seed=st.integers(0, 3), bits=st.sampled_from([2, 3, 8]),
       check_seed=st.integers(10, 1000), scale=st.sampled_from([1.0, 4.0]))
def test_the_result_is_whichever_model_is_closer_to_float_on_the_check_images(kind, seed, bits, check_seed, scale):
    """With a check, ``reconstruct`` ends with the reconstructed model when its check KL is lower
    than the calibrated model's, else with the calibrated model itself; the report's last record
    holds both KLs as computed independently. (Check images drawn at another scale than the
    calibration images make the reconstruction lose there for some draws.)"""
    model = build_tiny(kind, seed)
    calib, check = make_images(32, seed=seed + 1), scale * make_images(24, seed=check_seed)
    start = quantize(model, f"W{bits}A{bits}", calib, config=CFG)
    fitted = quantize(model, f"W{bits}A{bits}", calib, config=CFG)
    reconstruct(fitted, model, calib, steps=0, rounding_steps=8, batch_size=16, seed=seed)
    checked = quantize(model, f"W{bits}A{bits}", calib, config=CFG)
    report: list = []
    returned = reconstruct(checked, model, calib, steps=0, rounding_steps=8, batch_size=16, seed=seed,
                           report=report, check_data=check)
    assert returned is checked, "the check works in place: the caller's model is the result"
    verdict = report[-1]
    assert isinstance(verdict, HeldOutCheck) and all(isinstance(r, BlockFit) for r in report[:-1])
    assert verdict.images == len(check)
    before, after = _kl(start, model, check), _kl(fitted, model, check)
    assert verdict.kl_before == pytest.approx(before, rel=1e-4, abs=1e-9)
    assert verdict.kl_after == pytest.approx(after, rel=1e-4, abs=1e-9)
    assert verdict.kept == (verdict.kl_after < verdict.kl_before)
    assert _same_function(checked, fitted if verdict.kept else start, torch.cat([calib, check]))


def test_a_reconstruction_that_loses_on_the_check_images_is_put_back_in_place(calib_images, test_images):
    """Made worse after the snapshot (noise on every weight, as a bad fit would), the model is
    put back as it was: same function, same parameter values, and the caller's object."""
    model = build_tiny("vit")
    start = quantize(model, "W4A4", calib_images, config=CFG)
    qmodel = quantize(model, "W4A4", calib_images, config=CFG)
    held = _HeldOut(qmodel, model, test_images, torch.device("cpu"), 16)
    with torch.no_grad():
        for p in qmodel.parameters():
            p.add_(0.5 * torch.randn_like(p))
    assert not _same_function(qmodel, start, test_images)
    verdict = held.judge(qmodel)
    assert not verdict.kept and verdict.kl_after > verdict.kl_before
    assert _same_function(qmodel, start, test_images)
    assert verdict.kl_before == pytest.approx(_kl(qmodel, model, test_images), rel=1e-6)


def test_without_a_check_nothing_changes_and_an_empty_check_is_refused(calib_images):
    model = build_tiny("deit")
    plain, report = quantize(model, "W3A3", calib_images, config=CFG), []
    reconstruct(plain, model, calib_images, steps=0, rounding_steps=5, batch_size=16, report=report)
    assert all(isinstance(r, BlockFit) for r in report), "no check record without check_data"
    qmodel = quantize(model, "W3A3", calib_images, config=CFG)
    with pytest.raises(ValueError, match="check_data holds no image; pass None for no check"):
        reconstruct(qmodel, model, calib_images, steps=0, rounding_steps=5, check_data=calib_images[:0])
