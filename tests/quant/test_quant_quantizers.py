"""Property tests of the quantizer arithmetic (levels, idempotence, error bound, STE)."""
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from quant import ActQuantizer, LogQuantizer, WeightQuantizer
from quant.errors import NotCalibratedError
from quant.quantizers import UniformQuantizer
from quant.ranges import _quantile_rows, estimate_range, fake_quantize, log_base_search, log_quantize, log_scale_search, qparams_from_range

SETTINGS = settings(max_examples=60, deadline=None, derandomize=True)

bits_st = st.integers(min_value=2, max_value=8)
seed_st = st.integers(min_value=0, max_value=2**31 - 1)


def _data(seed: int, shape=(4, 64), spread: float = 3.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g) * spread + torch.randn(shape[0], 1, generator=g)


def _quantizer(x: torch.Tensor, bits: int, symmetric: bool, per_channel: bool) -> UniformQuantizer:
    rows = x if per_channel else x.reshape(1, -1)
    lo, hi = estimate_range(rows, "minmax", bits, symmetric)
    if not per_channel:
        lo, hi = lo[0], hi[0]
    q = UniformQuantizer(channel_axis=0 if per_channel else None)
    q.set_qparams(qparams_from_range(lo, hi, bits, symmetric))
    return q


@SETTINGS
@given(bits=bits_st, seed=seed_st, symmetric=st.booleans(), per_channel=st.booleans())
def test_uniform_levels_idempotence_and_error_bound(bits, seed, symmetric, per_channel):
    x = _data(seed)
    q = _quantizer(x, bits, symmetric, per_channel)
    y = q(x)
    rows = y if per_channel else y.reshape(1, -1)
    assert max(len(torch.unique(r)) for r in rows) <= 2**bits
    assert torch.equal(q(y), y), "q(q(x)) must equal q(x)"
    # inside the representable range the error is at most half a step
    scale = q.scale if not per_channel else q.scale[:, None]
    zp = q.zero_point if not per_channel else q.zero_point[:, None]
    lo, hi = (q.qmin - zp) * scale, (q.qmax - zp) * scale
    inside = (x >= lo) & (x <= hi)
    err = (y - x).abs()
    bound = (scale / 2 * (1 + 1e-5) + 1e-7).expand_as(x)
    assert bool((err[inside] <= bound[inside]).all())
    # a min-max range may sit up to half a step off the data (integer zero point), so even the
    # extreme values are within half a step of a level
    assert bool((err <= bound).all())


@SETTINGS
@given(bits=bits_st, seed=seed_st)
def test_uniform_ste_gradients(bits, seed):
    x = _data(seed, (1, 128)).reshape(-1)
    q = _quantizer(x[None] * 0.5, bits, False, False)  # range narrower than the data: some values clip
    scale = q.make_learnable()
    xr = x.clone().requires_grad_(True)
    q(xr).sum().backward()
    lo = float((q.qmin - q.zero_point) * q.scale.detach())
    hi = float((q.qmax - q.zero_point) * q.scale.detach())
    inside = (x > lo + 1e-4) & (x < hi - 1e-4)
    outside = (x < lo - 1e-4) | (x > hi + 1e-4)
    assert torch.all(xr.grad[inside] == 1.0)
    assert torch.all(xr.grad[outside] == 0.0)
    assert scale.grad is not None and torch.isfinite(scale.grad).all() and scale.grad.abs().sum() > 0


@SETTINGS
@given(bits=bits_st, seed=seed_st, base=st.sampled_from(["log2", "logsqrt2"]))
def test_log_quantizer_levels_idempotence_and_ste(bits, seed, base):
    g = torch.Generator().manual_seed(seed)
    probs = torch.softmax(torch.randn(8, 16, generator=g) * 4, dim=-1)
    q = LogQuantizer(base)
    q.bits = bits
    q.scale = probs.max()
    y = q(probs)
    assert len(torch.unique(y)) <= 2**bits
    assert torch.equal(q(y), y)
    assert bool((y >= 0).all()) and bool((y <= q.scale).all())
    # nearest level in the log domain: relative error at most base^(1/2) - 1 for values not zeroed
    step = 2.0 if base == "log2" else math.sqrt(2.0)
    kept = y > 0
    ratio = (y[kept] / probs[kept])
    assert bool((ratio <= math.sqrt(step) * (1 + 1e-5)).all() and (ratio >= 1 / math.sqrt(step) * (1 - 1e-5)).all())
    p = probs.clone().requires_grad_(True)
    q(p).sum().backward()
    assert torch.all(p.grad == 1.0)


@SETTINGS
@given(bits=bits_st, seed=seed_st, temperature=st.floats(0.1, 8.0), width=st.sampled_from([4, 49, 197]))
def test_log_base_search_returns_the_smaller_error_of_the_two_grids(bits, seed, temperature, width):
    g = torch.Generator().manual_seed(seed)
    probs = torch.softmax(torch.randn(16, width, generator=g) * temperature, dim=-1).reshape(-1)
    base, scale = log_base_search(probs, probs.max(), bits)
    err = float((log_quantize(probs, scale, bits, base) - probs).pow(2).sum())
    for other in ("log2", "logsqrt2"):
        assert err <= log_scale_search(probs, probs.max(), bits, other)[1] * (1 + 1e-6)


def _calibrated(aq: ActQuantizer, x: torch.Tensor) -> ActQuantizer:
    """``aq`` after one float calibration pass over ``x`` (bits off, observer finished)."""
    aq.observer.reset()
    aq.observer.active = True
    aq(x)
    aq.observer.finish()
    aq.observer.active = False
    return aq


def test_searched_log_quantizer_keeps_flat_window_attention_at_3_bits():
    """sqrt(2) steps at 3 bits reach only 2^-3 of the scale: with a few peaked heads setting the
    scale near 1, the flat heads of 7x7-window attention (near 1/49) would be zeroed; the
    searched quantizer takes base 2 there and sqrt(2) at 8 bits."""
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(64, 49, generator=g) * 0.5
    scores[:4, 0] += 12.0  # four peaked rows
    probs = torch.softmax(scores, dim=-1)
    aq = _calibrated(ActQuantizer(kind="log", method="search"), probs)
    aq.set_bits(3)
    y = aq(probs)
    assert aq.quantizer.base == "log2" and float((y[4:] > 0).float().mean()) > 0.8  # sqrt(2): 0.1%
    fixed = _calibrated(ActQuantizer(kind="logsqrt2", method="search"), probs)
    fixed.set_bits(3)
    assert float((y - probs).pow(2).sum()) < float((fixed(probs) - probs).pow(2).sum())
    aq.set_bits(8)
    aq(probs)
    assert aq.quantizer.base == "logsqrt2"


@SETTINGS
@given(bits=bits_st, seed=seed_st)
def test_range_methods_are_ordered(bits, seed):
    x = _data(seed, (3, 256))
    mlo, mhi = estimate_range(x, "minmax", bits, False)
    plo, phi = estimate_range(x, "percentile", bits, False, percentile=99.0)
    slo, shi = estimate_range(x, "mse", bits, False, grid=20)
    assert bool((plo >= mlo).all() and (phi <= mhi).all())
    assert bool((slo >= mlo - 1e-6).all() and (shi <= mhi + 1e-6).all())

    def mse(lo, hi):
        s, z, qmin, qmax = qparams_from_range(lo, hi, bits, False)
        return (fake_quantize(x, s[:, None], z[:, None], qmin, qmax) - x).pow(2).sum(1)

    assert bool((mse(slo, shi) <= mse(mlo, mhi) + 1e-6).all()), "MSE search includes the min-max range"


def test_symmetric_non_negative_data_uses_unsigned_levels():
    x = torch.rand(1, 100) * 5
    s, z, qmin, qmax = qparams_from_range(x.min(), x.max(), 4, True)
    assert (qmin, qmax) == (0, 15) and float(z) == 0.0


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_weight_quantizer_per_channel_levels_and_cache(bits):
    w = _data(3, (16, 40))
    wq = WeightQuantizer("mse", per_channel=True)
    assert torch.equal(wq(w), w), "bits None is float"
    wq.set_bits(bits)
    y = wq(w)
    assert all(len(torch.unique(r)) <= 2**bits for r in y)
    with torch.no_grad():
        w.mul_(2.0)  # in-place change: parameters must be recomputed
    y2 = wq(w)
    assert torch.allclose(y2, 2 * y, rtol=1e-5, atol=1e-6)


def test_act_quantizer_needs_calibration_and_is_bit_independent():
    aq = ActQuantizer("uniform", method="mse", name="blocks.0.attn.proj")
    aq.set_bits(4)
    with pytest.raises(NotCalibratedError, match="blocks.0.attn.proj"):
        aq(torch.randn(3))
    aq.set_bits(None)
    aq.observer.reset()
    aq.observer.active = True
    x = _data(5, (8, 500))
    aq(x)
    aq.observer.finish()
    outputs = []
    for bits in (8, 3, 8):  # switching bits needs no new data and is reproducible
        aq.set_bits(bits)
        outputs.append(aq(x))
        assert len(torch.unique(outputs[-1])) <= 2**bits
    assert torch.equal(outputs[0], outputs[2])


def test_observer_sample_is_bounded_deterministic_and_representative():
    def run():
        aq = ActQuantizer("uniform", max_samples=1000, seed=7)
        aq.observer.reset()
        aq.observer.active = True
        g = torch.Generator().manual_seed(0)
        for i in range(10):
            aq(torch.randn(400, generator=g) + (5.0 if i >= 5 else 0.0))
        return aq.observer

    a, b = run(), run()
    assert a.sample.numel() == 1000 and torch.equal(a.sample, b.sample)
    # half the data had mean 5: the subsample must reflect both halves
    assert 2.0 < float(a.sample.mean()) < 3.0
    assert float(a.min_val) <= float(a.sample.min()) and float(a.max_val) >= float(a.sample.max())


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), channels=st.integers(1, 6), n=st.integers(1, 5000), repeats=st.booleans(),
       qs=st.lists(st.floats(0.0, 1.0), min_size=1, max_size=6))
def test_quantiles_of_one_sort_equal_torch_quantile_per_q(seed, channels, n, repeats, qs):
    """The range search takes all its quantiles from one sort per row; each must be bit-identical
    to its own ``torch.quantile`` call, interpolated in float64 and rounded to float32 (a float32
    interpolation differs in the last bit between CPU kernels)."""
    rows = torch.randn(channels, n, generator=torch.Generator().manual_seed(seed))
    if repeats:  # ties, as in weights and activations that clip
        rows[:, : n // 2] = rows[:, :1]
    many = _quantile_rows(rows, qs)
    assert many.shape == (len(qs), channels)
    for i, q in enumerate(qs):
        assert torch.equal(many[i], torch.quantile(rows.double(), q, dim=1).float())
